"""Every command a user types answers ``--help`` with exit 0 (``wemem --help`` once crashed on a "95%" that
argparse read as a format string, and no test noticed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # every registered sub-command


def test_every_sub_command_is_walked():
    assert {
        "launch",
        "resume",
        "status",
        "export",
        "apply",
        "audit",
        "report",
        "delete",
        "run",
        "memscore",
        "confirm",
    } <= set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in COMMANDS], ids=["wemem"] + COMMANDS)
def test_help_exits_0_and_names_the_command(argv: list[str], capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: wemem") and (len(argv) == 1 or f"wemem {argv[0]}" in out)
    if len(argv) == 1:
        assert all(name in out for name in COMMANDS) and "95% intervals" in out


@pytest.mark.parametrize("command", ["launch", "resume", "confirm"])
def test_launch_resume_and_confirm_offer_mlflow_tracking(command: str, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--mlflow URI" in capsys.readouterr().out


def test_help_of_the_installed_entry_point_as_a_new_user_runs_it():
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "confirm" in done.stdout
