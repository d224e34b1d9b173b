"""Metric-based attacks (SPEC section 9, 1-4): Conf, Entr, Mentr with per-class thresholds, Hconf global."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..metrics import best_threshold
from .base import ATTACKS, Attack, AttackInputs
from .features import negative_entropy, negative_modified_entropy, scaled_confidence

# the features live in .features (float64, log space); imported here as the attacks' public names
__all__ = [
    "Conf",
    "Entr",
    "Mentr",
    "Hconf",
    "negative_entropy",
    "negative_modified_entropy",
    "scaled_confidence",
    "per_class_thresholds",
]


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
    cheap: ClassVar[bool] = True
    per_class: ClassVar[bool] = True

    @staticmethod
    def feature(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float | np.ndarray]:
        """The raw feature of each victim target (what the ROC metrics rank, as Song & Mittal's code and ML
        Privacy Meter report them) and its decision threshold: the global one, or its class's."""
        shadow, victim = inputs.shadow_observations(), inputs.victim_observations()
        shadow_scores = self.feature(shadow.log_probs, shadow.labels)
        victim_scores = self.feature(victim.log_probs, victim.labels)
        if not self.per_class:
            threshold, _ = best_threshold(shadow_scores, shadow.is_member)
            return victim_scores, threshold
        thresholds = per_class_thresholds(shadow_scores, shadow.labels, shadow.is_member, victim.log_probs.shape[1])
        return victim_scores, thresholds[victim.labels]  # +inf where a class has no useful cut: all rejected


@ATTACKS.register("conf")
class Conf(ThresholdAttack):
    feature = staticmethod(scaled_confidence)  # p_y's order, without float ties near p_y = 1


@ATTACKS.register("entr")
class Entr(ThresholdAttack):
    feature = staticmethod(negative_entropy)


@ATTACKS.register("mentr")
class Mentr(ThresholdAttack):
    feature = staticmethod(negative_modified_entropy)


@ATTACKS.register("hconf")
class Hconf(ThresholdAttack):
    per_class = False
    feature = staticmethod(scaled_confidence)  # p_y's order, without float ties near p_y = 1
