"""PPB, pair-based posterior balancing (Yuan & Zhang, USENIX Security 2022; SPEC section 8).

Membership leaks through how confident a model is, whatever the class. PPB pulls the *shapes* of the posteriors
of different samples together: each batch is split in halves, sample j of the first half is paired with sample j
of the second, and the KL divergence between their descending-sorted softmax outputs is added to the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..base import DEFENSES, Defense
from ..space import SpaceParam, model_defaults


def paired_sorted_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of KL(sorted p_j || sorted p_{j + n//2}), j < n//2; with n odd the last sample is unpaired."""
    half = len(logits) // 2
    if half == 0:
        return logits.new_zeros(())
    # log-softmax is monotone in the logits, so sorting it sorts the probabilities too
    sorted_log_probs = torch.log_softmax(logits, dim=1).sort(dim=1, descending=True).values
    first, second = sorted_log_probs[:half], sorted_log_probs[half : 2 * half]
    return F.kl_div(second, first, reduction="batchmean", log_target=True)


class PPBSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values
    lambda_kl: float = Field(4.0, gt=0, description="weight of the paired KL term (SPEC: 1..16)")


@DEFENSES.register("ppb")
class PPB(Defense[PPBSettings]):
    Settings = PPBSettings
    search_space = (SpaceParam("lambda_kl", 0.5, 16.0, log=True),)
    paper_defaults = model_defaults(PPBSettings, search_space)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y) + self.settings.lambda_kl * paired_sorted_kl(logits)
