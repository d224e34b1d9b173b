"""The Ray side of wemem's parallel maps: ``RayMap`` (jobs as Ray tasks), ``RaySteppers`` (stateful jobs in
actors) and how assets travel to the jobs (``ship`` / ``receive``).

Kept apart from the Tune runner so that a fresh worker process, which unpickles ``_run_job`` from here, imports
only Ray, torch and wemem -- not Optuna, Ray Tune or the study layer (seconds per process on a small machine).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import ray
import torch
from ray.actor import ActorHandle

from wemem.assets import StudyAssets, content_fingerprint
from wemem.data import Pools
from wemem.errors import WememError
from wemem.faults import failpoint

T = TypeVar("T")


def threads_for(num_cpus: float) -> int:
    """Intra-op threads of a job holding ``num_cpus`` CPUs: the share rounded, at least one."""
    return max(1, round(num_cpus))


# Assets travel through Ray's object store: put once per process (keyed by content fingerprint), received once
# per worker process. Tensors go as numpy arrays, which Ray stores out-of-band and hands back zero-copy (read-only,
# shared by the workers of a node); jobs never write into them.

SHIPPABLE = (StudyAssets, Pools)


@dataclass(frozen=True)
class Shipped:
    """A large job input in the object store. Nested in a wrapper so Ray does not resolve it before the job runs
    and the worker can reuse what it received for the same fingerprint."""

    ref: ray.ObjectRef
    fingerprint: str


# what this process put or received, by (Ray job, fingerprint): a Ray restarted in the same process (benchmarks)
# never sees the previous session's references; the entries keep the objects alive
_PUT: dict[tuple[str, str, str], Shipped] = {}
_RECEIVED: collections.OrderedDict[tuple[str, str, str], Any] = collections.OrderedDict()
_RECEIVED_KEEP = 2


def _map_arrays(value: Any, convert: Callable[[Any], Any], kind: type) -> Any:
    if isinstance(value, kind):
        return convert(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{f.name: _map_arrays(getattr(value, f.name), convert, kind) for f in dataclasses.fields(value) if f.init},
        )
    if isinstance(value, dict):
        return {k: _map_arrays(v, convert, kind) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_arrays(v, convert, kind) for v in value)
    return value


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # Ray's zero-copy arrays are read-only; nothing writes into them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _put(value: Any, fingerprint: str) -> Shipped:
    return Shipped(ray.put(_map_arrays(value, lambda t: t.detach().cpu().numpy(), torch.Tensor)), fingerprint)


def _session_key(fingerprint: str) -> tuple[str, str, str]:
    """The object's key in this Ray session: a process that shuts Ray down and starts it again (two commands in
    one Python session) gets job id 01000000 again, but a new node id, so it never reuses a dead session's ref."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id(), fingerprint


def ship(value: Any) -> Shipped:
    """Put assets into the object store once per process (by their identity); other objects once per call.

    The identity of assets is their content fingerprint plus the config they carry: two studies can share
    identical weights and data yet fine-tune differently, and a worker must never mix them up.
    """
    fingerprint = getattr(value, "fingerprint", None)
    if fingerprint is None:
        return _put(value, content_fingerprint(value))
    identity = content_fingerprint(fingerprint, getattr(value, "config", None))
    key = _session_key(identity)
    if key not in _PUT:
        _PUT[key] = _put(value, identity)
    return _PUT[key]


def receive(shipped: Shipped) -> Any:
    """The shipped object, as CPU tensors; memoized per process by content fingerprint, so never stale."""
    key = _session_key(shipped.fingerprint)
    if key in _RECEIVED:
        _RECEIVED.move_to_end(key)
        return _RECEIVED[key]
    value = _map_arrays(ray.get(shipped.ref), _from_numpy, np.ndarray)
    _RECEIVED[key] = value
    _PUT.setdefault(key, shipped)  # jobs this process fans out reuse the same object
    while len(_RECEIVED) > _RECEIVED_KEEP:
        _PUT.pop(_RECEIVED.popitem(last=False)[0], None)
    return value


def _resolve(args: tuple[Any, ...]) -> list[Any]:
    return [receive(a) if isinstance(a, Shipped) else a for a in args]


@dataclass(frozen=True)
class Placement:
    """Where a job ran: its kind, Ray node, worker process and the GPU ids Ray assigned (torch may still see none)."""

    job: str
    node: str
    pid: int
    gpus: tuple[str, ...]

    def compact(self) -> list[object]:
        """``[job, node, pid, gpu ids]``: small enough for a trial's user attributes."""
        return [self.job, self.node, self.pid, list(self.gpus)]


def placement(job: str) -> Placement:
    """Where this job runs."""
    context = ray.get_runtime_context()
    return Placement(
        job,
        context.get_node_id()[:12],
        os.getpid(),
        tuple(str(g) for g in context.get_accelerator_ids().get("GPU", [])),
    )


def _job_kind(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "job").removesuffix("_job")


