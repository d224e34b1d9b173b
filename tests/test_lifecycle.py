"""Trial lifecycle on Optuna's machinery, without Ray: heartbeats, stale and dead trials, retries, failures.

Each test builds the storage state a crash would leave (a RUNNING trial with an old heartbeat, a trial of an
exited process, ...) directly, so nothing here waits on a clock.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import age_heartbeat, postgres_or_skip
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.cli import main
from search.execution._tune import Progress, StudySearcher
from search.storage import (
    FAIL_REASON,
    GRACE_PERIOD_S,
    PROCESS_ATTR,
    TrialHeartbeats,
    fail_dead_trials,
    open_storage,
    process_identity,
    process_is_gone,
    retried_from,
    retry_callback,
    trial_id_of,
)
from search.studyfile import parse_study

DIST = {"rmr.risky_fraction": FloatDistribution(0.01, 0.5), "rmr.lambda_mem": FloatDistribution(1e-3, 1.0, log=True)}
DEFINITION = parse_study(
    {
        "study": {"name": "life", "n_trials": 3, "sampler": "random"},
        "data": {"shadows": 2},
        "memscore": {"models": 2},
        "search": {"defenses": ["rmr"], "enqueue_reference": False},
    }
)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'life.db'}"
    return postgres_or_skip()


def new_study(url: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = open_storage(url, stale_trial_callback=retry_callback(3))
    name = f"life_{os.getpid()}_{time.monotonic_ns()}"
    return optuna.create_study(study_name=name, storage=storage), storage


def running_trial(study: optuna.Study, storage, sampled: bool = True) -> optuna.Trial:
    trial = study.ask(DIST if sampled else None)
    storage.record_heartbeat(trial_id_of(storage, study, trial.number))
    return trial


def test_stale_trial_is_failed_and_its_setting_requeued_once(storage_url: str):
    study, storage = new_study(storage_url)
    dead = running_trial(study, storage)
    alive = running_trial(study, storage)
    age_heartbeat(storage, study, dead.number, seconds=GRACE_PERIOD_S + 60)

    assert fail_dead_trials(study, storage) == [dead.number]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL and trials[alive.number].state == TrialState.RUNNING
    [retry] = [t for t in trials if t.state == TrialState.WAITING]
    assert retried_from(retry) == dead.number and retry.params == dead.params
    assert fail_dead_trials(study, storage) == []  # nothing twice


def test_staleness_is_judged_on_the_database_clock(storage_url: str, monkeypatch: pytest.MonkeyPatch):
    study, storage = new_study(storage_url)
    trial = running_trial(study, storage)
    monkeypatch.setattr(time, "time", lambda: 4e9)  # this launcher's clock is decades ahead
    assert fail_dead_trials(study, storage) == []
    assert study.get_trials()[trial.number].state == TrialState.RUNNING


def test_a_trial_killed_before_its_setting_was_sampled_is_failed_not_requeued(tmp_path: Path):
    study, storage = new_study(f"sqlite:///{tmp_path / 'x.db'}")
    empty = running_trial(study, storage, sampled=False)
    age_heartbeat(storage, study, empty.number, seconds=GRACE_PERIOD_S + 60)
    assert fail_dead_trials(study, storage) == [empty.number]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]  # no empty setting re-queued


def test_a_queued_setting_popped_but_not_sampled_is_requeued_with_its_values(tmp_path: Path):
    study, storage = new_study(f"sqlite:///{tmp_path / 'x.db'}")
    study.enqueue_trial({"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2})
    popped = running_trial(study, storage, sampled=False)  # took the warm start, died before suggest_*
    age_heartbeat(storage, study, popped.number, seconds=GRACE_PERIOD_S + 60)
    fail_dead_trials(study, storage)
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["fixed_params"] == {"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2}
    assert study.ask(DIST).params == {"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2}


def test_many_sweepers_at_once_requeue_a_setting_exactly_once(storage_url: str):
    study, storage = new_study(storage_url)
    dead = running_trial(study, storage)
    age_heartbeat(storage, study, dead.number, seconds=GRACE_PERIOD_S + 60)
    sweepers = [open_storage(storage_url, stale_trial_callback=retry_callback(3)) for _ in range(4)]
    start = threading.Barrier(len(sweepers))
    errors: list[BaseException] = []

    def sweep(s: optuna.storages.RDBStorage) -> None:
        try:
            start.wait()
            fail_dead_trials(optuna.load_study(study_name=study.study_name, storage=s), s)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    retries = [t for t in study.get_trials() if retried_from(t) == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING


def exited_process_identity() -> dict:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from search.storage import process_identity;json.dump(process_identity(), sys.stdout)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    return json.loads(child.stdout)


def test_a_trial_of_an_exited_launcher_on_this_machine_is_failed_at_once(tmp_path: Path):
    study, storage = new_study(f"sqlite:///{tmp_path / 'x.db'}")
    dead, alive = running_trial(study, storage), running_trial(study, storage)
    gone = exited_process_identity()
    assert process_is_gone(gone) and not process_is_gone(process_identity())
    storage.set_trial_system_attr(trial_id_of(storage, study, dead.number), PROCESS_ATTR, gone)
    storage.set_trial_system_attr(trial_id_of(storage, study, alive.number), PROCESS_ATTR, process_identity())
    elsewhere = dict(gone, boot="another-machine")  # unknown machine: only the heartbeat may decide
    assert not process_is_gone(elsewhere)

    assert fail_dead_trials(study, storage) == [dead.number]  # no grace period to wait for
    assert study.get_trials()[alive.number].state == TrialState.RUNNING


def test_heartbeats_are_recorded_for_each_pending_trial(tmp_path: Path):
    study, storage = new_study(f"sqlite:///{tmp_path / 'x.db'}")
    trial = study.ask(DIST)
    heartbeats = TrialHeartbeats(storage, interval=0.05)
    with heartbeats:
        heartbeats.add(trial_id_of(storage, study, trial.number))
        age_heartbeat(storage, study, trial.number, seconds=GRACE_PERIOD_S + 60)
        deadline = time.monotonic() + 30
        while fresh_age(storage, study, trial.number) > 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # the thread's next beat refreshes it
    assert fail_dead_trials(study, storage) == []


def fresh_age(storage, study, number: int) -> float:
    from optuna.storages._rdb import models

    session = storage.scoped_session()
    try:
        beat = (
            session.query(models.TrialHeartbeatModel)
            .filter_by(trial_id=trial_id_of(storage, study, number))
            .one()
            .heartbeat
        )
        now = session.execute(__import__("sqlalchemy").select(__import__("sqlalchemy").func.now())).scalar()
        return abs((now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds())
    finally:
        session.close()


# ------------------------------------------------------------------------------ the searcher's telling


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def searcher_for(url: str, target: int = 3) -> tuple[StudySearcher, Recorder]:
    from search.study import OpenStudy, Options, Place, create_or_load_study

    storage = open_storage(url, stale_trial_callback=retry_callback(3))
    study, _ = create_or_load_study(DEFINITION, storage, {})
    echo = Recorder()
    opened = OpenStudy(study, DEFINITION, storage, Place.of(Options(storage=url), study))
    return StudySearcher(opened, target, "L1", TrialHeartbeats(storage), Progress(target, echo), echo), echo


def outcome(values: list[float], constraint: float | None, utility: float = 0.9) -> dict:
    return {
        "outcome": json.dumps(
            {
                "values": values,
                "constraint": constraint,
                "user_attrs": {"utility": utility, "privacy": values[0], "strongest_attack": "conf", "feasible": True},
            }
        )
    }


@pytest.mark.parametrize("values, constraint", [([math.nan], -0.01), ([0.6], math.nan), ([math.inf], None)])
def test_a_non_numeric_objective_fails_its_trial_alone_with_the_reason(tmp_path: Path, values, constraint):
    searcher, echo = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", outcome(values, constraint))  # must not raise
    searcher.on_trial_complete("b", outcome([0.55], -0.01))
    first, second = searcher.study.get_trials()
    assert first.state == TrialState.FAIL and "not a number" in first.user_attrs[FAIL_REASON]
    assert second.state == TrialState.COMPLETE
    assert "trial 0 FAIL" in echo.lines[0] and "not a number" in echo.lines[0]  # printed as it was stored


def test_a_trial_error_is_stored_as_its_reason(tmp_path: Path):
    searcher, _echo = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"done": True, "error": "WorkerCrashedError: the worker died"})
    [trial] = searcher.study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs[FAIL_REASON].startswith("WorkerCrashedError")


def test_a_live_launcher_whose_trial_was_swept_goes_on(tmp_path: Path):
    searcher, echo = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    searcher.suggest("a")
    number = searcher.pending["a"].number
    age_heartbeat(searcher.storage, searcher.study, number, seconds=GRACE_PERIOD_S + 60)
    other = open_storage(searcher.storage.url, stale_trial_callback=retry_callback(3))
    fail_dead_trials(optuna.load_study(study_name="life", storage=other), other)  # another launcher sweeps it

    searcher.on_trial_complete("a", outcome([0.55], -0.01))  # must not raise: nothing else is lost
    assert "LOST" in echo.lines[-1]
    trials = searcher.study.get_trials()
    assert trials[number].state == TrialState.FAIL
    assert [t.state for t in trials if retried_from(t) == number] == [TrialState.WAITING]
    assert searcher.suggest("b")["optuna_trial"] == number + 1  # it takes the retried setting next


def test_a_surplus_trial_gives_its_queued_setting_back(tmp_path: Path):
    searcher, _ = searcher_for(f"sqlite:///{tmp_path / 'x.db'}", target=1)
    other = searcher.study.ask(DIST)  # another launcher took the only slot a moment before
    searcher.study.enqueue_trial({"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2})
    searcher.target_total = 2
    searcher._over_budget = lambda number: True  # the race: both asked at once
    assert searcher.suggest("a") == searcher.FINISHED
    trials = searcher.study.get_trials()
    surplus = trials[1]
    assert surplus.system_attrs["fixed_params"]  # it had taken the queued setting
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"]
    [back] = [t for t in trials if t.state == TrialState.WAITING]
    assert back.system_attrs["fixed_params"] == {"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2}
    assert other.number == 0


def test_interrupt_fails_running_trials_with_the_reason_and_requeues_them(tmp_path: Path):
    searcher, _ = searcher_for(f"sqlite:///{tmp_path / 'x.db'}")
    searcher.suggest("a")
    params = searcher.study.get_trials()[0].params
    assert searcher.interrupt() == [0]
    first, retry = searcher.study.get_trials()
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs[FAIL_REASON]
    assert retry.state == TrialState.WAITING and retry.params == params and retried_from(retry) == 0
    assert FAIL_REASON not in retry.user_attrs and "launcher" not in retry.user_attrs


@pytest.mark.parametrize("value", ["0", "5", "-3", "abc"])
def test_a_grace_period_below_two_heartbeats_is_refused(value: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--stale-after", value])
    assert exit_info.value.code == 2 and "--stale-after" in capsys.readouterr().err


def test_a_trial_past_its_time_limit_has_its_jobs_cancelled_and_fails(ray_session):
    """``[search] trial_timeout_s``: the trial's Ray jobs are cancelled at the deadline and it fails with that
    reason (the deadline is already past, so nothing here waits on a clock)."""
    from search.execution._jobs import RayMap, TrialTimeout
    from search.execution._trainable import failure_reason

    share = RayMap(num_cpus=0.5, deadline=time.time() - 1)
    with pytest.raises(TrialTimeout) as error:
        share(time.sleep, [(600,)])
    assert "time limit" in failure_reason(error.value)


def test_trial_timeout_is_a_study_setting_outside_its_identity():
    from search.study import definition_differences

    limited = parse_study(
        {
            **dict(DEFINITION.model_dump().items()),
            "search": {**DEFINITION.search.model_dump(), "trial_timeout_s": 3600},
        }
    )
    assert limited.search.trial_timeout_s == 3600 and definition_differences(DEFINITION, limited) == []
    with pytest.raises(Exception, match="trial_timeout_s"):
        parse_study({**DEFINITION.model_dump(), "search": {**DEFINITION.search.model_dump(), "trial_timeout_s": 0}})


# ---------------------------------------------------------------------------------- samplers (issue 23, part 3)


@pytest.mark.parametrize(
    "sampler, mode",
    [("tpe", "constrained"), ("gp", "weighted"), ("random", "constrained"), ("nsgaii", "pareto"), ("gp", "pareto")],
)
def test_each_sampler_drives_the_conditional_space_of_two_defenses(sampler: str, mode: str):
    import warnings

    from search.study._lifecycle import make_sampler
    from search.studyfile import suggest_setting

    definition = parse_study(
        {
            "study": {"name": "s", "n_trials": 8, "sampler": sampler},
            "objective": {"mode": mode},
            "search": {"defenses": ["rsw", "rmr"]},
        }
    )
    directions = ["minimize", "maximize"] if mode == "pareto" else ["minimize"]
    study = optuna.create_study(directions=directions, sampler=make_sampler(definition, creator=True))
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated or experimental argument of ours
        for _ in range(8):
            trial = study.ask()
            setting = suggest_setting(trial, ["rsw", "rmr"])
            seen.add(setting.defense)
            settings = setting.settings
            value = sum(v for v in settings.values() if isinstance(v, float))
            study.tell(trial, [value, -value] if mode == "pareto" else value)
    assert len(study.trials) == 8 and seen <= {"rsw", "rmr"}


def test_the_startup_count_follows_the_budget_and_the_sampler_is_part_of_the_identity():
    from search.study import definition_differences
    from search.study._lifecycle import make_sampler, startup_trials

    assert [startup_trials(n) for n in (1, 8, 16, 32, 400)] == [2, 2, 4, 8, 10]
    tpe = parse_study({"study": {"name": "s", "n_trials": 16}})
    assert make_sampler(tpe, creator=True)._n_startup_trials == 4
    gp = parse_study({"study": {"name": "s", "n_trials": 16, "sampler": "gp"}})
    assert definition_differences(tpe, gp) == ["study.sampler: stored 'tpe', file 'gp'"]
