"""MLflow tracking against a real local MLflow store (SQLite backend: MLflow 3 refuses its file store), read back
with ``mlflow.search_runs``: a 2-trial study logged as a parent run with one nested run per trial (each trial as
it is told, with its per-target scores; the launcher's last sweep logs the rest), a confirmation summary on the
parent, no secret anywhere in the store, an unreachable server that costs one warning and no trial, and bad
[tracking] input refused before anything is created."""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import tomli_w
from helpers import TINY_STUDY, finished_rmr_study
from optuna.trial import TrialState, create_trial

from search.cli import main
from search.confirm import Confirmation, ConfirmedSetting, Interval, Paired
from search.exceptions import BadInputError
from search.execution._launcher import launch, resume
from search.execution._tracking import ENV, INSTALL, SCORES_ARTIFACT, StudyTracker, Tracking, tracking_of
from search.execution._trainable import TrialReport
from search.study import OpenStudy, Options, Place, definition_differences, open_study
from search.studyfile import parse_study
from search.studyfile._schema import TrackingSection

SECRET = "s3cr3t-mlflow-pw-271"
# the tiny study with one trial a launch and cheap attacks only: a launch runs the first trial, a resume the second
TRACKED_STUDY = {
    **TINY_STUDY,
    "study": {"name": "tracked", "n_trials": 1, "seed": 7},
    "attacks": {"names": ["conf", "hconf"]},
}


def runs(uri: str, experiment: str) -> pd.DataFrame:
    import mlflow

    with mock.patch.dict(os.environ, {ENV: uri}):
        return mlflow.search_runs(experiment_names=[experiment])