def _run_job(fn: Callable[..., Any], threads: int, *args: Any) -> tuple[Any, Placement]:
    failpoint("ray_task")
    torch.set_num_threads(threads)
    return fn(*_resolve(args)), placement(_job_kind(fn))


def _ship_args(jobs: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Assets go as ``Shipped``; any other container or record several jobs share is put once (Ray resolves it).
    Only a job's own arguments are looked at, not what they hold: a job's small request (``wemem.pipeline``'s
    ``PruningJob``, ``AttackJob``) travels with it, and what jobs share is an argument of its own."""
    uses = collections.Counter(id(a) for job in jobs for a in job)
    converted: dict[int, Any] = {}

    def one(arg: Any) -> Any:
        if id(arg) not in converted:
            if isinstance(arg, SHIPPABLE):
                converted[id(arg)] = ship(arg)
            elif uses[id(arg)] > 1 and (isinstance(arg, (list, tuple, dict)) or dataclasses.is_dataclass(arg)):
                converted[id(arg)] = ray.put(arg)
            else:
                return arg
        return converted[id(arg)]

    return [[one(a) for a in job] for job in jobs]


@functools.cache
def _job_task(num_cpus: float, num_gpus: float) -> Any:
    # max_calls can only be set here, not in .options()
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_calls=1 if num_gpus > 0 else 0, max_retries=0)(_run_job)


@dataclass
class RayMap:
    """A wemem ``MapFn`` running each job as a Ray task with the given resource share.

    A task holding a GPU share runs in a fresh worker process (``max_calls=1``): CUDA and everything a job binds
    to its device die with it, so no process ever serves two GPU assignments. CPU-only tasks reuse warm workers.
    Each job's placement (node, pid, GPU ids) is appended to ``placements``.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    placements: list[Placement] = field(default_factory=list, compare=False, repr=False)
    deadline: float | None = None  # time.time() after which the jobs are cancelled (a trial's time limit)

    def __call__(self, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]]) -> list[T]:
        task = _job_task(self.num_cpus, self.num_gpus)
        threads = threads_for(self.num_cpus)
        refs = [task.remote(fn, threads, *job) for job in _ship_args(list(jobs))]
        outputs = get_before(refs, self.deadline)
        self.placements.extend(where for _, where in outputs)
        return [result for result, _ in outputs]


class TrialTimeout(WememError):
    """A trial ran past its time limit (``[search] trial_timeout_s``)."""


def get_before(
    refs: list[ray.ObjectRef[Any]], deadline: float | None, actors: Sequence[ActorHandle[Any]] = ()
) -> list[Any]:
    """``ray.get`` that gives up at ``deadline``: the jobs are cancelled (actors killed) and TrialTimeout raised."""
    if deadline is None:
        return ray.get(refs)
    try:
        return ray.get(refs, timeout=max(deadline - time.time(), 0.0))
    except ray.exceptions.GetTimeoutError:
        if actors:  # actor tasks end with their actors (Ray refuses to force-cancel them: a ValueError)
            for actor in actors:
                ray.kill(actor)
        else:
            for ref in refs:
                ray.cancel(ref, force=True)
        raise TrialTimeout(
            "the trial ran past its time limit ([search] trial_timeout_s); its jobs were cancelled"
        ) from None


class _StepperHost:
    """A Ray actor holding one stateful stepper (e.g. one model's pruning run) between rounds.

    The actor owns its worker process for its whole life, so its one GPU assignment never changes.
    """

    def __init__(self, factory: Callable[..., Any], threads: int, *job: Any):
        torch.set_num_threads(threads)
        self.stepper = factory(*_resolve(job))

    def step(self) -> Any:
        return self.stepper.step()

    def finish(self) -> tuple[Any, Placement]:
        return self.stepper.finish(), placement("prune")


def _handle(actor: object) -> ActorHandle[_StepperHost]:
    """A new actor as its handle: Ray types it as the handle or the actor's class (so that editors show the class's
    methods), but ``remote()`` always returns the handle, which ``ray.kill`` takes."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"Ray returned {type(actor).__name__} for a new actor, not its handle")
    return actor


class RaySteppers:
    """A wemem ``StepperGroup`` whose steppers live in Ray actors, stepped together round by round."""

    def __init__(self, share: RayMap, factory: Callable[..., Any], jobs: list[tuple[Any, ...]]):
        host = ray.remote(_StepperHost).options(num_cpus=share.num_cpus, num_gpus=share.num_gpus, max_restarts=0)
        self.share = share
        self.actors = [
            _handle(host.remote(factory, threads_for(share.num_cpus), *job)) for job in _ship_args(list(jobs))
        ]

    def step(self) -> list[Any]:
        return get_before([actor.step.remote() for actor in self.actors], self.share.deadline, self.actors)

    def finish(self) -> list[Any]:
        try:
            outputs = get_before([actor.finish.remote() for actor in self.actors], self.share.deadline, self.actors)
        finally:
            for actor in self.actors:
                ray.kill(actor)
        self.share.placements.extend(where for _, where in outputs)
        return [result for result, _ in outputs]
