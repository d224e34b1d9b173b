"""A package's public names, imported when first used (PEP 562 module ``__getattr__``).

Ray starts a fresh process per worker, and each imports the top-level package of the job it unpickles before
anything else: eager imports in ``wemem/__init__.py`` or ``search/__init__.py`` would load torch, Optuna and Ray
Tune into every worker (seconds each). Importing a name on first access keeps the packages' ``__all__`` the
curated public surface without that cost.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package`` that imports each public name from its module in ``where``."""

    def public_name(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return public_name