def files_holding(secret: str, root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def artifacts(uri: str, run_id: str) -> set[str]:
    import mlflow

    return {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run_id)}


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable server refuses at once: no HTTP retry, no back-off (the tracker's own defaults give way to
    the user's settings, as they would to yours)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


# ----------------------------------------------------------------------------------------- which URI, when


def test_the_flag_wins_over_the_file_and_the_file_over_the_environment():
    section = TrackingSection(mlflow="sqlite:///file.db", experiment="mine")
    env = {ENV: "sqlite:///env.db"}
    assert tracking_of("sqlite:///flag.db", section, env) == Tracking("sqlite:///flag.db", "mine", True)
    assert tracking_of(None, section, env) == Tracking("sqlite:///file.db", "mine", True)
    assert tracking_of(None, TrackingSection(), env) == Tracking("sqlite:///env.db", None, True)


def test_the_environment_alone_only_continues_a_study_tracked_in_an_existing_store(tmp_path: Path):
    existing = tmp_path / "mlflow.db"
    existing.touch()
    assert tracking_of(None, None, {}) is None
    assert tracking_of(None, None, {ENV: f"sqlite:///{existing}"}) == Tracking(f"sqlite:///{existing}", None, False)
    assert tracking_of(None, None, {ENV: f"sqlite:///{tmp_path / 'absent.db'}"}) is None  # never creates one


def test_tracking_asked_for_without_a_uri_or_without_mlflow_is_refused(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(BadInputError, match="--mlflow takes an MLflow tracking URI"):
        tracking_of(" ", None, {})
    with pytest.raises(BadInputError, match=r"\[tracking\] section names no MLflow URI"):
        tracking_of(None, TrackingSection(), {})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(BadInputError, match="wemem-search\\[tracking\\]"):
        tracking_of(None, TrackingSection(mlflow=f"http://user:{SECRET}@host"), {})
    assert tracking_of(None, None, {ENV: "http://host"}) is None  # exported for other work: no refusal


def test_tracking_is_neither_stored_with_the_study_nor_part_of_its_identity():
    plain = parse_study(TRACKED_STUDY)
    tracked = parse_study({**TRACKED_STUDY, "tracking": {"mlflow": f"http://u:{SECRET}@host", "experiment": "x"}})
    assert tracked.tracking == TrackingSection(mlflow=f"http://u:{SECRET}@host", experiment="x")
    assert "tracking" not in tracked.model_dump(mode="json")  # what the storage keeps: no URI, no credentials
    assert definition_differences(plain, tracked) == []


@pytest.mark.parametrize(
    ("tracking", "words"),
    [
        ({"mlflow": "sqlite:///m.db", "uri": "x"}, "[tracking.uri] unknown key"),
        ({"mlflow": ""}, "[tracking.mlflow]"),
    ],
)
def test_bad_tracking_exits_2_and_creates_nothing(tmp_path: Path, capsys, tracking: dict, words: str):
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps({**TRACKED_STUDY, "tracking": tracking}))
    before = set(tmp_path.iterdir())
    storage = f"sqlite:///{tmp_path / 'wemem.db'}"
    assert main(["launch", str(path), "--storage", storage, "--cache-dir", str(tmp_path / "cache")]) == 2
    assert words in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before


def test_tracking_without_mlflow_installed_exits_2_before_any_storage(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    path = tmp_path / "tracked.toml"
    path.write_text(tomli_w.dumps({**TRACKED_STUDY, "tracking": {"mlflow": "sqlite:///m.db"}}))
    assert main(["launch", str(path), "--storage", f"sqlite:///{tmp_path / 'wemem.db'}"]) == 2
    assert INSTALL in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracked.toml"]


# ------------------------------------------------------------------ stored trials, a confirmation, secrets


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for an MLflow SQLite store; MLflow puts its artifacts in ./mlruns, so the tests run inside it."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


def confirmation() -> Confirmation:
    ci = Interval(0.52, 0.50, 0.54)
    tuned = ConfirmedSetting(
        "trial 1", "tuned", "rmr", {"lambda_mem": 0.1}, (), Interval(0.9, 0.88, 0.92), ci, trial_number=1,
        vs_reference=Paired(Interval(-0.03, -0.05, -0.01), Interval(-0.01, -0.02, 0.0)),
    )  # fmt: skip
    return Confirmation((101, 102), 0.95, 0.05, (tuned,), verdict="tuned beat the default")


def test_stored_trials_and_a_confirmation_reach_mlflow_with_no_secret(store: Path, tmp_path: Path):
    """Trials stored without running (helpers.finished_rmr_study), one failed with a reason that names the
    storage URL, logged by a tracker whose storage URL and tracking URI both carry a password; a
    confirmation built by hand is logged on the study's run (the confirmation's own run is covered in
    test_confirm.py; here only what reaches MLflow matters)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_dict = {**TRACKED_STUDY, "study": {"name": "stored", "n_trials": 3}, "search": {"defenses": ["rmr"]}}
    finished_rmr_study(url, study_dict, str(tmp_path / "cache")).engine.dispose()
    opened = open_study("stored", Options(storage=url))
    postgres = f"postgresql+psycopg://wemem:{SECRET}@db.example:5432/wemem"
    opened.study.add_trial(
        create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": f"lost {postgres} mid-trial"})
    )
    place = Place(Options(storage=postgres), opened.place.cache_dir, None)
    secret_uri = f"sqlite:///{store / 'mlflow.db'}?password={SECRET}"
    lines: list[str] = []
    tracker = StudyTracker.open(
        Tracking(secret_uri, "stored-experiment"),
        OpenStudy(opened.study, opened.definition, opened.storage, place),
        lines.append,
    )
    assert tracker is not None
    tracker.log_trials(opened.study, "balanced_accuracy")
    tracker.log_trials(opened.study, "balanced_accuracy")  # a second launcher logs nothing twice
    tracker.log_confirmation(confirmation().to_json())
    assert lines[-1].startswith("logged 0 trial(s)") and SECRET not in "".join(lines)

    logged = runs(f"sqlite:///{store / 'mlflow.db'}", "stored-experiment")
    parent = logged[logged["tags.wemem.role"] == "study"].iloc[0]
    trials = logged[logged["tags.mlflow.parentRunId"] == parent.run_id]
    assert sorted(trials["tags.wemem.trial"]) == ["0", "1", "2"]
    assert sorted(trials["status"]) == ["FAILED", "FINISHED", "FINISHED"]
    assert set(trials["params.defense"].dropna()) == {"rmr"} and set(trials["params.lambda_mem"].dropna()) == {"0.1"}
    assert parent["metrics.confirmed.trial 1.leakage_low"] == pytest.approx(0.50)
    assert parent["metrics.confirmed.trial 1.leakage_vs_reference_high"] == pytest.approx(-0.01)
    assert parent["tags.wemem.storage"] == "postgresql+psycopg://wemem:***@db.example:5432/wemem"
    assert files_holding(SECRET, store) == []


def test_a_trial_logged_as_it_is_told_carries_its_scores_and_is_never_logged_twice(store: Path, tmp_path: Path):
    """The observer's path: a trial's per-target scores cross Tune in its report and reach MLflow as
    ``scores.npz``; told again, or swept at the launcher's end, the trial is not logged a second time."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    finished_rmr_study(
        url, {**TRACKED_STUDY, "search": {"defenses": ["rmr"]}}, str(tmp_path / "cache")
    ).engine.dispose()
    opened = open_study("tracked", Options(storage=url))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, index=np.arange(4), member=np.array([1, 1, 0, 0], bool), **{"score.conf": np.ones(4)})
    report = TrialReport.from_json(TrialReport([0.55], None, {}, buffer.getvalue()).to_json())
    uri = f"sqlite:///{store / 'mlflow.db'}"
    lines: list[str] = []
    tracker = StudyTracker.open(Tracking(uri, "told"), opened, lines.append)
    assert tracker is not None
    tracker.log_finished(opened, 0, report.scores)
    tracker.log_finished(opened, 0, report.scores)
    tracker.log_trials(opened.study, "balanced_accuracy")
    assert len(lines) == 1 and lines[0].startswith("logged 1 trial(s)")  # the sweep: trial 1 only

    logged = runs(uri, "told").dropna(subset=["tags.wemem.trial"]).set_index("tags.wemem.trial")
    assert sorted(logged.index) == ["0", "1"]
    assert artifacts(uri, logged.loc["0", "run_id"]) == {"roc.json", "trial.json", SCORES_ARTIFACT}
    assert artifacts(uri, logged.loc["1", "run_id"]) == {"roc.json", "trial.json"}  # swept: no report to read


