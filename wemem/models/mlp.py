"""The tabular model of SPEC section 3: columnfc, a three-layer perceptron."""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODELS


class ColumnFC(nn.Module):
    """Linear(d,256)-ReLU-Dropout(0.1)-Linear(256,128)-ReLU-Dropout(0.1)-Linear(128,C)."""

    unprunable = ("fc3",)

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, num_classes)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


@MODELS.register("columnfc")
def columnfc(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    in_features = 1
    for size in input_shape:
        in_features *= size
    return ColumnFC(in_features, num_classes)
