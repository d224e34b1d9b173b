"""Confirmation on fresh seeds: the statistics by hand, the winner's curse on a synthetic noisy objective, and a
small end-to-end confirm of a tiny digits study through Ray (stored, exported, drawn)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import rsw_trial
from optuna.trial import create_trial

from objectives import ObjectiveConfig, TrialSpec
from search.confirm import (
    REFERENCE,
    Candidate,
    Comparison,
    Confirmation,
    ConfirmedSetting,
    Interval,
    Paired,
    SeedResult,
    Suite,
    candidates,
    confirm_study,
    confirm_with,
    confirmation_seeds,
    constraint_verdict,
    judged_by,
    known_results,
    stored_confirmations,
    suite_fields,
    suite_key,
    t_interval,
)
from search.confirm._candidates import named_comparison
from search.confirm._statistics import comparison_verdict
from search.results._text import confirmed_lines as summary_lines
from search.results._text import stored_confirmation_lines
from search.study import top_trials
from wemem.attacks import ATTACKS
from wemem.config import ExperimentConfig, PruningConfig
from wemem.errors import WememError


def test_t_interval_by_hand():
    # mean 2, sample sd 1, t_{0.975, 2} = 4.302653: half-width 4.302653 / sqrt(3) = 2.484138
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci.mean == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0 - 2.484138, abs=1e-5)
    assert ci.high == pytest.approx(2.0 + 2.484138, abs=1e-5)
    assert math.isnan(t_interval([0.5]).low)


def test_seeds_are_fresh_and_the_constraint_verdict_uses_the_interval():
    seeds = confirmation_seeds(7, 3)
    assert seeds == [1007, 2007, 3007] and 7 not in seeds
    with pytest.raises(WememError, match="--seeds"):
        confirmation_seeds(7, 1)
    assert constraint_verdict(Interval(-0.01, -0.015, -0.005), 0.02) == "holds"
    assert constraint_verdict(Interval(-0.02, -0.03, -0.01), 0.02) == "uncertain"
    assert constraint_verdict(Interval(-0.05, -0.06, -0.04), 0.02) == "violated"


# ------------------------------------------------------------------ winner's curse on a synthetic objective

NOISE = 0.02  # one evaluation's standard error of balanced accuracy with a few hundred targets a side
REFERENCE_LEAKAGE = 0.62


def true_leakage(width: float) -> float:
    """A nearly flat landscape: every setting leaks about 0.60, so the best of many is mostly the luckiest."""
    return 0.60 + 0.02 * (width - 0.5) ** 2


def noisy_study(n_trials: int, seed: int = 0) -> optuna.Study:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("reference", {"utility": 0.90, "privacy": REFERENCE_LEAKAGE, "strongest_attack": "conf"})
    for _ in range(n_trials):
        width = float(rng.uniform(0.05, 0.8))
        privacy = true_leakage(width) + rng.normal(0, NOISE)
        utility = 0.89 + rng.normal(0, 0.005)
        study.add_trial(rsw_trial(width, utility, privacy, {"constraints": [(0.90 - 0.02) - utility]}))
    return study


def synthetic_evaluator(jobs: list[tuple[Candidate, int]]) -> Iterator[tuple[int, SeedResult]]:
    """A fresh, independent noisy evaluation of each (setting, seed), as a new seed gives (yielded in job order;
    an evaluator may yield them in any order)."""
    results = []
    for candidate, seed in jobs:
        rng = np.random.default_rng([seed, 0 if candidate.is_reference else 1 + (candidate.trial_number or 999)])
        truth = REFERENCE_LEAKAGE if candidate.is_reference else true_leakage(candidate.settings["width_fraction"])
        results.append(
            SeedResult(
                0.90 - (0 if candidate.is_reference else 0.01) + rng.normal(0, 0.005),
                truth + rng.normal(0, NOISE),
                "conf",
            )
        )
    return iter(reversed(list(enumerate(results))))  # last first: results are matched by index, not by order


def test_best_of_many_on_a_noisy_objective_is_confirmed_worse_than_reported():
    study = noisy_study(n_trials=40)
    chosen = candidates(study, k=1)
    assert next(c.label for c in chosen) == REFERENCE
    winner = chosen[1]
    assert winner.trial_number == study.best_trial.number  # the selection is the study's own best
    reported = winner.reported.privacy
    assert reported < true_leakage(winner.settings["width_fraction"]) - NOISE  # the luck of the minimum

    summary = confirm_with(chosen, confirmation_seeds(7, 10), synthetic_evaluator, delta=0.02)
    entry = next(e for e in summary.candidates if e.label == winner.label)
    # the confirmed mean is back near the truth; the selected evaluation lies below its whole interval
    assert entry.privacy.mean == pytest.approx(true_leakage(winner.settings["width_fraction"]), abs=0.015)
    assert reported < entry.privacy.low
    # the paired difference from the reference is about the true one (about -0.02; its SE is about 0.009)
    diff = entry.vs_reference.privacy
    assert diff.mean == pytest.approx(true_leakage(winner.settings["width_fraction"]) - REFERENCE_LEAKAGE, abs=0.03)
    assert diff.low < diff.mean < diff.high
    assert entry.accuracy_constraint == "holds"
    text = "\n".join(summary_lines(summary))
    assert "study's own evaluation" in text and "vs reference" in text and "gain confirmed" in text


def test_top_trials_prefers_feasible_and_counts_a_setting_once():
    study = noisy_study(n_trials=6)
    best = study.best_trial
    # a duplicate of the best setting and an infeasible trial with the lowest value of all
    study.add_trial(
        create_trial(
            value=best.value + 1e-4,
            params=best.params,
            distributions=best.distributions,
            user_attrs=dict(best.user_attrs),
            system_attrs={"constraints": [-0.01]},
        )
    )
    study.add_trial(
        create_trial(
            value=0.1,
            params=best.params,
            distributions=best.distributions,
            user_attrs=dict(best.user_attrs, settings={"width_fraction": 0.33}),
            system_attrs={"constraints": [0.05]},
        )
    )
    top = top_trials(study, 3)
    assert top[0].number == best.number
    assert len({t.user_attrs["settings"]["width_fraction"] for t in top}) == 3
    assert 0.33 not in {t.user_attrs["settings"]["width_fraction"] for t in top}
    with pytest.raises(WememError, match="no completed trial"):
        top_trials(optuna.create_study(), 1)


# ------------------------------------------------------------------------------ tuned against the default


def with_defaults(study: optuna.Study, *widths: float) -> list[int]:
    """Add the paper's enqueued defaults (warm_start = reference) as they would run: noisy evaluations."""
    numbers = []
    for width in widths:
        privacy = true_leakage(width) + 0.01
        study.add_trial(rsw_trial(width, 0.89, privacy, {"constraints": [-0.01]}, warm_start="reference"))
        numbers.append(study.trials[-1].number)
    return numbers


