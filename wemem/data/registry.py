"""Datasets and the study splits of SPEC section 2.

All index sets refer to one in-memory pool: ``x[:n_train]`` is the training pool T (the index space of
mem-scores) and ``x[n_train:]`` is the test pool E. Small datasets stay as tensors; batches are index slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import WememError, require
from ..plugins import is_reference
from ..registry import Registry


@dataclass(frozen=True)
class Pools:
    """Training pool T followed by test pool E, as one tensor pair."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    n_train: int
    num_classes: int
    # indices into T of the samples a victim trained outside the tool learned from ([model] checkpoint); the
    # split then gives the victim exactly these, and keeps every other model's data and the targets out of them
    members: torch.Tensor | None = None
    # how a table became these tensors (wemem.data.custom.fit_encoding), stored with the study for apply
    encoding: dict | None = field(default=None, compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def train_indices(self) -> torch.Tensor:
        return torch.arange(self.n_train)

    @property
    def test_indices(self) -> torch.Tensor:
        return torch.arange(self.n_train, len(self.y))


@dataclass(frozen=True)
class DataOptions:
    """What a dataset string alone does not say: a table's label and member columns, whether the victim's
    members must be marked (a checkpoint replaces its pretraining), the folder plug-ins are imported from first,
    a stored table encoding to apply instead of fitting one, and the table columns left out of the features."""

    label: str | None = None
    member_column: str | None = None
    needs_members: bool = False
    base_dir: str | None = None
    encoding: dict | None = field(default=None, compare=False)
    exclude: tuple[str, ...] = ()


Loader = Callable[..., Pools]  # (root or path, seed) -> Pools; with takes_options also (..., DataOptions)
# installed packages' loaders are wrapped into Pools-returning ones by wemem.data.custom (Registry.adapt_installed)
DATASETS: Registry[Loader] = Registry("dataset", group="wemem.datasets")


def dataset_key(dataset: str) -> str:
    """The registry name of a dataset string: ``prefix:`` for ``prefix:PATH`` (the generic loaders, e.g.
    ``npz:`` for ``npz:data.npz``), the string itself for a named dataset (``digits``) or a plug-in
    (``package.module:loader``)."""
    if ":" in dataset and dataset.split(":", 1)[0] + ":" in DATASETS:
        return dataset.split(":", 1)[0] + ":"
    return dataset


def resolve_dataset_path(dataset: str, base: str) -> str:
    """``prefix:PATH`` with a relative PATH made absolute against ``base`` (the study file's folder)."""
    key = dataset_key(dataset)
    if key == dataset or not key.endswith(":"):
        return dataset
    path = Path(dataset[len(key) :])
    return dataset if path.is_absolute() else f"{key}{Path(base, path)}"


def is_plugin_dataset(dataset: str) -> bool:
    """A loader plug-in ``package.module:loader`` (not a registered name or prefix)."""
    return not dataset_key(dataset).endswith(":") and dataset not in DATASETS and is_reference(dataset)


def check_dataset_name(dataset: str) -> str:
    """``dataset`` when it can name a dataset (registered, ``prefix:PATH`` or an import path); else the
    unknown-name error listing every registered one."""
    if is_plugin_dataset(dataset) or dataset_key(dataset) in DATASETS:
        return dataset
    raise WememError(
        f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS.names())} (the ones ending in "
        f"':' take a path, e.g. csv:data.csv), or your own loader as package.module:loader"
    )


def seeded_permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def split_train_test(x: torch.Tensor, y: torch.Tensor, seed: int, name: str, test_fraction: float = 0.2) -> Pools:
    """For datasets without an official test split: seeded 80/20 split into T/E."""
    order = torch.as_tensor(seeded_permutation(len(y), seed))
    n_test = round(len(y) * test_fraction)
    n_train = len(y) - n_test
    y = y.long()
    return Pools(name, x[order].contiguous(), y[order].contiguous(), n_train, int(y.max()) + 1)


@DATASETS.register("digits")
def load_digits(_root: Path | None, seed: int) -> Pools:
    """scikit-learn's bundled 8x8 digits (1797 samples): the embedded default that needs no download."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0  # pixel counts 0..16 -> [0, 1]
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return split_train_test(x, y, seed, "digits")


# ---------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class ModelSplit:
    """One model's data: its members (train), model-selection set (dev) and non-members (test)."""

    train: torch.Tensor
    dev: torch.Tensor
    test: torch.Tensor


# Bump whenever make_study_split changes what an index set means: the version enters the cache key
# (wemem.config.ExperimentConfig.key), so splits, pretrained models and mem-scores cached under an older meaning
# are never reused. 2: the RMIA population is held out of E before the models' evaluation pools are formed.
# 3: no shadow's dev set holds a sample of the victim's test set (the victim's non-member targets).
SPLIT_VERSION = 3

POPULATION_FRACTION = 0.2  # of the test pool E, held out as RMIA's reference population
POPULATION_FLOOR = 300  # SPEC 9: "at least a few hundred"...
POPULATION_CAP = 0.5  # ...but never more than half of E, which also feeds every model's dev and test sets


