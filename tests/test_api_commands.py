"""One front door: every ``wemem`` command calls its :mod:`search.api` function, which returns a typed result; the
API's errors come by kind (bad input, storage, interrupted) and are all WememErrors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import finished_rmr_study

import search
from search import api
from search.cli import main
from search.exceptions import BadInputError, InterruptedStudyError, StorageError
from wemem.errors import WememError

STUDY = {
    "study": {"name": "base", "n_trials": 2, "sampler": "random"},
    "data": {"shadows": 2},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1},
    "pruning": {"sparsity": 0.6, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
}


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a storage holding one finished study, ``base``; the working directory is ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    finished_rmr_study(url, STUDY, str(tmp_path / "cache")).engine.dispose()
    return url


# ------------------------------------------------------------------------- every command goes through the API


class Calls:
    """Stands in for API functions: records what the command passed, then stops it as a user error would."""

    def __init__(self) -> None:
        self.made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def stand_in(self, name: str) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            self.made.append((name, args, kwargs))
            raise WememError("stood in")

        return called


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorded = Calls()
    for name in (
        "launch",
        "resume",
        "studies",
        "status",
        "trial_status",
        "export",
        "apply",
        "audit",
        "report",
        "delete",
        "confirm",
        "run",
        "memscore_compute",
        "memscore_import",
        "memscore_export",
    ):
        monkeypatch.setattr(api, name, recorded.stand_in(name))
    return recorded


COMMANDS = [
    (["launch", "s.toml", "--cpus-per-trial", "2"], "launch", ("s.toml",), {"resources": {"cpus_per_trial": 2.0}}),
    (["resume", "base", "--n-trials", "3"], "resume", ("base",), {"n_trials": 3}),
    (["launch", "s.toml", "--mlflow", "sqlite:///m.db"], "launch", ("s.toml",), {"mlflow": "sqlite:///m.db"}),
    (["resume", "base", "--mlflow", "http://host:5000"], "resume", ("base",), {"mlflow": "http://host:5000"}),
    (["status"], "studies", (), {"storage": "sqlite:///x.db"}),
    (["status", "base"], "status", ("base",), {"stale_after": 30}),
    (["status", "base", "--trial", "1"], "trial_status", ("base", 1), {}),
    (["export", "base", "--out", "best.toml"], "export", ("base", "best.toml"), {}),
    (
        ["apply", "best.toml", "--out", "applied", "--allow-code"],
        "apply",
        ("best.toml", "applied"),
        {"allow_code": True, "parallel": True},
    ),
    (
        ["audit", "model.onnx", "--study", "base", "--export", "best.toml", "--trial", "2"],
        "audit",
        ("model.onnx",),
        {"study": "base", "export_file": "best.toml", "trial": 2, "parallel": True},
    ),
    (["report", "base", "--out", "audit"], "report", ("base", "audit"), {}),
    (["delete", "base", "--yes"], "delete", ("base",), {"yes": True, "force": False}),
    (["confirm", "base", "--seeds", "4", "--attacks", "conf"], "confirm", ("base",), {"seeds": 4, "attacks": "conf"}),
    (["confirm", "base", "--mlflow", "sqlite:///m.db"], "confirm", ("base",), {"mlflow": "sqlite:///m.db"}),
    (
        ["run", "--defense", "rmr", "--settings", "lambda_mem=0.1"],
        "run",
        (),
        {"defense": "rmr", "settings": {"lambda_mem": 0.1}, "adaptive": True},
    ),
    (["memscore", "compute", "--serial"], "memscore_compute", (), {"out": None}),
    (["memscore", "import", "scores.csv", "--order", "ours"], "memscore_import", ("scores.csv",), {"order": "ours"}),
    (["memscore", "export", "--out", "scores.csv"], "memscore_export", ("scores.csv",), {}),
]


@pytest.mark.parametrize("argv, function, args, kwargs", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_each_command_calls_its_api_function(
    argv: list[str], function: str, args: tuple[Any, ...], kwargs: dict[str, Any], calls: Calls, capsys
):
    assert main([*argv, "--storage", "sqlite:///x.db"]) == 2
    assert capsys.readouterr().err == "error: stood in\n"
    [(name, passed, keywords)] = calls.made
    assert name == function and passed[: len(args)] == args
    assert {key: keywords[key] for key in kwargs} == kwargs


def test_the_experiment_of_run_and_memscore_reaches_the_api_typed(calls: Calls):
    main(["run", "--dataset", "csv:rows.csv", "--label", "kind", "--shadows", "3", "--serial"])
    main(["memscore", "export", "--out", "x.csv", "--study", "s.toml"])
    (_, (experiment,), keywords), (_, passed, _) = calls.made
    assert experiment == api.Experiment(dataset="csv:rows.csv", label="kind", shadows=3)
    assert keywords["execution"] == api.Execution(serial=True)
    assert passed == ("x.csv", "s.toml")  # a study file gives the experiment


# ---------------------------------------------------------------------- the API functions, as the docs call them


def test_status_listing_trial_and_delete_return_what_the_command_prints(stored: str, capsys):
    listing = api.studies(storage=stored)
    assert isinstance(listing, api.StudyListing) and [s.name for s in listing.studies] == ["base"]
    status = api.status("base", storage=stored)
    assert isinstance(status, api.StudyStatus) and status.study.name == "base"
    detail = api.trial_status("base", 0, storage=stored)
    assert isinstance(detail, api.TrialStatus) and detail.trial.number == 0

    for argv, shown in (
        (["status"], listing),
        (["status", "base"], status),
        (["status", "base", "--trial", "0"], detail),
    ):
        assert main([*argv, "--storage", stored]) == 0
        assert capsys.readouterr().out.splitlines() == shown.lines()

    with pytest.raises(BadInputError, match="--yes"):
        api.delete("base", storage=stored)
    deleted = api.delete("base", yes=True, storage=stored)
    assert deleted == api.DeletedStudy("base", stored) and api.studies(storage=stored).studies == ()


def test_export_and_report_write_their_files_and_echo_what_the_command_prints(stored: str, tmp_path: Path):
    lines: list[str] = []
    path = api.export("base", tmp_path / "best.toml", storage=stored, echo=lines.append)
    assert path.is_file() and lines == [f"wrote {tmp_path / 'best.toml'}"]
    written = api.report("base", tmp_path / "audit", storage=stored)
    assert (tmp_path / "audit" / "report.html") in written and all(p.is_file() for p in written)


def test_memscore_export_without_cached_scores_names_the_compute_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="run `wemem memscore compute`"):
        api.memscore_export(tmp_path / "scores.csv", api.Experiment(), cache_dir=str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------ errors by kind


def test_the_kinds_are_wemem_errors_and_exported_from_the_api_and_the_package():
    for kind in (BadInputError, StorageError, InterruptedStudyError):
        assert issubclass(kind, WememError)
        assert getattr(api, kind.__name__) is kind and getattr(search, kind.__name__) is kind
    assert issubclass(InterruptedStudyError, KeyboardInterrupt)  # code that stops on Ctrl-C still stops


@pytest.mark.parametrize(
    "call",
    [
        lambda: api.launch("s.toml", storage=5),
        lambda: api.resume("base", n_trials=0),
        lambda: api.status(7),
        lambda: api.delete("base", yes="yes"),
        lambda: api.run(api.Experiment(), attacks=3),
        lambda: api.run(api.Experiment(), steps=0, out="/tmp/wemem-never-written"),
        lambda: api.memscore_import(3),
        lambda: api.audit(3, study="base"),
        lambda: api.audit("model.onnx", study="base", trial=-1),
    ],
)
def test_bad_arguments_are_bad_input(call: Callable[[], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError):
        call()


def test_a_missing_or_foreign_storage_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError, match="no storage at"):
        api.studies(storage=f"sqlite:///{tmp_path / 'none.db'}")
    (tmp_path / "text.db").write_text("not a database")
    with pytest.raises(StorageError, match="not a SQLite database"):
        api.status("base", storage=f"sqlite:///{tmp_path / 'text.db'}")


def test_an_interrupted_launcher_is_an_interrupted_study_error_naming_its_resume(
    stored: str, monkeypatch: pytest.MonkeyPatch, capsys
):
    import search.execution._launcher
    from search.execution._tune import Interrupted

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise Interrupted([1])

    monkeypatch.setattr(search.execution._launcher, "resume", interrupted)
    with pytest.raises(InterruptedStudyError) as caught:
        api.resume("base", storage=stored)
    assert caught.value.requeued == [1] and "wemem resume base" in caught.value.advice
    assert main(["resume", "base", "--storage", stored]) == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted; finished trials are stored. Running trial(s) [1] were failed and their settings re-queued. "
        "Continue with `wemem resume base`."
    )
