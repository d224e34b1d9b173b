"""Soft-label pieces shared by RelaxLoss and HAMP: spread targets, soft cross-entropy, prediction entropy."""

from __future__ import annotations

import torch


def spread_targets(labels: torch.Tensor, true_probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft labels that put ``true_probability`` on the true class and spread the rest evenly over the others."""
    true_probability = true_probability.reshape(-1, 1)
    others = (1.0 - true_probability) / (num_classes - 1)
    targets = others.expand(len(labels), num_classes).clone()
    return targets.scatter_(1, labels.reshape(-1, 1), true_probability)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets: -sum_c t_c log p_c."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy (nats) of softmax(logits)."""
    log_probs = torch.log_softmax(logits, dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)
