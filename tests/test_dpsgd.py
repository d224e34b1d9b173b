"""DP-SGD through Opacus: masked per-example clipping by hand, exact sparsity through iterative pruning,
epsilon accounting, loadable checkpoints, and a clear refusal of BatchNorm models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wemem.config import PruningConfig
from wemem.defenses import DefenseContext, make_defense
from wemem.defenses.baselines.private_optimizer import MaskedDPOptimizer, attach_per_sample_gradients
from wemem.errors import WememError
from wemem.models import build_model
from wemem.pipeline import prune_with_defense

# Opacus hooks the first layer, whose input (data) needs no gradient; PyTorch warns about that, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def test_pruned_weights_take_no_part_in_clipping_or_noise():
    model = nn.Sequential(nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
    attach_per_sample_gradients(model)
    optimizer = MaskedDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=2
    )
    optimizer.set_masks(model, {"0.weight": torch.tensor([[True, True, False]])})
    x = torch.tensor([[3.0, 4.0, 12.0], [0.3, 0.4, 100.0]])
    model(x).mean().backward()  # per-example gradients are the inputs
    optimizer.pre_step()
    # live parts (3, 4) and (0.3, 0.4) have norms 5 and 0.5: clipped to norm 1 -> (0.6, 0.8) and unchanged;
    # counting the pruned coordinate the norms would be 13 and about 100
    expected = torch.tensor([[(0.6 + 0.3) / 2, (0.8 + 0.4) / 2, 0.0]])
    assert torch.allclose(model[0].weight.grad, expected, atol=1e-5)


def test_noise_on_pruned_weights_is_dropped():
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    attach_per_sample_gradients(model)
    optimizer = MaskedDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=5.0, max_grad_norm=1.0, expected_batch_size=3
    )
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    optimizer.set_masks(model, {"0.weight": mask})
    model(torch.randn(3, 4)).sum().backward()
    optimizer.pre_step()
    grad = model[0].weight.grad
    assert torch.all(grad[~mask] == 0) and torch.all(grad[mask] != 0)


def run_dp(assets, sigma: float):
    return prune_with_defense(
        assets,
        0,
        make_defense("dpsgd", {"sigma": sigma, "clip": 1.0}),
        PruningConfig(sparsity=0.6, steps=2),
        seed=11,
        keep_state=True,
    )


def test_dpsgd_keeps_exact_sparsity_reports_falling_epsilon_and_plain_checkpoints(tiny_assets):
    low_noise, high_noise = run_dp(tiny_assets, 0.5), run_dp(tiny_assets, 2.0)
    plain_keys = set(build_model("columnfc", tiny_assets.pools.input_shape, tiny_assets.pools.num_classes).state_dict())
    for result in (low_noise, high_noise):
        for name, mask in result.masks.items():
            numel = mask.numel()
            assert result.layer_sparsity[name] == math.floor(numel * 0.6) / numel
            assert torch.all(result.state[name][~mask] == 0)
        assert set(result.state) == plain_keys
        assert math.isfinite(result.report["epsilon"]) and result.report["epsilon"] > 0
        assert result.report["delta"] == 1.0 / len(tiny_assets.split.victim.train)
        assert result.report["dp_steps"] == sum(r["epochs"] for r in result.rounds) * math.ceil(
            len(tiny_assets.split.victim.train) / tiny_assets.config.train.batch_size
        )
    assert high_noise.report["epsilon"] < low_noise.report["epsilon"]


def test_dpsgd_refuses_batchnorm_models_with_a_fix(tiny_assets):
    _, split = tiny_assets.split.models()[0]
    defense = make_defense("dpsgd", {})
    defense.bind(DefenseContext(tiny_assets.pools, split.train, split.dev, None, tiny_assets.config.train, 0))
    with pytest.raises(WememError, match="BatchNorm-free model"):
        defense.make_optimizer(nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)))
