"""RelaxLoss (Chen, Yu & Fritz, ICLR 2022; SPEC section 8): train towards a target loss alpha, not towards zero.

Members are told apart from non-members by their smaller loss, so RelaxLoss keeps the members' mean loss near a
target alpha (about a normally trained model's test loss), alternating two kinds of epochs (numbered from 0 in
every pruning round):

- even epochs minimize |CE - alpha|: gradient descent above the target, gradient ascent below it;
- odd epochs take a normal descent step while the batch CE is at or above alpha; below it they flatten the
  posteriors: gradient ascent on the CE of every sample, and for misclassified samples descent towards the soft
  target that keeps p_y on the true class and spreads 1 - p_y evenly over the others. This is the authors'
  published per-sample objective ``(1 - correct) * CE(f(x), t) - CE(f(x), y)``, i.e. correctly classified
  samples are pushed to a larger loss while misclassified ones are pulled towards a flat non-true posterior.
  As in the authors' code, t is built from the model's live probabilities (p_y is not detached), so the
  gradient also flows through the soft target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...training import Step
from ..base import DEFENSES, Defense
from ..space import SpaceParam, model_defaults
from .soft_labels import soft_cross_entropy, spread_targets


def posterior_flattening_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of (1 - correct_i) * CE(f(x_i), t_i) - CE(f(x_i), y_i), t_i = spread of p_y (not detached)."""
    cross_entropy = F.cross_entropy(logits, labels, reduction="none")
    probabilities = torch.softmax(logits, dim=1)
    targets = spread_targets(labels, probabilities.gather(1, labels[:, None]), logits.shape[1])
    misclassified = (logits.detach().argmax(dim=1) != labels).to(logits.dtype)
    return (misclassified * soft_cross_entropy(logits, targets) - cross_entropy).mean()


def relaxloss_objective(logits: torch.Tensor, labels: torch.Tensor, alpha: float, epoch: int) -> torch.Tensor:
    """The loss RelaxLoss minimizes on one batch in the given epoch of a round."""
    cross_entropy = F.cross_entropy(logits, labels)
    if epoch % 2 == 0:
        return (cross_entropy - alpha).abs()
    if cross_entropy >= alpha:
        return cross_entropy
    return posterior_flattening_loss(logits, labels)


class RelaxLossSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    alpha: float = Field(1.0, gt=0, description="target mean cross-entropy of the members")


@DEFENSES.register("relaxloss")
class RelaxLoss(Defense[RelaxLossSettings]):
    Settings = RelaxLossSettings
    search_space = (SpaceParam("alpha", 0.1, 3.0, log=True),)
    paper_defaults = model_defaults(RelaxLossSettings, search_space)

    epoch: int = 0  # the epoch of the round being trained, recorded by epoch_steps

    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]:
        self.epoch = epoch  # the engine asks for an epoch's steps right before running them
        return super().epoch_steps(epoch, generator)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return relaxloss_objective(logits, y, self.settings.alpha, self.epoch)
