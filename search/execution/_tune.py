"""Running a study's trials through Ray Tune: Optuna proposes settings, Tune runs them, the storage records all.

We use a small Tune ``Searcher`` of our own instead of ``ray.tune.search.optuna.OptunaSearch`` because the
storage must stay truthful: we record constraints with ``trial.set_constraint``, store per-attack metrics as
user attributes, tell failures as FAIL with their reason, and keep Optuna's trial numbers in Tune's configs --
none of which OptunaSearch does (it also re-creates the study and drops constraints).

Lifecycle (see :mod:`search.storage._heartbeat`): every trial this launcher runs carries Optuna heartbeats; dead
launchers' trials are failed and their settings re-queued before each ask; a launcher ends only when the study
holds its budget of finished trials and no trial of a dead launcher is left RUNNING.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from objectives import ObjectiveConfig, Reference
from wemem.assets import Echo
from wemem.faults import failpoint

from ..storage._heartbeat import (
    TrialHeartbeats,
    fail_dead_trials,
    fail_with_reason,
    process_identity,
    requeue,
    trial_id_of,
)
from ..storage._records import (
    DEFENSE_ATTR,
    LAUNCHER_ATTR,
    PROCESS_ATTR,
    SURPLUS_ATTR,
    store_pruning,
    store_setting,
)
from ..storage._urls import HEARTBEAT_INTERVAL_S
from ..study import RACING_ATTR, OpenStudy, active_count, racing_evidence, racing_judges, racing_value, running_numbers
from ..studyfile import PRUNING, suggest_pruning, suggest_setting
from ._cluster import task_share, trial_bundles
from ._jobs import Shipped
from ._trainable import OUTCOME_KEY, TrialConfig, TrialReport, trial_trainable


class Progress:
    """Trials done of total, best so far, elapsed and remaining time -- one line per finished trial."""

    def __init__(self, total: int, echo: Echo, objective: ObjectiveConfig | None = None):
        self.total, self.echo = total, echo
        self.done, self.start = 0, time.perf_counter()
        self.best: float | None = None
        self.objective = objective

    def update(
        self,
        number: int,
        state: str,
        values: list[float] | None,
        attrs: Mapping[str, object],
        reason: str | None = None,
    ) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / self.done * max(self.total - self.done, 0)
        detail = f"({reason})" if reason else ""
        if values is not None:
            detail = (
                f"{attrs.get(DEFENSE_ATTR)} acc={attrs.get('utility', float('nan')):.3f} "
                f"attack={attrs.get('privacy', float('nan')):.3f} ({attrs.get('strongest_attack')})"
            )
            if len(values) == 1 and attrs.get("feasible", True):
                self.best = values[0] if self.best is None else min(self.best, values[0])
        best = "" if self.best is None else f" {best_text(self.best, self.objective)}"
        self.echo(
            f"[{self.done}/{self.total}] trial {number} {state} {detail}{best} "
            f"elapsed {elapsed:.0f}s, ~{remaining:.0f}s left"
        )


def best_text(best: float, objective: ObjectiveConfig | None) -> str:
    """The best feasible value so far as a user reads it: a leakage_cap study stores the test error 1 - U, so its
    best is stated as the accuracy it stands for, under the cap it was found under."""
    if objective is not None and objective.mode == "leakage_cap":
        return f"best acc={1 - best:.4f} under cap {objective.max_leakage:g}"
    return f"best={best:.4f}"


def invalid_numbers(report: TrialReport) -> list[str]:
    """The objective values and constraint of a trial's report that are not finite numbers, named (the report
    arrives as JSON, so a value may be anything)."""
    named = [(f"value {i}", v) for i, v in enumerate(report.values)] + [("constraint", report.constraint)]
    return [
        f"{name} = {value}"
        for name, value in named
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value))
    ]


# told of each trial this launcher finished (told, failed or pruned), once it is in the storage: its number and,
# when the trial reported them, its per-target scores (see _trainable.scores_archive). It must not raise: the
# Tune run goes on after it.
TrialObserver = Callable[[int, bytes | None], None]


class StudySearcher(Searcher):
    """Proposes Tune configs with ``study.ask()`` and tells the study every outcome.

    The budget is shared through the storage: the study should reach ``target_total`` active trials (finished
    or running) counted over every launcher, so several launchers on one study stop together.
    """

    def __init__(
        self,
        opened: OpenStudy,
        target_total: int,
        launcher_id: str,
        heartbeats: TrialHeartbeats,
        progress: Progress,
        echo: Echo,
        on_finished: TrialObserver | None = None,
    ):
        super().__init__(metric=None, mode=None)
        self.study, self.storage, self.definition = opened.study, opened.storage, opened.definition
        self.target_total = target_total
        self.launcher_id, self.heartbeats, self.progress, self.echo = launcher_id, heartbeats, progress, echo
        self.on_finished = on_finished
        self.pending: dict[str, optuna.Trial] = {}
        # every trial this launcher asked and has not told or failed yet, by number: an interrupt fails them all,
        # whether Tune holds them (pending) or not (asked a moment ago, their setting perhaps not yet sampled)
        self.asked: dict[int, optuna.Trial] = {}
        self.pruned: set[str] = set()  # Tune trials stopped because Optuna's pruner pruned them
        self.swept: list[int] = []  # trials of dead launchers this searcher failed (their settings re-queued)

    # Ray Tune pickles the searcher into its experiment folder (tuner.pkl). The study, its storage and the trials
    # hold the storage URL, password included, so they never go into that pickle: we never restore a Tuner
    # (resume runs a new one on the same study), so a copy needs only the plain fields.
    _LIVE = ("study", "storage", "heartbeats", "pending", "asked", "progress", "echo", "on_finished")

    def __getstate__(self) -> dict[str, object]:
        return {key: value for key, value in self.__dict__.items() if key not in self._LIVE}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def sweep(self) -> None:
        swept = fail_dead_trials(self.study, self.storage)
        if swept:
            self.swept.extend(swept)
            self.echo(f"failed {len(swept)} RUNNING trial(s) of a dead launcher and re-queued their settings: {swept}")

    # Tune declares Optional[Dict] (a TypedDict is a dict at runtime, not to mypy) and returns its own FINISHED str
    def suggest(self, trial_id: str) -> TrialConfig | str | None:  # type: ignore[override]
        self.sweep()
        if active_count(self.study) >= self.target_total:
            return self.FINISHED
        with signals_deferred():  # interrupted inside ask() or before this record, the trial would stay RUNNING
            trial = self.study.ask()
            self.asked[trial.number] = trial
        optuna_id = trial_id_of(self.storage, self.study, trial.number)
        self.heartbeats.add(optuna_id)
        # a TypedDict is a Mapping[str, object] to mypy (PEP 589), never one of JSON values as Optuna asks; the
        # cast names the value types ProcessIdentity declares
        identity = cast(Mapping[str, str | int | None], process_identity())
        self.storage.set_trial_system_attr(optuna_id, PROCESS_ATTR, identity)
        trial.set_user_attr(LAUNCHER_ATTR, self.launcher_id)
        failpoint("after_ask")
        if self._over_budget(trial.number):
            self._give_back(trial, optuna_id)
            return self.FINISHED
        try:
            setting = suggest_setting(trial, self.definition.search.defenses, self.definition.search.space)
            pruning = suggest_pruning(trial, self.definition.search.space, self.definition.pruning_config())
            store_setting(trial, setting)
            # a study that does not search its pruning ([search.space.pruning]) evaluates every trial at its own
            if PRUNING in self.definition.search.space:
                store_pruning(trial, pruning)
        except Exception as error:  # never leave the asked trial RUNNING: fail it with the reason, then stop
            fail_with_reason(self.study, self.storage, trial.number, f"its setting could not be sampled: {error}")
            self._finished(trial)
            raise
        self.pending[trial_id] = trial
        return {"optuna_trial": trial.number, "setting": setting, "pruning": pruning}

    def _over_budget(self, number: int) -> bool:
        earlier = [
            t
            for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            if t.number < number
        ]
        return len(earlier) >= self.target_total

    def _give_back(self, trial: optuna.Trial, optuna_id: int) -> None:
        """Another launcher asked at the same moment: give the slot back instead of overshooting. A setting the
        trial took from the queue (a warm start or a retry) goes back to the queue, not lost."""
        frozen = self.storage.get_trial(optuna_id)
        trial.set_user_attr(SURPLUS_ATTR, True)
        if "fixed_params" in frozen.system_attrs:
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    system_attrs={k: v for k, v in frozen.system_attrs.items() if k != PROCESS_ATTR},
                    user_attrs={k: v for k, v in frozen.user_attrs.items() if k not in (LAUNCHER_ATTR, SURPLUS_ATTR)},
                )
            )
        fail_with_reason(
            self.study,
            self.storage,
            trial.number,
            "surplus: the study's budget was reached by other launchers at the same moment",
        )
        self._finished(trial)

    def _finished(self, trial: optuna.Trial) -> None:
        """The trial is told or failed: no more heartbeats, nothing for an interrupt to fail."""
        self.heartbeats.discard(trial_id_of(self.storage, self.study, trial.number))
        self.asked.pop(trial.number, None)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.pending.pop(trial_id, None)
        if trial is None:
            return
        try:
            scores = self._record(trial_id, trial, result, error)
        finally:
            self._finished(trial)
        if self.on_finished is not None:
            self.on_finished(trial.number, scores)
        failpoint("after_tell")

    def _record(self, trial_id: str, trial: optuna.Trial, result: dict | None, error: bool) -> bytes | None:
        """Tell the study the trial's outcome; returns the per-target scores it reported (if any)."""
        if trial_id in self.pruned:  # recorded as PRUNED (with its last round value), never as COMPLETE
            self.pruned.discard(trial_id)
            self._tell(trial, state=TrialState.PRUNED)
            self.progress.update(trial.number, "PRUNED", None, {})
            return None
        if error or not result or OUTCOME_KEY not in result:
            reason = (result or {}).get("error") or (
                "the trial's Ray actor died or raised outside the trial "
                "(node lost, out of memory, or killed); see Ray's logs"
            )
            self._fail(trial, reason)
            return None
        report = TrialReport.from_json(result[OUTCOME_KEY])
        attrs = report.user_attrs
        bad = invalid_numbers(report)
        if bad:
            self._fail(
                trial,
                f"the objective is not a number ({', '.join(bad)}): utility "
                f"{attrs.get('utility')}, privacy {attrs.get('privacy')}",
            )
            return None
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            # the samplers are built without ``constraints_func``: the constraint is recorded for ranking and
            # feasibility, while the search is steered by the infeasible value 1 + c (objectives._objective)
            name = self.definition.objective_config().constraint_name
            if report.constraint is not None and name is not None:
                trial.set_constraint(name, report.constraint)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._lost(trial)
            return None
        values = report.values
        self._tell(trial, values if len(values) > 1 else values[0])
        if self._state(trial) != TrialState.COMPLETE:
            self._lost(trial)
            return None
        self.progress.update(
            trial.number, "COMPLETE", values, {**attrs, DEFENSE_ATTR: trial.user_attrs.get(DEFENSE_ATTR)}
        )
        return report.scores

    def _tell(
        self, trial: optuna.Trial, values: float | Sequence[float] | None = None, state: TrialState | None = None
    ) -> None:
        # skip_if_finished: a sweeper may have failed the trial meanwhile (its heartbeats lapsed)
        self.study.tell(trial, values, state=state, skip_if_finished=True)

    def _state(self, trial: optuna.Trial) -> TrialState:
        return self.storage.get_trial(trial_id_of(self.storage, self.study, trial.number)).state

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        if fail_with_reason(self.study, self.storage, trial.number, reason):
            self.progress.update(trial.number, "FAIL", None, {}, reason=reason)
        else:
            self._lost(trial)

    def _lost(self, trial: optuna.Trial) -> None:
        self.progress.update(
            trial.number,
            "LOST",
            None,
            {},
            reason=(
                "another launcher failed this trial as stale while it ran (its heartbeats lapsed longer than the "
                "grace period); its result is discarded and its setting was re-queued"
            ),
        )

    def interrupt(self) -> list[int]:
        """Ctrl-C or SIGTERM: fail every trial this launcher asked and did not tell, with the reason, and
        re-queue the settings it had (a trial interrupted before its setting was sampled has none to re-run)."""
        failed = [
            n
            for n in sorted(self.asked)
            if fail_with_reason(self.study, self.storage, n, "interrupted (Ctrl-C or SIGTERM) while running")
        ]
        requeue(self.study, self.storage, failed)
        for trial in list(self.asked.values()):
            self._finished(trial)
        self.pending.clear()
        return failed


