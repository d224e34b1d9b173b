"""Pruning rules per model (SPEC section 5) and the sparsity of what prune_with_defense outputs."""

from __future__ import annotations

import math

import pytest
import torch

from wemem.config import PruningConfig
from wemem.defenses import make_defense
from wemem.models import build_model, prunable_parameters
from wemem.pipeline import prune_with_defense
from wemem.pruning import dense_masks, prune_to, sparsity_schedule
from wemem.training import accuracy


def test_round_sparsities_for_target_0_6_in_4_steps() -> None:
    # 1 - 0.4 ** (r / 4): 0.4 ** 0.25 = 0.79527, 0.4 ** 0.5 = 0.63246, 0.4 ** 0.75 = 0.50297
    assert sparsity_schedule(0.6, 4) == pytest.approx([0.0, 0.20473, 0.36754, 0.49703, 0.6], abs=1e-5)
    assert sparsity_schedule(0.6, 4, one_shot=True) == [0.6]


def expected_sparsity(numel: int, sparsity: float) -> float:
    return math.floor(numel * sparsity) / numel


@pytest.mark.parametrize("one_shot", [False, True], ids=["iterative", "one-shot"])
def test_output_is_the_last_rounds_best_checkpoint_at_target_sparsity(tiny_assets, one_shot: bool) -> None:
    pruning = PruningConfig(sparsity=0.6, steps=4, one_shot=one_shot)
    pruned = prune_with_defense(tiny_assets, 0, make_defense("none"), pruning, seed=3, keep_state=True)

    schedule = [0.6] if one_shot else sparsity_schedule(0.6, 4)
    assert [r["sparsity"] for r in pruned.rounds] == pytest.approx(schedule)
    # fc1: 64 x 256 inputs of digits, fc2: 256 x 128; fc3 (the output layer) stays dense
    assert pruned.layer_sparsity == {
        "fc1.weight": expected_sparsity(64 * 256, 0.6),
        "fc2.weight": expected_sparsity(256 * 128, 0.6),
    }
    assert {name: int((~mask).sum()) for name, mask in pruned.masks.items()} == {
        "fc1.weight": math.floor(64 * 256 * 0.6),
        "fc2.weight": math.floor(256 * 128 * 0.6),
    }
    assert torch.count_nonzero(pruned.state["fc3.weight"]) == pruned.state["fc3.weight"].numel()

    model = build_model("columnfc", tiny_assets.pools.input_shape, tiny_assets.pools.num_classes)
    model.load_state_dict(pruned.state)
    dev = tiny_assets.split.victim.dev
    assert accuracy(model, tiny_assets.pools, dev) == pruned.dev_accuracy == pruned.rounds[-1]["best_dev_accuracy"]


def test_without_pruning_the_dense_pretrained_model_is_observed(tiny_assets) -> None:
    original = prune_with_defense(tiny_assets, 1, make_defense("none"), None, seed=3, keep_state=True)

    assert original.rounds == [] and original.defense_seconds < 1.0
    assert set(original.layer_sparsity.values()) == {0.0}
    assert original.test_accuracy == tiny_assets.pretrained_accuracy["shadow0"]
    pretrained = tiny_assets.pretrained["shadow0"]
    assert all(torch.equal(original.state[name], pretrained[name]) for name in pretrained)


def test_iterative_pruning_of_a_cnn_grows_every_conv_and_linear_mask_on_the_full_tensor() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10)
    dense_before = {n: p.clone() for n, p in model.named_parameters() if n not in prunable_parameters(model)}
    masks = dense_masks(model)
    for sparsity in sparsity_schedule(0.6, 2)[1:]:  # 0.368, then 0.6
        previous = masks
        masks = prune_to(model, masks, sparsity)
        for name, weight in prunable_parameters(model).items():
            assert int((~masks[name]).sum()) == math.floor(weight.numel() * sparsity), name
            assert not torch.any(masks[name] & ~previous[name]), f"{name}: a pruned weight came back"
            assert torch.count_nonzero(weight[~masks[name]]) == 0
    assert len(dense_before) == 2 * 20 + 1  # weight and bias of 20 BNs (stem, 16 in blocks, 3 shortcuts), fc bias
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before) for n, before in dense_before.items())


def test_masked_steps_match_the_gradient_masking_step_on_every_live_weight() -> None:
    """The engine re-applies masks after the step but no longer masks gradients before it; Adam (with coupled
    weight decay) is elementwise, so every live weight must come out exactly as with gradient masking."""
    from wemem.data import Pools
    from wemem.defenses import Defense
    from wemem.defenses.base import DefenseContext
    from wemem.training import Step, TrainConfig, make_adam

    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    pools = Pools("toy", x, y, 64, 3)
    config = TrainConfig(weight_decay=1e-3)
    engine_model = build_model("columnfc", (8,), 3)
    reference_model = build_model("columnfc", (8,), 3)
    reference_model.load_state_dict(engine_model.state_dict())
    masks = prune_to(engine_model, dense_masks(engine_model), 0.5)
    prune_to(reference_model, dense_masks(reference_model), 0.5)
    defense = Defense()
    defense.bind(DefenseContext(pools, torch.arange(64), torch.arange(0), None, config, 0))
    engine_optimizer, reference_optimizer = make_adam(engine_model, config), make_adam(reference_model, config)
    params = prunable_parameters(reference_model)
    for step in range(5):
        batch = torch.arange(step * 12, step * 12 + 12)
        torch.manual_seed(step)  # the same dropout masks for both
        defense.train_step(engine_model, engine_optimizer, pools, Step(batch), masks)
        reference_optimizer.zero_grad()
        torch.manual_seed(step)
        torch.nn.functional.cross_entropy(reference_model(x[batch]), y[batch]).backward()
        for name, mask in masks.items():  # the reference step: gradients masked before, weights after
            params[name].grad.mul_(mask)
        reference_optimizer.step()
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
    for name, value in reference_model.state_dict().items():
        assert torch.equal(engine_model.state_dict()[name], value), name
    for name, mask in masks.items():
        assert not engine_model.state_dict()[name][~mask].any()
