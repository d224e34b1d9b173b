"""The model registry of SPEC section 3: building a model by name, and which of its weights are prunable.

The architectures register themselves from their own modules (:mod:`wemem.models.mlp`, :mod:`wemem.models.cnn`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import WememError, require
from ..registry import Registry

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model = MODELS.get(name)(tuple(input_shape), num_classes)
    initialize(model)
    return model


def check_model_fits(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """One forward pass of 2 zero samples, so a model that cannot take the dataset's samples is refused before
    a study starts rather than failing inside every trial."""
    model = build_model(name, input_shape, num_classes).eval()  # eval: BatchNorm takes any batch, dropout is off
    advice = "choose a model for this input, e.g. columnfc for tabular data"
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape))
    except WememError:
        raise
    except Exception as error:  # shape mismatches surface as RuntimeError, ValueError, ... inside any (user) model
        raise WememError(f"model {name!r} does not fit dataset samples of shape {list(input_shape)} "
                         f"({type(error).__name__}: {error}); {advice}") from None
    shape = list(getattr(output, "shape", []))
    require(shape == [2, num_classes],
            f"model {name!r} gives outputs of shape {shape} for 2 samples of shape {list(input_shape)}, expected "
            f"[2, {num_classes}] (one score per class); {advice}")


def initialize(model: nn.Module) -> None:
    """Xavier-normal conv/linear weights, zero biases, BN weight 1 / bias 0 (SPEC section 3)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights pruned by magnitude: every conv and linear weight, except the models' declared exceptions.

    A model may define ``unprunable`` (names of modules kept dense), e.g. columnfc keeps its output layer.
    """
    keep_dense = set(getattr(model, "unprunable", ()))
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in keep_dense
    }
