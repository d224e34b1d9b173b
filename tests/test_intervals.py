"""Intervals on every leakage figure, the resolution rule of TPR at low FPR, and the empirical epsilon lower bound
(wemem.uncertainty), as stored by timed_attack and printed by `wemem status --trial` and `wemem run`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from test_run_cli import TINY

from search.cli import main
from search.results._text import attack_metric_lines, trial_detail_lines
from wemem.attacks import AttackInputs, Targets, timed_attack
from wemem.metrics import attack_uncertainty, tpr_at_fpr
from wemem.uncertainty import (
    INTERVAL_METRICS,
    MIN_FALSE_POSITIVES,
    auc_from_ranks,
    bootstrap_intervals,
    clopper_pearson,
    epsilon_lower_bound,
    min_false_positives,
    resample_batch,
    tpr_from_ranks,
    tpr_resolution,
    unresolvable_text,
)


def members_first(n1: int, n0: int) -> np.ndarray:
    return np.r_[np.ones(n1, bool), np.zeros(n0, bool)]


# ---------------------------------------------------------------------------------------------- bootstrap


def test_perfect_separation_gives_degenerate_intervals() -> None:
    scores = np.r_[np.linspace(2, 3, 50), np.linspace(0, 1, 50)]
    intervals = bootstrap_intervals(scores, members_first(50, 50), scores >= 1.5)
    assert intervals["auc"] == [1.0, 1.0] and intervals["balanced_accuracy"] == [1.0, 1.0]
    assert intervals["tpr_at_1%_fpr"] == [1.0, 1.0]


def test_a_tiny_case_whose_bootstrap_distribution_is_known() -> None:
    # two members, one called a member; two non-members, neither called: a resample's TPR is 0, 1/2 or 1 with
    # probabilities 1/4, 1/2, 1/4 and its TNR always 1, so its balanced accuracy is 0.5, 0.75 or 1 and the
    # 2.5% and 97.5% percentiles of 1,000 resamples are 0.5 and 1 (fewer than 25 at either end has probability
    # below 1e-80)
    intervals = bootstrap_intervals(
        np.array([1.0, 0.0, -1.0, -2.0]), members_first(2, 2), np.array([True, False, False, False])
    )
    assert intervals["balanced_accuracy"] == [0.5, 1.0]


def tied_scores(rng: np.random.Generator, n1: int, n0: int) -> np.ndarray:
    """Members shifted up, rounded so that many scores tie (across the two sides too)."""
    return np.round(np.r_[rng.normal(0.5, 1, n1), rng.normal(0, 1, n0)], 1)


@pytest.mark.parametrize("n1, n0", [(40, 40), (166, 166), (600, 600), (50, 137)])
def test_rank_statistics_equal_sklearn_and_tpr_at_fpr_on_every_replicate(n1: int, n0: int) -> None:
    rng = np.random.default_rng(n0)
    scores = tied_scores(rng, n1, n0)
    levels, ranks = np.unique(scores, return_inverse=True)
    rows = [np.r_[rng.integers(0, n1, n1), n1 + rng.integers(0, n0, n0)] for _ in range(20)]  # stratified
    members, non_members = np.stack([ranks[r[:n1]] for r in rows]), np.stack([ranks[r[n1:]] for r in rows])
    aucs = auc_from_ranks(members, non_members, len(levels))
    for fpr in (0.001, 0.01, 0.05, 0.2):
        tprs = tpr_from_ranks(members, non_members, fpr)
        for row, tpr in zip(rows, tprs):
            assert tpr == tpr_at_fpr(scores[row], members_first(n1, n0), fpr)
    for row, value in zip(rows, aucs):
        assert value == pytest.approx(roc_auc_score(members_first(n1, n0), scores[row]), abs=1e-12)


def reference_statistic(members: np.ndarray, non_members: np.ndarray, axis: int = -1) -> np.ndarray:
    """The four metrics written plainly on the raw scores (rows: score, decision), for scipy's own bootstrap."""
    x, y = members[0], non_members[0]
    n0 = y.shape[-1]
    auc = stats.mannwhitneyu(x, y, axis=-1).statistic / (x.shape[-1] * n0)
    balanced = 0.5 * (members[1].mean(-1) + 1 - non_members[1].mean(-1))
    descending = -np.sort(-y, axis=-1)
    tprs = [
        (x > descending[..., [int(np.count_nonzero(np.arange(1, n0 + 1) / n0 <= a))]]).mean(-1) for a in (0.001, 0.01)
    ]
    return np.stack([balanced, auc, *tprs])


