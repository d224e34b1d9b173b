"""Launchers as real processes: SIGKILL mid-trial then resume; two launchers at once on one PostgreSQL study.

Launchers join the test session's Ray cluster with --ray-address, so killing one ends only its own Ray job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import tomli_w
from optuna.trial import TrialState

from search.storage import open_storage
from search.study import Options, resume

pytestmark = pytest.mark.e2e


def study_file(tmp_path: Path, name: str, n_trials: int, finetune_epochs: int, cpus: float) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps({
        "study": {"name": name, "n_trials": n_trials, "seed": 7, "sampler": "random"},
        "data": {"dataset": "digits", "shadows": 2},
        "training": {"pretrain_epochs": 6, "finetune_epochs": finetune_epochs, "patience": 50},
        "pruning": {"sparsity": 0.6, "steps": 2},
        "memscore": {"models": 2},
        "search": {"defenses": ["rmr"], "enqueue_reference": False},
        "resources": {"cpus_per_trial": cpus, "max_concurrent_trials": 1},
    }))
    return path


def start_launcher(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=Path(__file__).parent.parent)


def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def trials_in(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []


def test_sigkilled_launcher_resumes_to_completion(ray_session, tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    cache = str(tmp_path / "cache")
    # slow trials (long rounds, no early stop) so the kill lands mid-trial
    path = study_file(tmp_path, "killme", n_trials=3, finetune_epochs=60, cpus=2)
    launcher = start_launcher(["launch", str(path), "--storage", storage, "--cache-dir", cache,
                               "--ray-address", ray_address()], tmp_path / "launcher.log")
    try:
        wait_for(lambda: any(t.state == TrialState.COMPLETE for t in trials_in(storage, "killme"))
                 and any(t.state == TrialState.RUNNING for t in trials_in(storage, "killme")),
                 timeout=240, what="one finished trial and one running trial")
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    before = {t.number: t for t in trials_in(storage, "killme")}
    killed = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    finished = [n for n, t in before.items() if t.state == TrialState.COMPLETE]
    assert killed and finished, (tmp_path / "launcher.log").read_text()

    messages: list[str] = []
    study, _ = resume("killme", Options(storage=storage, cache_dir=cache, stale_after=0.0), echo=messages.append)
    trials = study.get_trials()
    assert any("stale RUNNING" in m for m in messages)
    assert any(m.startswith("cache hit: pretrained") for m in messages)
    states = {t.number: t.state for t in trials}
    assert all(states[n] == TrialState.FAIL for n in killed)
    assert all(states[n] == TrialState.COMPLETE for n in finished)  # nothing finished is lost
    for n in killed:  # the interrupted setting was re-run, once
        requeued = [t for t in trials if t.user_attrs.get("requeued_from") == n]
        assert len(requeued) == 1 and requeued[0].state == TrialState.COMPLETE
        assert requeued[0].params == before[n].params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 3  # no duplicated trial
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("WEMEM_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide WEMEM_TEST_POSTGRES_URL (.ci/run starts a PostgreSQL server)")
        pytest.skip("set WEMEM_TEST_POSTGRES_URL to a PostgreSQL database to run this test")
    return url


def test_two_launchers_share_one_postgres_study(ray_session, postgres_url: str, tmp_path: Path):
    name = f"shared_{os.getpid()}_{int(time.time())}"
    path = study_file(tmp_path, name, n_trials=6, finetune_epochs=3, cpus=1)
    cache = str(tmp_path / "cache")
    args = ["launch", str(path), "--storage", postgres_url, "--cache-dir", cache, "--ray-address", ray_address()]
    launchers = [start_launcher(args, tmp_path / f"launcher{i}.log") for i in range(2)]
    try:
        codes = [p.wait(timeout=600) for p in launchers]
    finally:
        for p in launchers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    logs = [(tmp_path / f"launcher{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    # the shared work was done once, by whichever launcher took the cache lock first
    assert sum("pretrained victim and 2 shadows" in log for log in logs) == 1
    assert sum("cache hit: pretrained" in log for log in logs) == 1
    password = sqlalchemy.engine.make_url(postgres_url).password
    assert password and not any(password in log for log in logs)  # credentials never printed

    trials = trials_in(postgres_url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # the budget is shared, not doubled
    assert len({t.number for t in complete}) == 6
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 6  # launchers never repeat a setting
    assert len({t.user_attrs["launcher"] for t in complete}) == 2  # both launchers did work
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)
