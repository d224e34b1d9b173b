"""The Ray Tune runner: trials proposed by Optuna's sampler on our own storage, executed as Tune trials.

We use a small Tune ``Searcher`` of our own instead of ``ray.tune.search.optuna.OptunaSearch`` because the
storage must stay truthful: we record constraints with ``trial.set_constraint``, store per-attack metrics as
user attributes, tell failures as FAIL, and keep Optuna's trial numbers in Tune's configs -- none of which
OptunaSearch does (it also re-creates the study and drops constraints).

Each Tune trial fans out K+1 Ray tasks (victim and shadows pruned in parallel) inside its placement group.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from objectives import Reference, RoundHooks, TrialSpec, evaluate_trial

from .config import StudyDefinition
from .spaces import suggest_setting
from .storage import ACTIVE_STATES, Heartbeat, active_count, to_json

HEAD_CPU = 0.001  # the trial's own coordinating actor only waits on its tasks


# ------------------------------------------------------------------------------------------------- Ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Keep idle task workers alive between trials: each fresh worker re-imports torch and reloads the cached
        # assets (seconds), while a trial's own work on small data takes about a second.
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024**2,
                 _system_config={"idle_worker_killing_time_threshold_ms": 600_000, "num_workers_soft_limit": 64},
                 **kwargs)


def _run_with_threads(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    torch.set_num_threads(threads)
    return fn(*args)


@dataclass(frozen=True)
class RayMap:
    """A wemem ``MapFn`` running each job as a Ray task with the given resource share."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __call__(self, fn: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> list[Any]:
        task = ray.remote(_run_with_threads).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        threads = max(1, int(self.num_cpus))
        return ray.get([task.remote(fn, threads, *job) for job in jobs])


class _StepperHost:
    """A Ray actor holding one stateful stepper (e.g. one model's pruning run) between rounds."""

    def __init__(self, factory: Callable[..., Any], threads: int, *job: Any):
        torch.set_num_threads(threads)
        self.stepper = factory(*job)

    def step(self) -> Any:
        return self.stepper.step()

    def finish(self) -> Any:
        return self.stepper.finish()


