"""``[search] warm_start``: settings from export files and from another study in the same storage are enqueued
after the paper's defaults when a study is created, each sampling exactly the setting it came from (no training:
the launcher's Ray and trial loop are stubbed; what is enqueued is what is checked)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

import search.execution._launcher as launcher
from search.results._export import export_document, write_export
from search.storage import open_storage
from search.study import Options, create_or_load_study, open_study
from search.studyfile import parse_study, suggest_setting

SPACE = {
    "rsw.order": CategoricalDistribution(["h2l", "l2h"]),
    "rsw.width_fraction": FloatDistribution(0.05, 0.8),
    "rsw.stride_ratio": FloatDistribution(0.02, 0.5),
}


def definition(name: str, **search: object):
    return parse_study(
        {"study": {"name": name, "n_trials": 6, "sampler": "random"}, "search": {"defenses": ["rsw", "rmr"], **search}}
    )


def finished(study: optuna.Study, value: float, defense: str, settings: dict) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            value=value,
            params={},
            distributions={},
            user_attrs={
                "defense": defense,
                "settings": settings,
                "utility": 0.9,
                "privacy": value,
                "strongest_attack": "conf",
                "feasible": True,
                "attacks": {},
            },
            system_attrs={"constraints": [-0.01]},
        )
    )


@pytest.fixture
def sources(tmp_path: Path) -> Options:
    """A finished source study ``src`` and an export of it (``best.toml``) beside the study files."""
    options = Options(storage=f"sqlite:///{tmp_path / 'wemem.db'}", cache_dir=str(tmp_path / "cache"))
    study, _ = create_or_load_study(definition("src"), open_storage(options.storage), {})
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf"})
    finished(study, 0.52, "rsw", {"order": "h2l", "width_fraction": 0.4, "stride_fraction": 0.04})
    finished(study, 0.53, "rmr", {"risky_fraction": 0.3, "lambda_mem": 0.05, "optimizer": "single"})
    finished(study, 0.54, "rsw", {"order": "l2h", "width_fraction": 0.1, "stride_fraction": 0.01})
    finished(study, 0.58, "rsw", {"order": "l2h", "width_fraction": 0.6, "stride_fraction": 0.06})
    write_export(export_document(open_study("src", options)), tmp_path / "best.toml")
    return options


def launched(tmp_path: Path, options: Options, monkeypatch: pytest.MonkeyPatch, **search: object) -> optuna.Study:
    """``wemem launch`` of a study file in tmp_path, with Ray and the trials stubbed out."""
    monkeypatch.setattr(launcher, "attach_ray", lambda d, o: d)
    monkeypatch.setattr(launcher, "run_study", lambda opened, target, echo, tracking=None: None)
    path = tmp_path / "study.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(definition("new", **search).model_dump(mode="json", exclude_none=True)))
    from search.studyfile import load_study_file

    return launcher.launch(load_study_file(path), options, echo=lambda m: None).study


def sampled(study: optuna.Study) -> list[tuple[str, str, dict]]:
    """Ask every enqueued trial as the objective would: (source, defense, settings)."""
    out = []
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        setting = suggest_setting(trial, ["rsw", "rmr"])
        out.append((trial.user_attrs["warm_start"], setting.defense, setting.settings))
        study.tell(trial, 0.5)
    return out


def test_warm_start_from_an_export_and_a_study_samples_their_settings(tmp_path, sources, monkeypatch):
    study = launched(tmp_path, sources, monkeypatch, warm_start=["best.toml", "study:src"], warm_start_top=3)
    got = sampled(study)
    # the paper's two defaults first, then the export's best, then src's best three (its best, already
    # enqueued from the export, runs once)
    assert [source for source, _, _ in got] == ["reference", "reference", "best.toml", "study:src#1", "study:src#2"]
    assert got[0][1:] == ("rsw", {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022})
    assert got[2][1:] == ("rsw", {"order": "h2l", "width_fraction": 0.4, "stride_fraction": 0.04})
    assert got[3][1:] == ("rmr", {"risky_fraction": 0.3, "lambda_mem": 0.05, "optimizer": "single"})
    assert got[4][1:] == ("rsw", {"order": "l2h", "width_fraction": 0.1, "stride_fraction": 0.01})


def test_a_default_outside_a_narrowed_space_is_left_out_not_a_crash(tmp_path, sources, monkeypatch):
    study = launched(
        tmp_path, sources, monkeypatch, enqueue_reference=True, space={"rsw": {"width_fraction": [0.3, 0.8]}}
    )
    got = sampled(study)
    assert [(s, d) for s, d, _ in got] == [("reference", "rmr")]  # rsw's default width 0.22 is outside


def test_a_resumed_study_does_not_enqueue_again(tmp_path, sources, monkeypatch):
    study = launched(tmp_path, sources, monkeypatch, warm_start=["best.toml"])
    assert len(study.trials) == 3
    study = launched(tmp_path, sources, monkeypatch, warm_start=["best.toml"])
    assert len(study.trials) == 3
