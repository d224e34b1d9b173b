"""AdvReg, adversarial regularization (Nasr, Shokri & Houmansadr, CCS 2018; SPEC section 8).

A min-max game between the classifier f and an inference network h([softmax(f(x)), onehot(y)]) -> P(member).
For every batch, h first takes k steps (default 7, as in Nasr et al.'s reference; h has their attack model's
size, see :class:`InferenceNetwork`) to tell the batch (members) from as many dev samples (non-members,
the model's own reference set), then f takes one step on CE(f(x), y) - theta * BCE(h(f(x), y), member), i.e. f
minimizes its loss while maximizing h's loss on the members. **Fix** (SPEC): the reference implementation took
one classifier step per epoch; here every batch alternates.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...data import Pools
from ...errors import require
from ...pruning import Masks
from ...training import Step
from ..base import DEFENSES, Defense, DefenseContext
from ..space import SpaceParam, model_defaults


def relu_mlp(*widths: int) -> nn.Sequential:
    """Linear layers of the given widths, each followed by ReLU."""
    layers: list[nn.Module] = []
    for width_in, width_out in pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers)


class InferenceNetwork(nn.Module):
    """h of Nasr et al.: the posterior through 1024-512-64, the one-hot label through 512-64, their
    concatenation through 256-64-1 (a membership logit; the sigmoid is in the loss).

    Input: ``inference_features`` rows, [softmax output, one-hot label] (2C values).
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.posterior = relu_mlp(num_classes, 1024, 512, 64)
        self.label = relu_mlp(num_classes, 512, 64)
        self.combined = nn.Sequential(relu_mlp(128, 256, 64), nn.Linear(64, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        posterior, label = features.split(self.num_classes, dim=1)
        return self.combined(torch.cat([self.posterior(posterior), self.label(label)], dim=1))


def inference_features(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.softmax(logits, dim=1), F.one_hot(labels, logits.shape[1]).to(logits.dtype)], dim=1)


def membership_loss(membership_logits: torch.Tensor, is_member: bool) -> torch.Tensor:
    """h's log-loss on samples that all are (or all are not) members."""
    target = torch.full_like(membership_logits, float(is_member))
    return F.binary_cross_entropy_with_logits(membership_logits, target)


@torch.no_grad()
def deployed_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What an attacker would observe: the model's outputs in evaluation mode (no dropout)."""
    was_training = model.training
    model.eval()
    logits = model(x)
    model.train(was_training)
    return logits


class AdvRegSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    theta: float = Field(3.0, gt=0, description="weight of the inference network's loss in the classifier's step")
    k: int = Field(7, ge=1, description="inference-network steps per classifier step (Nasr et al.'s reference: 7)")


@DEFENSES.register("advreg")
class AdvReg(Defense[AdvRegSettings]):
    Settings = AdvRegSettings
    # k: inference steps per classifier step
    search_space = (SpaceParam("theta", 0.5, 8.0, log=True), SpaceParam("k", 1, 10, integer=True))
    paper_defaults = model_defaults(AdvRegSettings, search_space)

    def bind(self, context: DefenseContext) -> None:
        require(
            len(context.dev) > 0,
            "advreg needs the model's dev set as non-members, but it is empty; "
            "use a split with a non-empty dev fraction",
        )
        super().bind(context)
        device = context.pools.x.device
        self.inference = InferenceNetwork(context.pools.num_classes).to(device)
        self.inference_optimizer = torch.optim.Adam(self.inference.parameters(), lr=context.config.lr)
        self.generator = torch.Generator().manual_seed(context.seed)

    def observed_membership_loss(
        self, model: nn.Module, pools: Pools, indices: torch.Tensor, is_member: bool
    ) -> torch.Tensor:
        logits = deployed_logits(model, pools.x[indices])
        return membership_loss(self.inference(inference_features(logits, pools.y[indices])), is_member)

    def inference_step(self, model: nn.Module, pools: Pools, members: torch.Tensor) -> None:
        """One step of h on the batch (members) against as many dev samples drawn at random (non-members)."""
        draw = torch.randint(len(self.ctx.dev), (len(members),), generator=self.generator)
        non_members = self.ctx.dev[draw].to(pools.x.device)
        loss = self.observed_membership_loss(model, pools, members, is_member=True) + self.observed_membership_loss(
            model, pools, non_members, is_member=False
        )
        self.inference_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.inference_optimizer.step()

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, pools: Pools, step: Step, masks: Masks | None
    ) -> torch.Tensor:
        members = step.indices.to(pools.x.device)
        for _ in range(self.settings.k):
            self.inference_step(model, pools, members)
        return super().train_step(model, optimizer, pools, step, masks)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        members_loss = membership_loss(self.inference(inference_features(logits, y)), is_member=True)
        return F.cross_entropy(logits, y) - self.settings.theta * members_loss
