"""The leakage cap (``[objective] mode = "leakage_cap"``): the most accurate setting whose leakage's upper bound
P + z * se stays at or below max_leakage. The constraint and feasibility by hand, the ranking, the confirmation's
verdict on the cap, what status and export state of it, a resumed study's cap, bad [objective] input, and one
tiny launch through Ray."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import tomli_w
from helpers import TINY_STUDY, rsw_trial
from optuna.trial import TrialState
from test_bad_input import assert_refused

from objectives import ObjectiveConfig, score
from search.cli import main
from search.confirm import (
    REFERENCE,
    Candidate,
    Confirmation,
    Interval,
    LeakageCap,
    SeedResult,
    candidates,
    confirm_study,
    confirm_with,
)
from search.confirm._statistics import verdict
from search.execution._tune import best_text
from search.storage import open_storage
from search.study import Options, best_trials, create_or_load_study, open_study, ranked_trials
from search.studyfile import parse_study

CAP = 0.6
Z = 1.645
CAP_CONFIG = ObjectiveConfig("leakage_cap", max_leakage=CAP, leakage_se_multiple=Z)

# ----------------------------------------------------------------------------------------- the constraint


def test_the_constraint_is_the_leakage_bound_minus_the_cap_by_hand():
    # P 0.55, se 0.02: bound 0.55 + 1.645 * 0.02 = 0.5829, c = 0.5829 - 0.6 = -0.0171; feasible, value 1 - 0.80
    below = score(0.55, 0.80, 0.85, CAP_CONFIG, privacy_se=0.02)
    assert below.constraint == pytest.approx(-0.0171)
    assert below.feasible and below.values == [pytest.approx(0.20)]
    # P 0.58 is under the cap, but its margin is not: 0.58 + 0.0329 = 0.6129, c = +0.0129; value 1 + c
    margin = score(0.58, 0.90, 0.85, CAP_CONFIG, privacy_se=0.02)
    assert margin.constraint == pytest.approx(0.0129)
    assert not margin.feasible and margin.values == [pytest.approx(1.0129)]
    # the same trial measured without noise (se 0) keeps the cap: c = 0.58 - 0.6 = -0.02
    exact = score(0.58, 0.90, 0.85, CAP_CONFIG, privacy_se=0.0)
    assert exact.constraint == pytest.approx(-0.02) and exact.values == [pytest.approx(0.10)]
    # z = 0 states the cap on the mean alone
    plain = ObjectiveConfig("leakage_cap", max_leakage=CAP, leakage_se_multiple=0.0)
    assert score(0.58, 0.90, 0.85, plain, privacy_se=0.02).feasible
    # an infeasible value is worse than any feasible one (1 - U <= 1)
    assert margin.values[0] > 1 >= below.values[0]
    assert CAP_CONFIG.constraint_name == "leakage_over_cap" and CAP_CONFIG.directions == ["minimize"]


def test_progress_states_the_best_as_accuracy_under_the_cap():
    assert best_text(0.22, CAP_CONFIG) == "best acc=0.7800 under cap 0.6"
    assert best_text(0.55, ObjectiveConfig()) == "best=0.5500"


# -------------------------------------------------------------------------------------------- the ranking


def cap_trial(utility: float, privacy: float, se: float) -> optuna.trial.FrozenTrial:
    """A finished cap-study trial as the launcher stores it: value and constraint from ``score``."""
    objective = score(privacy, utility, 0.9, CAP_CONFIG, privacy_se=se)
    return rsw_trial(
        round(utility, 3),  # a distinct setting per trial
        utility,
        privacy,
        {"constraints:leakage_over_cap": objective.constraint},
        value=objective.values[0],
        privacy_se=se,
        feasible=objective.feasible,
        attacks={},
    )


# (accuracy, leakage, se): the most accurate trial breaks the cap through its margin only
TRIALS = [(0.90, 0.59, 0.02), (0.80, 0.55, 0.01), (0.85, 0.57, 0.01), (0.70, 0.50, 0.01)]


def test_ranking_puts_the_most_accurate_feasible_trial_first():
    study = optuna.create_study(direction="minimize")
    for row in TRIALS:
        study.add_trial(cap_trial(*row))
    assert [t.user_attrs["utility"] for t in best_trials(study)] == [0.85]
    assert [t.user_attrs["utility"] for t in ranked_trials(study)] == [0.85, 0.80, 0.70]


# ------------------------------------------------------------------------------------------ the confirmation


def test_the_cap_verdict_reads_the_interval_by_hand():
    cap = LeakageCap(CAP, Z)
    assert cap.verdict(Interval(0.55, 0.53, 0.57)) == "keeps the cap"
    assert cap.verdict(Interval(0.58, 0.56, 0.60)) == "keeps the cap"  # at the cap keeps it
    assert cap.verdict(Interval(0.62, 0.61, 0.63)) == "breaks the cap"
    assert cap.verdict(Interval(0.59, 0.57, 0.61)) == "cannot say"
    assert cap.verdict(Interval(0.50, math.nan, math.nan)) == "cannot say"  # one seed: no interval


# per candidate: (accuracy, leakage) on each of three seeds
SEED_RESULTS = {
    REFERENCE: [(0.90, 0.70), (0.91, 0.71), (0.89, 0.69)],
    "trial 0": [(0.86, 0.64), (0.85, 0.66), (0.87, 0.65)],  # breaks the cap
    "trial 1": [(0.80, 0.55), (0.81, 0.56), (0.79, 0.54)],  # keeps it
    "trial 2": [(0.84, 0.57), (0.83, 0.63), (0.85, 0.60)],  # straddles it
    "trial 3": [(0.75, 0.52), (0.76, 0.53), (0.74, 0.51)],  # keeps it, less accurate
}
SEEDS = [1007, 2007, 3007]


def fixed_evaluator(jobs: list[tuple[Candidate, int]]) -> Iterator[tuple[int, SeedResult]]:
    for i, (candidate, seed) in enumerate(jobs):
        utility, privacy = SEED_RESULTS[candidate.label][SEEDS.index(seed)]
        yield i, SeedResult(utility, privacy, "conf")


def test_the_best_confirmed_setting_is_the_most_accurate_that_keeps_the_cap():
    chosen = [Candidate(REFERENCE, "none", {})] + [
        Candidate(label, "rsw", {"width_fraction": 0.1 * i}, i) for i, label in enumerate(list(SEED_RESULTS)[1:])
    ]
    confirmation = confirm_with(chosen, SEEDS, fixed_evaluator, None, cap=LeakageCap(CAP, Z))
    verdicts = {c.label: c.leakage_cap for c in confirmation.candidates}
    assert verdicts == {
        REFERENCE: "breaks the cap",
        "trial 0": "breaks the cap",
        "trial 1": "keeps the cap",
        "trial 2": "cannot say",
        "trial 3": "keeps the cap",
    }
    assert confirmation.best is not None and confirmation.best.label == "trial 1"
    strict = confirm_with(chosen, SEEDS, fixed_evaluator, None, cap=LeakageCap(0.5, Z))  # no interval is under 0.5
    assert strict.best is None
    assert (verdict(strict) or "").startswith("no confirmed setting keeps the cap 0.5 on 3 fresh seeds: trial 0 breaks")
    stored = json.loads(json.dumps(confirmation.to_json()))
    assert stored["leakage_cap"] == {"max_leakage": CAP, "leakage_se_multiple": Z}
    assert Confirmation.from_json(stored) == confirmation
    # a confirmation stored before the cap existed loads as one without a cap
    for key in ("leakage_cap",):
        stored.pop(key)
    for entry in stored["candidates"]:
        entry.pop("leakage_cap")
    old = Confirmation.from_json(stored)
    assert old.cap is None and old.best is not None and old.best.label == "trial 0"  # the study's ranking


@pytest.mark.parametrize(
    "default, expected",
    [
        (
            "trial 2",
            "may break the cap (its interval straddles it) on the fresh seeds while trial 1 keeps it",
        ),
        (
            "trial 3",
            "tuning gained +5.0 points [95% CI +5.0, +5.0] of accuracy over the paper's default (trial 3, rsw)",
        ),
        ("trial 1", "the paper's default (trial 1, rsw) is the most accurate setting that keeps the cap"),
    ],
)
def test_under_a_cap_tuning_is_judged_against_the_default_by_accuracy(default: str, expected: str):
    chosen = [Candidate(REFERENCE, "none", {})] + [
        Candidate(label, "rsw", {"width_fraction": 0.1 * i}, i, role="default" if label == default else "tuned")
        for i, label in enumerate(["trial 1", "trial 2", "trial 3"], start=1)
    ]
    confirmation = confirm_with(chosen, SEEDS, fixed_evaluator, None, cap=LeakageCap(CAP, Z))
    sentence = verdict(confirmation)
    assert sentence is not None and expected in sentence


# ------------------------------------------------------------------- status, export and confirm of a cap study

CAP_STUDY = {
    **TINY_STUDY,
    "study": {**TINY_STUDY["study"], "name": "capped", "n_trials": 4},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1},
    "pruning": {**TINY_STUDY["pruning"], "steps": 1},
    "objective": {"mode": "leakage_cap", "max_leakage": CAP, "leakage_se_multiple": Z},
    "search": {"defenses": ["rsw"], "enqueue_reference": False},
}


@pytest.fixture(scope="module")
def cap_place(tmp_path_factory: pytest.TempPathFactory) -> Options:
    """A stored cap study with the four trials above (nothing run), confirmed on fixed per-seed figures."""
    place = tmp_path_factory.mktemp("cap")
    options = Options(storage=f"sqlite:///{place / 'wemem.db'}", cache_dir=str(place / "cache"))
    storage = open_storage(options.storage)
    study, _ = create_or_load_study(parse_study(CAP_STUDY), storage, {"cache_dir": options.cache_dir})
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.7, "strongest_attack": "conf"})
    for row in TRIALS:
        study.add_trial(cap_trial(*row))
    storage.engine.dispose()
    opened = open_study("capped", options)
    # the top three: trial 2 (accuracy 0.85), 1 (0.80) and 3 (0.70), confirmed on the fixed figures above
    chosen = candidates(opened.study, 3)
    assert [c.label for c in chosen] == [REFERENCE, "trial 2", "trial 1", "trial 3"]
    confirm_study(opened.study, opened.spec, opened.spec, chosen, SEEDS, fixed_evaluator, None)
    opened.storage.engine.dispose()
    return options


def refused(options: Options, folder: Path, definition: dict, expected: list[str], capsys) -> None:
    """``wemem launch`` of ``definition`` into the cap study's storage exits 2 naming ``expected`` and changes
    nothing (test_bad_input's check)."""
    place = Path(options.storage.removeprefix("sqlite:///")).parent
    path = folder / "study.toml"
    path.write_text(tomli_w.dumps(definition))
    assert_refused(place, ["launch", str(path), "--storage", options.storage], expected, capsys)


def test_status_states_the_cap_and_whether_the_confirmed_interval_keeps_it(cap_place: Options, capsys):
    assert main(["status", "capped", "--storage", cap_place.storage]) == 0
    out = capsys.readouterr().out
    assert "1.645 standard errors stays at or below the cap 0.6" in out
    assert "the most accurate confirmed setting whose leakage keeps the cap 0.6 is trial 1" in out


def test_export_carries_the_cap_and_each_settings_verdict(cap_place: Options, tmp_path: Path):
    out = tmp_path / "best.json"
    assert main(["export", "capped", "--storage", cap_place.storage, "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["objective"]["max_leakage"] == CAP and document["objective"]["leakage_se_multiple"] == Z
    assert document["best"]["metrics"]["test_accuracy"] == 0.85  # the most accurate feasible trial
    confirmation = document["confirmation"]
    assert confirmation["leakage_cap"] == {"max_leakage": CAP, "leakage_se_multiple": Z}
    assert [c.get("leakage_cap") for c in confirmation["candidates"]] == [
        "breaks the cap",
        "cannot say",
        "keeps the cap",
        "keeps the cap",
    ]
    assert "keeps the cap 0.6 is trial 1" in confirmation["verdict"]


def test_the_report_states_the_cap_and_colours_the_headline_by_it(
    cap_place: Options, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import search.results._report

    monkeypatch.setattr(search.results._report, "report_figures", lambda opened, table: {})  # the document only
    search.results._report.write_report(open_study("capped", cap_place), tmp_path)
    document = json.loads((tmp_path / "report.json").read_text())
    assert "1.645 standard errors at most 0.6 (the leakage cap)" in document["study"]["objective_text"]
    assert "at most the cap 0.6" in document["study"]["constraint"]
    headline = document["headline"]
    assert headline["label"] == "trial 1" and headline["leakage_cap"] == "keeps the cap"
    assert headline["max_leakage"] == CAP
    page = (tmp_path / "report.html").read_text()
    assert 'class="headline confirmed"' in page and "keeps the leakage cap 0.6" in page
    assert "<th>leakage cap 0.6</th>" in page.replace(" scope='col'", "")


def test_a_resumed_cap_study_keeps_its_stored_cap(cap_place: Options, tmp_path: Path, capsys):
    assert open_study("capped", cap_place).definition.objective_config().max_leakage == CAP
    changed = dict(CAP_STUDY, objective={**CAP_STUDY["objective"], "max_leakage": 0.55})
    refused(cap_place, tmp_path, changed, ["objective.max_leakage", "stored 0.6"], capsys)


# ---------------------------------------------------------------------------------------------- bad input

BAD_OBJECTIVES = [
    ("cap-missing", {"mode": "leakage_cap"}, ["max_leakage"]),
    ("cap-zero", {"mode": "leakage_cap", "max_leakage": 0.0}, ["max_leakage"]),
    ("cap-over-one", {"mode": "leakage_cap", "max_leakage": 1.5}, ["max_leakage"]),
    ("cap-with-constrained", {"mode": "constrained", "max_leakage": 0.6}, ["max_leakage", "leakage_cap"]),
    ("se-multiple-negative", {"mode": "leakage_cap", "max_leakage": 0.6, "leakage_se_multiple": -1}, ["se_multiple"]),
    ("accuracy-reference-unknown", {"accuracy_reference": "sparse"}, ["accuracy_reference"]),
    ("sparsity-objective-not-pareto", {"sparsity_objective": True}, ["sparsity_objective", "pareto"]),
]


@pytest.mark.parametrize("objective, expected", [c[1:] for c in BAD_OBJECTIVES], ids=[c[0] for c in BAD_OBJECTIVES])
def test_bad_objective_keys_exit_2_and_change_nothing(
    cap_place: Options, tmp_path: Path, objective: dict, expected: list[str], capsys
):
    bad = dict(CAP_STUDY, study={**CAP_STUDY["study"], "name": "bad"}, objective=objective)
    refused(cap_place, tmp_path, bad, expected, capsys)


# ------------------------------------------------------------------------------------ a launch through Ray


@pytest.mark.e2e
def test_a_tiny_cap_launch_stores_the_cap_constraint_and_the_test_error(ray_session, tmp_path: Path):
    from search.execution._launcher import launch

    # a cap of 1 every trial keeps: each value is then its test error
    definition = parse_study(
        dict(
            TINY_STUDY,
            study={**TINY_STUDY["study"], "n_trials": 1},
            objective={"mode": "leakage_cap", "max_leakage": 1.0},
        )
    )
    options = Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(tmp_path / "cache"))
    study = launch(definition, options, lambda m: None).study
    # one trial ran (the second defense's enqueued default waits for a resume)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    bound = trial.user_attrs["privacy"] + Z * trial.user_attrs["privacy_se"]
    assert trial.constraints == {"leakage_over_cap": pytest.approx(bound - 1.0)}  # stored under the cap's name
    assert trial.value == pytest.approx(1 - trial.user_attrs["utility"])
