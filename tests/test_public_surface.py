"""Each top-level package's public surface: its ``__all__`` names resolve, and importing the package stays light
(a Ray worker imports ``wemem`` and ``search`` before its job module)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["wemem", "objectives", "search"])
def test_every_public_name_resolves(package: str):
    module = __import__(package)
    assert module.__all__, package
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


def test_importing_wemem_and_search_loads_no_torch_optuna_or_ray():
    code = (
        "import sys, wemem, search; heavy = [m for m in ('torch', 'optuna', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_an_unknown_name_is_an_attribute_error():
    import search
    import wemem

    for module in (wemem, search):
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            module.nope  # noqa: B018


def test_the_own_loop_components_resolve():
    """wemem.loop is the public module of the defenses as components of a user's own training loop."""
    from wemem import loop

    missing = [name for name in loop.__all__ if getattr(loop, name, None) is None]
    assert loop.__all__ and not missing, missing
