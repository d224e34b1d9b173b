"""Launchers as real processes: killed (SIGKILL, Ctrl-C) at exact moments then resumed at once; a Ray worker
killed mid-task; two launchers with two sweepers on one PostgreSQL study.

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
from helpers import age_heartbeat, postgres_or_skip
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.execution._launcher import resume
from search.storage import FAIL_REASON, GRACE_PERIOD_S, open_storage, retried_from, retry_callback
from search.study import Options, create_or_load_study
from search.studyfile import load_study_file
from wemem.faults import ENV as FAILPOINTS_ENV

pytestmark = pytest.mark.e2e


def study_file(
    tmp_path: Path, name: str, n_trials: int, finetune_epochs: int, cpus: float, rounds_reported: bool = False
) -> Path:
    search: dict = {"defenses": ["rmr"], "enqueue_reference": False}
    if rounds_reported:  # per-round reports reach the launcher mid-trial (no trial is ever pruned here)
        search.update(early_stopping="median", early_stopping_startup_trials=1000)
    path = tmp_path / f"{name}.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "study": {"name": name, "n_trials": n_trials, "seed": 7, "sampler": "random"},
                "data": {"dataset": "digits", "shadows": 2},
                "training": {"pretrain_epochs": 6, "finetune_epochs": finetune_epochs, "patience": 50},
                "pruning": {"sparsity": 0.6, "steps": 2},
                "memscore": {"models": 2},
                "search": search,
                "resources": {"cpus_per_trial": cpus, "max_concurrent_trials": 1},
            }
        )
    )
    return path


def start_launcher(args: list[str], log: Path, failpoints: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(FAILPOINTS_ENV, None)
    if failpoints:
        env[FAILPOINTS_ENV] = failpoints
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", *args],
        stdout=log.open("w"),
        env=env,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).parent.parent,
    )


def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def trials_in(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []


def finish(launcher: subprocess.Popen, log: Path, timeout: float = 600) -> int:
    try:
        return launcher.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise AssertionError(f"launcher did not end:\n{log.read_text()}") from None


def assert_recovered(
    before: dict[int, optuna.trial.FrozenTrial], after: list[optuna.trial.FrozenTrial], n_trials: int
) -> None:
    """0 finished trials lost, 0 left RUNNING, each interrupted setting re-run exactly once, budget met."""
    now = {t.number: t for t in after}
    for number, trial in before.items():
        if trial.state == TrialState.COMPLETE:
            assert now[number].state == TrialState.COMPLETE and now[number].values == trial.values
    for number, trial in before.items():
        if trial.state != TrialState.RUNNING:
            continue
        assert now[number].state == TrialState.FAIL
        retries = [t for t in after if retried_from(t) == number]
        if trial.params or trial.system_attrs.get("fixed_params"):
            assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
            assert retries[0].params == trial.params or not trial.params
        else:  # killed before its setting was sampled: nothing to re-run
            assert retries == []
    assert not [t for t in after if t.state == TrialState.RUNNING]
    assert len([t for t in after if t.state == TrialState.COMPLETE]) == n_trials
    complete = [tuple(sorted(t.params.items())) for t in after if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == len(complete)  # no setting ran twice to completion


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("launcher-cache"))


# the launcher SIGKILLs itself at an exact moment (a failpoint), so no test races a timer against real work
MOMENTS = {
    "during-shared-work": ("after_split", False, False),  # cold cache: split written, pretraining not started
    "before-sampling": ("after_ask", False, True),  # the trial was asked, its setting not yet sampled
    "mid-trial": ("round_result", True, True),  # a trial is running and has reported a round
    "between-trials": ("after_tell", False, True),  # one trial told COMPLETE, the next not yet asked
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkilled_launcher_then_immediate_resume_loses_nothing(
    ray_session, tmp_path: Path, warm_cache: str, moment: str
):
    point, rounds_reported, warm = MOMENTS[moment]
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    cache = warm_cache if warm else str(tmp_path / "cold-cache")
    path = study_file(tmp_path, "killme", n_trials=2, finetune_epochs=3, cpus=2, rounds_reported=rounds_reported)
    log = tmp_path / "launcher.log"
    launcher = start_launcher(
        ["launch", str(path), "--storage", storage, "--cache-dir", cache, "--ray-address", ray_address()],
        log,
        failpoints=f"{point}:KILL",
    )
    assert finish(launcher, log) == -signal.SIGKILL, log.read_text()
    before = {t.number: t for t in trials_in(storage, "killme")}

    # at once: the dead launcher's trials are failed without waiting for the heartbeat grace period
    messages: list[str] = []
    study = resume("killme", Options(storage=storage, cache_dir=cache), echo=messages.append).study
    assert_recovered(before, study.get_trials(), n_trials=2)
    if any(t.state == TrialState.RUNNING for t in before.values()):
        assert any("dead launcher" in m for m in messages)


# A Ctrl-C or SIGTERM between a trial's rounds (round_result) is in tests/test_lifecycle_hardening.py, with
# every other failpoint and both signals.


def test_a_ray_worker_killed_mid_task_fails_its_trial_with_a_reason(ray_session, tmp_path: Path, warm_cache: str):
    storage = f"sqlite:///{tmp_path / 'worker.db'}"
    path = study_file(tmp_path, "workerdies", n_trials=2, finetune_epochs=3, cpus=2)
    # warm the shared work and the reference, so the first Ray task of the next launch is a trial's own
    assert resume_or_launch(path, storage, warm_cache) == 0
    token = tmp_path / "token"
    token.touch()
    path = study_file(tmp_path, "workerdies2", n_trials=2, finetune_epochs=3, cpus=2)
    log = tmp_path / "launcher.log"
    launcher = start_launcher(
        ["launch", str(path), "--storage", storage, "--cache-dir", warm_cache, "--ray-address", ray_address()],
        log,
        failpoints=f"ray_task:KILL@{token}",
    )
    assert finish(launcher, log) == 0, log.read_text()  # the launcher goes on, never hangs
    assert not token.exists()  # the failpoint fired in a worker
    trials = trials_in(storage, "workerdies2")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs[FAIL_REASON], log.read_text()
    assert "Worker" in failed[0].user_attrs[FAIL_REASON] or "died" in failed[0].user_attrs[FAIL_REASON]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 1
    assert f"FAIL ({failed[0].user_attrs[FAIL_REASON]}" in log.read_text()


def resume_or_launch(path: Path, storage: str, cache: str) -> int:
    from search.cli import main

    return main(["launch", str(path), "--storage", storage, "--cache-dir", cache])


@pytest.fixture
def postgres_url() -> str:
    return postgres_or_skip()


def test_two_launchers_share_one_postgres_study(ray_session, postgres_url: str, tmp_path: Path):
    name = f"shared_{os.getpid()}_{int(time.time())}"
    path = study_file(tmp_path, name, n_trials=6, finetune_epochs=3, cpus=1)
    cache = str(tmp_path / "cache")
    # a launcher elsewhere died mid-trial an hour ago: both new launchers sweep, one of them re-queues it
    storage = open_storage(postgres_url, stale_trial_callback=retry_callback(3))
    study, _ = create_or_load_study(load_study_file(path), storage, {"cache_dir": cache})
    dead = study.ask(
        {"rmr.risky_fraction": FloatDistribution(0.01, 0.5), "rmr.lambda_mem": FloatDistribution(1e-3, 1.0, log=True)}
    )
    age_heartbeat(storage, study, dead.number, seconds=GRACE_PERIOD_S + 3600)
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
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL and t.number != dead.number)
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials if retried_from(t) == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE  # re-run once, by one of the two
    assert retries[0].params == dead.params
