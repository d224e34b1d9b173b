"""Metric-based attacks (SPEC section 9, 1-4): Conf, Entr, Mentr with per-class thresholds, Hconf global."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..metrics import best_threshold
from .base import ATTACKS, Attack, AttackInputs

_EPS = 1e-30


def true_class_probability(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.exp(log_probs[np.arange(len(labels)), labels])


def negative_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.sum(np.exp(log_probs) * log_probs, axis=1)


def negative_modified_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-Mentr(p, y) with Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i) (Song & Mittal 2021)."""
    probs = np.exp(log_probs)
    rows = np.arange(len(labels))
    p_true = probs[rows, labels]
    log_one_minus = np.log(np.clip(1.0 - probs, _EPS, None))
    others = probs * log_one_minus
    others[rows, labels] = 0.0
    mentr = -(1.0 - p_true) * log_probs[rows, labels] - others.sum(axis=1)
    return -mentr


def per_class_thresholds(scores: np.ndarray, labels: np.ndarray, members: np.ndarray, num_classes: int) -> np.ndarray:
    """One threshold per class maximizing that class's shadow balanced accuracy; the global one as fallback."""
    fallback, _ = best_threshold(scores, members)
    thresholds = np.full(num_classes, fallback)
    for c in range(num_classes):
        in_class = labels == c
        if members[in_class].any() and (~members[in_class]).any():
            thresholds[c], _ = best_threshold(scores[in_class], members[in_class])
    return thresholds


class ThresholdAttack(Attack):
    per_class: ClassVar[bool] = True

    @staticmethod
    def feature(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        shadow, victim = inputs.shadow_observations(), inputs.victim_observations()
        shadow_scores = self.feature(shadow.log_probs, shadow.labels)
        victim_scores = self.feature(victim.log_probs, victim.labels)
        if not self.per_class:
            threshold, _ = best_threshold(shadow_scores, shadow.is_member)
            return victim_scores, threshold
        thresholds = per_class_thresholds(shadow_scores, shadow.labels, shadow.is_member, victim.log_probs.shape[1])
        # a class with no useful cut rejects all its samples; keep it finite so AUC stays defined
        ceiling = max(shadow_scores.max(initial=0.0), victim_scores.max(initial=0.0)) + 1.0
        thresholds = np.where(np.isfinite(thresholds), thresholds, ceiling)
        # shift by the class threshold so one decision threshold (0) serves all classes
        return victim_scores - thresholds[victim.labels], 0.0


@ATTACKS.register("conf")
class Conf(ThresholdAttack):
    name = "conf"
    feature = staticmethod(true_class_probability)


@ATTACKS.register("entr")
class Entr(ThresholdAttack):
    name = "entr"
    feature = staticmethod(negative_entropy)


@ATTACKS.register("mentr")
class Mentr(ThresholdAttack):
    name = "mentr"
    feature = staticmethod(negative_modified_entropy)


@ATTACKS.register("hconf")
class Hconf(ThresholdAttack):
    name = "hconf"
    per_class = False
    feature = staticmethod(true_class_probability)