def test_candidates_judge_tuning_against_the_best_paper_default():
    study = noisy_study(n_trials=12)
    worse, better = with_defaults(study, 0.05, 0.45)  # true leakage 0.6041 and 0.60005: the second ranks first
    chosen = candidates(study, k=2)
    assert [c.role for c in chosen] == ["reference", "tuned", "tuned", "default"]
    assert chosen[-1].trial_number == better and chosen[-1].is_comparison
    # the default is the study's best: it is marked, not added twice, and the best tuned setting joins it
    study.add_trial(
        create_trial(
            value=0.0,
            params=study.trials[better].params,
            distributions=study.trials[better].distributions,
            user_attrs={**study.trials[better].user_attrs, "settings": {"width_fraction": 0.5}},
            system_attrs={"constraints": [-0.01]},
        )
    )
    best_default = study.trials[-1].number
    chosen = candidates(study, k=1)
    assert [(c.role, c.trial_number) for c in chosen[:2]] == [("reference", None), ("default", best_default)]
    assert chosen[2].role == "tuned" and chosen[2].trial_number not in (worse, better, best_default)
    # a named setting replaces the default; a study without defaults has no comparison
    named = candidates(study, 1, named_comparison("rsw", {"width_fraction": 0.3}))
    assert [c.role for c in named] == ["reference", "tuned", "comparison"] and named[1].trial_number == best_default
    assert all(c.role in ("reference", "tuned") for c in candidates(noisy_study(5), 3))


