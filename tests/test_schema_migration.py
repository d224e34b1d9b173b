"""The stored-schema version (search.storage._records): a study stored in the first shape (no version, a
confirmation without its judges) is read in today's shape without being written, migrated once by the first
command that writes to it, and a study stored by a newer wemem-search is refused with nothing written."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import rmr_trial

from search.cli import main
from search.storage import open_storage
from search.storage._records import SCHEMA_VERSION, SCHEMA_VERSION_ATTR, migrate, stored_confirmation
from search.study import Options, create_or_load_study, open_study
from search.studyfile import parse_study

STUDY = {
    "study": {"name": "old", "n_trials": 2, "seed": 7, "sampler": "random"},
    "data": {"dataset": "digits", "shadows": 1},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 50},
    "pruning": {"sparsity": 0.6, "steps": 1},
    "memscore": {"models": 2},
    "attacks": {"names": ["hconf", "conf"]},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
    "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
}
# what version 1 stored of a confirmation: no attacks, leakage attacks or study_suite
VERSION_1_CONFIRMATION = {"seeds": [11, 12], "metric": "balanced_accuracy", "candidates": [], "verdict": None}


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return int(exit_info.code)


def version_1_study(database: Path, cache_dir: Path) -> None:
    """A finished study as version 1 wrote it, made with Optuna directly."""
    storage = open_storage(f"sqlite:///{database}")
    study = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    for key, value in {
        "definition": parse_study(STUDY).model_dump(mode="json"),
        "cache_dir": str(cache_dir),
        "data_root": None,
        "reference": {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf", "attacks": {}},
        "confirmation": VERSION_1_CONFIRMATION,
    }.items():
        study.set_user_attr(key, value)
    for value in (0.55, 0.57):
        study.add_trial(rmr_trial(value))
    storage.engine.dispose()


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    database = tmp_path / "wemem.db"
    version_1_study(database, tmp_path / "cache")
    return database


def attrs_of(database: Path) -> dict:
    storage = open_storage(f"sqlite:///{database}", must_exist=True)
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name("old"))
    finally:
        storage.engine.dispose()


JUDGES = {"attacks": ["conf", "hconf"], "study_suite": True}


def test_a_version_1_study_reads_in_todays_shape_without_being_written(stored: Path, capsys):
    before = stored.read_bytes()
    opened = open_study("old", Options(storage=f"sqlite:///{stored}"))
    assert stored_confirmation(opened.study) == {**VERSION_1_CONFIRMATION, **JUDGES}
    opened.storage.engine.dispose()
    assert run_cli(["status", "old", "--storage", f"sqlite:///{stored}"]) == 0
    url = f"sqlite:///{stored}"
    assert run_cli(["export", "old", "--storage", url, "--out", str(stored.parent / "best.json")]) == 0
    assert run_cli(["report", "old", "--storage", url, "--out", str(stored.parent / "report")]) == 0
    assert stored.read_bytes() == before and SCHEMA_VERSION_ATTR not in attrs_of(stored)


def test_migration_rewrites_once_and_is_idempotent(stored: Path):
    storage = open_storage(f"sqlite:///{stored}", must_exist=True)
    study = optuna.load_study(study_name="old", storage=storage)
    assert migrate(study) is True
    after = dict(study.user_attrs)
    assert after[SCHEMA_VERSION_ATTR] == SCHEMA_VERSION and after["confirmation"] == {
        **VERSION_1_CONFIRMATION,
        **JUDGES,
    }
    assert migrate(study) is False and study.user_attrs == after
    storage.engine.dispose()


def test_resume_migrates_the_study_it_opens(stored: Path, monkeypatch: pytest.MonkeyPatch):
    import search.execution._launcher as launcher

    monkeypatch.setattr(launcher, "attach_ray", lambda definition, options: definition)
    monkeypatch.setattr(launcher, "run_study", lambda opened, target, echo, tracking=None: None)
    launcher.resume(
        "old", Options(storage=f"sqlite:///{stored}", cache_dir=str(stored.parent / "cache")), echo=lambda line: None
    )
    attrs = attrs_of(stored)
    assert attrs[SCHEMA_VERSION_ATTR] == SCHEMA_VERSION and attrs["confirmation"] == {
        **VERSION_1_CONFIRMATION,
        **JUDGES,
    }
    assert run_cli(["status", "old", "--storage", f"sqlite:///{stored}"]) == 0


def test_a_new_study_is_stored_with_todays_version(tmp_path: Path):
    storage = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    study, created = create_or_load_study(parse_study(STUDY), storage, {})
    assert created and study.user_attrs[SCHEMA_VERSION_ATTR] == SCHEMA_VERSION
    storage.engine.dispose()


@pytest.mark.parametrize(
    "command", [["status", "old"], ["export", "old", "--out", "best.json"], ["resume", "old"], ["confirm", "old"]]
)
def test_a_newer_study_is_refused_with_nothing_written(
    stored: Path, command: list[str], capsys, monkeypatch, tmp_path: Path
):
    storage = open_storage(f"sqlite:///{stored}", must_exist=True)
    storage.set_study_user_attr(storage.get_study_id_from_name("old"), SCHEMA_VERSION_ATTR, SCHEMA_VERSION + 1)
    storage.engine.dispose()
    monkeypatch.chdir(tmp_path)
    before = stored.read_bytes()
    assert run_cli([*command, "--storage", f"sqlite:///{stored}"]) != 0
    err = capsys.readouterr().err
    assert f"schema version {SCHEMA_VERSION + 1}" in err and "upgrade wemem-search" in err, err
    assert stored.read_bytes() == before and not (tmp_path / "best.json").exists()
