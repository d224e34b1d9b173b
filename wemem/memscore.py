"""Mem-scores (SPEC section 6): Feldman-style memorization estimated with complementary pairs of models.

Each of M/2 pairs splits T by a seeded permutation into two halves and trains one model per half, so every
sample is IN for exactly M/2 models and OUT for M/2. m_i = mean true-class probability over IN models minus
the mean over OUT models, min-max scaled to [0, 1] over T.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from .config import ExperimentConfig
from .data import Pools, seeded_permutation
from .errors import WememError
from .files import csv_text, write_atomically
from .parallel import MapFn, job_seed, serial_map
from .training import TrainConfig, make_adam, on_training_device, place_model, predict_log_probs, train_round


def pair_halves(n: int, seed: int, pair: int) -> tuple[np.ndarray, np.ndarray]:
    order = seeded_permutation(n, seed * 7919 + pair)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def memscore_job(config: ExperimentConfig, pools: Pools, pair: int, half: int) -> np.ndarray:
    """Train the model of one half of one pair; return its true-class probability on every sample of T."""
    pools = on_training_device(pools)
    return half_probabilities(lambda: config.new_model(pools), config.train, config.seed, pools, pair, half)


def half_probabilities(
    new_model: Callable[[], nn.Module], train: TrainConfig, seed: int, pools: Pools, pair: int, half: int
) -> np.ndarray:
    """Train a fresh ``new_model()`` on one half of one pair of T (early stopping on E, which no mem-score model
    trains on); return its true-class probability on every sample of T."""
    from .defenses.base import Defense, DefenseContext, NoSettings

    train_rows = torch.as_tensor(pair_halves(pools.n_train, seed, pair)[half])
    dev = pools.test_indices
    job = job_seed(seed, "memscore", 2 * pair + half)
    torch.manual_seed(job)
    model = place_model(new_model(), pools.x.device, train)
    defense = Defense[NoSettings]()  # plain fine-tuning
    defense.bind(DefenseContext(pools, train_rows, dev, None, train, job))
    result = train_round(
        model,
        make_adam(model, train),
        pools,
        dev,
        defense,
        None,
        train.pretrain_epochs,
        train.patience,
        torch.Generator().manual_seed(job),
    )
    model.load_state_dict(result.best_state)
    log_probs = predict_log_probs(model, pools, pools.train_indices)
    labels = pools.y[: pools.n_train]
    return log_probs.gather(1, labels.view(-1, 1)).exp().squeeze(1).cpu().numpy()


def combine_memscores(probabilities: np.ndarray, in_masks: np.ndarray) -> np.ndarray:
    """m_i = mean over IN models - mean over OUT models, min-max scaled to [0, 1].

    probabilities, in_masks: [models, n]; every sample must be IN for at least one model and OUT for one.
    """
    in_masks = in_masks.astype(bool)
    n_in, n_out = in_masks.sum(0), (~in_masks).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError("every sample must be IN for some model and OUT for some model")
    raw = (probabilities * in_masks).sum(0) / n_in - (probabilities * ~in_masks).sum(0) / n_out
    span = raw.max() - raw.min()
    return (raw - raw.min()) / span if span > 0 else np.zeros_like(raw)


def compute_memscores(config: ExperimentConfig, pools: Pools, map_fn: MapFn = serial_map) -> torch.Tensor:
    """Train the M models as parallel jobs (each receives the dataset as an argument) and combine them."""
    jobs = [(config, pools, pair, half) for pair in range(config.memscore_models // 2) for half in (0, 1)]
    return memscores_of_pairs(np.stack(map_fn(memscore_job, jobs)), pools.n_train, config.seed)


def memscores_of_pairs(probabilities: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """The mem-scores of T from the true-class probabilities of its pair models, one row per model in the order
    pair 0 half 0, pair 0 half 1, pair 1 half 0, ..."""
    in_masks = np.zeros_like(probabilities, dtype=bool)
    for row in range(len(probabilities)):
        pair, half = divmod(row, 2)
        in_masks[row, pair_halves(n, seed, pair)[half]] = True
    return torch.as_tensor(combine_memscores(probabilities, in_masks), dtype=torch.float32)


# ----------------------------------------------------------------------------------------- CSV layout


ORDER_TAG = "wemem-order:"  # first header cell of a CSV we export: names the T order its rows follow

# Datasets whose training pool T is, in the public reference implementation, ordered as ours: the official
# training batches in file order (torchvision's CIFAR loader reads them the same way). Its CSVs for these can be
# imported with ``order="reference"``.
REFERENCE_ORDER_IS_OURS = frozenset({"cifar10", "cifar100"})
# Datasets with public reference CSVs whose T order differs from ours: the reason, for the refusal.
REFERENCE_ORDER_DIFFERS = {
    "location": "our T is a seeded 80/20 permutation of data_complete.npz (wemem.data.split_train_test)",
    "purchase100": "our T is a seeded 80/20 permutation of dataset_purchase (wemem.data.split_train_test)",
    "texas100": "our T is a seeded 80/20 permutation of feats/labels (wemem.data.split_train_test)",
    "cinic10": "our T is the train/ folder in ImageFolder order; the reference orders its pool differently",
}
ImportOrder = Literal["auto", "ours", "reference"]


def training_pool_fingerprint(pools: Pools) -> str:
    """A hash of T's samples and labels in order: equal exactly when row i is the same sample in both."""
    digest = hashlib.sha256()
    digest.update(pools.y[: pools.n_train].cpu().numpy().astype(np.int64).tobytes())
    digest.update(pools.x[: pools.n_train].cpu().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def memscores_csv_text(scores: torch.Tensor | np.ndarray, fingerprint: str | None = None) -> str:
    """The public layout: header ``,0`` then ``index,score`` rows, one per sample of T in order.

    With ``fingerprint`` (see :func:`training_pool_fingerprint`) the header's first, otherwise empty, cell reads
    ``wemem-order:<fingerprint>``, so an import can verify the rows follow the same T order; readers of the
    public layout (``index_col=0``, column ``0``) are unaffected.
    """
    import pandas as pd  # imported when a file is written or read: every Ray worker imports this module

    frame = pd.DataFrame({"0": np.asarray(scores, dtype=np.float64)})
    return csv_text(frame, index=True, index_label=None if fingerprint is None else ORDER_TAG + fingerprint)


def write_memscores_csv(scores: torch.Tensor | np.ndarray, path: str | Path, fingerprint: str | None = None) -> bool:
    """Write :func:`memscores_csv_text` atomically; returns whether an existing file was replaced."""
    return write_atomically(path, memscores_csv_text(scores, fingerprint))


# Files saved by spreadsheet programs (Excel's "CSV UTF-8") start with a byte-order mark: read through it, or the
# order header would read as "\ufeffwemem-order:..." and the file as one without a header.
CSV_ENCODING = "utf-8-sig"


def memscore_file_fingerprint(path: str | Path) -> str | None:
    """The T fingerprint a CSV's header names, or None for a file without one (e.g. the reference's)."""
    with Path(path).open(encoding=CSV_ENCODING) as handle:
        first_cell = handle.readline().split(",", 1)[0].strip()
    return first_cell[len(ORDER_TAG) :] if first_cell.startswith(ORDER_TAG) else None


def check_memscore_order(path: str | Path, pools: Pools, dataset: str, order: ImportOrder = "auto") -> None:
    """Refuse a mem-score CSV whose rows cannot be shown to follow this dataset's T order.

    A file we exported names the T it was computed on; it must match this dataset and seed exactly. A file
    without that header is accepted only when the caller vouches for its order: ``ours`` (the rows follow
    wemem's T for this dataset and seed) or ``reference`` (the public reference's CSV, for datasets whose
    reference order equals ours). Lengths alone prove nothing: the reference's CSVs for Location, Purchase100,
    Texas100 and CINIC-10 have as many rows as our T, in another order.
    """
    fingerprint = memscore_file_fingerprint(path)
    expected = training_pool_fingerprint(pools)
    if fingerprint is not None:
        if fingerprint != expected:
            raise WememError(
                f"mem-score file {path} was exported for another training pool order (header "
                f"{ORDER_TAG}{fingerprint}, this dataset and seed give {ORDER_TAG}{expected}): its rows "
                f"would be attached to the wrong samples; export it again with the same dataset, seed "
                f"and data, or compute the scores with `wemem memscore compute`"
            )
        return
    if order == "ours":
        return
    if order == "reference":
        if dataset in REFERENCE_ORDER_IS_OURS:
            return
        reason = REFERENCE_ORDER_DIFFERS.get(dataset, "no public reference CSV follows wemem's order of this dataset")
        raise WememError(
            f"mem-score file {path}: the reference implementation's rows for {dataset!r} are not in "
            f"our training-pool order ({reason}), so they would be attached to the wrong samples; "
            f"compute the scores with `wemem memscore compute` instead (reference CSVs are accepted "
            f"for {', '.join(sorted(REFERENCE_ORDER_IS_OURS))})"
        )
    raise WememError(
        f"mem-score file {path} has no '{ORDER_TAG}' header, so its row order cannot be verified: "
        f"pass --order reference for the reference implementation's public CSV (accepted for "
        f"{', '.join(sorted(REFERENCE_ORDER_IS_OURS))}), or --order ours if its rows follow wemem's "
        f"training pool for this dataset and seed (as `wemem memscore export` writes them)"
    )


def read_memscores_csv(path: str | Path, expected_length: int | None = None) -> torch.Tensor:
    path = Path(path)
    if not path.exists():
        raise WememError(
            f"mem-score file {path} does not exist; compute it with `wemem memscore compute` or fix the path"
        )
    import pandas as pd

    try:
        frame = pd.read_csv(path, index_col=0, encoding=CSV_ENCODING)
    except Exception as error:  # pandas raises several parser errors
        raise WememError(f"mem-score file {path} is not a CSV of `index,score` rows: {error}") from None
    if frame.shape[1] != 1:
        raise WememError(
            f"mem-score file {path} must have exactly one score column (header ',0'), found {frame.shape[1]}"
        )
    values = pd.to_numeric(frame.iloc[:, 0], errors="coerce").to_numpy(dtype=np.float64)
    if expected_length is not None and len(values) != expected_length:
        raise WememError(
            f"mem-score file {path} has {len(values)} scores but the training pool has "
            f"{expected_length} samples; recompute the scores for this dataset and seed"
        )
    if np.isnan(values).any():
        bad = int(np.flatnonzero(np.isnan(values))[0])
        raise WememError(
            f"mem-score file {path} has a missing or non-numeric score at row {bad}; every sample needs a score"
        )
    if (values < 0).any() or (values > 1).any():
        raise WememError(f"mem-score file {path} has scores outside [0, 1]; mem-scores must be min-max scaled")
    if not np.array_equal(frame.index.to_numpy(), np.arange(len(values))):
        raise WememError(f"mem-score file {path} rows must be indexed 0..{len(values) - 1} in order")
    return torch.tensor(values, dtype=torch.float32)
