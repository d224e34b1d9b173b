"""The lint gate bites: mypy and ruff, run with the project's own configuration (pyproject.toml), report an error
planted in a copy of a small module, and pass the unchanged copy.

``make lint`` runs the same tools over the whole tree; these tests only show that the configuration in force
catches what it is meant to, so a setting that silently turned a check off (a wrong table name, a strictness
flag dropped) fails here. The copy is of ``wemem/faults.py``: it imports only the standard library, so mypy
checks it in seconds (``--follow-imports=silent`` keeps it from reporting on anything else).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
MODULE = ROOT / "wemem" / "faults.py"
BIN = Path(sys.executable).parent


def module_copy(tmp_path: Path, plant: tuple[str, str] | None = None) -> Path:
    """A copy of the module, with ``plant = (snippet, replacement)`` applied (the snippet must be there, so the
    plant cannot miss)."""
    source = MODULE.read_text(encoding="utf-8")
    if plant is not None:
        original, replacement = plant
        assert source.count(original) == 1, f"{original!r} is no longer in {MODULE}; pick another snippet"
        source = source.replace(original, replacement)
    copy = tmp_path / "faults.py"
    copy.write_text(source, encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's mypy runs: the standard library's stubs are read once, not once per run."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "mypy"),
        "--config-file",
        str(CONFIG),
        "--follow-imports=silent",
        "--cache-dir",
        str(cache),
        str(path),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=path.parent)


def ruff(path: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "ruff"),
        "check",
        "--config",
        str(CONFIG),
        "--no-cache",
        "--output-format",
        "concise",
        str(path),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=path.parent)


def test_mypy_passes_the_unchanged_module(tmp_path, mypy_cache):
    result = mypy(module_copy(tmp_path), mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_a_planted_type_error(tmp_path, mypy_cache):
    copy = module_copy(tmp_path, ("        return\n    sig, token", "        return 0\n    sig, token"))
    result = mypy(copy, mypy_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"faults\.py:\d+: error: No return value expected  \[return-value\]", result.stdout), result.stdout


def test_mypy_reports_an_unannotated_function(tmp_path, mypy_cache):
    """The strictness is the project's, not mypy's default (which skips the bodies of unannotated functions)."""
    copy = module_copy(tmp_path, ("def failpoint(name: str) -> None:", "def failpoint(name):"))
    result = mypy(copy, mypy_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[no-untyped-def]" in result.stdout, result.stdout


def test_ruff_reports_a_planted_lint_error(tmp_path):
    assert ruff(module_copy(tmp_path)).returncode == 0
    copy = module_copy(tmp_path, ("import signal\n", "import signal\nimport sys\n"))
    result = ruff(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "F401" in result.stdout, result.stdout