def test_tuned_minus_default_is_paired_stored_exported_and_printed():
    study = noisy_study(n_trials=12)
    with_defaults(study, 0.05)
    spec = study_spec()
    summary = confirm_study(
        study, spec, spec, candidates(study, 1), [1007, 2007, 3007], synthetic_evaluator, 0.02, lambda message: None
    )
    tuned = next(e for e in summary.candidates if e.role == "tuned")
    default = next(e for e in summary.candidates if e.role == "default")
    assert default.vs_comparison is None and summary.comparison.label == default.label
    paired = [t.privacy - d.privacy for (_, t), (_, d) in zip(tuned.per_seed, default.per_seed)]
    assert tuned.vs_comparison.privacy.mean == pytest.approx(float(np.mean(paired)))
    assert tuned.vs_comparison.privacy == t_interval(paired)
    stored_json = study.user_attrs["confirmation"]
    assert stored_json == summary.to_json()
    stored = Confirmation.from_json(stored_json)
    assert stored == summary  # the stored JSON reads back as the very value
    assert stored_json["verdict"] == comparison_verdict(stored) and "the paper's default" in stored.verdict
    from search.confirm import export_section

    assert export_section(study, [study.best_trial.number]).confirmation.verdict == stored.verdict
    assert export_section(study, [study.best_trial.number]).to_json()["verdict"] == stored.verdict
    assert stored.verdict in "\n".join(summary_lines(stored))  # confirm prints it
    assert any(stored.verdict in line for line in stored_confirmation_lines(study))  # status prints it
    assert f"vs {default.label}: leakage" in "\n".join(summary_lines(stored))


def hand_summary(diff: tuple[float, float, float], role: str = "default") -> Confirmation:
    nothing = Interval(0.0, 0.0, 0.0)
    tuned = ConfirmedSetting(
        "trial 5",
        "tuned",
        "rsw",
        {},
        (),
        nothing,
        nothing,
        vs_comparison=Paired(Interval(*diff), Interval(0.004, -0.01, 0.018)),
    )
    return Confirmation((1, 2, 3), 0.95, None, (tuned,), Comparison("trial 0", role, "rsw", {}))


def test_the_verdicts_wording_by_hand():
    assert comparison_verdict(hand_summary((-0.021, -0.034, -0.008))) == (
        "tuning gained 2.1 points of leakage [95% CI 0.8, 3.4] over the paper's default (trial 0, rsw) (trial 5 vs "
        "it on 3 fresh seeds, paired; accuracy +0.4 points [-1.0, +1.8])"
    )
    assert comparison_verdict(hand_summary((-0.003, -0.012, 0.006))) == (
        "tuning is no better than the paper's default (trial 0, rsw) (leakage -0.3 points [95% CI -1.2, +0.6], "
        "accuracy +0.4 points [-1.0, +1.8]; trial 5 vs it on 3 fresh seeds, paired): the default is the setting "
        "to use"
    )
    assert comparison_verdict(hand_summary((0.01, 0.002, 0.018), "comparison")).endswith(
        "the comparison setting is the setting to use"
    )
    assert "the comparison setting (rsw)" in comparison_verdict(hand_summary((0.01, 0.002, 0.018), "comparison"))
    lonely = dataclasses.replace(hand_summary((0, 0, 0)), candidates=())
    assert (
        comparison_verdict(lonely) == "only the paper's default (trial 0, rsw) was evaluated: no tuned setting "
        "to compare with it"
    )
    assert comparison_verdict(Confirmation((), 0.95, None, ())) is None


# ------------------------------------------------------------------------------------------- end to end


