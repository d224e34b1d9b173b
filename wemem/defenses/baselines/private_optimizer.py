"""The Opacus side of DP-SGD, imported only when a DP defense starts training: importing Opacus costs about two
seconds (it pulls in torch.distributed and scipy), which every worker would otherwise pay for every defense.

Pruning: per-example gradients of pruned weights are zeroed *before* clipping (the clipping budget goes to live
weights only) and the noise drawn for pruned weights is dropped (post-processing, so the guarantee is unchanged);
the engine then re-applies the masks after the step, as for every defense, so the sparsity stays exact.

Opacus attaches its per-sample-gradient hooks to the model in place (``GradSampleHooks``, no wrapper module), so
the engine keeps training, evaluating and checkpointing the plain model with its own state-dict keys.
"""

from __future__ import annotations

import warnings

import torch
from opacus.grad_sample import GradSampleHooks
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn

from ...errors import WememError
from ...models import prunable_parameters
from ...pruning import Masks

# Opacus' backward hooks need gradients with respect to layer outputs only; PyTorch warns (once per process) when
# the first layer's input does not require gradients, which is always the case for data.
warnings.filterwarnings(
    "ignore",
    message="Full backward hook is firing when gradients are computed with respect to module outputs",
    category=UserWarning,
)


class MaskedDPOptimizer(DPOptimizer):
    """Opacus' DP optimizer that keeps pruned weights out of the clipping and the noise."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        loss_reduction: str = "mean",
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction=loss_reduction,
            generator=generator,
        )
        self.param_masks: list[torch.Tensor | None] = [None] * len(self.params)

    def set_masks(self, model: nn.Module, masks: Masks) -> None:
        """Align the named masks with the optimizer's parameters (identity lookup)."""
        by_identity = {id(p): masks[name] for name, p in prunable_parameters(model).items() if name in masks}
        self.param_masks = [by_identity.get(id(p)) for p in self.params]

    def clip_and_accumulate(self) -> None:
        for p, mask in zip(self.params, self.param_masks):
            if mask is not None:
                p.grad_sample.mul_(mask)  # broadcasts over the leading batch dimension
        super().clip_and_accumulate()

    def add_noise(self) -> None:
        super().add_noise()
        for p, mask in zip(self.params, self.param_masks):
            if mask is not None:
                p.grad.mul_(mask)


def attach_per_sample_gradients(model: nn.Module) -> None:
    """Hook Opacus' per-example gradients onto the model, refusing layers it cannot handle (BatchNorm above all)."""
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        problems = "; ".join(str(e) for e in errors)
        raise WememError(
            f"dpsgd cannot train {type(model).__name__}: {problems}. DP-SGD needs per-example gradients and "
            "BatchNorm mixes the examples of a batch; use a BatchNorm-free model (e.g. columnfc), or register a "
            "variant with GroupNorm (what opacus.validators.ModuleValidator.fix substitutes) and pretrain it"
        )
    GradSampleHooks(model, batch_first=True, loss_reduction="mean")  # lives on in the hooks it registers
