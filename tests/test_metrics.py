"""Metrics on constructed cases with known answers (SPEC section 9: balanced accuracy, AUC, TPR at low FPR)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from objectives._leakage import PRIVACY_METRICS
from wemem.metrics import (
    attack_metrics,
    auc,
    balanced_accuracy,
    best_threshold,
    population_threshold,
    roc_points,
    tpr_at_fpr,
)

MEMBERS = np.array([1, 1, 1, 0, 0, 0], dtype=bool)


def test_perfectly_separable_scores_give_auc_and_balanced_accuracy_one():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    threshold, fitted = best_threshold(scores, MEMBERS)
    assert threshold == pytest.approx(0.5)  # midpoint between the lowest member and the highest non-member
    assert fitted == 1.0
    assert balanced_accuracy(scores, MEMBERS, threshold) == 1.0
    assert auc(scores, MEMBERS) == 1.0
    assert tpr_at_fpr(scores, MEMBERS, 0.001) == 1.0


def test_identical_distributions_give_auc_near_one_half():
    # Under H0 (same distribution) the Mann-Whitney AUC has mean 1/2 and standard deviation
    # sqrt((n1 + n2 + 1) / (12 n1 n2)); with n1 = n2 = 2000 that is 0.0091, so 5 sigma is 0.046.
    n1 = n2 = 2000
    rng = np.random.default_rng(0)
    scores = rng.normal(size=n1 + n2)
    members = np.r_[np.ones(n1, bool), np.zeros(n2, bool)]
    sigma = np.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    assert abs(auc(scores, members) - 0.5) < 5 * sigma


def test_tpr_at_fpr_on_hand_made_scores():
    # descending: m m n m n m n n n  (4 members; 5 non-members, each false positive costs FPR 0.2)
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=float)
    members = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert tpr_at_fpr(scores, members, 0.0) == 0.5  # two of four members before the first non-member
    assert tpr_at_fpr(scores, members, 0.2) == 0.75
    assert tpr_at_fpr(scores, members, 0.39) == 0.75
    assert tpr_at_fpr(scores, members, 0.4) == 1.0


def test_tpr_at_fpr_keeps_collinear_roc_points():
    # three tied pairs put (1/3, 1/3) and (2/3, 2/3) on one line; dropping collinear points would report 1/3
    scores = np.array([3, 3, 2, 2, 1, 1], dtype=float)
    members = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    assert tpr_at_fpr(scores, members, 0.7) == pytest.approx(2 / 3)


def test_best_threshold_on_a_small_case():
    # descending: 0.8 m, 0.4 n, 0.35 m, 0.1 n -> cuts give 0.75, 0.5, 0.75, 0.5; the first best is kept
    threshold, fitted = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool))
    assert threshold == pytest.approx(0.6)
    assert fitted == 0.75


def test_best_threshold_accepts_ties_together():
    # a member and a non-member tie at 0.5: no cut separates them, the cut below the tie gives 0.75
    threshold, fitted = best_threshold(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0], bool))
    assert threshold == pytest.approx(0.35)
    assert fitted == 0.75


def test_best_threshold_without_signal_rejects_everything():
    threshold, fitted = best_threshold(np.full(4, 0.3), np.array([1, 1, 0, 0], bool))
    assert threshold == float("inf") and fitted == 0.5


def brute_force_best_balanced_accuracy(scores: np.ndarray, members: np.ndarray) -> float:
    """O(n^2): try every distinct score as the threshold."""
    return max(itertools.chain([0.5], (balanced_accuracy(scores, members, t) for t in np.unique(scores))))


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    members = rng.random(60) < 0.5
    scores = np.round(rng.normal(size=60) + 0.7 * members, 1)  # rounding makes ties
    threshold, fitted = best_threshold(scores, members)
    assert fitted == pytest.approx(brute_force_best_balanced_accuracy(scores, members))
    assert balanced_accuracy(scores, members, threshold) == pytest.approx(fitted)


def test_roc_points_are_thinned_and_span_the_curve():
    rng = np.random.default_rng(1)
    members = rng.random(5000) < 0.5
    points = roc_points(rng.normal(size=5000) + members, members, max_points=50)
    assert len(points["fpr"]) == len(points["tpr"]) <= 50
    assert (points["fpr"][0], points["tpr"][0]) == (0.0, 0.0)
    assert (points["fpr"][-1], points["tpr"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(points["fpr"]) >= 0)


def test_attack_metric_names_are_the_leakage_metrics():
    metrics = attack_metrics(np.array([0.9, 0.1]), np.array([1, 0], bool), 0.5)
    assert set(metrics) == set(PRIVACY_METRICS)


def test_population_threshold_by_hand():
    # targets 0.2, 0.6, 0.9 (unlabeled), population (known non-members) 0.1, 0.3, 0.5, 0.7.
    # cut c: accept score >= c; gap = population below c / 4 - targets below c / 3:
    # 0.1: 0; 0.2: 1/4; 0.3: 1/4 - 1/3; 0.5: 2/4 - 1/3; 0.6: 3/4 - 1/3 = 0.4167; 0.7: 3/4 - 2/3; 0.9: 1 - 2/3
    # -> the cut 0.6, returned as the midpoint below it (0.55)
    threshold = population_threshold(np.array([0.9, 0.2, 0.6]), np.array([0.5, 0.1, 0.7, 0.3]))
    assert threshold == pytest.approx(0.55)
    # no gap above chance: reject all
    assert population_threshold(np.array([0.1, 0.2]), np.array([0.5, 0.6])) == float("inf")


def test_population_threshold_maximizes_tpr_minus_fpr_whatever_the_member_share():
    rng = np.random.default_rng(0)
    non_members, population = rng.normal(0, 1, 20000), rng.normal(0, 1, 20000)
    for members in (rng.normal(2, 1, 20000), rng.normal(2, 1, 5000)):  # half, then a fifth of the targets
        scores = np.r_[members, non_members]
        is_member = np.r_[np.ones(len(members), bool), np.zeros(len(non_members), bool)]
        threshold = population_threshold(scores, population)
        assert threshold == pytest.approx(1.0, abs=0.1)  # equal variances: the optimal cut is the midpoint
        assert balanced_accuracy(scores, is_member, threshold) == pytest.approx(
            best_threshold(scores, is_member)[1], abs=0.005
        )


def test_a_threshold_per_sample_decides_each_sample():
    scores, members = np.array([0.3, 0.3, 0.8, 0.8]), np.array([1, 0, 1, 0], bool)
    # per-class thresholds looked up by label: 0.2 for the first and third, 0.9 for the others
    assert balanced_accuracy(scores, members, np.array([0.2, 0.9, 0.2, 0.9])) == 1.0
    assert attack_metrics(scores, members, np.array([0.2, 0.9, 0.2, 0.9]))["balanced_accuracy"] == 1.0
