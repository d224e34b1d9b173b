"""The file-based datasets, loaded through the real loaders from tiny files written in each real format."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wemem.data import load_dataset, seeded_permutation
from wemem.errors import WememError

SEED = 7


# ------------------------------------------------------------------------------------------ file writers


def write_cifar_batch(path: Path, pixels: np.ndarray, labels: list[int], label_key: str) -> None:
    """torchvision's python-pickle layout: dict with ``data`` [N, 3072] uint8 and a label list."""
    entry = {"data": pixels.reshape(len(labels), 3072), label_key: labels, "batch_label": "tiny"}
    if label_key == "fine_labels":
        entry["coarse_labels"] = [0] * len(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry))


def constant_images(values: list[tuple[int, int, int]]) -> np.ndarray:
    """One 32x32 image per RGB triple, every pixel of channel c equal to the triple's c-th value."""
    return np.stack([np.broadcast_to(np.array(v, np.uint8).reshape(3, 1, 1), (3, 32, 32)) for v in values])


def write_png_tree(root: Path, counts: dict[str, int], size: int = 4, value=lambda cls, i: (10 * i, 255, 0)) -> None:
    for class_index, (name, count) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = np.full((size, size, 3), value(class_index, i), dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")


def one_hot_rows(labels: np.ndarray, features: int) -> np.ndarray:
    """Binary features with a 1 at column label-1, so every loaded row reveals which label it came with."""
    x = np.zeros((len(labels), features), dtype=np.int64)
    x[np.arange(len(labels)), labels - 1] = 1
    return x


def assert_rows_keep_their_labels(pools) -> None:
    assert torch.equal(pools.x[:, : pools.num_classes].argmax(1), pools.y)


# ---------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_torchvision_batches_in_order_and_normalizes_per_channel(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    for b in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{b}", constant_images([(255, 0, 0), (0, 0, 255)]), [b, 9 - b], "labels")
    write_cifar_batch(folder / "test_batch", constant_images([(0, 255, 0)] * 3), [0, 1, 2], "labels")

    pools = load_dataset("cifar10", tmp_path, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes, pools.input_shape) == (10, 13, 10, (3, 32, 32))
    assert pools.y.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4, 0, 1, 2]
    # first image: red channel 255 -> (1 - 0.4914) / 0.2470, blue 0 -> -0.4465 / 0.2616
    assert pools.x[0, 0, 5, 5].item() == pytest.approx((1 - 0.4914) / 0.2470, rel=1e-5)
    assert pools.x[0, 2, 5, 5].item() == pytest.approx(-0.4465 / 0.2616, rel=1e-5)
    assert pools.x[10, 1, 0, 0].item() == pytest.approx((1 - 0.4822) / 0.2435, rel=1e-5)