def tiny_study(tmp_path: Path):
    """A stored digits study with one finished trial (the paper's RSW setting); confirmation needs nothing else."""
    from search.storage import open_storage
    from search.study import Options, create_or_load_study
    from search.studyfile import parse_study

    options = Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(tmp_path / "cache"))
    definition = parse_study(
        {
            "study": {"name": "tinyconfirm", "n_trials": 1, "seed": 7},
            "data": {"dataset": "digits", "shadows": 1},
            "model": {"name": "columnfc"},
            "training": {"pretrain_epochs": 6, "finetune_epochs": 3, "patience": 2},
            "pruning": {"sparsity": 0.6, "steps": 2},
            "memscore": {"models": 2},
            "search": {"defenses": ["rsw"], "enqueue_reference": True},
            "attacks": {"names": ["conf", "hconf"]},
            "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 2},
        }
    )
    study, _ = create_or_load_study(definition, open_storage(options.storage_url), {"cache_dir": options.cache_dir})
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.55, "strongest_attack": "conf"})
    settings = {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022}
    study.add_trial(
        create_trial(
            value=0.52,
            user_attrs={
                "defense": "rsw",
                "settings": settings,
                "utility": 0.9,
                "privacy": 0.52,
                "strongest_attack": "conf",
                "feasible": True,
                "attacks": {},
                "warm_start": "reference",
            },
            system_attrs={"constraints": [-0.02]},
        )
    )
    return options


