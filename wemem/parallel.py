"""How wemem runs independent jobs: a ``MapFn`` maps a top-level function over argument tuples.

wemem never imports Ray; callers inject a parallel map (the search layer passes one backed by Ray tasks, which
ships large arguments such as the assets by reference). A job's own parameters travel as one typed request
(e.g. :class:`wemem.pipeline.PruningJob`) beside those large arguments, so no caller lines up a long positional
tuple with a function's argument order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class MapFn(Protocol):
    def __call__(self, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]]) -> list[T]: ...


class StepperGroup(Protocol):
    """Stateful jobs advanced together: ``step()`` advances every one by one round, ``finish()`` ends them."""

    def step(self) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


class StepperMap(Protocol):
    def __call__(self, factory: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> StepperGroup: ...


class LocalSteppers:
    """The in-process ``StepperGroup``: builds every stepper here and steps them one after the other."""

    def __init__(self, factory: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]):
        self.steppers = [factory(*job) for job in jobs]

    def step(self) -> list[Any]:
        return [stepper.step() for stepper in self.steppers]

    def finish(self) -> list[Any]:
        return [stepper.finish() for stepper in self.steppers]


def serial_map(fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]]) -> list[T]:
    return [fn(*job) for job in jobs]


def job_seed(seed: int, stage: str, index: int = 0, repeat: int = 0) -> int:
    """Independent, reproducible seeds per (study seed, stage, model index, repeat); repeat 0 is every seed a
    study used before repeats existed (``[search] repeats``), so their results and caches are unchanged."""
    stages = {"pretrain": 1, "memscore": 2, "prune": 3, "attack": 4}
    return (seed * 1_000_003 + stages[stage] * 10_007 + index + repeat * 7_919) % (2**31 - 1)
