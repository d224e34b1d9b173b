"""The sparsity searched with the defense ([search.space.pruning]): sampled into the trial's pruning, judged against
the undefended reference at that sparsity (measured once, then cached), carried by export, apply and confirm, and
refused (exit 2, nothing written) when the study file asks for what cannot be."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import tomli_w
from helpers import TINY_STUDY

import objectives._trial
from search import load_setting
from search.cli import main
from search.confirm._candidates import candidates
from search.execution._trainable import reference_at
from search.results._apply import apply_spec, read_checked_export
from search.storage import open_storage
from search.study import create_or_load_study, ranked_trials
from search.studyfile import parse_study, suggest_pruning
from search.studyfile._spaces import reference_params
from wemem.defenses import Setting

SEARCHED = {"space": {"pruning": {"sparsity": [0.5, 0.7]}}}


def study_dict(**sections: dict) -> dict:
    data = {key: dict(value) for key, value in TINY_STUDY.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


def test_the_sampled_sparsity_prunes_the_victim_and_its_reference_is_measured_once(
    tiny_assets, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = parse_study(study_dict(search=SEARCHED, objective={"accuracy_reference": "dense"}))
    spec = definition.trial_spec(str(cache_dir))
    pruning = suggest_pruning(optuna.trial.FixedTrial({"pruning.sparsity": 0.7}), definition.search.space, spec.pruning)
    assert (pruning.sparsity, pruning.steps) == (0.7, spec.pruning.steps)
    runs: list[float] = []
    run_experiment = objectives._trial.run_experiment

    def counted(assets, setting, trial_pruning, *args, **kwargs):
        runs.append(trial_pruning.sparsity)
        return run_experiment(assets, setting, trial_pruning, *args, **kwargs)

    monkeypatch.setattr(objectives._trial, "run_experiment", counted)
    at_pruning = replace(spec, pruning=pruning)
    study_reference = objectives._trial.Reference(0.5, 0.5, "conf", {})  # the launcher's, at the file's 0.6
    assert reference_at(spec, spec, study_reference, tiny_assets, objectives._trial.serial_map) is study_reference
    base = reference_at(at_pruning, spec, study_reference, tiny_assets, objectives._trial.serial_map)
    again = reference_at(at_pruning, spec, study_reference, tiny_assets, objectives._trial.serial_map)
    assert runs == [0.7] and again == base  # the second trial at 0.7 reads the cached reference

    outcome = objectives._trial.evaluate_trial(
        at_pruning, Setting("rmr", {"lambda_mem": 0.1, "risky_fraction": 0.2}), base, tiny_assets
    )
    for name, measured in outcome.result.victim_layer_sparsity.items():
        assert measured == pytest.approx(0.7, abs=0.01), name
    # the floor is the dense victim's accuracy (accuracy_reference = "dense"), not the pruned reference's
    floor = base.result["pretrained_accuracy"] - definition.objective.delta
    assert outcome.objective.constraint == pytest.approx(floor - outcome.utility)


@pytest.mark.parametrize(
    ("file_sparsity", "enqueued"), [(0.6, 0.6), (0.4, 0.6), (0.65, 0.65)], ids=["in range", "outside", "on grid"]
)
def test_enqueued_settings_run_at_the_file_sparsity_or_the_range_middle(file_sparsity: float, enqueued: float) -> None:
    definition = parse_study(study_dict(search=SEARCHED, pruning={"sparsity": file_sparsity}))
    params = reference_params("rsw", False, definition.search.space, definition.pruning_config())
    assert params["pruning.sparsity"] == enqueued
    with pytest.raises(ValueError, match="study_pruning"):
        reference_params("rsw", False, definition.search.space)


@pytest.mark.parametrize("searched", [True, False], ids=["searched", "the file's"])
def test_a_trial_stores_its_pruning_only_when_its_study_searches_it(tmp_path: Path, searched: bool) -> None:
    from search.execution._tune import Progress, StudySearcher
    from search.results._text import sparsity_note
    from search.storage import TrialHeartbeats
    from search.storage._records import stored_pruning
    from search.study import OpenStudy, Options, Place

    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    definition = parse_study(study_dict(search=SEARCHED if searched else {}))
    storage = open_storage(url)
    study, _ = create_or_load_study(definition, storage, {"cache_dir": str(tmp_path)})
    opened = OpenStudy(study, definition, storage, Place.of(Options(storage=url), study))
    searcher = StudySearcher(opened, 1, "L1", TrialHeartbeats(storage), Progress(1, print), print)
    pruning = searcher.suggest("a")["pruning"]
    [trial] = study.get_trials()
    stored = {"sparsity": pruning.sparsity, "steps": pruning.steps} if searched else None
    assert stored_pruning(trial) == stored  # None: the study file's [pruning], which confirm and export state
    assert sparsity_note(trial) == (f" at sparsity {pruning.sparsity:g}" if searched else "")


def finished_sparsity_study(tmp_path: Path, **objective: object) -> tuple[str, optuna.Study]:
    """A stored study that searched the sparsity, with one RMR setting completed at two sparsities."""
    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    definition = study_dict(study={"name": "sp"}, search={**SEARCHED, "defenses": ["rmr"]}, objective=objective)
    study, _ = create_or_load_study(parse_study(definition), open_storage(url), {"cache_dir": str(tmp_path)})
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf"})
    settings = {"lambda_mem": 0.1, "risky_fraction": 0.2}
    for sparsity, privacy in ((0.7, 0.55), (0.5, 0.57)):
        values = [privacy, 0.9, sparsity][: len(study.directions)]
        study.add_trial(
            optuna.trial.create_trial(
                params={"pruning.sparsity": sparsity},
                distributions={"pruning.sparsity": optuna.distributions.FloatDistribution(0.5, 0.7, step=0.05)},
                values=values,
                user_attrs={
                    "defense": "rmr",
                    "settings": settings,
                    "sparsity": sparsity,
                    "pruning_steps": 2,
                    "utility": 0.9,
                    "privacy": privacy,
                    "strongest_attack": "conf",
                    "feasible": True,
                    "attacks": {},
                },
            )
        )
    return url, study


def test_export_apply_and_confirm_carry_each_trials_sparsity(tmp_path: Path) -> None:
    url, study = finished_sparsity_study(tmp_path)
    assert [t.user_attrs["sparsity"] for t in ranked_trials(study)] == [0.7, 0.5]  # one setting, two candidates
    chosen = candidates(study, 2)[1:]
    assert [c.pruning for c in chosen] == [{"sparsity": 0.7, "steps": 2}, {"sparsity": 0.5, "steps": 2}]
    spec = parse_study(study_dict(search=SEARCHED)).trial_spec(str(tmp_path))
    assert chosen[1].at_pruning(spec).pruning.sparsity == 0.5

    out = tmp_path / "best.toml"
    assert main(["export", "sp", "--storage", url, "--out", str(out)]) == 0
    assert tomllib.loads(out.read_text())["best"]["pruning"] == {"sparsity": 0.7, "steps": 2}
    applied = apply_spec(read_checked_export(out), str(tmp_path), None)
    assert (applied.pruning.sparsity, applied.pruning.steps) == (0.7, 2)
    assert load_setting(out).pruning == applied.pruning  # the user's own loop prunes to it too

    report = tmp_path / "report"
    assert main(["report", "sp", "--storage", url, "--out", str(report)]) == 0
    assert (report / "sparsity.png").stat().st_size > 0  # leakage and accuracy against the searched sparsity


def test_status_and_a_confirmed_setting_state_each_trials_sparsity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.confirm._confirmation import ConfirmedSetting
    from search.confirm._statistics import t_interval

    url, _ = finished_sparsity_study(tmp_path)
    assert main(["status", "sp", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "best trial #0: defense rmr (lambda_mem=0.1, risky_fraction=0.2) at sparsity 0.7" in out
    assert "attack 0.5700 at sparsity 0.5" in out  # the trial table
    interval = t_interval([0.5, 0.6, 0.7])
    entry = ConfirmedSetting(
        "trial 0", "tuned", "rmr", {}, (), interval, interval, 0, pruning={"sparsity": 0.7, "steps": 2}
    )
    assert ConfirmedSetting.from_json(entry.to_json()) == entry  # stored with the confirmation, read back


def test_a_pareto_study_with_sparsity_as_third_objective_ranks_its_front(tmp_path: Path) -> None:
    url, study = finished_sparsity_study(tmp_path, mode="pareto", sparsity_objective=True)
    assert len(study.directions) == 3
    # (0.55, 0.9, 0.7) dominates (0.57, 0.9, 0.5): less leakage at a higher sparsity
    assert [t.user_attrs["sparsity"] for t in ranked_trials(study)] == [0.7]
    report = tmp_path / "report"
    assert main(["report", "sp", "--storage", url, "--out", str(report)]) == 0
    assert json.loads((report / "report.json").read_text())["best"][0]["values"] == [0.55, 0.9, 0.7]


BAD_PRUNING_SPACE = {
    "range outside [0, 1)": ({"search": {"space": {"pruning": {"sparsity": [0.5, 1.0]}}}}, "leaves [0, 1)"),
    "low >= high": ({"search": {"space": {"pruning": {"sparsity": [0.8, 0.6]}}}}, "low < high"),
    "off the grid": ({"search": {"space": {"pruning": {"sparsity": [0.5, 0.72]}}}}, "multiple of 0.05"),
    "steps not whole": ({"search": {"space": {"pruning": {"steps": [1, 2.5]}}}}, "whole numbers"),
    "steps with one_shot": (
        {"pruning": {"one_shot": True}, "search": {"space": {"pruning": {"steps": [1, 3]}}}},
        "one-shot",
    ),
    "sparsity_objective without searched sparsity": (
        {"objective": {"mode": "pareto", "sparsity_objective": True}, "study": {"sampler": "nsgaii"}},
        "must be searched",
    ),
    "unknown key": ({"search": {"space": {"pruning": {"rate": 0.5}}}}, "unknown key"),
}


@pytest.mark.parametrize(("sections", "phrase"), BAD_PRUNING_SPACE.values(), ids=BAD_PRUNING_SPACE)
def test_a_bad_pruning_space_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: dict, phrase: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(study_dict(**sections)))
    database = tmp_path / "wemem.db"
    cache = tmp_path / "cache"
    code = main(["launch", str(path), "--storage", f"sqlite:///{database}", "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err, err
    assert "Traceback" not in err
    assert not database.exists() and not cache.exists()
