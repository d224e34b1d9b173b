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
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from objectives import Reference, RoundHooks, TrialSpec, evaluate_trial, reference
from wemem.assets import content_fingerprint, prepare_assets
from wemem.errors import WememError

from .config import StudyDefinition
from .raymap import RayMap, RaySteppers, Shipped, receive, ship, threads_for  # noqa: F401 (re-exported)
from .spaces import suggest_setting
from .storage import ACTIVE_STATES, Heartbeat, active_count, to_json

HEAD_CPU = 0.001  # the trial's own coordinating actor only waits on its tasks


# ------------------------------------------------------------------------------------------------- Ray


def ray_address(address: str | None) -> str | None:
    """The cluster to attach to: ``--ray-address`` first, then ``RAY_ADDRESS``; None means a private local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _unreachable(address: str) -> str | None:
    """Why a ``host:port`` or ``ray://host:port`` address cannot be reached (None: it answers, or is ``auto``).

    Checked with a plain TCP connect because ``ray.init`` retries an unreachable address for a long time.
    """
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    except ValueError as error:
        return str(error)
    if not host:
        return "no host in the address"
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except OSError as error:
        return f"{host}:{port}: {error.strerror or error}"


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to the cluster of ``--ray-address`` / ``RAY_ADDRESS`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``),
    or start a private local Ray when neither is given.

    Attaching never passes resources: the cluster declares its own. A local Ray detects CPUs and GPUs itself
    (cgroup-aware) unless ``num_cpus`` is given.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR)
    target = ray_address(address)
    if target is None:
        # Keep idle task workers alive between trials: each fresh worker re-imports torch (seconds), while a
        # trial's own work on small data takes about a second. (GPU tasks never reuse workers: max_calls=1.)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=True,
                 _system_config={"idle_worker_killing_time_threshold_ms": 600_000, "num_workers_soft_limit": 64},
                 **quiet)
        return
    fix = ("start the cluster first (`ray start --head` on the head node), or fix --ray-address / RAY_ADDRESS; "
           "unset both to run on a private local Ray")
    problem = _unreachable(target)
    if problem is not None:
        raise WememError(f"cannot reach the Ray cluster at {target!r} ({problem}); {fix}")
    try:
        ray.init(address=target, **(quiet if target.startswith("ray://") else dict(quiet, configure_logging=True)))
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise WememError(f"cannot attach to the Ray cluster at {target!r} ({error}); {fix}") from None


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
    """The resources of one of a trial's K+1 model jobs (also the share of each pretraining, mem-score and
    attack job, so the setting-independent work uses the devices the trials will use)."""
    bundle = trial_bundles(definition)[1]
    return RayMap(bundle["CPU"], bundle.get("GPU", 0.0))


def compact_placements(records: list[dict[str, Any]]) -> list[list[Any]]:
    """``[job, node, pid, gpu ids]`` per job: small enough for a trial's user attributes."""
    return [[r["job"], r["node"], r["pid"], r["gpus"]] for r in records]


def shared_work(study: optuna.Study, definition: StudyDefinition, spec: TrialSpec,
                echo: Callable[[str], None]) -> tuple[Shipped, Reference]:
    """Prepare the assets on the trials' shares (cached by the launcher), ship them, measure the reference.

    Refuses (WememError) when the study was run against other assets: the fingerprint of split, pretrained
    weights, mem-scores and reference is stored with the study, so no trial is scored against another victim.
    """
    share = task_share(definition)
    assets = prepare_assets(spec.experiment, spec.cache_dir, share, log=echo)
    shipped = ship(assets)
    base = reference(spec, assets, share, log=echo)
    fingerprint = content_fingerprint(assets.fingerprint, base.utility, base.privacy, base.strongest_attack)
    stored = study.user_attrs.get("assets_fingerprint")
    if stored is None:
        study.set_user_attr("assets_fingerprint", fingerprint)
    elif stored != fingerprint:
        raise WememError(
            f"study {study.study_name!r} was run against other assets (fingerprint {stored[:12]}, this launcher has "
            f"{fingerprint[:12]}): the split, pretrained victim and shadows, mem-scores or reference differ, so "
            f"new trials would not be comparable. Run this launcher with the study's cache folder "
            f"(--cache-dir, copied from the first launcher) or start a new study under another name")
    if share.placements:
        study.set_user_attr("shared_work_jobs", compact_placements(share.placements))
    return shipped, base


def trial_trainable(config: dict[str, Any], spec: TrialSpec, reference: Reference, share: RayMap,
                    assets: Shipped) -> None:
    """One Tune trial: evaluate the setting with K+1 parallel jobs, then the attack jobs; report as JSON.

    With per-round reports (early stopping) the K+1 models live in Ray actors stepped round by round, and each
    round's objective is reported; the scheduler may stop the trial after any round. Where every job ran is
    reported with the outcome (``jobs``).
    """
    share = RayMap(share.num_cpus, share.num_gpus)  # fresh placement records for this trial
    rounds = None
    if spec.round_reports:
        rounds = RoundHooks(lambda index, value: tune.report({"round": index, "intermediate": value}),
                            lambda factory, jobs: RaySteppers(share, factory, jobs))
    outcome = evaluate_trial(spec, config["defense"], config["settings"], reference, receive(assets), map_fn=share,
                             rounds=rounds)
    tune.report({"done": True, "outcome": json.dumps({
        "values": outcome.objective.values,
        "constraint": outcome.objective.constraint,
        "user_attrs": to_json(dict(outcome.user_attrs(), jobs=compact_placements(share.placements))),
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
               echo: Callable[[str], None] = print, *, assets: Shipped) -> None:
    """Run trials through Ray Tune until the study holds ``target_total`` active trials (Ray must be running)."""
    budget = target_total - active_count(study)
    if budget <= 0:
        return
    launcher_id = uuid.uuid4().hex[:12]
    progress = Progress(budget, echo)
    searcher = StudySearcher(study, definition, target_total, launcher_id, progress)
    trainable = tune.with_resources(
        tune.with_parameters(trial_trainable, spec=spec, reference=reference, share=task_share(definition),
                             assets=assets),
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