def test_an_unreachable_server_warns_once_and_stops_asking(tmp_path: Path, fail_fast: None):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    finished_rmr_study(
        url, {**TRACKED_STUDY, "search": {"defenses": ["rmr"]}}, str(tmp_path / "cache")
    ).engine.dispose()
    opened = open_study("tracked", Options(storage=url))
    lines: list[str] = []
    assert StudyTracker.open(Tracking(f"http://me:{SECRET}@127.0.0.1:1"), opened, lines.append) is None
    assert len(lines) == 1 and "http://me:***@127.0.0.1:1" in lines[0] and SECRET not in lines[0]


# ----------------------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_a_study_finishes_past_an_unreachable_server_and_a_later_launcher_logs_its_trials(
    ray_session, store: Path, tmp_path: Path, cache_dir: Path, fail_fast: None
):
    """A trial runs while the tracking server is unreachable (one warning, no trial lost); a resume against a
    reachable store runs a second trial, logged as it is told with its per-target scores, and its last sweep
    logs the first trial (which has no scores to log)."""
    options = Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(cache_dir))
    definition = parse_study(TRACKED_STUDY)
    lines: list[str] = []
    study = launch(definition, options, lines.append, mlflow=f"http://me:{SECRET}@127.0.0.1:1").study
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING]  # 2nd warm start
    warnings = [line for line in lines if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and SECRET not in "\n".join(lines)

    uri = f"sqlite:///{store / 'mlflow.db'}"
    lines.clear()
    resume("tracked", options, 1, lines.append, mlflow=uri)
    assert any(line.startswith("logged 1 trial(s)") for line in lines)  # the sweep: trial 1 was logged as told
    logged = runs(uri, "tracked")
    parent = logged[logged["tags.wemem.role"] == "study"]
    assert len(parent) == 1 and parent.iloc[0]["params.defenses"] == "swmr,rsw"
    trials = logged[logged["tags.mlflow.parentRunId"] == parent.iloc[0].run_id].sort_values("tags.wemem.trial")
    assert list(trials["tags.wemem.trial"]) == ["0", "1"] and set(trials["tags.wemem.state"]) == {"COMPLETE"}
    assert list(trials["params.defense"]) == ["swmr", "rsw"] and trials["params.width_fraction"].notna().all()
    for metric in ("accuracy", "leakage", "leakage_low", "leakage_high", "conf.auc", "hconf.auc_high", "objective"):
        assert trials[f"metrics.{metric}"].notna().all(), metric
    assert (trials["metrics.leakage_low"] <= trials["metrics.leakage"]).all()
    assert trials["metrics.seconds.total"].gt(0).all()
    import mlflow

    client = mlflow.MlflowClient(uri)
    first, second = trials.run_id
    assert artifacts(uri, first) == {"roc.json", "trial.json"}
    assert artifacts(uri, second) == {"roc.json", "trial.json", SCORES_ARTIFACT}
    assert set(pd.read_json(client.download_artifacts(second, "roc.json", str(tmp_path)))) == {"conf", "hconf"}
    with np.load(client.download_artifacts(second, SCORES_ARTIFACT, str(tmp_path))) as scores:
        assert set(scores) == {"index", "member", "score.conf", "score.hconf"}
        assert len(set(scores["index"])) == len(scores["score.conf"]) == len(scores["score.hconf"])
        assert scores["member"].mean() == 0.5  # the victim's balanced targets
