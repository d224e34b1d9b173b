"""Offline LiRA (Carlini et al. 2022; SPEC section 9, 9).

No shadow trained on a victim target (member or not), so every shadow is an OUT model for every target: the
attack fits the OUT distribution of the scaled confidence per target and asks how far above it the victim sits.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ..errors import require
from .base import ATTACKS, Attack, AttackInputs


def scaled_confidence(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) = log p_y - logsumexp_{j != y} log p_j.

    Taking 1 - p_y as the sum of the other probabilities in log space keeps phi finite and exact when p_y
    rounds to 1, where the naive formula gives inf.
    """
    rows = np.arange(len(labels))
    others = np.array(log_probs, dtype=np.float64)
    true_class = others[rows, labels].copy()
    others[rows, labels] = -np.inf
    return true_class - np.logaddexp.reduce(others, axis=1)


def lira_scores(victim_phi: np.ndarray, shadow_phi: np.ndarray) -> np.ndarray:
    """Phi((phi - mu_out) / sigma_out) per target; ``shadow_phi`` is [K, n].

    mu_out is per target; sigma_out pools the within-target deviations of all targets (n (K - 1) degrees of
    freedom), because K is small and per-target variances from a handful of shadows are unreliable.
    """
    shadows, n = shadow_phi.shape
    require(shadows >= 2, f"lira needs at least 2 shadow models to estimate sigma_out (got {shadows}); raise shadows")
    mu_out = shadow_phi.mean(axis=0)
    sigma_out = np.sqrt(((shadow_phi - mu_out) ** 2).sum() / (n * (shadows - 1)))
    # identical shadow outputs (a defense that removes all signal) would otherwise divide by zero
    sigma_out = max(sigma_out, np.finfo(np.float64).tiny)
    return torch.special.ndtr(torch.as_tensor((victim_phi - mu_out) / sigma_out)).numpy()


@ATTACKS.register("lira")
class Lira(Attack):
    name: ClassVar[str] = "lira"
    min_shadows: ClassVar[int] = 2  # sigma_out needs two shadows

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        targets = inputs.victim_targets.indices
        labels = inputs.labels[targets]
        victim_phi = scaled_confidence(inputs.victim_log_probs[targets], labels)
        shadow_phi = np.stack([scaled_confidence(lp[targets], labels) for lp in inputs.shadow_log_probs])
        # SPEC section 9: the shadows' own members lack OUT references, so the threshold is fixed, not fitted
        return lira_scores(victim_phi, shadow_phi), 0.5
