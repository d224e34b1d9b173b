"""SAMIA, the self-attention membership inference attack (SPEC section 9, 8).

Each class j of an output becomes a token (p_j, s_j, y_j): the probability, the output sensitivity and the
one-hot label. A small transformer encoder reads the tokens of one sample and an MLP head decides membership.
The sensitivity s_j = (1/m) sum_k |softmax_j(f(x + eps u_k)) - p_j| / eps, u_k ~ N(0, I), is a black-box
finite-difference probe of how flat the model is around x (training samples sit in flatter regions). The
pipeline computes it for every pool sample while the pruned model is at hand (:func:`output_sensitivity`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..defenses.base import Defense
from ..errors import require
from .base import ATTACKS, Observations
from .nn import NeuralAttack, log_odds

SENSITIVITY_QUERIES = 10  # m
SENSITIVITY_STEP = 1e-3  # eps


@torch.no_grad()
def output_sensitivity(model: nn.Module, defense: Defense, x: torch.Tensor, seed: int,
                       queries: int = SENSITIVITY_QUERIES, step: float = SENSITIVITY_STEP,
                       batch_size: int = 256) -> torch.Tensor:
    """Per-class sensitivity [n, C] of the deployed outputs (after the defense's output transform).

    Batched: each batch of b inputs becomes one forward pass of b * m perturbed copies. Computed in the model's
    own precision, as a black-box attacker querying the deployed model would observe it.
    """
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    deployed = lambda inputs: torch.exp(defense.output_log_probs(model, inputs, model(inputs)))  # noqa: E731
    sensitivities = []
    for batch in torch.split(x, batch_size):
        probs = deployed(batch)
        noise = torch.randn((len(batch) * queries, *batch.shape[1:]), generator=generator, dtype=batch.dtype,
                            device=batch.device)
        perturbed = deployed(batch.repeat_interleave(queries, dim=0) + step * noise)
        change = (perturbed.view(len(batch), queries, -1) - probs.unsqueeze(1)).abs()
        sensitivities.append(change.mean(dim=1) / step)
    return torch.cat(sensitivities)


def class_tokens(observed: Observations) -> np.ndarray:
    """[n, C, 3] tokens (log-odds of p_j, log(1 + s_j), y_j); log scales because both span orders of magnitude
    (see :mod:`.nn` on the log-odds)."""
    require(observed.sensitivity is not None,
            "samia needs output sensitivities; build the attack inputs with wemem.pipeline.run_experiment, which "
            "computes them when a requested attack declares needs_sensitivity")
    odds = log_odds(observed.log_probs)
    onehot = np.eye(odds.shape[1])[observed.labels]
    return np.stack([odds, np.log1p(observed.sensitivity), onehot], axis=-1)


class SamiaNetwork(nn.Module):
    """Token embedding -> transformer encoder (d_model 64, 4 heads, 3 layers) -> mean over tokens -> MLP."""

    def __init__(self, token_features: int = 3, d_model: int = 64, heads: int = 4, layers: int = 3):
        super().__init__()
        self.embed = nn.Linear(token_features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


@ATTACKS.register("samia")
class Samia(NeuralAttack):
    name: ClassVar[str] = "samia"
    needs_sensitivity: ClassVar[bool] = True
    features = staticmethod(class_tokens)

    def build(self, feature_shape: tuple[int, ...]) -> nn.Module:
        return SamiaNetwork(token_features=feature_shape[-1])
