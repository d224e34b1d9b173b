"""Ray for a study: start-up or attaching to a cluster, the resource share of each job, a trial's placement
bundles, and refusing requests the cluster can never grant."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import ray

from wemem.errors import WememError
from wemem.faults import ENV as FAILPOINTS_ENV

from ..studyfile import StudyDefinition
from ._jobs import RayMap

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

    Ray puts the working directory of the process calling ``ray.init`` first on every worker's ``sys.path``
    (``JobConfig._py_driver_sys_path``, filled in ``ray._private.worker.connect``), and a local Ray's workers start
    in it: a ``numpy.py`` among the received files of the folder wemem runs in would be every worker's numpy. So
    Ray is started from an empty folder of its own. (A Ray the caller started before keeps the folder it was
    started in: ``ray.init`` it from a folder holding no ``.py`` file.)
    """
    if ray.is_initialized():
        return
    with _signal_handlers_kept(), _from_empty_folder():
        _init(address, num_cpus)


@contextlib.contextmanager
def _from_empty_folder() -> Iterator[None]:
    """Run the body in a new empty folder (``mkdtemp``: private to this user, so nobody can put a module there),
    then go back. The folder stays while this process lives, for a local Ray's raylet starts every later worker in
    it, and is removed at exit."""
    here = os.getcwd()
    empty = tempfile.mkdtemp(prefix="wemem-ray-")
    atexit.register(_remove_empty_folder, empty)
    os.chdir(empty)
    try:
        yield
    finally:
        os.chdir(here)


def _remove_empty_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # something was written there, or it is gone: leave it as it is
        os.rmdir(folder)


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
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    target = ray_address(address)
    if target is None:
        # Keep idle task workers alive between trials: each fresh worker re-imports torch (seconds), while a
        # trial's own work on small data takes about a second. (GPU tasks never reuse workers: max_calls=1.)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            configure_logging=True,
            _system_config={"idle_worker_killing_time_threshold_ms": 600_000, "num_workers_soft_limit": 64},
            **quiet,
        )
        return
    fix = (
        "start the cluster first (`ray start --head` on the head node), or fix --ray-address / RAY_ADDRESS; "
        "unset both to run on a private local Ray"
    )
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
    unplaceable = [
        bundle
        for bundle in bundles
        if not any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()) for node in nodes)
    ]
    if not short and not unplaceable:
        return
    have = ", ".join(f"{totals[k]:g} {k}" for k in kinds)
    asks = ", ".join(f"{needed[k]:g} {k}" for k in kinds)
    detail = f"; one job's share {unplaceable[0]} fits on no single node" if unplaceable and not short else ""
    raise WememError(
        f"{what} asks for {asks} but the Ray cluster has {have} in all{detail}, so it would wait "
        f"forever. {fix}, or add machines to the cluster (`ray start --address HEAD:6379` on each) "
        "and run with --ray-address HEAD:6379"
    )


def check_trial_fits(definition: StudyDefinition) -> None:
    """A trial's placement group (its K+1 model shares) must fit the cluster Ray is attached to."""
    r = definition.resources
    check_cluster_fits(
        trial_bundles(definition),
        f"a trial (cpus_per_trial = {r.cpus_per_trial:g}, gpus_per_trial = {r.gpus_per_trial:g})",
        "Lower [resources] cpus_per_trial / gpus_per_trial in the study file (or --cpus-per-trial / --gpus-per-trial)",
    )


def task_share(definition: StudyDefinition) -> RayMap:
    """The resources of one of a trial's K+1 model jobs (also the share of each pretraining, mem-score and
    attack job, so the setting-independent work uses the devices the trials will use)."""
    bundle = trial_bundles(definition)[1]
    return RayMap(bundle["CPU"], bundle.get("GPU", 0.0))
