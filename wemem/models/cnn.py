"""CIFAR-style convolutional networks of SPEC section 3: resnet18, vgg16bn, densenet121.

All three take [C, H, W] images (any C; 32x32 for CIFAR) and end in a global average pool, so the classifier
does not depend on the image size. Convolutions of ResNet and DenseNet carry no bias (a BN follows each);
VGG's convolutions keep theirs, as in the original configuration D with batch norm.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import require
from .registry import MODELS


def image_channels(model: str, input_shape: tuple[int, ...]) -> int:
    require(
        len(input_shape) == 3,
        f"model {model!r} needs image inputs of shape [channels, height, width], but the dataset gives "
        f"samples of shape {list(input_shape)}; use model 'columnfc' for tabular data",
    )
    return input_shape[0]


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


# ----------------------------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (a strided 1x1 conv-BN where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 3)
        reshapes = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride) if reshapes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """3x3 stem conv 64, BN, ReLU, 3x3/2 max-pool, stages [2, 2, 2, 2] of widths 64/128/256/512, pool, Linear."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, 64, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, channels = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(channels, width, stride), BasicBlock(width, width, 1)]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


@MODELS.register("resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ResNet18(image_channels("resnet18", input_shape), num_classes)


# -------------------------------------------------------------------------------------------------- VGG

VGG16_CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    """Configuration D with BN after every conv, global pool, classifier 512-4096-4096-C with dropout 0.5."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_CONFIG_D:
            if isinstance(item, str):  # "M"
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@MODELS.register("vgg16bn")
def vgg16bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return VGG16BN(image_channels("vgg16bn", input_shape), num_classes)


# --------------------------------------------------------------------------------------------- DenseNet


def bn_relu_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    """DenseNet's pre-activation order: BN, ReLU, then the convolution."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
    )


class DenseLayer(nn.Module):
    """Bottleneck 1x1 conv to 4 * growth channels, then a 3x3 conv adding ``growth`` new feature maps."""

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4):
        super().__init__()
        self.bottleneck = bn_relu_conv(in_channels, bottleneck * growth, 1)
        self.conv = bn_relu_conv(bottleneck * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bottleneck(x))], dim=1)


class DenseNet121(nn.Module):
    """Growth 32, dense blocks 6/12/24/16, 3x3 stem conv 64 with BN, ReLU and 3x3/2 max-pool, compression 0.5."""

    growth = 32
    block_sizes = (6, 12, 24, 16)

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        channels = 64
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
        for block, size in enumerate(self.block_sizes):
            for _ in range(size):
                layers.append(DenseLayer(channels, self.growth))
                channels += self.growth
            if block < len(self.block_sizes) - 1:  # transition: halve channels and resolution
                layers += [bn_relu_conv(channels, channels // 2, 1), nn.AvgPool2d(2)]
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@MODELS.register("densenet121")
def densenet121(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return DenseNet121(image_channels("densenet121", input_shape), num_classes)
