"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import datetime
import os

import optuna
import pytest
from optuna.storages._rdb import models  # the heartbeat table, to age a heartbeat without waiting for it


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
