"""smallcnn: a small convolutional network for 28x28 grey images (MNIST), light enough for a CPU study."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import require
from .cnn import image_channels
from .registry import MODELS

POOLINGS = 2  # two conv-ReLU-max-pool blocks, each halving the image side


class SmallCNN(nn.Module):
    """Conv(C,16,3)-ReLU-MaxPool(2)-Conv(16,32,3)-ReLU-MaxPool(2)-Linear(32*H/4*W/4,64)-ReLU-Linear(64,K).

    About 106,000 weights on 28x28 inputs (a ResNet-18 has 11 million), so a victim and its shadows train on
    two CPU cores in minutes. Every conv and linear weight is pruned but the output layer's, kept dense like
    columnfc's so that pruning cannot cut a class off."""

    unprunable = ("fc2",)

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(32 * (height >> POOLINGS) * (width >> POOLINGS), 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


@MODELS.register("smallcnn")
def smallcnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels = image_channels("smallcnn", input_shape)
    height, width = input_shape[1:]
    smallest = 1 << POOLINGS
    require(
        height >= smallest and width >= smallest,
        f"model 'smallcnn' pools each image side {POOLINGS} times by 2, so images must be at least "
        f"{smallest}x{smallest} pixels (found {height}x{width}); use columnfc for smaller inputs",
    )
    return SmallCNN(channels, height, width, num_classes)
