"""Bad data files never get through: each is refused with one WememError that names the file, the problem and the
fix, before anything runs. Every case writes small files in the real format (pickled CIFAR batches, .npz archives,
PNG trees), and a received pickle can never run code."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image
from torch import nn

from wemem.data import load_dataset
from wemem.data.loaders import MIN_NPZ_SAMPLES, MIN_SAMPLES_PER_CLASS, read_cifar_batch
from wemem.errors import WememError
from wemem.models import MODELS, check_model_fits

SEED = 7
RNG = np.random.default_rng(0)


def refused(name: str, *words: str) -> str:
    """Load dataset ``name``, expect a WememError and return its message after checking it holds every word."""
    with pytest.raises(WememError) as error:
        load_dataset(name, None, SEED)
    message = str(error.value)
    for words_expected in words:
        assert words_expected in message, message
    return message


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- CIFAR


def genuine_entry(n: int = 3, labels: object = None) -> dict:
    """torchvision's python-pickle layout: ``data`` [N, 3072] uint8 and a list of labels."""
    return {
        "data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": list(range(n)) if labels is None else labels,
        "batch_label": "training batch 1 of 5",
        "num_cases": np.int64(n),
    }  # not in real batches: makes the pickle hold a numpy scalar too


def write_pickle(path: Path, entry: object, protocol: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(entry, handle, protocol=protocol)
    return path


class OpensAFile:
    """What a hostile 'batch' does: its pickle asks the loader to call ``target(*args)``."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


def hostile_entries(marker: Path) -> dict[str, object]:
    return {
        "builtins.open": {"data": OpensAFile(builtins.open, str(marker), "w"), "labels": [0]},
        "builtins.eval": {"data": OpensAFile(builtins.eval, f"open({str(marker)!r}, 'w')"), "labels": [0]},
        "os.system": {"data": OpensAFile(os.system, f"touch '{marker}'"), "labels": [0]},
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_genuine_cifar_batches_load_under_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    entry = genuine_entry(labels=np.array([4, 0, 9]))  # a numpy label array too: arrays and numpy scalars pass
    path = write_pickle(tmp_path / "data_batch_1", entry, protocol)

    images, labels = read_cifar_batch(path, 10)

    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)
    assert torch.equal(images.flatten(1), torch.as_tensor(entry["data"]))
    assert labels.tolist() == [4, 0, 9]


def test_a_python2_era_batch_with_numpy_core_names_loads(tmp_path: Path) -> None:
    """The official archives were pickled by Python 2 and numpy 1, whose arrays name numpy.core.multiarray."""
    entry = genuine_entry()
    data = pickle.dumps(entry, protocol=2)  # protocol 2 writes globals as text lines, so the rename is exact
    path = tmp_path / "test_batch"
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert b"numpy.core.multiarray\n" in path.read_bytes()

    images, labels = read_cifar_batch(path, 10)

    assert torch.equal(images.flatten(1), torch.as_tensor(entry["data"])) and labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("call", ["builtins.open", "builtins.eval", "os.system"])
def test_a_pickle_that_calls_anything_else_is_refused_without_running_it(
    tmp_path: Path, call: str, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "data_batch_1", hostile_entries(marker)[call], protocol)

    with pytest.raises(WememError) as error:
        read_cifar_batch(path, 10)

    message = str(error.value)
    assert str(path) in message and "not a genuine CIFAR batch" in message and "re-download" in message
    assert call.split(".")[1] in message  # the forbidden global, as the file names it (__builtin__/posix.system)
    assert not marker.exists()


def write_cifar10_layout(root: Path, hostile: object | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        entry = hostile if (hostile is not None and name == "data_batch_3") else genuine_entry(2, [1, 2])
        write_pickle(folder / name, entry, 2)
    return folder


def test_a_hostile_batch_in_a_full_cifar10_layout_stops_the_loader_and_writes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = write_cifar10_layout(tmp_path, hostile_entries(marker)["builtins.open"])
    before = files_under(tmp_path)

    with pytest.raises(WememError) as error:
        load_dataset("cifar10", tmp_path, SEED)

    assert str(folder / "data_batch_3") in str(error.value) and "open" in str(error.value)
    assert not marker.exists()
    assert files_under(tmp_path) == before


def test_a_missing_batch_still_goes_to_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wemem.data.loaders

    folder = write_cifar10_layout(tmp_path)
    (folder / "test_batch").unlink()
    asked: list[list[Path]] = []

    def download(fmt, root: Path, files: list[Path]) -> None:  # stands in for torchvision's downloader
        asked.append(files)
        write_pickle(folder / "test_batch", genuine_entry(2, [3, 4]), 2)

    monkeypatch.setattr(wemem.data.loaders, "download_cifar", download)
    pools = load_dataset("cifar10", tmp_path, SEED)

    assert asked and folder / "test_batch" in asked[0] and pools.y.tolist()[-2:] == [3, 4]


@pytest.mark.parametrize(
    "content, words",
    [
        (pickle.dumps(genuine_entry())[:-200], "not a readable CIFAR batch"),
        (b"this is not a pickle at all", "not a readable CIFAR batch"),
        (pickle.dumps([1, 2, 3]), "expected a dict with 'data' and 'labels'"),
        (pickle.dumps({"images": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}), "found ['images', 'labels']"),
        (pickle.dumps({"data": np.zeros((2, 3072)), "labels": [0, 1]}), "'data' must be a uint8 array"),
        (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), "shape [2, 100]"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "one integer label per image (2)"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), "labels must lie in 0..9"),
    ],
    ids=["truncated", "not-a-pickle", "a-list", "no-data-key", "float-data", "wrong-width", "short-labels", "label-10"],
)
def test_a_damaged_batch_names_the_file_the_problem_and_the_fix(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(WememError) as error:
        read_cifar_batch(path, 10)
    message = str(error.value)
    assert str(path) in message and words in message and "re-download or re-extract" in message


# ------------------------------------------------------------------------------------------------- npz


def npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


X = RNG.normal(size=(200, 4))


def test_continuous_labels_are_refused_as_no_class_labels(tmp_path: Path) -> None:
    refused(
        npz(tmp_path, x=RNG.normal(size=(300, 4)), y=RNG.normal(size=300)),
        "y holds non-integer values",
        "class labels needed",
        "bin a regression target first",
    )


def test_300_one_sample_classes_are_refused(tmp_path: Path) -> None:
    """Continuous targets stored as integers (every sample its own class) fail the per-class minimum instead."""
    refused(
        npz(tmp_path, x=RNG.normal(size=(300, 4)), y=np.arange(300)),
        f"300 of 300 classes have fewer than {MIN_SAMPLES_PER_CLASS} samples",
        "e.g. label 0 has 1",
        "merge or drop the rare classes",
    )


def test_whole_number_float_labels_are_classes(tmp_path: Path) -> None:
    pools = load_dataset(npz(tmp_path, x=X, y=(np.arange(200) % 4).astype(np.float64) + 1.0), None, SEED)
    assert pools.num_classes == 4 and sorted(set(pools.y.tolist())) == [0, 1, 2, 3]


def test_a_class_below_the_minimum_is_named(tmp_path: Path) -> None:
    y = np.arange(200) % 3
    y[: MIN_SAMPLES_PER_CLASS - 1] = 7  # class 7: one sample short of the minimum
    refused(npz(tmp_path, x=X, y=y), "1 of 4 classes", f"label 7 has {MIN_SAMPLES_PER_CLASS - 1}")


def test_features_beyond_float32_are_refused(tmp_path: Path) -> None:
    x = X.copy()
    x[5, 2] = 1e39  # finite in float64, infinite once cast to float32 for training
    refused(npz(tmp_path, x=x, y=np.arange(200) % 3), "1 values beyond float32's range", "rescale or clip")


@pytest.mark.parametrize("prefix", ["npz", "imagefolder"])
def test_an_empty_path_is_refused(prefix: str) -> None:
    refused(f"{prefix}:", "gives no path", f"write {prefix}:PATH")


def test_an_npz_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    refused(f"npz:{tmp_path}", "is a folder", str(tmp_path / "data.npz"))


def test_a_truncated_npz_is_reported_as_damaged_not_as_objects(tmp_path: Path) -> None:
    name = npz(tmp_path, x=X, y=np.arange(200) % 3)
    path = tmp_path / "data.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = refused(name, str(path), "truncated or damaged", "numpy.savez")
    assert "objects" not in message


def test_a_truncated_array_inside_an_intact_npz_is_reported_as_damaged(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, X)
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:  # the zip is whole; the x.npy inside it is cut short
        archive.writestr("x.npy", buffer.getvalue()[: len(buffer.getvalue()) // 2])
        buffer = io.BytesIO()
        np.save(buffer, np.arange(200) % 3)
        archive.writestr("y.npy", buffer.getvalue())
    message = refused(f"npz:{path}", "truncated or damaged")
    assert "objects" not in message


def test_an_object_array_is_still_reported_as_objects(tmp_path: Path) -> None:
    refused(npz(tmp_path, x=np.array([{"a": 1}] * 200, dtype=object), y=np.arange(200) % 3), "arrays of Python objects")


def test_channels_last_images_are_refused_with_the_transpose(tmp_path: Path) -> None:
    images = RNG.random((200, 32, 32, 3), dtype=np.float32)
    refused(npz(tmp_path, x=images, y=np.arange(200) % 2), "[200, 32, 32, 3]", "x.transpose(0, 3, 1, 2)")
    pools = load_dataset(npz(tmp_path, x=images.transpose(0, 3, 1, 2), y=np.arange(200) % 2), None, SEED)
    assert pools.input_shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------- image folders


def write_png_tree(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(np.full((4, 4, 3), i % 256, dtype=np.uint8)).save(root / name / f"{i}.png")


def test_a_png_that_is_no_image_is_named(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"a": 60, "b": 60})
    (tmp_path / "b" / "notes.png").write_text("not an image, only named like one")
    refused(f"imagefolder:{tmp_path}", str(tmp_path / "b" / "notes.png"), "not a readable image", "delete it")


def test_an_image_folder_of_one_class_is_refused(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"cats": MIN_NPZ_SAMPLES})
    refused(f"imagefolder:{tmp_path}", "single class ('cats')", "at least two")


def test_an_image_folder_of_4_images_is_refused(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"a": 2, "b": 2})
    refused(f"imagefolder:{tmp_path}", "4 samples are too few", f"at least {MIN_NPZ_SAMPLES}")


def test_an_image_class_below_the_minimum_is_named_in_either_layout(tmp_path: Path) -> None:
    write_png_tree(tmp_path / "train", {"big": 90, "rare": 3})
    write_png_tree(tmp_path / "test", {"big": 10, "rare": 1})
    refused(f"imagefolder:{tmp_path}", "1 of 2 classes", "label 'rare' has 4")
    write_png_tree(tmp_path / "flat", {"big": 100, "rare": 4})
    refused(f"imagefolder:{tmp_path / 'flat'}", "label 'rare' has 4")


def test_a_large_enough_image_folder_loads(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"a": 50, "b": 50})
    pools = load_dataset(f"imagefolder:{tmp_path}", None, SEED)
    assert (pools.n_train, pools.num_classes, pools.input_shape) == (80, 2, (3, 4, 4))


def test_an_image_folder_path_that_is_missing_or_a_file_is_refused(tmp_path: Path) -> None:
    refused(f"imagefolder:{tmp_path / 'nowhere'}", "not found", "PATH/<class name>/<image file>")
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04")
    refused(f"imagefolder:{tmp_path / 'data.zip'}", "is a file, not a folder", "PATH/<class name>/<image file>")


# ---------------------------------------------------------------------------------------- the command line


def test_the_launcher_exits_2_with_the_message_and_creates_no_storage(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.cli import main

    name = npz(tmp_path, x=RNG.normal(size=(300, 4)), y=RNG.normal(size=300))
    study = {"study": {"name": "bad", "n_trials": 1, "sampler": "random"}, "data": {"dataset": name, "shadows": 2}}
    (tmp_path / "bad.toml").write_text(tomli_w.dumps(study))
    monkeypatch.chdir(tmp_path)

    code = main(["launch", str(tmp_path / "bad.toml"), "--storage", f"sqlite:///{tmp_path / 'wemem.db'}"])

    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "non-integer values" in (out + err).replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "wemem.db").exists()


# ---------------------------------------------------------------------------------------------- models


def test_an_image_model_on_tabular_samples_is_refused() -> None:
    with pytest.raises(WememError, match=r"resnet18.*\[64\].*columnfc"):
        check_model_fits("resnet18", (64,), 10)


def test_a_shape_mismatch_inside_the_forward_pass_becomes_a_clear_error() -> None:
    with pytest.raises(WememError) as error:
        check_model_fits("vgg16bn", (3, 8, 8), 10)  # five 2x2 pools shrink 8x8 images to nothing
    message = str(error.value)
    assert "model 'vgg16bn' does not fit dataset samples of shape [3, 8, 8]" in message
    assert "RuntimeError" in message and "columnfc for tabular data" in message


def test_a_model_with_the_wrong_number_of_outputs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS._items, "flatten", lambda input_shape, num_classes: nn.Flatten())
    with pytest.raises(WememError, match=r"outputs of shape \[2, 64\].*expected \[2, 10\]"):
        check_model_fits("flatten", (64,), 10)


@pytest.mark.parametrize("name, input_shape", [("columnfc", (64,)), ("resnet18", (3, 32, 32))])
def test_models_that_fit_pass(name: str, input_shape: tuple[int, ...]) -> None:
    check_model_fits(name, input_shape, 10)