class RaySteppers:
    """A wemem ``StepperGroup`` whose steppers live in Ray actors, stepped together round by round."""

    def __init__(self, share: RayMap, factory: Callable[..., Any], jobs: list[tuple[Any, ...]]):
        host = ray.remote(_StepperHost).options(num_cpus=share.num_cpus, num_gpus=share.num_gpus, max_restarts=0)
        self.actors = [host.remote(factory, max(1, int(share.num_cpus)), *job) for job in jobs]

    def step(self) -> list[Any]:
        return ray.get([actor.step.remote() for actor in self.actors])

    def finish(self) -> list[Any]:
        try:
            return ray.get([actor.finish.remote() for actor in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)


def trial_bundles(definition: StudyDefinition) -> list[dict[str, float]]:
    """Placement group of one trial: a tiny head bundle plus one bundle per model (victim and K shadows)."""
    models = definition.data.shadows + 1
    r = definition.resources
    per_cpu = max((r.cpus_per_trial - HEAD_CPU) / models, 0.001)
    bundle: dict[str, float] = {"CPU": per_cpu}
    if r.gpus_per_trial > 0:
        bundle["GPU"] = r.gpus_per_trial / models
    return [{"CPU": HEAD_CPU}] + [dict(bundle) for _ in range(models)]


def task_share(definition: StudyDefinition) -> RayMap:
    """The resources of one of a trial's K+1 model tasks."""
    bundle = trial_bundles(definition)[1]
    return RayMap(bundle["CPU"], bundle.get("GPU", 0.0))


def trial_trainable(config: dict[str, Any], spec: TrialSpec, reference: Reference, share: RayMap) -> None:
    """One Tune trial: evaluate the setting with K+1 parallel tasks and report the outcome as JSON.

    With per-round reports (early stopping) the K+1 models live in Ray actors stepped round by round, and each
    round's objective is reported; the scheduler may stop the trial after any round.
    """
    rounds = None
    if spec.round_reports:
        rounds = RoundHooks(lambda index, value: tune.report({"round": index, "intermediate": value}),
                            lambda factory, jobs: RaySteppers(share, factory, jobs))
    outcome = evaluate_trial(spec, config["defense"], config["settings"], reference, map_fn=share, rounds=rounds)
    tune.report({"done": True, "outcome": json.dumps({
        "values": outcome.objective.values,
        "constraint": outcome.objective.constraint,
        "user_attrs": to_json(outcome.user_attrs()),
    })})


# --------------------------------------------------------------------------------------------- searcher


class Progress:
    """Trials done of total, best so far, elapsed and remaining time -- one line per finished trial."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.echo = total, echo
        self.done, self.start = 0, time.perf_counter()
        self.best: float | None = None

    def update(self, number: int, state: str, values: list[float] | None, attrs: dict[str, Any]) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / self.done * (self.total - self.done)
        detail = ""
        if values is not None:
            detail = (f"{attrs.get('defense')} acc={attrs.get('utility', float('nan')):.3f} "
                      f"attack={attrs.get('privacy', float('nan')):.3f} ({attrs.get('strongest_attack')})")
            if len(values) == 1 and attrs.get("feasible", True):
                self.best = values[0] if self.best is None else min(self.best, values[0])
        best = f" best={self.best:.4f}" if self.best is not None else ""
        self.echo(f"[{self.done}/{self.total}] trial {number} {state} {detail}{best} "
                  f"elapsed {elapsed:.0f}s, ~{remaining:.0f}s left")


class StudySearcher(Searcher):
    """Proposes Tune configs with ``study.ask()`` and tells the study every outcome.

    The budget is shared through the storage: the study should reach ``target_total`` active trials (finished
    or running) counted over every launcher, so several launchers on one study stop together.
    """

    def __init__(self, study: optuna.Study, definition: StudyDefinition, target_total: int, launcher_id: str,
                 progress: Progress | None = None):
        super().__init__(metric=None, mode=None)
        self.study, self.definition, self.target_total = study, definition, target_total
        self.launcher_id, self.progress = launcher_id, progress
        self.pending: dict[str, optuna.Trial] = {}
        self.pruned: set[str] = set()  # Tune trials stopped because Optuna's pruner pruned them

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if active_count(self.study) >= self.target_total:
            return self.FINISHED
        trial = self.study.ask()
        trial.set_user_attr("launcher", self.launcher_id)
        if self._over_budget(trial.number):
            # another launcher asked at the same moment: give the slot back instead of overshooting
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=TrialState.FAIL)
            return self.FINISHED
        defense, settings = suggest_setting(trial, self.definition.search.defenses, self.definition.search.space)
        self.pending[trial_id] = trial
        return {"optuna_trial": trial.number, "defense": defense, "settings": settings}

    def _over_budget(self, number: int) -> bool:
        earlier = [t for t in self.study.get_trials(deepcopy=False, states=ACTIVE_STATES) if t.number < number]
        return len(earlier) >= self.target_total

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.pending.pop(trial_id, None)
        if trial is None:
            return
        if trial_id in self.pruned:  # recorded as PRUNED (with its last round value), never as COMPLETE
            self.pruned.discard(trial_id)
            self.study.tell(trial, state=TrialState.PRUNED)
            self._progress(trial, "PRUNED", None, {})
            return
        if error or not result or "outcome" not in result:
            self.study.tell(trial, state=TrialState.FAIL)
            self._progress(trial, "FAIL", None, {})
            return
        outcome = json.loads(result["outcome"])
        for key, value in outcome["user_attrs"].items():
            trial.set_user_attr(key, value)
        if outcome["constraint"] is not None:
            trial.set_constraint("utility_drop", outcome["constraint"])
        values = outcome["values"]
        self.study.tell(trial, values if len(values) > 1 else values[0])
        self._progress(trial, "COMPLETE", values, dict(outcome["user_attrs"], defense=trial.user_attrs.get("defense")))

    def _progress(self, trial: optuna.Trial, state: str, values: list[float] | None, attrs: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.update(trial.number, state, values, attrs)


class OptunaPruningScheduler(FIFOScheduler):
    """Reports every round's objective to the Optuna trial and stops the Tune trials Optuna's pruner prunes.

    Ray's schedulers (ASHA and co.) would stop trials that OptunaSearch then tells as COMPLETE with a partial
    value; here Optuna's own pruner decides, and the searcher tells the stopped trial as PRUNED.
    """

    def __init__(self, searcher: StudySearcher):
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        optuna_trial = self.searcher.pending.get(trial.trial_id)
        if optuna_trial is None or "intermediate" not in result:
            return self.CONTINUE
        optuna_trial.report(float(result["intermediate"]), step=int(result["round"]))
        if optuna_trial.should_prune():
            self.searcher.pruned.add(trial.trial_id)
            return self.STOP
        return self.CONTINUE


def run_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, definition: StudyDefinition,
               spec: TrialSpec, reference: Reference, target_total: int, results_dir: Path,
               echo: Callable[[str], None] = print) -> None:
    """Run trials through Ray Tune until the study holds ``target_total`` active trials (Ray must be running)."""
    budget = target_total - active_count(study)
    if budget <= 0:
        return
    launcher_id = uuid.uuid4().hex[:12]
    progress = Progress(budget, echo)
    searcher = StudySearcher(study, definition, target_total, launcher_id, progress)
    trainable = tune.with_resources(
        tune.with_parameters(trial_trainable, spec=spec, reference=reference, share=task_share(definition)),
        tune.PlacementGroupFactory(trial_bundles(definition)),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=OptunaPruningScheduler(searcher),
                                    num_samples=budget, reuse_actors=True,
                                    max_concurrent_trials=definition.resources.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"{definition.name}-{launcher_id}", storage_path=str(results_dir.resolve()),
                                  verbose=0, log_to_file=True),
    )
    with Heartbeat(storage, study.study_name, launcher_id):
        tuner.fit()
