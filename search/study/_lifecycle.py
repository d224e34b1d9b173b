"""Opening studies: create or load one with its sampler and pruner, refuse a stored study that differs from its
file, and open a stored one as an :class:`~.place.OpenStudy` (reading commands never create anything)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from wemem.errors import WememError

from ..storage._records import has_definition, migrate, store_new_study, stored_definition, study_names
from ..studyfile import StudyDefinition
from ._place import OpenStudy, Options, Place


def startup_trials(n_trials: int) -> int:
    """Random trials before a model-based sampler takes over: a quarter of the budget, 2 to 10, so a small study
    that enqueues a few defaults still leaves trials for the model."""
    return max(2, min(10, round(n_trials / 4)))


def make_sampler(definition: StudyDefinition, creator: bool) -> optuna.samplers.BaseSampler:
    """The study's sampler (``[study] sampler``, part of the study's identity). The launcher that creates a
    study is seeded by the study seed (reproducible); a resuming or concurrent launcher mixes in fresh entropy
    so it never replays another launcher's draws.

    - ``tpe``: multivariate TPE with ``group=True``: the defense is a categorical parameter and each defense's
      settings exist only under it, so TPE models each defense's settings jointly within its own group instead
      of as independent one-dimensional densities; ``constant_liar`` keeps concurrent trials apart;
    - ``gp``: Optuna's GPSampler (Gaussian process, log-EI), for small budgets of expensive trials; parameters
      outside the group it models are sampled independently;
    - ``nsgaii``: NSGA-II, for ``pareto`` studies, with a population of a quarter of the budget (4 to 50);
    - ``random``: the baseline every other sampler must beat.
    """
    seed = definition.study.seed if creator else int.from_bytes(os.urandom(4), "little")
    name, budget = definition.study.sampler, definition.study.n_trials
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=startup_trials(budget), warn_independent_sampling=False
        )
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, round(budget / 4))))
    with warnings.catch_warnings():  # multivariate/group are marked experimental in some Optuna releases
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, n_startup_trials=startup_trials(budget), multivariate=True, group=True
        )


def make_pruner(definition: StudyDefinition) -> optuna.pruners.BasePruner:
    """The study's pruner: early stopping's median pruner on per-round values, racing's on per-instance values
    (the two exclude each other), or none."""
    s = definition.search
    if s.early_stopping == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=s.early_stopping_startup_trials, n_warmup_steps=s.early_stopping_warmup_rounds
        )
    min_instances = definition.racing_instances().judged_from
    if s.racing == "wilcoxon":
        with warnings.catch_warnings():  # marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=s.racing_p_threshold, n_startup_steps=min_instances)
    if s.racing == "halving":
        # the step is the instance index, so the first rung judges a trial after racing_min_instances instances
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_instances - 1, reduction_factor=s.racing_reduction_factor
        )
    return optuna.pruners.NopPruner()


def refuse_conflicting(definition: StudyDefinition, storage: optuna.storages.RDBStorage) -> bool:
    """Whether the study exists; refuses (WememError naming every differing key) one stored with another
    definition. Reads only, so a launcher can check before it starts anything."""
    if definition.name not in study_names(storage):
        return False
    _wait_for_definition(definition.name, storage)
    differences = definition_differences(stored_definition(definition.name, storage), definition)
    if differences:
        raise WememError(
            f"study {definition.name!r} already exists in the storage with a different definition "
            f"({'; '.join(differences)}); use `wemem resume {definition.name}` to continue it, "
            "rename [study] name, or delete the stored study with "
            f"`wemem delete {definition.name} --yes`"
        )
    return True


def create_or_load_study(
    definition: StudyDefinition, storage: optuna.storages.RDBStorage, extra_attrs: Mapping[str, object]
) -> tuple[optuna.Study, bool]:
    """Create the study (storing its schema version and definition) or load it, brought to today's shape
    (:func:`~search.storage._records.migrate`: a launch writes to it); refuse a stored study that differs."""
    directions = definition.objective_config().directions
    if refuse_conflicting(definition, storage):
        study = optuna.load_study(
            study_name=definition.name,
            storage=storage,
            sampler=make_sampler(definition, False),
            pruner=make_pruner(definition),
        )
        if [d.name.lower() for d in study.directions] != directions:
            raise WememError(
                f"study {definition.name!r} is stored with directions "
                f"{[d.name.lower() for d in study.directions]} but the file asks {directions}"
            )
        migrate(study)
        return study, False
    try:
        study = optuna.create_study(
            study_name=definition.name,
            storage=storage,
            directions=[StudyDirection[d.upper()] for d in directions],
            sampler=make_sampler(definition, True),
            pruner=make_pruner(definition),
        )
    except optuna.exceptions.DuplicatedStudyError:  # another launcher created it a moment ago
        return create_or_load_study(definition, storage, extra_attrs)
    store_new_study(study, definition)
    for key, value in extra_attrs.items():
        study.set_user_attr(key, value)
    return study, True


def withdraw_new_study(study: optuna.Study, storage: optuna.storages.RDBStorage, new_file: Path | None) -> None:
    """Undo what a refused launch created: the study, while it holds nothing but its definition and the settings
    the launch enqueued (a trial in any other state is work to keep), then ``new_file``, the SQLite file the
    launch created, when no study is left in it."""
    if any(trial.state != TrialState.WAITING for trial in study.get_trials(deepcopy=False)):
        return
    optuna.delete_study(study_name=study.study_name, storage=storage)
    if new_file is not None and not storage.get_all_studies():
        storage.engine.dispose()
        new_file.unlink(missing_ok=True)


# Where and how a study runs, not what it computes: a launcher may join with other resources (a GPU machine
# joining a study made on a CPU machine) or another path to the same data.
NOT_IDENTITY = {("resources",), ("data", "data_root"), ("search", "trial_timeout_s")}


def _flatten(value: object, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    if isinstance(value, dict):
        flat: dict[tuple[str, ...], object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, (*prefix, str(key))))
        return flat
    return {prefix: value}


def definition_differences(stored: StudyDefinition, given: StudyDefinition) -> list[str]:
    """``section.key: stored X, file Y`` for every identity key that differs."""
    a, b = _flatten(stored.model_dump(mode="json")), _flatten(given.model_dump(mode="json"))
    differences = []
    for key in sorted(set(a) | set(b)):
        if any(key[: len(skip)] == skip for skip in NOT_IDENTITY) or a.get(key) == b.get(key):
            continue
        differences.append(f"{'.'.join(key)}: stored {a.get(key)!r}, file {b.get(key)!r}")
    return differences


def _wait_for_definition(name: str, storage: optuna.storages.BaseStorage, timeout: float = 15.0) -> None:
    """A concurrent launcher creates the study and then stores its definition: give it a moment."""
    deadline = time.monotonic() + timeout
    while not has_definition(storage, name) and time.monotonic() < deadline:
        time.sleep(0.2)


def load_study(name: str, storage: optuna.storages.RDBStorage) -> tuple[optuna.Study, StudyDefinition]:
    definition = stored_definition(name, storage)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(definition, False), pruner=make_pruner(definition)
    )
    return study, definition


def open_study(name: str, options: Options) -> OpenStudy:
    """A stored study for reading (status, export, report, confirm): never creates a storage or a study."""
    storage = options.open_storage(must_exist=True)
    study, definition = load_study(name, storage)
    return OpenStudy(study, definition, storage, Place.of(options, study))
