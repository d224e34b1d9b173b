"""A tiny name -> object registry shared by datasets, models, defenses and attacks.

A new defense or attack is one module that calls ``REGISTRY.register("name")``; nothing else changes. An
installed package adds its own by entry points in the registry's group (``wemem.models``, ``wemem.datasets``,
``wemem.defenses``, ``wemem.attacks``): ``name = "package.module:object"``. They are listed with the built-in
names (``names()``, error messages, ``wemem --help``) and imported only when used, through
:mod:`importlib.metadata` (the standard mechanism; nothing of our own scans folders).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError, WememError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None = None, adapt: Callable[[str, Any], T] | None = None):
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}
        # an entry point's object (Any: whatever the installed package names) becomes an item through
        # ``adapt(name, object)`` (e.g. a plug-in data loader is
        # wrapped into one that returns Pools); plugin_names remembers which items came from installed packages
        self._adapt = adapt
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self.plugin_names: set[str] = set()

    def adapt_installed(self, adapt: Callable[[str, Any], T]) -> None:
        """How an entry point's object becomes an item (set by the module that knows, to avoid import circles)."""
        self._adapt = adapt

    def _installed(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the registry's group not shadowing a built-in name, read once per process."""
        if self._entry_points is None:
            found = metadata.entry_points(group=self.group) if self.group else ()
            self._entry_points = {ep.name: ep for ep in found if ep.name not in self._items}
        return self._entry_points

    def _load(self, name: str) -> T:
        entry = self._installed()[name]
        try:
            obj = entry.load()
        except Exception as error:  # the installed package is broken: name it, and the fix
            raise WememError(
                f"{self.kind} {name!r} is registered by an installed package ({entry.value}, entry point "
                f"group {self.group}) that fails to load ({type(error).__name__}: {error}); reinstall "
                f"or fix that package"
            ) from None
        item = self._adapt(name, obj) if self._adapt is not None else obj
        self.register(name)(item)
        self.plugin_names.add(name)
        return item

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
        if name in self._items:
            return self._items[name]
        if name in self._installed():
            return self._load(name)
        raise UnknownNameError(self.kind, name, self.names())

    def check(self, name: str) -> str:
        """``name`` itself when it is registered; else the UnknownNameError of :meth:`get` (for validators)."""
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names())
        return name

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._installed()))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._installed()