class OptunaPruningScheduler(FIFOScheduler):
    """Reports every round's (early stopping) or instance's (racing) objective to the Optuna trial and stops the
    Tune trials Optuna's pruner prunes.

    Ray's schedulers (ASHA and co.) would stop trials that OptunaSearch then tells as COMPLETE with a partial
    value; here Optuna's own pruner decides, and the searcher tells the stopped trial as PRUNED. A trial that
    racing stops first stores why (user attribute ``racing``: :func:`search.study.racing_evidence`).
    """

    def __init__(self, searcher: StudySearcher):
        super().__init__()
        self.searcher = searcher
        search = searcher.definition.search
        instances = searcher.definition.racing_instances()
        self.racing, self.instances, self.round_instances = search.racing, instances.total, instances.rounds
        self.raced: dict[str, list[float]] = {}  # each racing Tune trial's instance values so far

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        optuna_trial = self.searcher.pending.get(trial.trial_id)
        if optuna_trial is None or "intermediate" not in result:
            return self.CONTINUE
        failpoint("round_result")
        value, judged = float(result["intermediate"]), True
        if "instance" in result:
            values = self.raced.setdefault(trial.trial_id, [])
            values.append(value)
            step, value = int(result["instance"]), racing_value(self.racing, values)
            judged = racing_judges(step, self.instances)
        else:
            step = int(result["round"])
        try:
            optuna_trial.report(value, step=step)
            if not (judged and optuna_trial.should_prune()):
                return self.CONTINUE
            if "instance" in result:
                evidence = racing_evidence(
                    self.searcher.study,
                    self._frozen(optuna_trial),
                    self.racing,
                    self.raced.pop(trial.trial_id),
                    self.round_instances,
                )
                optuna_trial.set_user_attr(RACING_ATTR, dict(evidence))
        except optuna.exceptions.UpdateFinishedTrialError:
            return self.STOP  # failed as stale meanwhile: nothing of it will be kept
        self.searcher.pruned.add(trial.trial_id)
        return self.STOP

    def _frozen(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
        searcher = self.searcher
        return searcher.storage.get_trial(trial_id_of(searcher.storage, searcher.study, trial.number))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.raced.pop(trial.trial_id, None)
        super().on_trial_complete(tune_controller, trial, result)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on the first one as its handler would.

    Python runs signal handlers in the main thread between bytecodes, so blocking the signal at the OS level
    (``pthread_sigmask``) would not help: Ray's threads receive it and the main thread still raises. Swapping
    the Python-level handlers does. Elsewhere than the main thread handlers cannot be swapped, nor do they run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during trials, after the running trials were failed and re-queued."""

    def __init__(self, requeued: list[int]):
        super().__init__(requeued)
        self.requeued = requeued


def run_trials(
    opened: OpenStudy,
    reference: Reference,
    target_total: int,
    echo: Echo = print,
    *,
    assets: Shipped,
    on_finished: TrialObserver | None = None,
) -> None:
    """Run trials through Ray Tune until the study holds ``target_total`` active trials (Ray must be running).
    ``on_finished`` is told of each trial this launcher finishes, with the trial's per-target scores: the trials
    report them only when it is given.

    The launcher returns only when no trial is RUNNING: if other launchers still run trials, it waits for them;
    if one of them dies meanwhile, its trial is failed after the grace period and its setting re-run here.
    """
    study, storage = opened.study, opened.storage
    launcher_id = uuid.uuid4().hex[:12]
    progress = Progress(max(target_total - active_count(study), 0), echo, opened.definition.objective_config())
    waiting_said = False
    with TrialHeartbeats(storage) as heartbeats:
        searcher = StudySearcher(opened, target_total, launcher_id, heartbeats, progress, echo, on_finished)
        try:
            searcher.sweep()
            runs = 0
            while True:
                budget = target_total - active_count(study)
                if budget > 0 and (runs == 0 or searcher.swept):
                    searcher.swept = []
                    progress.total = progress.done + budget
                    _tune(searcher, opened, reference, budget, runs, assets)
                    runs += 1
                elif budget <= 0 and running_numbers(study):
                    if not waiting_said:
                        echo(
                            f"the budget is in use; waiting for trial(s) {running_numbers(study)} of other "
                            f"launchers (a dead launcher's trial is failed and re-run after "
                            f"{storage.grace_period} s of silence)"
                        )
                        waiting_said = True
                    time.sleep(HEARTBEAT_INTERVAL_S)
                    searcher.sweep()
                else:
                    return
        except KeyboardInterrupt:  # wherever it struck, no trial this launcher asked is left RUNNING
            raise Interrupted(searcher.interrupt()) from None


def _tune(
    searcher: StudySearcher, opened: OpenStudy, reference: Reference, budget: int, run: int, assets: Shipped
) -> None:
    # Ray Tune's own SIGINT handler would end the run quietly with the trials left RUNNING; with it off,
    # Ctrl-C raises out of fit() and run_trials fails and re-queues the running trials with their reason.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    definition = opened.definition
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_trainable,
            spec=opened.spec,
            reference=reference,
            share=task_share(definition),
            assets=assets,
            timeout_s=definition.search.trial_timeout_s,
            keep_scores=searcher.on_finished is not None,
        ),
        tune.PlacementGroupFactory(trial_bundles(definition)),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=OptunaPruningScheduler(searcher),
            num_samples=budget,
            reuse_actors=True,
            max_concurrent_trials=definition.resources.max_concurrent_trials,
        ),
        # a short folder name whatever the study's name (folder names are at most 255 bytes)
        run_config=tune.RunConfig(
            name=f"{definition.name[:60]}-{searcher.launcher_id}-{run}",
            storage_path=str((Path(opened.place.cache_dir) / "ray-results").resolve()),
            verbose=0,
            log_to_file=True,
        ),
    )
    tuner.fit()
