"""Offline RMIA (Zarifzadeh et al. 2024; SPEC section 9, 10).

A target is likely a member when the victim's likelihood ratio against the shadows' reference is higher than
that of most population samples z (a held-out slice of the test pool that no model trains on, selects
checkpoints on or is attacked on; see :func:`wemem.attacks.base.population_indices`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import WememError
from ..metrics import population_threshold
from .base import ATTACKS, Attack, AttackInputs


def reference_probability(shadow_probs: np.ndarray, a: float) -> np.ndarray:
    """Pr(x) = ((1 + a) / 2) * mean_k p_y(x | shadow_k) + (1 - a) / 2 over ``shadow_probs`` [K, n].

    The offline linear approximation of the average over IN and OUT models when all shadows are OUT.
    """
    return 0.5 * (1.0 + a) * shadow_probs.mean(axis=0) + 0.5 * (1.0 - a)


def dominance_fraction(target_ratios: np.ndarray, population_ratios: np.ndarray, gamma: float) -> np.ndarray:
    """For each target x: the fraction of z with ratio(x) / ratio(z) >= gamma, by one sort and binary search.

    Ratios are positive, so the condition is ratio(z) <= ratio(x) / gamma.
    """
    ordered = np.sort(population_ratios)
    return np.searchsorted(ordered, target_ratios / gamma, side="right") / len(ordered)


def break_ties(fractions: np.ndarray, ratios: np.ndarray, population_size: int) -> np.ndarray:
    """Order targets with equal fractions by their raw likelihood ratio, without changing their order otherwise.

    Fractions are multiples of 1/n (n = population size). Adding (0.5/n) * r / (1 + r), which is strictly
    increasing in the ratio r > 0 and below half a step, keeps every fraction's order, while a small population
    no longer ties many targets at the same score (which would flatten the ROC curve at low FPR).
    """
    return fractions + (0.5 / population_size) * ratios / (1.0 + ratios)


def population_scores(population_ratios: np.ndarray, gamma: float) -> np.ndarray:
    """Each population sample's score against the other n - 1 (itself left out), tie-broken like the targets':
    the victim's non-member targets score like these, so they give the attack's label-free threshold."""
    n = len(population_ratios)
    ordered = np.sort(population_ratios)
    others = np.searchsorted(ordered, population_ratios / gamma, side="right") - (gamma <= 1.0)  # not itself
    return break_ties(others / max(n - 1, 1), population_ratios, max(n - 1, 1))


def true_class_probs(log_probs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.exp(log_probs[indices, labels[indices]])


@ATTACKS.register("rmia")
class Rmia(Attack):
    a: ClassVar[float] = 0.3
    gamma: ClassVar[float] = 1.0

    def likelihood_ratios(self, inputs: AttackInputs, indices: np.ndarray) -> np.ndarray:
        """ratio(x) = p_y(x | victim) / Pr(x) for the pool samples ``indices``."""
        victim = true_class_probs(inputs.victim_log_probs, inputs.labels, indices)
        shadows = np.stack([true_class_probs(lp, inputs.labels, indices) for lp in inputs.shadow_log_probs])
        return victim / reference_probability(shadows, self.a)

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        if inputs.population is None or len(inputs.population) == 0:
            raise WememError(
                "rmia needs a population of non-member samples no model trained on; build the attack "
                "inputs with wemem.pipeline.attack_inputs, or drop rmia when every pool sample is a "
                "target or trained on"
            )
        target_ratios = self.likelihood_ratios(inputs, inputs.victim_targets.indices)
        population_ratios = self.likelihood_ratios(inputs, inputs.population)
        fractions = dominance_fraction(target_ratios, population_ratios, self.gamma)
        scores = break_ties(fractions, target_ratios, len(inputs.population))
        # label-free threshold from the population (as LiRA's): a fixed 0.5 accepts about half the non-members
        return scores, population_threshold(scores, population_scores(population_ratios, self.gamma))