@pytest.mark.e2e
def test_confirm_a_tiny_digits_study_stores_exports_and_draws(ray_session, tmp_path: Path, capsys):
    from search.cli import main
    from search.results._export import export_document
    from search.study import open_study

    options = tiny_study(tmp_path)
    before = export_document(open_study("tinyconfirm", options)).to_json()["confirmation"]
    assert before["status"] == "not confirmed" and "wemem confirm tinyconfirm" in before["note"]
    status = ["status", "tinyconfirm", "--storage", options.storage]
    assert main(status) == 0 and "  not confirmed: " in capsys.readouterr().out

    assert (
        main(["confirm", "tinyconfirm", "--seeds", "2", "--storage", options.storage, "--cache-dir", options.cache_dir])
        == 0
    )
    printed = capsys.readouterr().out
    assert "confirmed on 2 fresh seeds [1007, 2007]" in printed and "vs reference: leakage" in printed
    # its only trial is the paper's default: nothing tuned to compare with it, and the tool says so
    assert "only the paper's default (trial 0, rsw) was evaluated" in printed

    opened = open_study("tinyconfirm", options)
    study = opened.study
    stored = study.user_attrs["confirmation"]
    assert [e["label"] for e in stored["candidates"]] == ["reference", "trial 0"]
    # the API reads the stored confirmation back as the typed value `api.confirm` returns
    from search import api

    confirmation = api.results("tinyconfirm", storage=options.storage).confirmation
    assert confirmation is not None and confirmation.to_json() == stored
    assert [c.label for c in confirmation.candidates] == ["reference", "trial 0"]
    trial = stored["candidates"][1]
    assert [r["seed"] for r in trial["per_seed"]] == [1007, 2007]
    for entry in stored["candidates"]:
        for metric in ("utility", "privacy"):
            ci = entry[metric]
            assert ci["low"] <= ci["mean"] <= ci["high"] and 0 <= ci["mean"] <= 1
    ref_seeds = stored["candidates"][0]["per_seed"]
    paired = [a["privacy"] - b["privacy"] for a, b in zip(trial["per_seed"], ref_seeds)]
    assert trial["privacy_difference"]["mean"] == pytest.approx(float(np.mean(paired)))
    # each fresh seed is its own replication: its own cached split, pretraining and mem-scores
    assert len([p for p in Path(options.cache_dir).iterdir() if (p / "pretrained.pt").exists()]) == 2

    document = export_document(opened).to_json()
    assert document["confirmation"]["status"] == "confirmed"
    assert document["confirmation"]["candidates"][1]["privacy_difference"] == trial["privacy_difference"]
    json.dumps(document)
    from search.results._report import draw_confirmed_points, plot_confirmation

    assert plot_confirmation(Confirmation.from_json(stored), "balanced_accuracy").startswith(b"\x89PNG")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_confirmed_points(ax, Confirmation.from_json(stored))
    assert len(ax.containers) == 2  # one error bar per confirmed point (reference and trial)
    plt.close(fig)

    # judged by other attacks: the study's confirmation is kept, the new one is what export reads
    assert (
        main(
            [
                "confirm",
                "tinyconfirm",
                "--seeds",
                "2",
                "--attacks",
                "conf,entr",
                "--storage",
                options.storage,
                "--cache-dir",
                options.cache_dir,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "judged by conf, entr" in printed and "judged by 2 attacks (conf, entr), not the study's own" in printed
    opened = open_study("tinyconfirm", options)
    study = opened.study
    judged = study.user_attrs["confirmation"]
    assert judged["attacks"] == ["conf", "entr"] and not judged["study_suite"]
    assert study.user_attrs["confirmation:conf,hconf"] == stored
    assert all(r["strongest_attack"] in ("conf", "entr") for e in judged["candidates"] for r in e["per_seed"])
    assert export_document(opened).to_json()["confirmation"]["attacks"] == ["conf", "entr"]
    assert main(status) == 0
    assert "on 2 fresh seeds judged by 2 attacks: leakage" in capsys.readouterr().out  # the number to quote


def test_a_second_confirmation_reruns_only_what_is_missing():
    study = noisy_study(n_trials=10)
    calls: list[tuple[str, int]] = []

    def counting(jobs):
        calls.extend((c.label, s) for c, s in jobs)
        return synthetic_evaluator(jobs)

    first = confirm_with(candidates(study, 1), [1007, 2007], counting, 0.02)
    assert len(calls) == 4
    calls.clear()
    second = confirm_with(candidates(study, 2), [1007, 2007, 3007], counting, 0.02, known_results(first))
    # 3 candidates x 3 seeds, of which reference and winner on the first two seeds are already known
    assert len(calls) == 9 - 4
    assert second.candidates[1].per_seed[:2] == first.candidates[1].per_seed


# ------------------------------------------------------------------------- judged by other attacks


def study_spec(
    attacks: tuple[str, ...] = ("conf", "hconf"), among: tuple[str, ...] | None = None, shadows: int = 2
) -> TrialSpec:
    return TrialSpec(
        ExperimentConfig(dataset="digits", shadows=shadows),
        PruningConfig(),
        attacks,
        ObjectiveConfig(privacy_attacks=among),
    )


def test_judged_by_swaps_the_suite_and_takes_leakage_over_all_of_it():
    own = study_spec(among=("conf",))
    assert judged_by(own, None) is own
    assert suite_fields(own, own) == Suite(("conf", "hconf"), ("conf",), True)
    full = judged_by(own, ATTACKS.names())
    assert full.attacks == tuple(ATTACKS.names()) and len(full.attacks) == 10
    assert full.objective.privacy_attacks is None  # the leakage is the largest over every judge
    assert full.experiment == own.experiment and full.pruning == own.pruning
    assert suite_fields(full, own) == Suite(tuple(ATTACKS.names()), (), False)
    assert suite_fields(own, own).key() == "conf,hconf|leakage over conf"
    stored_before_suites = Confirmation.from_json({"seeds": [], "candidates": []})
    assert suite_key(stored_before_suites, own) == "conf,hconf|leakage over conf"
    # the order of the names changes no number, so it makes no other suite
    assert suite_fields(judged_by(study_spec(), ["hconf", "conf"]), study_spec()).study_suite
    with pytest.raises(WememError, match="at least 2 shadow"):  # checked before anything runs
        judged_by(study_spec(shadows=1), ["conf", "lira"])


def counting_evaluator(calls: list[tuple[str, int]], dies_after: int | None = None):
    """The synthetic evaluator, noting each evaluation it finishes; the launcher is killed after ``dies_after``."""

    def evaluate(jobs):
        for count, (i, result) in enumerate(synthetic_evaluator(jobs)):
            if count == dies_after:
                raise KeyboardInterrupt
            calls.append((jobs[i][0].label, jobs[i][1]))
            yield i, result

    return evaluate


def quiet(message: str) -> None:
    pass


def test_switching_suites_keeps_every_confirmation_and_reuses_only_the_same_judges():
    study = noisy_study(n_trials=10)
    own = study_spec()
    full = judged_by(own, ATTACKS.names())
    calls: list[tuple[str, int]] = []

    def confirm_by(spec: TrialSpec) -> Confirmation:
        return confirm_study(
            study, own, spec, candidates(study, 1), [1007, 2007], counting_evaluator(calls), 0.02, quiet
        )

    first = confirm_by(own)
    assert len(calls) == 4 and first.suite.attacks == ("conf", "hconf") and first.suite.study_suite
    second = confirm_by(full)
    assert len(calls) == 8  # other judges: nothing of the first is reused
    assert study.user_attrs["confirmation"] == second.to_json()  # what export and report read
    assert study.user_attrs["confirmation:conf,hconf"] == first.to_json()  # the replaced one is kept
    assert set(stored_confirmations(study, own)) == {"conf,hconf", ",".join(ATTACKS.names())}
    assert "judged by 10 attacks" in "\n".join(summary_lines(second))
    assert "judged by" not in "\n".join(summary_lines(first))

    third = confirm_by(own)  # back to the study's judges: every result is already stored
    assert len(calls) == 8 and third.candidates == first.candidates
    assert study.user_attrs[f"confirmation:{','.join(ATTACKS.names())}"] == second.to_json()


def test_a_killed_confirmation_keeps_every_finished_run():
    study = noisy_study(n_trials=10)
    own = study_spec()
    chosen, seeds = candidates(study, 2), [1007, 2007, 3007]
    calls: list[tuple[str, int]] = []
    with pytest.raises(KeyboardInterrupt):  # the launcher dies after 4 of the 9 evaluations
        confirm_study(study, own, own, chosen, seeds, counting_evaluator(calls, dies_after=4), 0.02, quiet)
    assert "confirmation" not in study.user_attrs and len(calls) == 4
    assert len(study.user_attrs["confirmation_runs:conf,hconf"]) == 4  # stored as each finished

    calls.clear()
    messages: list[str] = []
    summary = confirm_study(study, own, own, chosen, seeds, counting_evaluator(calls), 0.02, messages.append)
    assert len(calls) == 9 - 4 and "reusing 4 of 9 evaluations" in messages[0]
    uninterrupted = confirm_with(chosen, seeds, synthetic_evaluator, 0.02)
    assert summary.candidates == uninterrupted.candidates
    assert study.user_attrs["confirmation"] == summary.to_json()


@pytest.mark.e2e
@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
def test_a_killed_or_interrupted_confirmation_resumes_from_its_stored_runs(
    ray_session, tmp_path: Path, capsys, signal_name: str
):
    import os
    import subprocess
    import sys

    import ray

    from search.cli import main
    from search.study import open_study
    from wemem.faults import ENV as FAILPOINTS_ENV

    options = tiny_study(tmp_path)
    argv = [
        "confirm",
        "tinyconfirm",
        "--seeds",
        "2",
        "--storage",
        options.storage,
        "--cache-dir",
        options.cache_dir,
        "--ray-address",
        ray.get_runtime_context().gcs_address,
    ]  # killing it ends only its own Ray job
    token = tmp_path / "token"
    token.touch()
    # killed (or Ctrl-C) once the first run is stored
    env = {**os.environ, FAILPOINTS_ENV: f"confirm_run_stored:{signal_name}@{token}"}
    killed = subprocess.run(
        [sys.executable, "-m", "search.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=600,
    )
    if signal_name == "KILL":
        assert killed.returncode == -9, killed.stdout + killed.stderr
    else:  # a clean stop (it once ended in a segfault, exit 139, while Ray tore down)
        assert killed.returncode == 130, killed.stdout + killed.stderr
        assert "Run the same `wemem confirm tinyconfirm` again" in killed.stderr and "Traceback" not in killed.stderr
    study = open_study("tinyconfirm", options).study
    assert "confirmation" not in study.user_attrs
    assert len(study.user_attrs["confirmation_runs:conf,hconf"]) == 1

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing 1 of 4 evaluations" in printed and "confirmed on 2 fresh seeds" in printed
    study = open_study("tinyconfirm", options).study
    assert len(study.user_attrs["confirmation_runs:conf,hconf"]) == 4
    assert [len(e["per_seed"]) for e in study.user_attrs["confirmation"]["candidates"]] == [2, 2]
