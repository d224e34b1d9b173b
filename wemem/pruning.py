"""Iterative L1 magnitude pruning with explicit masks (SPEC section 5).

Masks are plain boolean tensors keyed by parameter name, re-applied after every optimizer step, instead of
``torch.nn.utils.prune`` hooks: Opacus refuses hooked modules, a DP step would densify pruned weights, and
prune's ``amount`` is relative to the remaining weights while our schedule is defined on the full tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .models import prunable_parameters

Masks = dict[str, torch.Tensor]


def round_sparsity(target: float, steps: int, round_index: int) -> float:
    """Per-layer sparsity at the start of round r: s_r = 1 - (1 - s)^(r / P); round 0 is dense."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if steps < 1 or not 0 <= round_index <= steps:
        raise ValueError(f"need steps >= 1 and 0 <= round <= steps, got steps={steps}, round={round_index}")
    return 1.0 - (1.0 - target) ** (round_index / steps)


def sparsity_schedule(target: float, steps: int, one_shot: bool = False) -> list[float]:
    """Sparsity of each fine-tuning round: P+1 rounds for iterative pruning, a single round for one-shot."""
    if one_shot:
        return [target]
    return [round_sparsity(target, steps, r) for r in range(steps + 1)]


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable_parameters(model).items()}


def magnitude_mask(weight: torch.Tensor, current: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the floor(numel * sparsity) smallest-magnitude weights of the full tensor; masks only grow.

    Already-pruned weights rank below every live weight, so a growing target extends the old mask.
    """
    k = math.floor(weight.numel() * sparsity)
    if k <= 0:
        return current.clone()
    magnitude = torch.where(current, weight.detach().abs(), torch.full_like(weight, -1.0)).flatten()
    order = torch.sort(magnitude, stable=True).indices
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[order[:k]] = False
    return mask.view_as(weight) & current


def grown_masks(weights: dict[str, torch.Tensor], masks: Masks, sparsity: float) -> Masks:
    """Every layer's mask grown to ``sparsity`` by magnitude (:func:`magnitude_mask`), keyed like ``weights``."""
    return {name: magnitude_mask(weight, masks[name], sparsity) for name, weight in weights.items()}


def prune_to(model: nn.Module, masks: Masks, sparsity: float) -> Masks:
    """Grow every prunable layer's mask to ``sparsity`` and zero the pruned weights."""
    new_masks = grown_masks(prunable_parameters(model), masks, sparsity)
    MaskKeeper(model, new_masks).apply()
    return new_masks


class MaskKeeper:
    """Re-applies one model's masks after every optimizer step, with the lookups done once.

    The per-step path is one fused multiply over all masked weights (``torch._foreach_mul_``, the primitive
    PyTorch's own optimizers use) by masks pre-cast to the weights' dtype: rebuilding the parameter dict and
    multiplying by boolean masks layer by layer every step cost the engine about a tenth of a small model's step.

    Gradients are not masked before the step: Adam and SGD update element by element, so a pruned weight's
    gradient moves only that weight (zeroed again here) and its own moments, never a live weight. DP-SGD's
    clipping, which mixes elements, masks per-example gradients itself (``private_optimizer``).
    """

    def __init__(self, model: nn.Module, masks: Masks):
        params = prunable_parameters(model)
        self.model, self.masks = model, masks
        self.params = [params[name] for name in masks]
        self.factors = [masks[name].to(params[name].dtype) for name in masks]

    def serves(self, model: nn.Module, masks: Masks) -> bool:
        return self.model is model and self.masks is masks

    @torch.no_grad()
    def apply(self) -> None:
        torch._foreach_mul_(self.params, self.factors)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Measured fraction of exactly-zero weights per prunable layer."""
    return {name: float((p == 0).sum()) / p.numel() for name, p in prunable_parameters(model).items()}
