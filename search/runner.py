"""Ray for trials: start-up, resource shares, the shared work, and the Tune trainable of one setting.

Each Tune trial fans out K+1 Ray tasks (victim and shadows pruned in parallel) inside its placement group, then
its attack jobs. The searcher and the run loop live in :mod:`search.trials`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import optuna
import ray
from ray import tune

from objectives import Reference, RoundHooks, TrialSpec, evaluate_trial, reference
from wemem.assets import content_fingerprint, prepare_assets
from wemem.errors import WememError
from wemem.faults import ENV as FAILPOINTS_ENV

from .config import StudyDefinition
from .raymap import RayMap, RaySteppers, Shipped, receive, ship, threads_for  # noqa: F401 (re-exported)
from .storage import to_json

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
    with _signal_handlers_kept():
        _init(address, num_cpus)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """``ray.init`` installs SIGTERM handlers of its own (the driver's exits, a local head's kills Ray's processes
    and exits 1), replacing the launcher's clean stop: SIGTERM from a batch scheduler or `timeout` must fail and
    re-queue the running trials like Ctrl-C. Put back whatever handler was there before."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _init(address: str | None, num_cpus: int | None) -> None:
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
    # a joined cluster's workers do not inherit this process's environment: hand the failpoints on
    env = {key: os.environ[key] for key in (FAILPOINTS_ENV,) if key in os.environ}
    if env:
        quiet["runtime_env"] = {"env_vars": env}
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


def check_cluster_fits(bundles: list[dict[str, float]], what: str, fix: str) -> None:
    """Refuse a resource request the Ray cluster can never grant, instead of waiting for it forever.

    ``bundles`` are what must be placed at once (each on one node); ``what`` names the request and ``fix`` the
    option that changes it. Alive nodes only; a cluster that grows later can be joined by launching again.
    """
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    kinds = sorted({kind for bundle in bundles for kind in bundle})
    totals = {kind: sum(node.get(kind, 0.0) for node in nodes) for kind in kinds}
    needed = {kind: sum(bundle.get(kind, 0.0) for bundle in bundles) for kind in kinds}
    short = [kind for kind in kinds if needed[kind] > totals[kind] + 1e-9]
    unplaceable = [bundle for bundle in bundles
                   if not any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()) for node in nodes)]
    if not short and not unplaceable:
        return
    have = ", ".join(f"{totals[k]:g} {k}" for k in kinds)
    asks = ", ".join(f"{needed[k]:g} {k}" for k in kinds)
    detail = (f"; one job's share {unplaceable[0]} fits on no single node" if unplaceable and not short else "")
    raise WememError(f"{what} asks for {asks} but the Ray cluster has {have} in all{detail}, so it would wait "
                     f"forever. {fix}, or add machines to the cluster (`ray start --address HEAD:6379` on each) "
                     "and run with --ray-address HEAD:6379")


def check_trial_fits(definition: StudyDefinition) -> None:
    """A trial's placement group (its K+1 model shares) must fit the cluster Ray is attached to."""
    r = definition.resources
    check_cluster_fits(trial_bundles(definition),
                       f"a trial (cpus_per_trial = {r.cpus_per_trial:g}, gpus_per_trial = {r.gpus_per_trial:g})",
                       "Lower [resources] cpus_per_trial / gpus_per_trial in the study file (or --cpus-per-trial / "
                       "--gpus-per-trial)")


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


def failure_reason(error: BaseException) -> str:
    """One line saying why a trial failed: the innermost error of a Ray task chain, with its type."""
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the worker's own exception
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:500]


def trial_trainable(config: dict[str, Any], spec: TrialSpec, reference: Reference, share: RayMap,
                    assets: Shipped, timeout_s: float | None = None) -> None:
    """One Tune trial: evaluate the setting with K+1 parallel jobs, then the attack jobs; report as JSON.

    With per-round reports (early stopping) the K+1 models live in Ray actors stepped round by round, and each
    round's objective is reported; the scheduler may stop the trial after any round. Where every job ran is
    reported with the outcome (``jobs``).
    """
    # fresh placement records for this trial; past the deadline its jobs are cancelled and it fails
    share = RayMap(share.num_cpus, share.num_gpus, deadline=None if timeout_s is None else time.time() + timeout_s)
    rounds = None
    if spec.round_reports:
        rounds = RoundHooks(lambda index, value: tune.report({"round": index, "intermediate": value}),
                            lambda factory, jobs: RaySteppers(share, factory, jobs))
    try:
        outcome = evaluate_trial(spec, config["defense"], config["settings"], reference, receive(assets),
                                 map_fn=share, rounds=rounds)
    except Exception as error:  # the trial fails alone, with its reason; the launcher goes on
        tune.report({"done": True, "error": failure_reason(error)})
        return
    tune.report({"done": True, "outcome": json.dumps({
        "values": outcome.objective.values,
        "constraint": outcome.objective.constraint,
        "user_attrs": to_json(dict(outcome.user_attrs(), jobs=compact_placements(share.placements))),
    })})
