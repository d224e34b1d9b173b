"""Trial lifecycle on Optuna's own machinery: heartbeats, failing stale trials, retrying their settings.

A launcher asks trials with ``study.ask()`` and tells them from Ray Tune's loop, so Optuna's automatic heartbeat
thread (tied to ``study.optimize``) does not run; instead:

- :class:`TrialHeartbeats` calls ``storage.record_heartbeat`` for each of the launcher's RUNNING trials from one
  daemon thread (the database stamps the time, so launchers' clocks never matter);
- :func:`fail_dead_trials` runs ``optuna.storages.fail_stale_trials`` before each ask: a trial silent for longer
  than the storage's grace period is failed in one atomic RUNNING -> FAIL change (only one sweeper wins) and the
  storage's ``RetryHeartbeatStaleTrialCallback`` re-queues its setting with its retry history;
- a trial whose launcher process on *this* machine has exited is failed the same way at once, without waiting
  for the grace period. Optuna cannot know this; the process table can (see :func:`process_is_gone`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import warnings
from collections.abc import Iterable
from typing import TypedDict

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ._records import FAIL_REASON, PROCESS_ATTR, RUN_ATTRS
from ._urls import HEARTBEAT_INTERVAL_S

# We use Optuna's heartbeat API as its docs describe for ask/tell (record_heartbeat + fail_stale_trials); its
# notices that heartbeats are "supposed to be used with Study.optimize" and experimental are not for users.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class RetryInterruptedSetting(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, except that a trial that died before its setting was sampled is not re-queued.

    Such a trial has no setting to re-run: re-queuing it would add a trial with no parameters, which the next
    ask samples afresh, under the retry history of a setting that never existed. Warm-start and re-queued
    settings that were popped but not yet sampled keep their ``fixed_params`` and are retried.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not (trial.params or trial.system_attrs.get("fixed_params")):
            return
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in RUN_ATTRS}
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != PROCESS_ATTR}
        super().__call__(study, trial)


def retry_callback(max_retry: int) -> RetryInterruptedSetting:
    return RetryInterruptedSetting(max_retry=max_retry)


def retried_from(trial: FrozenTrial) -> int | None:
    """The trial number whose setting this trial re-runs (None for a fresh trial)."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


class TrialHeartbeats:
    """Records an Optuna heartbeat for each of this launcher's RUNNING trials every ``interval`` seconds."""

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float = HEARTBEAT_INTERVAL_S):
        self.storage, self.interval = storage, interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wemem-heartbeats", daemon=True)

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)  # at once: a trial without a heartbeat is never judged stale
        with self._lock:
            self._trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                trial_ids = list(self._trial_ids)
            for trial_id in trial_ids:
                # a passing storage error must not kill the launcher; the next beat retries
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)

    def __enter__(self) -> TrialHeartbeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


# ----------------------------------------------------------------------------- the launcher's process


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def _machine() -> dict[str, str | None]:
    """What identifies this machine and pid namespace: boot id (one per machine and boot, shared by its
    containers), the pid namespace (one per container) and the host name."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return {"host": socket.gethostname(), "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": namespace}


class ProcessIdentity(TypedDict):
    """A launcher process, as stored with the trials it runs (system attribute ``PROCESS_ATTR``)."""

    host: str | None
    boot: str | None
    pidns: str | None
    pid: int
    start: str | None


def process_identity() -> ProcessIdentity:
    machine = _machine()
    return ProcessIdentity(
        host=machine["host"],
        boot=machine["boot"],
        pidns=machine["pidns"],
        pid=os.getpid(),
        start=_start_ticks(os.getpid()),
    )


def process_is_gone(identity: ProcessIdentity | None) -> bool:
    """True only when the process certainly ran on this machine (same boot and pid namespace) and has exited.

    Anything uncertain (another machine, no /proc) is False: the heartbeat grace period decides instead.
    """
    if not identity or identity.get("boot") is None or identity.get("start") is None:
        return False
    if {k: identity.get(k) for k in ("host", "boot", "pidns")} != _machine():
        return False
    return _start_ticks(int(identity["pid"])) != identity["start"]


# ------------------------------------------------------------------------------------------ failing


def trial_id_of(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def fail_dead_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fail the RUNNING trials whose launcher is gone and re-queue their settings; return their numbers.

    Optuna's ``fail_stale_trials`` handles launchers anywhere (heartbeat older than the grace period, judged on
    the database clock); launchers of this machine whose process has exited are failed at once, through the
    same atomic state change and the same retry callback.
    """
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if not running:
        return []
    optuna.storages.fail_stale_trials(study)
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = trial_id_of(storage, study, trial.number)
        gone = process_is_gone(trial.system_attrs.get(PROCESS_ATTR)) and _fail_once(storage, trial_id)
        if gone and callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    now = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return [n for n in running if now.get(n) == TrialState.FAIL]


def _fail_once(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """RUNNING -> FAIL; False when another launcher finished or failed the trial first."""
    try:
        return storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def fail_with_reason(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int, reason: str) -> bool:
    """Record why the trial failed and fail it; False when a sweeper had already finished it (e.g. as stale)."""
    trial_id = trial_id_of(storage, study, number)
    try:
        storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return _fail_once(storage, trial_id)


def requeue(study: optuna.Study, storage: optuna.storages.RDBStorage, numbers: Iterable[int]) -> None:
    """Re-queue the settings of trials this launcher failed itself (interrupted), as a stale sweep would."""
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is None:
        return
    for number in numbers:
        callback(study, copy.deepcopy(storage.get_trial(trial_id_of(storage, study, number))))


# Why a RUNNING trial may have no launcher any more (see running_trial_health), for ``status`` and ``delete``
GONE = "its launcher on this machine has exited"
SILENT = "its launcher has sent no heartbeat within the grace period"


def running_trial_health(study: optuna.Study, storage: optuna.storages.RDBStorage) -> dict[int, str | None]:
    """Each RUNNING trial's number -> why its launcher is dead (GONE, SILENT), or None while it looks alive.

    The same judgement the sweep before each ask makes: Optuna's stale-trial query (heartbeat older than the
    grace period, on the database's clock; ``_get_stale_trial_ids`` is what ``fail_stale_trials`` itself calls)
    and this machine's process table. Reading it changes nothing.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return {}
    study_id = storage.get_study_id_from_name(study.study_name)
    stale = set(storage._get_stale_trial_ids(study_id))
    return {
        t.number: GONE
        if process_is_gone(t.system_attrs.get(PROCESS_ATTR))
        else SILENT
        if trial_id_of(storage, study, t.number) in stale
        else None
        for t in running
    }
