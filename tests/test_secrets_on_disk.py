"""Nothing secret reaches the disk. A launcher on a password-protected PostgreSQL storage, given through
``--storage`` once and through ``WEMEM_STORAGE`` once, on a private Ray of its own (whose session folder we
choose), then export and report: no file any of them writes holds the password -- not the cache, not Ray Tune's
experiment folder (``tuner.pkl`` once pickled the searcher with Optuna's storage and its URL), not Ray's session
logs, not the outputs. The first launcher is also stopped by SIGTERM mid-trial on that private Ray, whose head
installs a SIGTERM handler of its own: it must still fail and re-queue its trial and exit 130.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import tomli_w
from helpers import postgres_or_skip
from optuna.trial import TrialState

from wemem.faults import ENV as FAILPOINTS_ENV

pytestmark = pytest.mark.e2e


def study_file(folder: Path, name: str) -> Path:
    """The smallest study that reports rounds (so a failpoint can stop it mid-trial): one trial."""
    path = folder / f"{name}.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "study": {"name": name, "n_trials": 1, "seed": 7, "sampler": "random"},
                "data": {"dataset": "digits", "shadows": 1},
                "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 50},
                "pruning": {"sparsity": 0.6, "steps": 1},
                "memscore": {"models": 2},
                "attacks": {"names": ["conf", "hconf"]},
                "search": {
                    "defenses": ["rmr"],
                    "enqueue_reference": False,
                    "early_stopping": "median",
                    "early_stopping_startup_trials": 1000,
                },
                "resources": {"cpus_per_trial": 2},
            }
        )
    )
    return path


def wemem(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )


def files_holding(secret: bytes, root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            try:
                if secret in path.read_bytes():
                    found.append(path)
            except OSError:  # a socket or a file a Ray process removed meanwhile
                continue
    return found


@pytest.fixture
def work() -> Path:
    # short on purpose: Ray's session folder holds unix sockets, whose paths may not exceed 107 bytes
    folder = Path(tempfile.mkdtemp(prefix="wsec", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_no_file_a_run_writes_holds_the_storage_password(work: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    url = postgres_or_skip()
    password = sqlalchemy.engine.make_url(url).password
    assert password
    name = f"secret_{os.getpid()}_{int(time.time())}"
    path = study_file(work, name)
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", FAILPOINTS_ENV)}
    env.update(RAY_TMPDIR=str(work / "ray"), WEMEM_STORAGE="sqlite:///unused.db")
    cache = ["--cache-dir", str(work / "cache")]

    stopped = wemem(["launch", str(path), "--storage", url, *cache], work, {**env, FAILPOINTS_ENV: "round_result:TERM"})
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr

    env["WEMEM_STORAGE"] = url
    resumed = wemem(["resume", name, *cache], work, env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # the read-only commands in this process (each subprocess costs seconds of imports): same files, same env
    from search.cli import main

    monkeypatch.setenv("WEMEM_STORAGE", url)
    monkeypatch.chdir(work)
    for command in (
        ["export", name, "--out", str(work / "best.toml")],
        ["report", name, "--out", str(work / "rep")],
        ["status", name],
        ["status"],
    ):
        assert main(command) == 0, command
    printed = capsys.readouterr()
    assert password not in printed.out + printed.err

    storage = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    storage.engine.dispose()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 1
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert any("interrupted" in t.user_attrs.get("fail_reason", "") for t in trials if t.state == TrialState.FAIL)

    written = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "tuner.pkl" for p in written) and any("session_" in str(p) for p in written)
    assert any(p.suffix == ".log" for p in written)  # Ray's session logs were written and searched
    assert files_holding(password.encode(), work) == []
    assert password not in "".join(r.stdout + r.stderr for r in (stopped, resumed))
    # both launchers stopped their private Ray: no process of it is left
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    for pid in leftover:
        os.kill(int(pid), signal.SIGKILL)
    assert leftover == []
