"""Mem-score import never attaches scores to the wrong samples (issue 11 item 2).

Each tabular dataset is written in its real file layout (as in test_loaders.py). A CSV of the right length whose
row order cannot be verified is refused, naming why; a CSV we exported is verified against the training pool it
was computed on, so one from another seed (another order of T) is refused and one from the same is accepted.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wemem.assets import import_memscores, memscore_path
from wemem.config import ExperimentConfig
from wemem.data import load_dataset
from wemem.errors import WememError
from wemem.memscore import (
    ORDER_TAG,
    memscore_file_fingerprint,
    read_memscores_csv,
    training_pool_fingerprint,
    write_memscores_csv,
)


def one_hot_rows(labels: np.ndarray, features: int) -> np.ndarray:
    x = np.zeros((len(labels), features), dtype=np.int64)
    x[np.arange(len(labels)), labels - 1] = 1
    return x


def write_location(root: Path, labels: np.ndarray) -> None:
    (root / "location").mkdir()
    np.savez(root / "location" / "data_complete.npz", x=one_hot_rows(labels, 446), y=labels)


def write_purchase100(root: Path, labels: np.ndarray) -> None:
    (root / "purchase100").mkdir()
    rows = np.column_stack([labels, one_hot_rows(labels, 600)])
    np.savetxt(root / "purchase100" / "dataset_purchase", rows, fmt="%d", delimiter=",")


def write_texas100(root: Path, labels: np.ndarray) -> None:
    (root / "texas100").mkdir()
    np.savetxt(root / "texas100" / "feats", one_hot_rows(labels, 6169), fmt="%d", delimiter=",")
    np.savetxt(root / "texas100" / "labels", labels, fmt="%d")


TABULAR = {"location": write_location, "purchase100": write_purchase100, "texas100": write_texas100}


@pytest.fixture(params=sorted(TABULAR))
def tabular(request, tmp_path: Path) -> tuple[str, Path]:
    labels = np.arange(20) % 30 + 1  # 20 samples: |T| = 16 after the 80/20 split
    (tmp_path / "data").mkdir()
    TABULAR[request.param](tmp_path / "data", labels)
    return request.param, tmp_path


def config_for(dataset: str, root: Path, seed: int = 7) -> ExperimentConfig:
    return ExperimentConfig(dataset=dataset, data_root=str(root / "data"), seed=seed)


def file_order_csv(path: Path, n: int) -> Path:
    """A foreign CSV of the right length in the public layout (header ',0'), rows in the data file's order."""
    pd.DataFrame({"0": np.linspace(0, 1, n)}).to_csv(path)
    return path


def test_a_foreign_csv_of_the_right_length_is_refused_unless_its_order_is_vouched_for(tabular):
    dataset, tmp = tabular
    config = config_for(dataset, tmp)
    n_train = load_dataset(dataset, tmp / "data", 7).n_train
    foreign = file_order_csv(tmp / "foreign.csv", n_train)
    with pytest.raises(WememError, match="order cannot be verified"):
        import_memscores(config, tmp / "cache", foreign)
    with pytest.raises(WememError, match=rf"reference implementation's rows for '{dataset}' are not in our"):
        import_memscores(config, tmp / "cache", foreign, order="reference")
    assert not memscore_path(config, tmp / "cache").exists()  # nothing installed
    scores = import_memscores(config, tmp / "cache", foreign, order="ours")  # the caller vouches for our order
    assert scores.numpy() == pytest.approx(np.linspace(0, 1, n_train))


def test_our_export_is_verified_against_the_training_pool_it_was_computed_on(tabular):
    dataset, tmp = tabular
    seed7, seed8 = config_for(dataset, tmp, 7), config_for(dataset, tmp, 8)
    pools7, pools8 = (load_dataset(dataset, tmp / "data", s) for s in (7, 8))
    assert pools7.n_train == pools8.n_train  # same length, different order of T: length alone proves nothing
    scores = np.linspace(0, 1, pools7.n_train)
    exported = tmp / "exported.csv"
    write_memscores_csv(scores, exported, training_pool_fingerprint(pools7))
    assert memscore_file_fingerprint(exported) == training_pool_fingerprint(pools7)
    assert read_memscores_csv(exported).numpy() == pytest.approx(scores)  # still the public layout
    for order in ("auto", "ours", "reference"):  # a verifiable header wins over any claim
        with pytest.raises(WememError, match="exported for another training pool order"):
            import_memscores(seed8, tmp / "cache", exported, order=order)
    assert import_memscores(seed7, tmp / "cache", exported).numpy() == pytest.approx(scores)


def test_the_order_header_leaves_the_public_layout_readable(tmp_path: Path):
    path = tmp_path / "scores.csv"
    write_memscores_csv(np.array([0.25, 1.0]), path, "0123456789abcdef")
    assert path.read_text().splitlines()[0] == f"{ORDER_TAG}0123456789abcdef,0"
    assert pd.read_csv(path, index_col=0)["0"].tolist() == [0.25, 1.0]  # how readers of the public CSVs read it
    write_memscores_csv(np.array([0.25, 1.0]), path)
    assert path.read_text().splitlines()[0] == ",0" and memscore_file_fingerprint(path) is None


def test_reference_csvs_are_accepted_where_the_reference_order_is_ours(tmp_path: Path):
    # CIFAR-10: T = the five training batches in file order, as torchvision (and the reference) read them
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, n in [(f"data_batch_{b}", 2) for b in range(1, 6)] + [("test_batch", 1)]:
        entry = {"data": np.zeros((n, 3072), np.uint8), "labels": [0] * n, "batch_label": "tiny"}
        (folder / name).write_bytes(pickle.dumps(entry))
    config = ExperimentConfig(dataset="cifar10", model="resnet18", data_root=str(tmp_path / "data"))
    scores = import_memscores(config, tmp_path / "cache", file_order_csv(tmp_path / "ref.csv", 10), order="reference")
    assert len(scores) == 10
