"""Membership-inference metrics: threshold fitting, balanced accuracy, ROC AUC, TPR at low FPR.

Convention everywhere: a higher score means "more likely a member"; a sample is predicted a member when
its score is >= the threshold.
"""

from __future__ import annotations

import numpy as np

from .uncertainty import (
    METRIC_FPRS,
    MIN_FALSE_POSITIVES,
    Resolution,
    bootstrap_intervals,
    epsilon_lower_bound,
    tpr_resolution,
    unresolvable_text,
)

# sklearn.metrics is imported in the functions that use it: it takes about a second to import (scipy.stats with
# it), which every Ray worker importing wemem would pay, while pruning and training never use it.

__all__ = [
    "METRIC_FPRS",
    "MIN_FALSE_POSITIVES",
    "Resolution",
    "attack_metrics",
    "attack_uncertainty",
    "auc",
    "balanced_accuracy",
    "best_threshold",
    "population_threshold",
    "roc_points",
    "tpr_at_fpr",
    "tpr_resolution",
    "unresolvable_text",
]


def best_threshold(scores: np.ndarray, is_member: np.ndarray) -> tuple[float, float]:
    """The threshold maximizing balanced accuracy, in O(n log n) by one sort and cumulative counts.

    Returns (threshold, balanced accuracy). Among equally good cut points the midpoint between the lowest
    accepted score and the next lower score is returned (a max-margin choice); when no cut beats 0.5 the
    threshold rejects everything (+inf).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    n_pos, n_neg = int(is_member.sum()), int((~is_member).sum())
    if n_pos == 0 or n_neg == 0:
        return float("inf"), 0.5
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_members = scores[order], is_member[order]
    true_pos = np.cumsum(sorted_members)
    false_pos = np.cumsum(~sorted_members)
    # only the last position of each run of equal scores is a valid cut (ties are accepted together)
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    balanced = 0.5 * (1.0 + true_pos / n_pos - false_pos / n_neg)
    balanced = np.where(last_of_run, balanced, -np.inf)
    best = int(np.argmax(balanced))
    if balanced[best] <= 0.5:
        return float("inf"), 0.5
    next_lower = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else sorted_scores[best] - 1.0
    return float(0.5 * (sorted_scores[best] + next_lower)), float(balanced[best])


def population_threshold(target_scores: np.ndarray, population_scores: np.ndarray) -> float:
    """A label-free threshold: the cut maximizing F_pop(t) - F_targets(t), in O(n log n).

    ``population_scores`` are scores of samples known to be non-members (they follow the targets' non-member
    distribution F0); the targets mix members (F1, unknown) and non-members with some member fraction pi > 0, so
    F_targets = (1 - pi) F0 + pi F1 and F0 - F_targets = pi (F0 - F1) = pi (TPR - FPR) at every cut: the cut
    that maximizes the gap maximizes TPR - FPR, i.e. the balanced accuracy, whatever pi is -- no label needed.
    The rule is ``score >= t`` as everywhere; among equally good cuts the midpoint below the accepted score is
    returned (as :func:`best_threshold`); +inf (reject all) when no cut beats chance.

    The gap is the one-sided two-sample Kolmogorov-Smirnov statistic. ``scipy.stats.ks_2samp(population,
    targets, alternative="greater")`` finds the same cut, but reports it as a sample value x for the rule
    ``score > x``. Turning that into our ``score >= t`` midpoint, and handling "no cut beats chance", takes as
    many lines as the search below, so the search is done here.
    """
    targets = np.sort(np.asarray(target_scores, dtype=np.float64))
    population = np.sort(np.asarray(population_scores, dtype=np.float64))
    if len(targets) == 0 or len(population) == 0:
        return float("inf")
    cuts = np.unique(np.concatenate([targets, population]))
    # fraction of each side strictly below each cut: those are predicted non-members
    gap = np.searchsorted(population, cuts, side="left") / len(population) - np.searchsorted(
        targets, cuts, side="left"
    ) / len(targets)
    best = int(np.argmax(gap))
    if gap[best] <= 0:
        return float("inf")
    below = cuts[best - 1] if best > 0 else cuts[best] - 1.0
    return float(0.5 * (cuts[best] + below))


def balanced_accuracy(scores: np.ndarray, is_member: np.ndarray, threshold: float | np.ndarray) -> float:
    """0.5 * (TPR + TNR) of the rule ``score >= threshold``; ``threshold`` may hold one value per sample (the
    per-class thresholds of Conf, Entr and Mentr, looked up by each target's label)."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    predicted = scores >= threshold
    tpr = predicted[is_member].mean() if is_member.any() else 0.0
    tnr = (~predicted[~is_member]).mean() if (~is_member).any() else 0.0
    return float(0.5 * (tpr + tnr))


def auc(scores: np.ndarray, is_member: np.ndarray) -> float:
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.all() or not is_member.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_member, np.asarray(scores, dtype=np.float64)))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, max_fpr: float) -> float:
    """The largest TPR of any threshold whose FPR is at most ``max_fpr``."""
    from sklearn.metrics import roc_curve

    # every threshold counts: sklearn's default drops collinear ROC points, which can remove the last point
    # below ``max_fpr`` and understate the TPR there
    fpr, tpr, _ = roc_curve(
        np.asarray(is_member, dtype=bool), np.asarray(scores, dtype=np.float64), drop_intermediate=False
    )
    allowed = fpr <= max_fpr
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def roc_points(scores: np.ndarray, is_member: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """A thinned ROC curve (FPR, TPR) small enough to store with every trial."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(is_member, dtype=bool), np.asarray(scores, dtype=np.float64))
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def attack_metrics(scores: np.ndarray, is_member: np.ndarray, threshold: float | np.ndarray) -> dict[str, float]:
    """The decision's balanced accuracy, and the threshold-free judges (AUC, TPR at low FPR) on the attack's own
    scores."""
    return {
        "balanced_accuracy": balanced_accuracy(scores, is_member, threshold),
        "auc": auc(scores, is_member),
        **{key: tpr_at_fpr(scores, is_member, fpr) for key, fpr in METRIC_FPRS.items()},
    }


def attack_uncertainty(scores: np.ndarray, is_member: np.ndarray, threshold: float | np.ndarray) -> dict[str, object]:
    """What :func:`attack_metrics`' figures are worth, as plain JSON: their 95% stratified bootstrap intervals over
    the targets, how many targets each side had (which decides whether a TPR at low FPR resolves, see
    :func:`tpr_resolution`), and the lower bound on epsilon of the attack's decisions."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    predicted = scores >= threshold
    return {
        "intervals": bootstrap_intervals(scores, is_member, predicted),
        "targets": {"members": int(is_member.sum()), "non_members": int((~is_member).sum())},
        "epsilon_lower_bound": epsilon_lower_bound(predicted, is_member),
    }
