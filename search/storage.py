"""Optuna studies in SQL storage: URLs, opening, the stored study definition, and the stale-trial sweep.

The storage is the single source of truth: the study definition lives in the study's user attributes (so
``resume`` needs only the name and the storage), and every trial carries its defense, settings and metrics.
"""

from __future__ import annotations

import json
import os
import threading
import time
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
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # two launchers creating the schema of an empty database at once: the loser retries and finds it
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
        except Exception as error:  # sqlalchemy/driver errors vary by backend
            reason = str(error).replace(url, redact(url)).splitlines()[0]
            raise WememError(f"cannot open storage {redact(url)}: {reason}. Check the URL (--storage or WEMEM_STORAGE), "
                             "that the server is running and reachable, and the credentials") from None
    raise AssertionError("unreachable")


def make_sampler(definition: StudyDefinition, creator: bool) -> optuna.samplers.BaseSampler:
    """The study's sampler. The launcher that creates a study is seeded by the study seed (reproducible); a
    resuming or concurrent launcher mixes in fresh entropy so it never replays another launcher's draws."""
    seed = definition.study.seed if creator else int.from_bytes(os.urandom(4), "little")
    if definition.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar keeps concurrent trials from all being proposed at the same point
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)


def make_pruner(definition: StudyDefinition) -> optuna.pruners.BasePruner:
    s = definition.search
    if s.early_stopping == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.early_stopping_startup_trials,
                                           n_warmup_steps=s.early_stopping_warmup_rounds)
    return optuna.pruners.NopPruner()


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def create_or_load_study(definition: StudyDefinition, storage: optuna.storages.RDBStorage,
                         extra_attrs: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """Create the study (storing its definition) or load it; refuse a stored study that differs."""
    directions = definition.objective_config().directions
    exists = definition.name in study_names(storage)
    if exists:
        _wait_for_definition(definition.name, storage)
        stored = stored_definition(definition.name, storage)
        if stored.model_dump() != definition.model_dump():
            raise WememError(f"study {definition.name!r} already exists in the storage with a different definition; "
                             f"use `wemem resume {definition.name}` to continue it, or rename [study] name")
        study = optuna.load_study(study_name=definition.name, storage=storage,
                                  sampler=make_sampler(definition, False), pruner=make_pruner(definition))
        if [d.name.lower() for d in study.directions] != directions:
            raise WememError(f"study {definition.name!r} is stored with directions "
                             f"{[d.name.lower() for d in study.directions]} but the file asks {directions}")
        return study, False
    try:
        study = optuna.create_study(study_name=definition.name, storage=storage, directions=directions,
                                    sampler=make_sampler(definition, True), pruner=make_pruner(definition))
    except optuna.exceptions.DuplicatedStudyError:  # another launcher created it a moment ago
        return create_or_load_study(definition, storage, extra_attrs)
    study.set_user_attr("definition", definition.model_dump(mode="json"))
    for key, value in extra_attrs.items():
        study.set_user_attr(key, value)
    return study, True


def _wait_for_definition(name: str, storage: optuna.storages.BaseStorage, timeout: float = 15.0) -> None:
    """A concurrent launcher creates the study and then stores its definition: give it a moment."""
    study_id = storage.get_study_id_from_name(name)
    deadline = time.monotonic() + timeout
    while "definition" not in storage.get_study_user_attrs(study_id) and time.monotonic() < deadline:
        time.sleep(0.2)


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
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(definition, False),
                              pruner=make_pruner(definition))
    return study, definition


HEARTBEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 30.0  # a launcher silent this long is dead: its RUNNING trials are swept
_HEARTBEAT_PREFIX = "wemem:heartbeat:"


class Heartbeat:
    """A launcher's liveness signal in the storage, refreshed by a daemon thread while trials run.

    Ray's ask/tell loop gets no Optuna heartbeat, so we keep our own: RUNNING trials carry their launcher's id
    (user attribute ``launcher``) and a sweep fails only the trials whose launcher has gone silent, so several
    live launchers can share one study.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_name: str, launcher_id: str,
                 interval: float = HEARTBEAT_INTERVAL_S):
        self.storage, self.launcher_id, self.interval = storage, launcher_id, interval
        self.study_id = storage.get_study_id_from_name(study_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wemem-heartbeat-{launcher_id}", daemon=True)

    def beat(self) -> None:
        self.storage.set_study_system_attr(self.study_id, _HEARTBEAT_PREFIX + self.launcher_id, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a transient storage error must not kill the launcher; the next beat retries
                pass

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)
        self.storage.set_study_system_attr(self.study_id, _HEARTBEAT_PREFIX + self.launcher_id, 0.0)


def stale_running_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                         stale_after: float = STALE_AFTER_S) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials whose launcher has not beaten for ``stale_after`` seconds (or never registered)."""
    beats = {k.removeprefix(_HEARTBEAT_PREFIX): v for k, v in
             storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name)).items()
             if k.startswith(_HEARTBEAT_PREFIX)}
    now = time.time()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        launcher = trial.user_attrs.get("launcher")
        if launcher is not None:
            last = beats.get(launcher, 0.0)
        else:  # asked but not yet tagged: judge by its start time
            last = trial.datetime_start.timestamp() if trial.datetime_start else 0.0  # naive local time
        if now - last >= stale_after:
            stale.append(trial)
    return stale


def sweep_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                       stale_after: float = STALE_AFTER_S) -> list[int]:
    """Fail the RUNNING trials a dead launcher left behind and re-queue their settings.

    The re-queued copy (WAITING) is picked up first by the next ``study.ask()``; it records where it came from.
    """
    swept = []
    for trial in stale_running_trials(study, storage, stale_after):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
        swept.append(trial.number)
    return swept


ACTIVE_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def active_count(study: optuna.Study) -> int:
    """Trials that use the study's budget: finished (COMPLETE, PRUNED) or running."""
    return len(study.get_trials(deepcopy=False, states=ACTIVE_STATES))


def to_json(value: Any) -> Any:
    """Round-trip through JSON so user attributes hold plain types."""
    return json.loads(json.dumps(value, default=float))
