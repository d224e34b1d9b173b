"""Offline LiRA (Carlini et al. 2022; SPEC section 9, 9).

No shadow trained on a victim target (member or not), so every shadow is an OUT model for every target: the
attack fits the OUT distribution of the scaled confidence per target and asks how far above it the victim sits.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import WememError, require
from ..metrics import population_threshold
from .base import ATTACKS, Attack, AttackInputs
from .features import scaled_confidence

__all__ = ["Lira", "lira_scores", "scaled_confidence"]


def out_statistics(shadow_phi: np.ndarray) -> tuple[np.ndarray, float]:
    """mu_out per target and sigma_out pooled over targets, from ``shadow_phi`` [K, n].

    sigma_out pools the within-target deviations of all targets (n (K - 1) degrees of freedom), because K is
    small and per-target variances from a handful of shadows are unreliable.
    """
    shadows, n = shadow_phi.shape
    require(shadows >= 2, f"lira needs at least 2 shadow models to estimate sigma_out (got {shadows}); raise shadows")
    mu_out = shadow_phi.mean(axis=0)
    sigma_out = np.sqrt(((shadow_phi - mu_out) ** 2).sum() / (n * (shadows - 1)))
    # identical shadow outputs (a defense that removes all signal) would otherwise divide by zero
    return mu_out, max(float(sigma_out), np.finfo(np.float64).tiny)


def lira_scores(victim_phi: np.ndarray, shadow_phi: np.ndarray, sigma_out: float | None = None) -> np.ndarray:
    """z = (phi - mu_out) / sigma_out per target, ``shadow_phi`` [K, n]; sigma_out pooled over these targets
    unless given.

    The score is z itself, not the normal CDF Phi(z) of the paper's formula: the order is the same, and Phi(z)
    rounds to 1.0 in float64 from z of about 8.3, tying exactly the strongly leaking targets that the low-FPR
    figures read.
    """
    mu_out, pooled = out_statistics(shadow_phi)
    return (victim_phi - mu_out) / (pooled if sigma_out is None else sigma_out)


@ATTACKS.register("lira")
class Lira(Attack):
    min_shadows: ClassVar[int] = 2  # sigma_out needs two shadows

    @staticmethod
    def phis(inputs: AttackInputs, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = inputs.labels[rows]
        return (
            scaled_confidence(inputs.victim_log_probs[rows], labels),
            np.stack([scaled_confidence(lp[rows], labels) for lp in inputs.shadow_log_probs]),
        )

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        victim_phi, shadow_phi = self.phis(inputs, inputs.victim_targets.indices)
        scores = lira_scores(victim_phi, shadow_phi)
        return scores, self.threshold(inputs, scores, out_statistics(shadow_phi)[1])

    def threshold(self, inputs: AttackInputs, target_scores: np.ndarray, sigma_out: float) -> float:
        """Label-free, from the population (see :func:`wemem.metrics.population_threshold`): its samples are
        non-members of the victim and OUT for every shadow, like the victim's non-member targets, so their scores
        follow the targets' non-member distribution. A fixed 0.5 on Phi(z) (z = 0) accepts about half of the
        non-members and caps balanced accuracy near 0.75 (docs/deviations.md)."""
        if inputs.population is None or len(inputs.population) == 0:
            raise WememError(
                "lira needs a population of non-member samples no model trained on to fit its "
                "threshold; build the attack inputs with wemem.pipeline.attack_inputs"
            )
        population = lira_scores(*self.phis(inputs, inputs.population), sigma_out=sigma_out)
        return population_threshold(target_scores, population)
