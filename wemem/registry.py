"""A tiny name -> object registry shared by datasets, models, defenses and attacks.

A new defense or attack is one module that calls ``REGISTRY.register("name")``; nothing else changes.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register ``obj`` under ``name``; a class also gets ``name`` as its ``name`` attribute, so the name is
        written once (in the decorator) and the class still knows it."""
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def check(self, name: str) -> str:
        """``name`` itself when it is registered; else the UnknownNameError of :meth:`get` (for validators)."""
        if name not in self._items:
            raise UnknownNameError(self.kind, name, list(self._items))
        return name

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
