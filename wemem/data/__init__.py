"""Datasets and the study splits of SPEC section 2, by registry name.

Importing this package registers every built-in dataset: ``digits`` (:mod:`wemem.data.registry`) and the
file-based ones (:mod:`wemem.data.loaders`,
:mod:`wemem.data.mnist`).
"""

from . import loaders as _loaders  # noqa: F401  (registers the file-based datasets)
from . import mnist as _mnist  # noqa: F401  (registers mnist and mnist-small)
from .custom import MembershipColumnWarning, check_exclude_applies, load_dataset  # (and registers csv: and parquet:)
from .registry import (
    DATASETS,
    POPULATION_CAP,
    POPULATION_FLOOR,
    POPULATION_FRACTION,
    SPLIT_VERSION,
    DataOptions,
    Loader,
    ModelSplit,
    Pools,
    StudySplit,
    check_dataset_name,
    dataset_key,
    is_plugin_dataset,
    load_digits,
    make_study_split,
    population_size,
    resolve_dataset_path,
    seeded_permutation,
    split_train_test,
)

__all__ = [
    "DATASETS",
    "DataOptions",
    "MembershipColumnWarning",
    "check_dataset_name",
    "check_exclude_applies",
    "is_plugin_dataset",
    "resolve_dataset_path",
    "POPULATION_CAP",
    "POPULATION_FLOOR",
    "POPULATION_FRACTION",
    "SPLIT_VERSION",
    "Loader",
    "ModelSplit",
    "Pools",
    "StudySplit",
    "dataset_key",
    "load_dataset",
    "load_digits",
    "make_study_split",
    "population_size",
    "seeded_permutation",
    "split_train_test",
]
