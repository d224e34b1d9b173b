"""Ray for trials: start-up, resource shares, and the Tune trainable that evaluates one setting.

Each Tune trial fans out K+1 Ray tasks (victim and shadows pruned in parallel) inside its placement group.
The searcher and the run loop live in :mod:`search.trials`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import ray
import torch
from ray import tune

from objectives import Reference, RoundHooks, TrialSpec, evaluate_trial
from wemem.faults import ENV as FAILPOINTS_ENV, failpoint

from .config import StudyDefinition
from .storage import to_json

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
        # a joined cluster's workers do not inherit this process's environment: hand the failpoints on
        env = {key: os.environ[key] for key in (FAILPOINTS_ENV,) if key in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **kwargs)
    else:
        # Keep idle task workers alive between trials: each fresh worker re-imports torch and reloads the cached
        # assets (seconds), while a trial's own work on small data takes about a second.
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024**2,
                 _system_config={"idle_worker_killing_time_threshold_ms": 600_000, "num_workers_soft_limit": 64},
                 **kwargs)


def _run_with_threads(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    failpoint("ray_task")
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


def failure_reason(error: BaseException) -> str:
    """One line saying why a trial failed: the innermost error of a Ray task chain, with its type."""
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the worker's own exception
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:500]


def trial_trainable(config: dict[str, Any], spec: TrialSpec, reference: Reference, share: RayMap) -> None:
    """One Tune trial: evaluate the setting with K+1 parallel tasks and report the outcome as JSON.

    With per-round reports (early stopping) the K+1 models live in Ray actors stepped round by round, and each
    round's objective is reported; the scheduler may stop the trial after any round.
    """
    rounds = None
    if spec.round_reports:
        rounds = RoundHooks(lambda index, value: tune.report({"round": index, "intermediate": value}),
                            lambda factory, jobs: RaySteppers(share, factory, jobs))
    try:
        outcome = evaluate_trial(spec, config["defense"], config["settings"], reference, map_fn=share, rounds=rounds)
    except Exception as error:  # the trial fails alone, with its reason; the launcher goes on
        tune.report({"done": True, "error": failure_reason(error)})
        return
    tune.report({"done": True, "outcome": json.dumps({
        "values": outcome.objective.values,
        "constraint": outcome.objective.constraint,
        "user_attrs": to_json(outcome.user_attrs()),
    })})
