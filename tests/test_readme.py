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


def shown_commands() -> list[str]:
    """Every command line of the README's plain code blocks, comments cut (the demo's printed lines left out)."""
    lines = [line.split("#")[0].strip() for block in fenced("") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(("best setting", "tuning"))]


def shipping_flow() -> list[list[str]]:
    """The README's export, apply and audit commands as argument lists: tests/test_audit_artifact.py runs them."""
    return [line.split()[1:] for line in shown_commands() if line.split()[:2] in (["wemem", c] for c in SHIPPING)]


SHIPPING = ("export", "apply", "audit")


def demo_commands() -> set[str]:
    """What `make demo` runs, as the Makefile's recipe spells it (``$(BIN)/`` is the venv's bin)."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe is not None
    return {command.strip().replace("$(BIN)/", "") for command in recipe.group(1).split("&&")}


def test_every_command_block_shows_only_commands_that_run():
    """`make demo` and `make test` are the README's two commands; the launch and confirm it shows are the
    demo's own; the export, apply and audit run in tests/test_audit_artifact.py (on its tiny study); the
    example's command runs in tests/test_own_model.py. A command added here needs a test, then a place here."""
    tested = {"make demo", "make test", ".venv/bin/python examples/own_model/run.py", *demo_commands()}
    flow = {" ".join(["wemem", *args]) for args in shipping_flow()}
    shown = set(shown_commands())
    assert shown <= tested | flow, sorted(shown - tested - flow)
    assert [args[0] for args in shipping_flow()] == list(SHIPPING)
