"""End to end: a 2-trial study through Ray Tune on digits, resume, stale-trial sweep, export read-back."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from helpers import TINY_STUDY, age_heartbeat
from optuna.trial import TrialState

from search.cli import main
from search.execution._launcher import launch, resume
from search.results._apply import apply_export
from search.results._export import export_document, write_export
from search.results._report import write_report
from search.storage import open_storage, retried_from
from search.study import Options, best_trials, create_or_load_study, open_study
from search.studyfile import parse_study
from search.studyfile._exports import read_export
from wemem.environment import device_description

pytestmark = pytest.mark.e2e


@pytest.fixture
def options(tmp_path: Path) -> Options:
    return Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(tmp_path / "cache"))


def test_two_trial_study_resume_and_export(ray_session, options: Options, tmp_path: Path):
    definition = parse_study(TINY_STUDY)
    messages: list[str] = []
    study = launch(definition, options, messages.append).study
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # the paper's reference settings were enqueued as warm starts, one per defense
    assert [t.user_attrs["defense"] for t in trials] == ["swmr", "rsw"]
    assert trials[0].params["swmr.width_fraction"] == pytest.approx(0.22)
    for trial in trials:
        attrs = trial.user_attrs
        assert set(attrs["attacks"]) == {"conf", "entr", "mentr", "hconf"}
        assert 0.0 <= attrs["utility"] <= 1.0 and 0.0 <= attrs["privacy"] <= 1.0
        assert "utility_drop" in "".join(trial.system_attrs)  # the constraint is recorded
        timings = attrs["timings"]  # where the trial's time went, shared work as recorded when computed
        assert {"split", "pretraining", "memscores", "reference"} <= set(timings["shared"])
        assert set(timings["models"]) == {"victim", "shadow0", "shadow1"} and set(timings["attacks"]) == {
            "conf",
            "entr",
            "mentr",
            "hconf",
        }
        assert timings["pruning_stage"] > 0 and timings["attack_stage"] > 0
    assert "reference" in study.user_attrs
    assert main(["status", "tiny", "--storage", options.storage, "--trial", "1"]) == 0
    assert main(["status", "tiny", "--storage", options.storage, "--trial", "9"]) == 2

    messages.clear()
    study = resume("tiny", options, n_trials=1, echo=messages.append).study
    assert {"cache hit: split (" in m for m in messages} >= {True}
    assert any(m.startswith("cache hit: pretrained") for m in messages)
    assert any(m.startswith("cache hit: mem-scores") for m in messages)
    assert not any(m.startswith(("computed", "pretrained victim")) for m in messages)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3

    out = tmp_path / "best.toml"
    write_export(export_document(open_study("tiny", options)), out)
    document = read_export(out)
    assert document["dataset"]["dataset"] == "digits" and document["model"] == "columnfc"
    assert document["pruning"]["sparsity"] == 0.6
    best = document["best"]
    assert best["defense"] in {"swmr", "rsw"} and "test_accuracy" in best["metrics"]
    assert 0 < best["metrics"]["privacy_se"] < 0.1  # the binomial bound of a trial scored once
    assert best["metrics"]["attacks"]["hconf"]["balanced_accuracy"] >= 0.0
    assert main(["export", "tiny", "--storage", options.storage, "--out", str(tmp_path / "best.json")]) == 0
    assert json.loads((tmp_path / "best.json").read_text())["best"]["trial_number"] == best["trial_number"]

    # apply rebuilds the defended pruned model from the export alone and reproduces the stored trial
    evaluation = apply_export(out, tmp_path / "applied", options.cache_dir, echo=lambda m: None)
    assert evaluation["reproduced"]["test_accuracy"] == pytest.approx(best["metrics"]["test_accuracy"], abs=0.02)
    saved = torch.load(tmp_path / "applied" / "model.pt", weights_only=True)
    assert set(saved) == {"weights", "masks"} and set(saved["masks"]) == {"fc1.weight", "fc2.weight"}
    for name, mask in saved["masks"].items():
        assert bool((saved["weights"][name][~mask] == 0).all())  # pruned weights stay exactly zero
        assert 1 - mask.float().mean().item() == pytest.approx(0.6, abs=1e-3)


def test_pareto_study_exports_its_front_and_reports(ray_session, options: Options, tmp_path: Path):
    definition = parse_study(
        dict(
            TINY_STUDY,
            study={"name": "front", "n_trials": 3, "seed": 3, "sampler": "random"},
            objective={"mode": "pareto"},
            search={"defenses": ["rmr"], "enqueue_reference": False},
            resources={"cpus_per_trial": 1, "max_concurrent_trials": 2},
        )
    )
    study = launch(definition, options, lambda m: None).study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    completed = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(completed) == 3 and all(len(t.values) == 2 for t in completed)
    document = export_document(open_study("front", options)).to_json()
    front = {r["trial_number"] for r in document["pareto"]}
    expected = {t.number for t in study.best_trials}
    assert front == expected and front
    for record in document["pareto"]:  # no exported trial is dominated by another completed trial
        p, u = record["values"]
        assert not any(t.values[0] <= p and t.values[1] >= u and tuple(t.values) != (p, u) for t in completed)
    written = {p.name for p in write_report(open_study("front", options), tmp_path / "report")}
    assert written == {
        "trials.csv",
        "trials.parquet",
        "privacy_utility.png",
        "history.png",
        "importance.png",
        "attacks.png",
        "roc.png",
        "timings.png",
        "report.json",
        "report.html",
    }
    audit = json.loads((tmp_path / "report" / "report.json").read_text())
    assert audit["pareto"] and {r["trial_number"] for r in audit["best"]} == expected  # the front, as exported
    environment = audit["reproducibility"]["study_environment"]  # recorded by the launcher
    assert environment["packages"]["torch"] == version("torch") and environment["device"] == device_description()
    assert audit["reproducibility"]["assets_fingerprint"] == study.user_attrs["assets_fingerprint"]
    table = pd.read_parquet(tmp_path / "report" / "trials.parquet")
    assert len(table) == 3 and {
        "utility",
        "privacy",
        "hconf.auc",
        "param.rmr.lambda_mem",
        "seconds.attack_stage",
        "seconds.attack.hconf",
        "seconds.model.victim",
    } <= set(table.columns)


def test_resume_fails_and_requeues_a_dead_launchers_trial(ray_session, options: Options):
    definition = parse_study(
        dict(
            TINY_STUDY,
            study={"name": "stale", "n_trials": 1, "seed": 7},
            search={"defenses": ["rmr"], "enqueue_reference": False},
        )
    )
    launch(definition, options, lambda m: None)
    # a launcher on another machine died mid-trial: a RUNNING trial whose heartbeat is an hour old
    storage = options.open_storage()
    study = optuna.load_study(study_name="stale", storage=storage)
    dead = study.ask(
        {
            "rmr.risky_fraction": optuna.distributions.FloatDistribution(0.01, 0.5, log=True),
            "rmr.lambda_mem": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
        }
    )
    age_heartbeat(storage, study, dead.number, seconds=3600)
    params = dict(dead.params)
    study = resume("stale", options, n_trials=1, echo=lambda m: None).study
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retried = [t for t in trials if retried_from(t) == dead.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE and retried[0].params == params
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_cli_errors_are_clear_and_exit_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\n[data]\ndataset = "emnist"\n[search]\ndefenses = ["swmr", "nope"]\n')
    assert main(["launch", str(bad), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert "[data.dataset] unknown dataset 'emnist'" in err and "digits" in err
    assert "[search.defenses] unknown defense 'nope'" in err
    assert main(["launch", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["resume", "ghost", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "no storage at" in capsys.readouterr().err and not (tmp_path / "x.db").exists()
    assert main(["status", "--storage", "postgresql+psycopg://user:s3cret@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err
    assert "cannot open storage" in err and "s3cret" not in err


def test_early_stopping_prunes_a_poor_trial_between_rounds(ray_session, options: Options):
    definition = parse_study(
        dict(
            TINY_STUDY,
            study={"name": "early", "n_trials": 2, "seed": 7},
            search={
                "defenses": ["rmr"],
                "enqueue_reference": False,
                "early_stopping": "median",
                "early_stopping_startup_trials": 1,
                "early_stopping_warmup_rounds": 0,
            },
        )
    )
    study, _ = create_or_load_study(definition, open_storage(options.storage_url), {"cache_dir": options.cache_dir})
    study.enqueue_trial({"rmr.lambda_mem": 0.01, "rmr.risky_fraction": 0.05})  # mild: completes
    study.enqueue_trial({"rmr.lambda_mem": 1.0, "rmr.risky_fraction": 0.5})  # strong L2 on half the data: poor
    study = launch(definition, options, lambda m: None).study
    first, second = study.get_trials()
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [0, 1, 2]
    assert first.intermediate_values[2] == pytest.approx(first.value)  # the last round is the deployed model
    # PRUNED (Optuna keeps its last round value), never COMPLETE with a partial value; stopped before round 2
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == [0]
    assert second.intermediate_values[0] > first.intermediate_values[0]
    assert best_trials(study) == [first]


def test_a_launch_whose_every_trial_fails_exits_2_naming_a_reason(
    ray_session, options: Options, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """Scripts and schedulers must notice a launcher that found nothing: here every trial runs past its limit."""
    import tomli_w

    study = dict(
        TINY_STUDY,
        study={"name": "allfail", "n_trials": 1, "seed": 7},
        search={"defenses": ["rmr"], "enqueue_reference": False, "trial_timeout_s": 0.001},
    )
    path = tmp_path / "allfail.toml"
    path.write_text(tomli_w.dumps(study))
    code = main(["launch", str(path), "--storage", options.storage, "--cache-dir", options.cache_dir])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "every one of the 1 trial(s) this launcher ran failed" in err and "time limit" in err
    assert "wemem resume allfail" in err and "Traceback" not in err
    assert "study 'allfail': 1 FAIL" in out  # the summary is printed before
