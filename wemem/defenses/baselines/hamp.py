"""HAMP (Chen & Pattabiraman, NDSS 2024, "Overconfidence is a dangerous thing"; SPEC section 8).

Members leak through over-confident predictions. HAMP (1) trains on high-entropy soft labels: the true class
keeps p* and the rest is spread evenly, p* chosen so that the label's entropy is gamma times the maximal entropy
log C; (2) adds alpha times the negative entropy of the prediction, penalizing confident outputs on members;
(3) at inference answers, for every query, the model's output on a uniformly random input, re-ordered so that its
ranking of the classes is the ranking of the real output: the predicted label is unchanged while the
confidence values come from an input nobody trained on.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..base import DEFENSES, Defense, DefenseContext
from ..space import SpaceParam, model_defaults
from .soft_labels import prediction_entropy, soft_cross_entropy, spread_targets


def spread_label_entropy(true_probability: float, num_classes: int) -> float:
    """Entropy (nats) of the label with p on the true class and (1 - p) / (C - 1) on each other class."""
    rest = 1.0 - true_probability
    entropy = -true_probability * math.log(true_probability) if true_probability > 0 else 0.0
    if rest > 0:
        entropy -= rest * math.log(rest / (num_classes - 1))
    return entropy


def high_entropy_true_probability(gamma: float, num_classes: int, tolerance: float = 1e-12) -> float:
    """p* in [1/C, 1] whose spread label has entropy gamma * log C, by bisection.

    On [1/C, 1] the entropy falls monotonically from log C (uniform) to 0 (one-hot), so the root is unique.
    """
    if not 0.0 < gamma < 1.0 or num_classes < 2:
        raise ValueError(f"need 0 < gamma < 1 and at least 2 classes, got gamma={gamma}, classes={num_classes}")
    target = gamma * math.log(num_classes)
    low, high = 1.0 / num_classes, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        if spread_label_entropy(middle, num_classes) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def rank_matched(donor_log_probs: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Each row of the donor's values, re-assigned to classes so that they rank as the reference row ranks them.

    The stable sort puts the reference's argmax first, so the predicted label is the reference's.
    """
    ranking = reference_logits.argsort(dim=1, descending=True, stable=True)
    values = donor_log_probs.sort(dim=1, descending=True).values
    return torch.empty_like(values).scatter_(1, ranking, values)


class HAMPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    gamma: float = Field(0.9, gt=0, lt=1, description="soft-label entropy as a fraction of the maximal entropy log C")
    alpha: float = Field(0.01, ge=0, description="weight of the prediction-entropy regularizer")


@DEFENSES.register("hamp")
class HAMP(Defense[HAMPSettings]):
    Settings = HAMPSettings
    search_space = (SpaceParam("gamma", 0.3, 0.99), SpaceParam("alpha", 1e-3, 1.0, log=True))
    paper_defaults = model_defaults(HAMPSettings, search_space)

    def bind(self, context: DefenseContext) -> None:
        super().bind(context)
        self.true_probability = high_entropy_true_probability(self.settings.gamma, context.pools.num_classes)
        # Random queries are drawn uniformly within each input feature's range over the model's own data.
        own_inputs = context.pools.x[context.train.to(context.pools.x.device)]
        self.input_low, self.input_high = own_inputs.amin(dim=0), own_inputs.amax(dim=0)
        self.generator = torch.Generator(device=context.pools.x.device).manual_seed(context.seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        true_probability = torch.full((len(y),), self.true_probability, dtype=logits.dtype, device=logits.device)
        targets = spread_targets(y, true_probability, logits.shape[1])
        return (soft_cross_entropy(logits, targets) - self.settings.alpha * prediction_entropy(logits)).mean()

    def random_inputs(self, count: int) -> torch.Tensor:
        shape = (count, *self.input_low.shape)
        uniform = torch.rand(shape, generator=self.generator, device=self.input_low.device, dtype=self.input_low.dtype)
        return self.input_low + uniform * (self.input_high - self.input_low)

    def output_log_probs(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        donor_log_probs = torch.log_softmax(model(self.random_inputs(len(x))), dim=1)
        return rank_matched(donor_log_probs, logits)
