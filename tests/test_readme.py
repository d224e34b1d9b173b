"""The README stays short and shows only what runs: its Python example is lines of the shipped example, which
tests/test_own_model.py runs end to end, and every command it shows is one the suite or `make demo` runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAX_LINES = 200


def fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README, flags=re.S | re.M)


def test_the_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= MAX_LINES


def test_the_python_example_is_the_shipped_examples_code_in_its_order():
    (example,) = fenced("python")
    shipped = [line.strip() for line in (ROOT / "examples" / "own_model" / "run.py").read_text().splitlines()]
    shown = [line.strip() for line in example.splitlines() if line.strip() and not line.strip().startswith("#")]
    positions = [shipped.index(line) for line in shown]  # a line not in run.py raises here, naming it
    assert positions == sorted(positions)


def test_every_command_block_shows_only_commands_that_run():
    """`make demo` and `make test` are the README's two commands; the example's command runs in
    tests/test_own_model.py; a command added here needs a test of its own, then a place in this list."""
    tested = {"make demo", "make test", ".venv/bin/python examples/own_model/run.py"}
    commands = [line.split("#")[0].strip() for block in fenced("") for line in block.splitlines()]
    shown = {command for command in commands if command and not command.startswith(("best setting", "tuning"))}
    assert shown <= tested, sorted(shown - tested)