@dataclass(frozen=True)
class StudySplit:
    victim: ModelSplit
    shadows: tuple[ModelSplit, ...]
    # RMIA's reference population (SPEC 9): held-out samples of E that no model trains on, selects checkpoints
    # on or is attacked on; empty only for splits built by hand (RMIA then refuses to run)
    population: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def models(self) -> list[tuple[str, ModelSplit]]:
        return [("victim", self.victim)] + [(f"shadow{k}", s) for k, s in enumerate(self.shadows)]

    def to_state(self) -> dict:
        """Plain tensors and lists, for ``torch.save(..., weights_only=True)`` caches."""
        as_dict = lambda s: {"train": s.train, "dev": s.dev, "test": s.test}  # noqa: E731
        return {
            "version": SPLIT_VERSION,
            "victim": as_dict(self.victim),
            "shadows": [as_dict(s) for s in self.shadows],
            "population": self.population,
        }

    @classmethod
    def from_state(cls, state: dict) -> StudySplit:
        require(
            state.get("version") == SPLIT_VERSION,
            f"cached split has version {state.get('version', 1)}, this code writes version {SPLIT_VERSION}; "
            "delete the cache directory (or use another --cache-dir) so the split is recomputed",
        )
        to_split = lambda d: ModelSplit(d["train"], d["dev"], d["test"])  # noqa: E731
        return cls(to_split(state["victim"]), tuple(to_split(s) for s in state["shadows"]), state["population"])


def population_size(test_pool_size: int) -> int:
    """How many samples of E are held out as RMIA's population: 20% of E, at least 300, at most half of E."""
    wanted = max(round(POPULATION_FRACTION * test_pool_size), POPULATION_FLOOR)
    return min(wanted, int(test_pool_size * POPULATION_CAP))


def _as_index_tensor(indices: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.sort(indices), dtype=torch.long)  # sorted for cache-friendly gathers


def _model_split(
    pool: np.ndarray,
    test_pool: np.ndarray,
    seed: int,
    train_fraction: float,
    dev_fraction: float,
    not_for_dev: np.ndarray | None = None,
) -> ModelSplit:
    """90% of ``pool`` trains the model; the rest of it plus ``test_pool`` splits 34% dev / 66% test. Samples of
    ``not_for_dev`` that would fall in the dev set are left out of it (and of the test set, which stays as it
    would be without them)."""
    pool = pool[seeded_permutation(len(pool), seed)]
    n_train = round(len(pool) * train_fraction)
    evaluation = np.concatenate([pool[n_train:], test_pool])
    evaluation = evaluation[seeded_permutation(len(evaluation), seed + 1_000_003)]
    n_dev = round(len(evaluation) * dev_fraction)
    dev = evaluation[:n_dev]
    if not_for_dev is not None:
        dev = dev[~np.isin(dev, not_for_dev)]
    return ModelSplit(_as_index_tensor(pool[:n_train]), _as_index_tensor(dev), _as_index_tensor(evaluation[n_dev:]))


def make_study_split(
    pools: Pools, seed: int = 7, shadows: int = 5, train_fraction: float = 0.9, dev_fraction: float = 0.34
) -> StudySplit:
    """SPEC section 2: T halves into victim pool V and shadow pool A; each model trains on 90% of its pool.

    First a seeded slice of E (see :func:`population_size`) is held out as RMIA's population (SPEC 9). The
    victim's evaluation pool (rest of V plus the rest of E) splits 34% dev / 66% test; shadow k does the same
    with its pool A permuted by seed + k, leaving the victim's test samples out of its dev set. Shadows never
    see victim members and never select checkpoints on victim non-members; no model sees the population.
    With marked members (a victim trained outside the tool, :attr:`Pools.members`), V is exactly the members and
    the victim trains on all of them; A is the rest of T, which holds none of them.
    """
    require(shadows >= 1, f"shadows must be >= 1 (got {shadows}); adaptive attacks need at least one shadow model")
    if pools.members is not None:
        victim_pool = pools.members.numpy()
        rest = np.setdiff1d(np.arange(pools.n_train), victim_pool)
        shadow_pool, victim_train_fraction = rest[seeded_permutation(len(rest), seed)], 1.0
    else:
        order = seeded_permutation(pools.n_train, seed)
        half = pools.n_train // 2
        victim_pool, shadow_pool, victim_train_fraction = order[:half], order[half:], train_fraction
    test_pool = pools.n_train + seeded_permutation(len(pools.y) - pools.n_train, seed + 2_000_003)
    n_population = population_size(len(test_pool))
    population, test_pool = test_pool[:n_population], test_pool[n_population:]
    victim = _model_split(victim_pool, test_pool, seed, victim_train_fraction, dev_fraction)
    # a shadow selects its checkpoints on its dev set: never on the victim's non-members, which the attacks score
    # (selected on them, the shadows would fit those very samples, so their OUT outputs on the victim's
    # non-member targets would not be those of unseen samples). They are dropped, not moved to the shadow's test
    # set, so what the attacks fit on (the shadows' test sets) stays as it was.
    shadow_splits = tuple(
        _model_split(shadow_pool, test_pool, seed + k, train_fraction, dev_fraction, victim.test.numpy())
        for k in range(shadows)
    )
    return StudySplit(victim, shadow_splits, _as_index_tensor(population))
