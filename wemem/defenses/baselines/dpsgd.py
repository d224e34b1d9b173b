"""DP-SGD through Opacus (Abadi et al. 2016; SPEC section 8): per-example clipping and Gaussian noise.

Every step clips each example's gradient to norm ``clip`` (C) and adds N(0, (sigma * C)^2) noise to their sum
before the usual Adam step, so the fine-tuning is (epsilon, delta)-DP with delta = 1/N (N = size of the model's
training list); epsilon is computed by Opacus' RDP accountant from the steps actually taken, with sampling rate
batch / N. Two caveats the numbers carry: our batches are shuffled partitions, not Poisson samples (the customary
approximation, as Opacus makes without Poisson sampling), and the guarantee covers the fine-tuning only: the
pretrained dense model was trained without DP on the same members.

**Fix** (SPEC): the reference clipped per micro-batch; here Opacus computes true per-example gradients, and the
pruning masks are kept through every step (see :mod:`.private_optimizer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...data import Pools
from ...pruning import Masks
from ...training import Step, make_adam
from ..base import DEFENSES, Defense
from ..space import SpaceParam, model_defaults

if TYPE_CHECKING:  # the type only: Opacus is imported when a DP defense starts training (see private_optimizer)
    from .private_optimizer import MaskedDPOptimizer


class DPSGDSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    sigma: float = Field(1.0, gt=0, description="noise multiplier: noise std = sigma * clip")
    clip: float = Field(1.0, gt=0, description="per-example gradient norm bound C")


@DEFENSES.register("dpsgd")
class DPSGD(Defense[DPSGDSettings]):
    Settings = DPSGDSettings
    search_space = (SpaceParam("sigma", 0.1, 4.0, log=True), SpaceParam("clip", 0.5, 5.0, log=True))
    paper_defaults = model_defaults(DPSGDSettings, search_space)
    supports_autocast = False  # Opacus' per-example gradient hooks expect full-precision activations

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        from opacus.accountants import RDPAccountant

        from .private_optimizer import MaskedDPOptimizer, attach_per_sample_gradients

        context, settings = self.ctx, self.settings
        attach_per_sample_gradients(model)
        optimizer = MaskedDPOptimizer(
            make_adam(model, context.config),
            noise_multiplier=settings.sigma,
            max_grad_norm=settings.clip,
            expected_batch_size=context.config.batch_size,
            loss_reduction="mean",
            generator=torch.Generator(device=context.pools.x.device).manual_seed(context.seed),
        )
        self.accountant = RDPAccountant()
        sample_rate = min(1.0, context.config.batch_size / len(context.train))
        optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate))  # counts the noisy steps
        self.private_optimizer: MaskedDPOptimizer = optimizer  # the optimizer every train_step receives
        return optimizer

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, pools: Pools, step: Step, masks: Masks | None
    ) -> torch.Tensor:
        if masks is not None:
            self.private_optimizer.set_masks(model, masks)
        return super().train_step(model, optimizer, pools, step, masks)

    def report(self) -> dict[str, float]:
        delta = 1.0 / len(self.ctx.train)
        return {
            "epsilon": self.accountant.get_epsilon(delta),
            "delta": delta,
            "dp_steps": float(sum(steps for _, _, steps in self.accountant.history)),
        }
