"""The attack interface and registry (SPEC section 9).

Attacks are black-box and adaptive: they see the deployed models' output log-probabilities (after any defense
output transform) and the true labels, are fitted on the shadows' balanced member/non-member sets, and
score the victim's balanced set. Every attack returns scores on the victim's targets (higher = member) and the
decision threshold fitted on shadows, so metrics are computed identically for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..data import ModelSplit
from ..metrics import attack_metrics, roc_points
from ..registry import Registry


@dataclass(frozen=True)
class Targets:
    """A model's balanced member/non-member set: pool indices and membership."""

    indices: np.ndarray
    is_member: np.ndarray


def balanced_targets(split: ModelSplit, seed: int) -> Targets:
    """Members = the model's training set, non-members = its test set, the larger side subsampled.

    **Fix** (SPEC section 2): every attack is evaluated on a balanced set, so 50% is chance.
    """
    rng = np.random.default_rng(seed)
    members, non_members = split.train.numpy(), split.test.numpy()
    n = min(len(members), len(non_members))
    members = np.sort(rng.choice(members, n, replace=False))
    non_members = np.sort(rng.choice(non_members, n, replace=False))
    return Targets(np.concatenate([members, non_members]), np.r_[np.ones(n, bool), np.zeros(n, bool)])


@dataclass
class AttackInputs:
    """Everything an adaptive black-box attacker observes. Output arrays cover the whole pool [n_pool, C]."""

    labels: np.ndarray
    victim_log_probs: np.ndarray
    shadow_log_probs: list[np.ndarray]
    victim_targets: Targets
    shadow_targets: list[Targets]
    seed: int = 7
    extras: dict[str, object] = field(default_factory=dict)  # e.g. output sensitivities, population indices

    def shadow_observations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All shadows' balanced sets pooled: (log-probs, labels, is_member)."""
        log_probs = np.concatenate([lp[t.indices] for lp, t in zip(self.shadow_log_probs, self.shadow_targets)])
        labels = np.concatenate([self.labels[t.indices] for t in self.shadow_targets])
        members = np.concatenate([t.is_member for t in self.shadow_targets])
        return log_probs, labels, members

    def victim_observations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self.victim_targets
        return self.victim_log_probs[t.indices], self.labels[t.indices], t.is_member


class Attack:
    name: ClassVar[str]

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        """Scores of the victim's targets (higher = member) and the decision threshold fitted on shadows."""
        raise NotImplementedError


ATTACKS: Registry[type[Attack]] = Registry("attack")


def run_attack(name: str, inputs: AttackInputs) -> dict[str, object]:
    scores, threshold = ATTACKS.get(name)().decision_scores(inputs)
    is_member = inputs.victim_targets.is_member
    metrics: dict[str, object] = attack_metrics(scores, is_member, threshold)
    metrics["roc"] = roc_points(scores, is_member)
    return metrics


def run_attacks(names: list[str], inputs: AttackInputs) -> dict[str, dict[str, object]]:
    return {name: run_attack(name, inputs) for name in names}


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
