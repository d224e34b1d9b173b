"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime
import os

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages._rdb import models  # the heartbeat table, to age a heartbeat without waiting for it

# the smallest study with two defenses' trials (their paper's defaults enqueued), on conftest's tiny experiment so
# that its shared work is the session cache's
TINY_STUDY = {
    "study": {"name": "tiny", "n_trials": 2, "seed": 7},
    "data": {"dataset": "digits", "shadows": 2},
    "model": {"name": "columnfc"},
    "training": {"pretrain_epochs": 6, "finetune_epochs": 3, "patience": 2},
    "pruning": {"sparsity": 0.6, "steps": 2},
    "memscore": {"models": 2},
    "search": {"defenses": ["swmr", "rsw"], "enqueue_reference": True},
    "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
}


def rsw_trial(
    width: float,
    utility: float,
    privacy: float,
    system_attrs: dict[str, object],
    value: float | None = None,
    **attrs: object,
) -> optuna.trial.FrozenTrial:
    """A finished RSW trial at ``width_fraction = width`` as the launcher stores it, without running anything: its
    value is the leakage unless ``value`` says otherwise, ``attrs`` adds to (or replaces) its stored metrics, and
    ``system_attrs`` holds its constraint as the study's mode stores it."""
    return optuna.trial.create_trial(
        value=privacy if value is None else value,
        params={"rsw.width_fraction": width},
        distributions={"rsw.width_fraction": FloatDistribution(0.05, 0.95)},
        user_attrs={
            "defense": "rsw",
            "settings": {"width_fraction": width},
            "utility": utility,
            "privacy": privacy,
            "strongest_attack": "conf",
            "feasible": True,
            **attrs,
        },
        system_attrs=system_attrs,
    )


def age_heartbeat(storage: optuna.storages.RDBStorage, study: optuna.Study, number: int, seconds: float) -> None:
    """Make trial ``number``'s last heartbeat ``seconds`` old on the database's clock (a launcher that died
    that long ago), recording one first if the trial has none."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    storage.record_heartbeat(trial_id)
    session = storage.scoped_session()
    try:
        beat = session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).one()
        beat.heartbeat = beat.heartbeat - datetime.timedelta(seconds=seconds)
        session.commit()
    finally:
        session.close()


def postgres_or_skip() -> str:
    """The test PostgreSQL database (.ci/run starts one); under CI its absence is a failure, not a skip."""
    url = os.environ.get("WEMEM_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide WEMEM_TEST_POSTGRES_URL (.ci/run starts a PostgreSQL server)")
        pytest.skip("set WEMEM_TEST_POSTGRES_URL to a PostgreSQL database to run this test")
    return url


def finished_rmr_study(url: str, study: dict, cache_dir: str) -> optuna.storages.RDBStorage:
    """A storage holding one finished study defined by the study-file dict ``study``: its reference and two
    complete RMR trials (values 0.55 and 0.57), stored without running anything. The caller disposes of it."""
    from search.storage import open_storage
    from search.study import create_or_load_study
    from search.studyfile import parse_study

    storage = open_storage(url)
    created, _ = create_or_load_study(parse_study(study), storage, {"cache_dir": cache_dir})
    created.set_user_attr("reference", {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf"})
    for value in (0.55, 0.57):
        created.add_trial(rmr_trial(value))
    return storage


def rmr_trial(value: float) -> optuna.trial.FrozenTrial:
    """A complete RMR trial (lambda_mem 0.1, risky_fraction 0.2) of leakage ``value`` at accuracy 0.9, with the
    metrics every stored version has (no timings, no privacy_se: measured only by later versions)."""
    return optuna.trial.create_trial(
        params={"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2},
        value=value,
        distributions={
            "rmr.lambda_mem": FloatDistribution(1e-3, 1, log=True),
            "rmr.risky_fraction": FloatDistribution(0.01, 0.5),
        },
        user_attrs={
            "defense": "rmr",
            "settings": {"lambda_mem": 0.1, "risky_fraction": 0.2},
            "utility": 0.9,
            "privacy": value,
            "strongest_attack": "conf",
            "feasible": True,
            "attacks": {},
        },
    )
