"""How far each leakage figure can be trusted: bootstrap intervals over the victim's targets, whether a TPR at a
low FPR is resolvable at all on them, and an empirical lower bound on epsilon.

Pure functions of arrays; :func:`wemem.metrics.attack_uncertainty` puts them together for one attack. The
convention is :mod:`wemem.metrics`' own: a higher score means "more likely a member", the rule is
``score >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# scipy.stats is imported in the functions that use it: it takes about a second to import, which every Ray worker
# importing wemem would pay, while pruning and training never use it.

CONFIDENCE = 0.95
N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed: the same scores always give the same interval
# The lower bound on epsilon follows TensorFlow Privacy's EpsilonLowerBound (Clopper-Pearson method, one-sided
# threshold), which bounds log(TPR / FPR) and log(TNR / FNR) with no delta: its delta is 0, a bound on pure
# epsilon-DP. Pass the delta of an (epsilon, delta) guarantee to compare with one (DP-SGD's is 1/N).
EPSILON_DELTA = 0.0

# How many non-member false positives a TPR at FPR a needs before its threshold means anything: the smallest
# count k whose exact (Poisson, Garwood) two-sided 95% upper bound is at most 2k, i.e. the FPR actually reached at
# the chosen threshold is, with 95% confidence, within twice the nominal a. Poisson, not binomial: at FPRs of 1%
# and below the count of N non-members above a threshold is Poisson to within a fraction of a count, and the rule
# must not depend on N. Derived in :func:`min_false_positives`: it is 8 (the bound is 15.76 <= 16; 7 gives 14.42 > 14).
RESOLUTION_FACTOR = 2.0


def min_false_positives(confidence: float = CONFIDENCE, factor: float = RESOLUTION_FACTOR) -> int:
    """The smallest count k of false positives whose exact Poisson upper confidence bound (the two-sided
    interval's upper end, ``gamma.ppf((1 + confidence) / 2, k + 1)``) is at most ``factor * k``."""
    from scipy import stats

    k = 1
    while stats.gamma.ppf((1 + confidence) / 2, k + 1) > factor * k:
        k += 1
    return k


MIN_FALSE_POSITIVES = 8  # min_false_positives(), written out so that importing this module needs no scipy.stats


class Resolution(NamedTuple):
    """Whether a TPR at FPR ``fpr`` is resolvable with some number of non-member targets, and the fewest
    non-member targets that make it so."""

    resolvable: bool
    needs: int


def tpr_resolution(fpr: float, n_non_members: int) -> Resolution:
    """A TPR at FPR a is resolvable with N non-member targets iff a * N >= :data:`MIN_FALSE_POSITIVES` (8): its
    threshold then has at least 8 non-members above it, so the FPR it really reaches is within twice a (95% exact
    Poisson bound). E.g. 0.1% FPR needs 8,000 non-members (600 do not resolve it), 1% needs 800."""
    # the epsilon absorbs the float error of m / a (9 / 0.009 is 1000.0000000000001)
    return Resolution(fpr * n_non_members >= MIN_FALSE_POSITIVES, math.ceil(MIN_FALSE_POSITIVES / fpr - 1e-9))


def unresolvable_text(n_non_members: int, needs: int) -> str:
    return f"not resolvable with {n_non_members} non-member targets (needs {needs})"


# ----------------------------------------------------------------------------------------- bootstrap


def allowed_false_positives(fpr: float, n_non_members: int) -> int:
    """The largest count c of non-members above a threshold with c / n <= fpr, compared in floating point exactly
    as :func:`wemem.metrics.tpr_at_fpr` compares sklearn's ROC FPRs (c / n), so both pick the same cut."""
    return int(np.count_nonzero(np.arange(1, n_non_members + 1) / n_non_members <= fpr))


def auc_from_ranks(member_ranks: np.ndarray, non_member_ranks: np.ndarray, n_levels: int) -> np.ndarray:
    """ROC AUC along the last axis = Mann-Whitney U / (n1 n0), from integer ranks in [0, n_levels) (ties share a
    rank): U counts, per member, the non-members ranked below it plus half those tied with it.

    One histogram of the non-members' ranks per row makes this O(n + n_levels) a row; ``scipy.stats.rankdata``
    sorts every replicate and took 0.12 s for 1,000 replicates of 1,200 targets, most of the time budget.
    """
    members = np.asarray(member_ranks, dtype=np.int64)
    non_members = np.asarray(non_member_ranks, dtype=np.int64)
    batch = non_members.shape[:-1]
    n1, n0 = members.shape[-1], non_members.shape[-1]
    rows = int(np.prod(batch))
    flat = non_members.reshape(rows, n0) + n_levels * np.arange(rows)[:, None]
    counts = np.bincount(flat.ravel(), minlength=rows * n_levels).reshape(rows, n_levels)
    members = members.reshape(rows, n1)
    at_or_below = np.take_along_axis(np.cumsum(counts, axis=1), members, axis=1).sum(axis=1)
    u = at_or_below - 0.5 * np.take_along_axis(counts, members, axis=1).sum(axis=1)
    return (u / (n1 * n0)).reshape(batch)


def tpr_from_ranks(member_ranks: np.ndarray, non_member_ranks: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at FPR ``fpr`` along the last axis: the fraction of members strictly above the (c + 1)-th largest
    non-member, c = :func:`allowed_false_positives`. Any cut above that non-member lets at most c non-members
    through, any cut at or below it lets c + 1, so this is :func:`wemem.metrics.tpr_at_fpr`, ties included."""
    n0 = non_member_ranks.shape[-1]
    c = allowed_false_positives(fpr, n0)
    if c >= n0:
        return np.ones(non_member_ranks.shape[:-1])
    cut = -np.partition(-non_member_ranks, c, axis=-1)[..., c]
    return (member_ranks > cut[..., None]).mean(axis=-1)


METRIC_FPRS = {"tpr_at_0.1%_fpr": 0.001, "tpr_at_1%_fpr": 0.01}
INTERVAL_METRICS = ("balanced_accuracy", "auc", *METRIC_FPRS)


def _statistics(n_levels: int) -> Callable[..., np.ndarray]:
    """The four metrics of :data:`INTERVAL_METRICS` along ``axis`` of two samples whose rows are [rank, predicted
    member], stacked on a new first axis (what ``scipy.stats.bootstrap`` takes as a vector-valued statistic)."""

    def statistic(members: np.ndarray, non_members: np.ndarray, axis: int = -1) -> np.ndarray:
        members, non_members = np.moveaxis(members, axis, -1), np.moveaxis(non_members, axis, -1)
        member_ranks, non_member_ranks = members[0].astype(np.int64), non_members[0].astype(np.int64)
        balanced = 0.5 * (members[1].mean(axis=-1) + 1.0 - non_members[1].mean(axis=-1))
        return np.stack(
            [
                balanced,
                auc_from_ranks(member_ranks, non_member_ranks, n_levels),
                *(tpr_from_ranks(member_ranks, non_member_ranks, a) for a in METRIC_FPRS.values()),
            ]
        )

    return statistic


# Resampled (replicate, target) pairs a bootstrap holds at once: each costs about 90 bytes across the statistic's
# intermediates (ranks, histograms, cumulative counts), so ~190 MB. All 1,000 replicates at once held ~2 GB at
# 21,000 targets (an 80,000-row pool), more than the models' data. Up to 2,097 targets one batch still takes every
# replicate, so the draws (and the intervals) are exactly scipy's unbatched ones there; above, scipy draws batch
# by batch, equally valid and as seeded, but other draws.
BOOTSTRAP_ELEMENTS = 2**21


def resample_batch(n_targets: int, n_resamples: int = N_RESAMPLES) -> int | None:
    """The replicates a bootstrap over ``n_targets`` evaluates at once (None: all of them)."""
    batch = max(1, BOOTSTRAP_ELEMENTS // max(n_targets, 1))
    return None if batch >= n_resamples else batch


def bootstrap_intervals(
    scores: np.ndarray,
    is_member: np.ndarray,
    predicted: np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of balanced accuracy (of the boolean decisions ``predicted``, one per target,
    so per-class thresholds travel with their targets), ROC AUC and TPR at 0.1% and 1% FPR (of ``scores``).

    Stratified: ``scipy.stats.bootstrap`` resamples the members and the non-members separately, as the target set
    is balanced by design. Every metric depends on the scores only through their order, so the scores enter as
    dense ranks over all targets (ties kept), which lets AUC be counted from histograms (see
    :func:`auc_from_ranks`). NaN intervals when a side has fewer than two targets (no resample varies).
    """
    is_member = np.asarray(is_member, dtype=bool)
    if min(is_member.sum(), (~is_member).sum()) < 2:
        return {name: [math.nan, math.nan] for name in INTERVAL_METRICS}
    levels, ranks = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    rows = np.stack([ranks.astype(np.float64), np.asarray(predicted, dtype=np.float64)])
    from scipy import stats

    result = stats.bootstrap(
        (rows[:, is_member], rows[:, ~is_member]),
        _statistics(len(levels)),
        n_resamples=n_resamples,
        batch=resample_batch(len(is_member), n_resamples),
        vectorized=True,
        axis=-1,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return {name: [float(lo), float(hi)] for name, lo, hi in zip(INTERVAL_METRICS, low, high)}


# ----------------------------------------------------------------------------------------- epsilon


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion."""
    from scipy import stats

    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def epsilon_lower_bound(
    predicted: np.ndarray, is_member: np.ndarray, delta: float = EPSILON_DELTA, confidence: float = CONFIDENCE
) -> dict[str, float]:
    """An empirical lower bound on the epsilon of (epsilon, delta)-DP for the audited model, from one decision
    rule (a boolean prediction per target, the threshold chosen without the targets' labels), as TensorFlow
    Privacy's ``EpsilonLowerBound`` computes it with Clopper-Pearson bounds at that one threshold:

        epsilon_lb = max(0, log((1 - delta - FNR_hi) / FPR_hi), log((1 - delta - FPR_hi) / FNR_hi))

    with FPR_hi and FNR_hi the upper ends of the two-sided ``confidence`` Clopper-Pearson intervals (TF Privacy's
    ``alpha`` = 1 - confidence); a term whose numerator is not positive bounds nothing. A lower bound, not an
    estimate: another threshold or a stronger attack may show more, and more targets tighten it.
    """
    predicted, is_member = np.asarray(predicted, dtype=bool), np.asarray(is_member, dtype=bool)
    n_members, n_non_members = int(is_member.sum()), int((~is_member).sum())
    if n_members == 0 or n_non_members == 0:
        return {"value": math.nan, "delta": delta, "confidence": confidence}
    fpr_hi = clopper_pearson(int(predicted[~is_member].sum()), n_non_members, confidence)[1]
    fnr_hi = clopper_pearson(int((~predicted[is_member]).sum()), n_members, confidence)[1]
    terms = [
        math.log(numerator / denominator)
        for numerator, denominator in ((1 - delta - fnr_hi, fpr_hi), (1 - delta - fpr_hi, fnr_hi))
        if numerator > 0
    ]
    return {"value": max([0.0, *terms]), "delta": delta, "confidence": confidence}
