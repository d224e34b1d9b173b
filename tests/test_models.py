"""The architectures of SPEC section 3: parameter counts, prunable layers, initialization, input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wemem.errors import WememError
from wemem.models import build_model, prunable_parameters

CIFAR = (3, 32, 32)


@pytest.mark.parametrize(
    "name, input_shape, classes, parameters",
    [
        # torchvision's ImageNet resnet18 (11,689,512) with a 3x3 instead of 7x7 stem (-7,680) and a 10-way head
        ("resnet18", CIFAR, 10, 11_173_962),
        # conv biases + BN (14,723,136) and classifier 512-4096-4096-10 (18,923,530)
        ("vgg16bn", CIFAR, 10, 33_646_666),
        ("densenet121", CIFAR, 10, 6_956_426),
        # 446*256+256 + 256*128+128 + 128*30+30
        ("columnfc", (446,), 30, 151_198),
    ],
)
def test_parameter_counts(name: str, input_shape: tuple[int, ...], classes: int, parameters: int) -> None:
    model = build_model(name, input_shape, classes)
    assert sum(p.numel() for p in model.parameters()) == parameters


@pytest.mark.parametrize(
    "name, prunable",
    [
        ("resnet18", 1 + 16 + 3 + 1),  # stem, two convs per block, three downsampling shortcuts, fc
        ("vgg16bn", 13 + 3),
        ("densenet121", 1 + 2 * (6 + 12 + 24 + 16) + 3 + 1),  # stem, two convs per dense layer, transitions, fc
    ],
)
def test_every_conv_and_linear_weight_is_prunable_and_nothing_else(name: str, prunable: int) -> None:
    model = build_model(name, CIFAR, 10)
    params = prunable_parameters(model)
    assert len(params) == prunable
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(params) == weights


def test_columnfc_keeps_its_output_layer_dense() -> None:
    assert set(prunable_parameters(build_model("columnfc", (446,), 30))) == {"fc1.weight", "fc2.weight"}


@pytest.mark.parametrize("name", ["resnet18", "vgg16bn", "densenet121"])
def test_cnns_map_image_batches_to_class_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 32, 32), 7).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_initialization_zero_biases_unit_batch_norm() -> None:
    model = build_model("vgg16bn", CIFAR, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    assert all(torch.all(b.weight == 1) and torch.count_nonzero(b.bias) == 0 for b in norms)
    first = convs[0].weight  # Xavier-normal: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / (27 + 576))
    assert first.std().item() == pytest.approx((2 / (27 + 576)) ** 0.5, rel=0.15)


@pytest.mark.parametrize("name", ["resnet18", "vgg16bn", "densenet121"])
def test_cnns_refuse_tabular_inputs_with_a_hint(name: str) -> None:
    with pytest.raises(WememError, match="columnfc"):
        build_model(name, (446,), 30)