def test_intervals_equal_scipy_bootstrap_of_the_plain_statistics() -> None:
    rng = np.random.default_rng(3)
    scores = tied_scores(rng, 300, 300)
    is_member = members_first(300, 300)
    threshold = rng.choice([0.2, 0.4], 600)  # per-class thresholds: one per target
    predicted = scores >= threshold
    rows = np.stack([scores, predicted.astype(float)])
    expected = stats.bootstrap(
        (rows[:, is_member], rows[:, ~is_member]),
        reference_statistic,
        n_resamples=1000,
        vectorized=True,
        axis=-1,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    intervals = bootstrap_intervals(scores, is_member, predicted)
    for i, name in enumerate(INTERVAL_METRICS):
        assert intervals[name] == pytest.approx(
            [expected.confidence_interval.low[i], expected.confidence_interval.high[i]], abs=1e-12
        ), name


def test_a_large_target_set_is_resampled_in_batches_of_bounded_size() -> None:
    assert resample_batch(600) is None and resample_batch(2097) is None  # every replicate at once: scipy's draws
    assert resample_batch(21120) == 2**21 // 21120 == 99
    rng = np.random.default_rng(5)
    scores, is_member = tied_scores(rng, 1500, 1500), members_first(1500, 1500)
    predicted = scores >= 0.3
    ranks = np.unique(scores, return_inverse=True)[1].astype(float)
    rows = np.stack([ranks, predicted.astype(float)])
    expected = stats.bootstrap(
        (rows[:, is_member], rows[:, ~is_member]),
        lambda m, n, axis=-1: np.stack([0.5 * (m[1].mean(axis) + 1 - n[1].mean(axis))]),
        n_resamples=1000,
        batch=resample_batch(3000),
        vectorized=True,
        axis=-1,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    low, high = bootstrap_intervals(scores, is_member, predicted)["balanced_accuracy"]
    assert [low, high] == pytest.approx([expected.confidence_interval.low[0], expected.confidence_interval.high[0]])


def test_intervals_hold_the_point_values_and_are_seeded() -> None:
    rng = np.random.default_rng(4)
    scores, is_member = tied_scores(rng, 200, 200), members_first(200, 200)
    first = attack_uncertainty(scores, is_member, 0.3)
    assert first == attack_uncertainty(scores, is_member, 0.3)
    assert first["intervals"]["auc"][0] < roc_auc_score(is_member, scores) < first["intervals"]["auc"][1]
    assert first["targets"] == {"members": 200, "non_members": 200}


def test_one_sided_target_sets_give_nan_intervals() -> None:
    intervals = bootstrap_intervals(
        np.array([0.1, 0.2, 0.3]), np.array([True, True, False]), np.array([True, True, True])
    )
    assert all(math.isnan(v) for pair in intervals.values() for v in pair)


# --------------------------------------------------------------------------------------------- resolution


def test_the_resolution_rule_by_hand() -> None:
    # exact Poisson (Garwood) two-sided 95% upper bounds: 7 false positives -> 14.42 > 2 * 7, 8 -> 15.76 <= 16;
    # chi-square form: chi2.ppf(0.975, 2 (k + 1)) / 2
    assert stats.chi2.ppf(0.975, 2 * 8) / 2 == pytest.approx(14.4227, abs=1e-4)
    assert stats.chi2.ppf(0.975, 2 * 9) / 2 == pytest.approx(15.7632, abs=1e-4)
    assert MIN_FALSE_POSITIVES == min_false_positives() == 8
    assert tpr_resolution(0.001, 600) == (False, 8000)
    assert tpr_resolution(0.01, 1000) == (True, 800)
    assert tpr_resolution(0.01, 799) == (False, 800) and tpr_resolution(0.01, 800) == (True, 800)
    assert tpr_resolution(0.009, 1000) == (True, 889)
    assert unresolvable_text(600, 8000) == "not resolvable with 600 non-member targets (needs 8000)"


# ------------------------------------------------------------------------------------------------ epsilon


@pytest.mark.parametrize("k, n", [(0, 50), (3, 50), (25, 50), (50, 50), (10, 1200)])
def test_clopper_pearson_is_scipys_exact_interval_and_the_beta_quantiles(k: int, n: int) -> None:
    exact = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert (low, high) == (exact.low, exact.high)
    assert low == (0.0 if k == 0 else pytest.approx(stats.beta.ppf(0.025, k, n - k + 1)))
    assert high == (1.0 if k == n else pytest.approx(stats.beta.ppf(0.975, k + 1, n - k)))


def test_epsilon_lower_bound_by_hand() -> None:
    # 100 members, 90 called members (10 false negatives); 100 non-members, 10 called members (false positives).
    # Clopper-Pearson upper end of 10/100 at 95% two-sided: beta.ppf(0.975, 11, 90) = 0.17622; both terms are
    # log((1 - 0.17622) / 0.17622) = log(4.6748) = 1.5422
    predicted = np.r_[np.ones(90, bool), np.zeros(10, bool), np.ones(10, bool), np.zeros(90, bool)]
    is_member = members_first(100, 100)
    upper = stats.beta.ppf(0.975, 11, 90)
    assert upper == pytest.approx(0.17622, abs=1e-5)
    bound = epsilon_lower_bound(predicted, is_member)
    assert bound == {"value": pytest.approx(math.log((1 - upper) / upper)), "delta": 0.0, "confidence": 0.95}
    assert bound["value"] == pytest.approx(1.5422, abs=1e-4)
    # delta eats into the numerator; TF Privacy's ratio TPR_low / FPR_high is the delta = 0 case
    with_delta = epsilon_lower_bound(predicted, is_member, delta=1e-5)["value"]
    assert with_delta == pytest.approx(math.log((1 - 1e-5 - upper) / upper))
    assert bound["value"] == pytest.approx(math.log(clopper_pearson(90, 100)[0] / clopper_pearson(10, 100)[1]))


def test_epsilon_lower_bound_is_zero_without_evidence_and_uses_the_better_side() -> None:
    coin = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert epsilon_lower_bound(np.r_[coin, coin], members_first(100, 100))["value"] == 0.0
    # every member called, 60 of 100 non-members too: FNR 0/100 is tight, so log(TNR_low / FNR_high) bounds
    predicted = np.r_[np.ones(100, bool), np.ones(60, bool), np.zeros(40, bool)]
    fnr_hi, fpr_hi = clopper_pearson(0, 100)[1], clopper_pearson(60, 100)[1]
    assert fnr_hi == pytest.approx(1 - 0.025 ** (1 / 100))
    expected = math.log((1 - fpr_hi) / fnr_hi)
    assert epsilon_lower_bound(predicted, members_first(100, 100))["value"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------- stored and printed


def plain_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return type(value) in (float, int, str, bool)


def test_timed_attack_stores_intervals_targets_and_epsilon_as_plain_json() -> None:
    rng = np.random.default_rng(5)
    p = np.clip(np.r_[rng.uniform(0.7, 1.0, 60), rng.uniform(0.4, 0.9, 60)], 1e-6, 1 - 1e-6)
    log_probs = np.log(np.stack([p, 1 - p], axis=1))
    targets = Targets(np.arange(120), members_first(60, 60))
    inputs = AttackInputs(
        labels=np.zeros(120, dtype=int),
        victim_log_probs=log_probs,
        shadow_log_probs=[log_probs, log_probs],
        victim_targets=targets,
        shadow_targets=[targets, targets],
    )
    metrics, _ = timed_attack("conf", inputs)
    assert plain_json(metrics)
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics
    assert set(metrics["intervals"]) == {"balanced_accuracy", "auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr"}
    for name, (low, high) in metrics["intervals"].items():
        assert low <= metrics[name] <= high, name
    assert metrics["targets"] == {"members": 60, "non_members": 60}
    assert set(metrics["epsilon_lower_bound"]) == {"value", "delta", "confidence"}
    assert metrics["epsilon_lower_bound"]["confidence"] == 0.95


def stored_attack(non_members: int) -> dict[str, object]:
    return {
        "balanced_accuracy": 0.61,
        "auc": 0.65,
        "tpr_at_0.1%_fpr": 0.003,
        "tpr_at_1%_fpr": 0.04,
        "intervals": {
            "balanced_accuracy": [0.58, 0.64],
            "auc": [0.62, 0.68],
            "tpr_at_0.1%_fpr": [0.0, 0.01],
            "tpr_at_1%_fpr": [0.02, 0.06],
        },
        "targets": {"members": non_members, "non_members": non_members},
        "epsilon_lower_bound": {"value": 0.412, "delta": 0.0, "confidence": 0.95},
    }


def test_status_trial_prints_intervals_unresolvable_tprs_and_epsilon() -> None:
    study = optuna.create_study(study_name="intervals", directions=["maximize", "maximize"])
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE,
        values=[0.1, 0.9],
        user_attrs={
            "defense": "wemem",
            "settings": {},
            "utility": 0.9,
            "privacy": 0.61,
            "strongest_attack": "conf",
            "attacks": {
                "conf": stored_attack(600),
                "lira": {"balanced_accuracy": 0.55, "auc": 0.57, "tpr_at_0.1%_fpr": 0.0, "tpr_at_1%_fpr": 0.02},
            },
        },
    )
    study.add_trial(trial)
    text = "\n".join(trial_detail_lines(study, study.trials[0]))
    assert (
        "conf: balanced accuracy 0.6100 [0.5800, 0.6400], AUC 0.6500 [0.6200, 0.6800], TPR at 0.1% FPR not "
        "resolvable with 600 non-member targets (needs 8000), TPR at 1% FPR not resolvable with 600 non-member "
        "targets (needs 800), epsilon lower bound 0.412 (delta 0, 95% confidence)"
    ) in text
    # stored before intervals existed: the bare values
    assert "lira: balanced accuracy 0.5500, AUC 0.5700, TPR at 0.1% FPR 0.0000, TPR at 1% FPR 0.0200" in text
    assert (
        "TPR at 0.1% FPR not resolvable with 1000 non-member targets (needs 8000), TPR at 1% FPR 0.0400 [0.0200, "
        "0.0600]" in attack_metric_lines({"conf": stored_attack(1000)})[0]
    )
    assert "not resolvable" not in attack_metric_lines({"conf": stored_attack(8000)})[0]


def test_wemem_run_prints_and_saves_intervals_and_resolution(
    tiny_assets, cache_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                *TINY,
                "--steps",
                "1",
                "--attacks",
                "conf",
                "--serial",
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    table = pd.read_csv(f"{out}.csv")
    n = int(table["non_member_targets"].item())
    assert n < 800  # digits: neither low FPR resolves
    assert f"n/r: tpr_at_0.1%_fpr not resolvable with {n} non-member targets (needs 8000)" in printed
    assert f"n/r: tpr_at_1%_fpr not resolvable with {n} non-member targets (needs 800)" in printed
    row = table.iloc[0]
    assert f"{row['auc']:.4f} [{row['auc_low']:.4f}, {row['auc_high']:.4f}]" in printed
    for metric in ("balanced_accuracy", "auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr"):
        assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
    assert row["epsilon_lower_bound"] >= 0 and row["epsilon_delta"] == 0 and row["epsilon_confidence"] == 0.95
    attack = json.loads(Path(f"{out}.json").read_text())["runs"][0]["attacks"]["conf"]
    assert attack["intervals"]["auc"] == pytest.approx([row["auc_low"], row["auc_high"]])
    assert attack["epsilon_lower_bound"]["value"] == pytest.approx(row["epsilon_lower_bound"])