def test_cifar100_uses_fine_labels_and_its_own_statistics(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    write_cifar_batch(folder / "train", constant_images([(0, 0, 0)] * 4), [99, 0, 42, 7], "fine_labels")
    write_cifar_batch(folder / "test", constant_images([(255, 255, 255)] * 2), [3, 4], "fine_labels")

    pools = load_dataset("cifar100", tmp_path, SEED)

    assert (pools.n_train, pools.num_classes) == (4, 100)
    assert pools.y.tolist() == [99, 0, 42, 7, 3, 4]
    assert pools.x[0, 0, 0, 0].item() == pytest.approx(-0.5071 / 0.2673, rel=1e-5)
    assert pools.x[5, 2, 0, 0].item() == pytest.approx((1 - 0.4409) / 0.2762, rel=1e-5)


def test_cifar_without_files_or_internet_names_the_expected_files(tmp_path: Path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(WememError) as error:
        load_dataset("cifar10", tmp_path, SEED)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in message
    assert "cifar-10-python.tar.gz" in message


# --------------------------------------------------------------------------------------- image folders


def test_cinic10_reads_train_and_test_class_folders(tmp_path: Path) -> None:
    write_png_tree(tmp_path / "cinic10" / "train", {"airplane": 2, "cat": 3})
    write_png_tree(tmp_path / "cinic10" / "test", {"airplane": 1, "cat": 1})

    pools = load_dataset("cinic10", tmp_path, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes, pools.input_shape) == (5, 7, 2, (3, 4, 4))
    assert pools.y.tolist() == [0, 0, 1, 1, 1, 0, 1]
    # pixel (10 * i, 255, 0) of image i: green 255 -> (1 - 0.47227842) / 0.23828046
    assert pools.x[1, 0, 0, 0].item() == pytest.approx((10 / 255 - 0.47889522) / 0.24205776, rel=1e-5)
    assert pools.x[1, 1, 0, 0].item() == pytest.approx((1 - 0.47227842) / 0.23828046, rel=1e-5)


def test_imagefolder_with_train_and_test_is_standardized_by_the_training_pool(tmp_path: Path) -> None:
    # 100 images, 50 per class: the fewest an imagefolder may hold (MIN_NPZ_SAMPLES, MIN_SAMPLES_PER_CLASS)
    write_png_tree(tmp_path / "train", {"a": 45, "b": 45}, value=lambda c, i: (2 * (45 * c + i), 255, 0))
    write_png_tree(tmp_path / "test", {"a": 5, "b": 5}, value=lambda c, i: (200, 0, 0))

    pools = load_dataset(f"imagefolder:{tmp_path}", None, SEED)

    assert (pools.n_train, pools.num_classes) == (90, 2)
    red = np.repeat(2 * np.arange(90), 16) / 255  # the red values of the 90 x 16 training pixels
    expected_test_red = (200 / 255 - red.mean()) / red.std(ddof=1)
    assert pools.x[:90, 0].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert pools.x[90, 0, 0, 0].item() == pytest.approx(expected_test_red, rel=1e-5)
    assert pools.x[0, 1, 0, 0].item() == 0.0  # constant channel: centred, std floored instead of dividing by 0


def test_imagefolder_without_test_split_is_split_80_20_with_the_seed(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"a": 50, "b": 50}, value=lambda c, i: (50 * c + i, 0, 0))

    pools = load_dataset(f"imagefolder:{tmp_path}", None, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes) == (80, 100, 2)
    file_order = np.repeat([0, 1], 50)  # ImageFolder lists a/0..49 then b/0..49
    assert pools.y.tolist() == file_order[seeded_permutation(100, SEED)].tolist()


def test_imagefolder_with_mixed_image_sizes_is_rejected(tmp_path: Path) -> None:
    write_png_tree(tmp_path, {"a": 2}, size=4)
    write_png_tree(tmp_path, {"b": 2}, size=5)
    with pytest.raises(WememError, match="different sizes"):
        load_dataset(f"imagefolder:{tmp_path}", None, SEED)


# ---------------------------------------------------------------------------------------------- tabular


def location_labels(n: int) -> np.ndarray:
    return np.arange(n) % 30 + 1  # every class 1..30 appears


def test_location_npz_labels_become_zero_based_and_split_80_20(tmp_path: Path) -> None:
    labels = location_labels(40)
    (tmp_path / "location").mkdir()
    np.savez(tmp_path / "location" / "data_complete.npz", x=one_hot_rows(labels, 446), y=labels)

    pools = load_dataset("location", tmp_path, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes, pools.input_shape) == (32, 40, 30, (446,))
    assert pools.y.tolist() == (labels - 1)[seeded_permutation(40, SEED)].tolist()
    assert_rows_keep_their_labels(pools)


def test_purchase100_text_file_label_column_then_600_features(tmp_path: Path) -> None:
    labels = np.array([1, 100, 50, 2, 99])
    (tmp_path / "purchase100").mkdir()
    rows = np.column_stack([labels, one_hot_rows(labels, 600)])
    np.savetxt(tmp_path / "purchase100" / "dataset_purchase", rows, fmt="%d", delimiter=",")

    pools = load_dataset("purchase100", tmp_path, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes, pools.input_shape) == (4, 5, 100, (600,))
    assert sorted(pools.y.tolist()) == [0, 1, 49, 98, 99]
    assert_rows_keep_their_labels(pools)


def test_texas100_feats_and_labels_files(tmp_path: Path) -> None:
    labels = np.array([3, 1, 100, 7, 7, 20, 64, 1, 2, 5])
    folder = tmp_path / "texas100"
    folder.mkdir()
    np.savetxt(folder / "feats", one_hot_rows(labels, 6169), fmt="%d", delimiter=",")
    np.savetxt(folder / "labels", labels, fmt="%d")

    pools = load_dataset("texas100", tmp_path, SEED)

    assert (pools.n_train, len(pools.y), pools.num_classes, pools.input_shape) == (8, 10, 100, (6169,))
    assert pools.y.tolist() == (labels - 1)[seeded_permutation(10, SEED)].tolist()
    assert_rows_keep_their_labels(pools)


def test_generic_npz_maps_sorted_distinct_labels_to_classes(tmp_path: Path) -> None:
    x = np.arange(100 * 2 * 3, dtype=np.float64).reshape(100, 2, 3)
    y = np.tile([9, 3, 5, 3, 9, 5, 5, 3, 9, 9], 10)  # the fewest samples an npz may hold
    np.savez(tmp_path / "data.npz", x=x, y=y)

    pools = load_dataset(f"npz:{tmp_path / 'data.npz'}", None, SEED)

    order = seeded_permutation(100, SEED)
    assert (pools.n_train, pools.num_classes, pools.input_shape) == (80, 3, (2, 3))
    assert pools.y.tolist() == np.searchsorted([3, 5, 9], y[order]).tolist()
    assert torch.equal(pools.x, torch.as_tensor(x[order], dtype=torch.float32))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("location", "location/data_complete.npz"),
        ("purchase100", "purchase100/dataset_purchase"),
        ("texas100", "texas100/feats"),
        ("cinic10", "cinic10/train"),
    ],
)
def test_missing_files_are_named_in_the_error(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(WememError, match="not found") as error:
        load_dataset(name, tmp_path, SEED)
    assert str(tmp_path / expected) in str(error.value)


def test_file_datasets_without_a_data_root_ask_for_one() -> None:
    with pytest.raises(WememError, match="--data-root"):
        load_dataset("location", None, SEED)


def test_wrong_feature_count_and_zero_based_labels_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "location").mkdir()
    path = tmp_path / "location" / "data_complete.npz"
    np.savez(path, x=np.zeros((4, 445)), y=np.array([1, 2, 3, 4]))
    with pytest.raises(WememError, match="446 features"):
        load_dataset("location", tmp_path, SEED)
    np.savez(path, x=np.zeros((4, 446)), y=np.array([0, 1, 2, 3]))
    with pytest.raises(WememError, match=r"labels 1\.\.30"):
        load_dataset("location", tmp_path, SEED)


def test_npz_without_x_and_y_names_the_arrays_found(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(WememError, match=r"'x' and 'y'.*\['features', 'labels'\]"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}", None, SEED)
