"""Optuna studies in SQL storage: URLs, opening, the stored study definition, and the stale-trial sweep.

The storage is the single source of truth: the study definition lives in the study's user attributes (so
``resume`` needs only the name and the storage), and every trial carries its defense, settings and metrics.
"""

from __future__ import annotations

import json
import os
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from wemem.errors import WememError

from .config import StudyDefinition, parse_study

DEFAULT_STORAGE = "sqlite:///wemem.db"
SQLITE_LOCK_TIMEOUT_S = 60  # parallel trials tell results concurrently; the default 5 s lock timeout is too short


def storage_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("WEMEM_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with any password masked, safe for logs, exports and reports."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy understands: show only the scheme
        return url.split("://", 1)[0] + "://***"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as error:  # sqlalchemy/driver errors vary by backend
        reason = str(error).replace(url, redact(url)).splitlines()[0]
        raise WememError(f"cannot open storage {redact(url)}: {reason}. Check the URL (--storage or WEMEM_STORAGE), "
                         "that the server is running and reachable, and the credentials") from None


def make_sampler(definition: StudyDefinition, offset: int = 0) -> optuna.samplers.BaseSampler:
    seed = definition.study.seed + offset  # a resumed launcher must not replay the first launcher's draws
    if definition.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar keeps concurrent trials from all being proposed at the same point
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def create_or_load_study(definition: StudyDefinition, storage: optuna.storages.RDBStorage,
                         extra_attrs: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study (storing its definition) or load it; refuse a stored study that differs."""
    directions = definition.objective_config().directions
    exists = definition.name in study_names(storage)
    if exists:
        stored = stored_definition(definition.name, storage)
        if stored.model_dump() != definition.model_dump():
            raise WememError(f"study {definition.name!r} already exists in the storage with a different definition; "
                             f"use `wemem resume {definition.name}` to continue it, or rename [study] name")
        study = optuna.load_study(study_name=definition.name, storage=storage,
                                  sampler=make_sampler(definition, len(study_trials(storage, definition.name))))
        if [d.name.lower() for d in study.directions] != directions:
            raise WememError(f"study {definition.name!r} is stored with directions "
                             f"{[d.name.lower() for d in study.directions]} but the file asks {directions}")
        return study, False
    study = optuna.create_study(study_name=definition.name, storage=storage, directions=directions,
                                sampler=make_sampler(definition))
    study.set_user_attr("definition", definition.model_dump(mode="json"))
    for key, value in extra_attrs.items():
        study.set_user_attr(key, value)
    return study, True


def study_trials(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    study_id = storage.get_study_id_from_name(name)
    return storage.get_all_trials(study_id, deepcopy=False)


def stored_definition(name: str, storage: optuna.storages.BaseStorage) -> StudyDefinition:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        known = study_names(storage)
        raise WememError(f"no study named {name!r} in this storage; known studies: {', '.join(known) or 'none'}. "
                         "Launch it with `wemem launch STUDY.toml` or pass the right --storage") from None
    attrs = storage.get_study_user_attrs(study_id)
    if "definition" not in attrs:
        raise WememError(f"study {name!r} was not created by wemem (it has no stored definition)")
    return parse_study(attrs["definition"], f"(stored definition of study {name!r})")


def load_study(name: str, storage: optuna.storages.RDBStorage) -> tuple[optuna.Study, StudyDefinition]:
    definition = stored_definition(name, storage)
    sampler = make_sampler(definition, len(study_trials(storage, name)))
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler), definition


def sweep_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials a dead launcher left behind and re-queue their settings.

    Ray's ask/tell loop gets no Optuna heartbeat, so a killed launcher leaves trials RUNNING forever. The
    re-queued copy (WAITING) is picked up first by the next ``study.ask()``.
    """
    swept = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
        swept.append(trial.number)
    return swept


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def to_json(value: Any) -> Any:
    """Round-trip through JSON so user attributes hold plain types."""
    return json.loads(json.dumps(value, default=float))
