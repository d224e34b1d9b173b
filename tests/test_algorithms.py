"""Hand-computed checks of the core algorithms: pruning schedule, masks, sliding windows, RMR split,
threshold fitting, balanced accuracy, splits and mem-score combination."""

from __future__ import annotations

import math
import platform

import numpy as np
import pytest
import torch
from torch import nn

from wemem.data import SPLIT_VERSION, Pools, StudySplit, load_dataset, make_study_split, population_size
from wemem.defenses.wemem import (
    epochs_per_sample,
    ranked_class_lists,
    risk_split,
    sliding_window,
    tau_from_risky_fraction,
    window_sizes,
)
from wemem.errors import WememError
from wemem.memscore import combine_memscores, pair_halves
from wemem.metrics import balanced_accuracy, best_threshold
from wemem.models import build_model, prunable_parameters
from wemem.pruning import dense_masks, layer_sparsity, magnitude_mask, prune_to, round_sparsity, sparsity_schedule
from wemem.training import EarlyStopping, bound_heap_growth, predict_log_probs

# ------------------------------------------------------------------------------------------- pruning


def test_round_sparsity_matches_spec_values():
    # SPEC 5: for s = 0.6, P = 4: 0, 0.205, 0.368, 0.497, 0.6 (1 - 0.4^(r/4))
    expected = [0.0, 1 - 0.4**0.25, 1 - 0.4**0.5, 1 - 0.4**0.75, 0.6]
    assert sparsity_schedule(0.6, 4) == pytest.approx(expected)
    assert [round(s, 3) for s in sparsity_schedule(0.6, 4)] == [0.0, 0.205, 0.368, 0.497, 0.6]
    assert sparsity_schedule(0.6, 4, one_shot=True) == [0.6]
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        round_sparsity(1.0, 4, 1)


def test_magnitude_mask_counts_on_full_tensor_and_grows():
    weight = torch.tensor([[0.5, -0.1, 0.3], [-0.9, 0.2, 0.05]])
    current = torch.ones_like(weight, dtype=torch.bool)
    first = magnitude_mask(weight, current, 0.34)  # floor(6 * 0.34) = 2 smallest: 0.05, -0.1
    assert first.tolist() == [[True, False, True], [True, True, False]]
    # next round: 4 of 6 on the full tensor (not 4 of the remaining); already pruned ones stay pruned
    shifted = weight.clone()
    shifted[0, 1] = 5.0  # a pruned weight that grew back in value must not be revived
    second = magnitude_mask(shifted, first, 0.67)
    assert second.tolist() == [[True, False, False], [True, False, False]]
    assert int((~second).sum()) == math.floor(6 * 0.67)


def test_prune_to_hits_layer_sparsity_and_keeps_output_layer_dense():
    torch.manual_seed(0)
    model = build_model("columnfc", (64,), 10)
    assert set(prunable_parameters(model)) == {"fc1.weight", "fc2.weight"}
    masks = dense_masks(model)
    for sparsity in sparsity_schedule(0.6, 4)[1:]:
        masks = prune_to(model, masks, sparsity)
        for name, value in layer_sparsity(model).items():
            numel = dict(model.named_parameters())[name].numel()
            assert value == pytest.approx(math.floor(numel * sparsity) / numel)
    assert float((model.fc3.weight == 0).float().mean()) == 0.0


# ------------------------------------------------------------------------------------- sliding windows

# Two classes: class 0 has 5 samples, class 1 has 3. Pool indices and mem-scores chosen by hand.
INDICES = torch.tensor([10, 11, 12, 13, 14, 20, 21, 22])
LABELS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
SCORES = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4])


def test_ranked_lists_both_orders():
    h2l = ranked_class_lists(INDICES, LABELS, SCORES, "h2l")
    assert [lst.tolist() for lst in h2l] == [[11, 13, 12, 14, 10], [21, 22, 20]]
    l2h = ranked_class_lists(INDICES, LABELS, SCORES, "l2h")
    assert [lst.tolist() for lst in l2h] == [[10, 14, 12, 13, 11], [20, 22, 21]]


def test_windows_per_class_and_epoch_with_per_class_clipping():
    lists = ranked_class_lists(INDICES, LABELS, SCORES, "h2l")
    sizes = [(2, 1), (2, 1)]  # W = 2, D = 1 samples per class
    windows = [sorted(sliding_window(lists, sizes, e).tolist()) for e in range(6)]
    assert windows[0] == sorted([11, 13, 21, 22])
    assert windows[1] == sorted([13, 12, 22, 20])
    # class 1's end is clipped to its own length (3): [20] only, while class 0 still has a full window
    assert windows[2] == sorted([12, 14, 20])
    assert windows[3] == sorted([14, 10])
    assert windows[4] == [10]
    assert windows[5] == []  # every class exhausted: the round ends


def test_windows_l2h_with_fractions():
    lists = ranked_class_lists(INDICES, LABELS, SCORES, "l2h")
    # width 0.4 of 5 -> 2, stride 0.2 of 5 -> 1; class 1: width round(1.2) = 1, stride max(1, round(0.6)) = 1
    sizes = [window_sizes(len(lst), None, None, 0.4, 0.2) for lst in lists]
    assert sizes == [(2, 1), (1, 1)]
    assert sorted(sliding_window(lists, sizes, 0).tolist()) == [10, 14, 20]
    assert sorted(sliding_window(lists, sizes, 3).tolist()) == [11, 13]
    assert epochs_per_sample(500, 50) == 10 and epochs_per_sample(15, 1) == 15 and epochs_per_sample(5, 2) == 3


def test_rmr_split_and_tau_quantile():
    risky, general = risk_split(INDICES, SCORES, 0.5)
    assert risky.tolist() == [11, 12, 13, 21]
    assert general.tolist() == [10, 14, 20, 22]
    scores = torch.linspace(0, 1, 101)
    assert tau_from_risky_fraction(scores, 0.2) == pytest.approx(0.8)
    risky, _ = risk_split(torch.arange(101), scores, tau_from_risky_fraction(scores, 0.2))
    assert len(risky) == 21  # 0.80, 0.81, ..., 1.00


# ---------------------------------------------------------------------------------- thresholds, metrics


def test_best_threshold_on_hand_made_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    members = np.array([1, 1, 0, 1, 0, 1, 0, 0], bool)
    # cut below 0.6 accepts 3 of 4 members and 1 of 4 non-members: (0.75 + 0.75) / 2 = 0.75
    # cut below 0.8 accepts 2 members, 0 non-members: (0.5 + 1) / 2 = 0.75 (ties: first, highest cut)
    threshold, balanced = best_threshold(scores, members)
    assert balanced == pytest.approx(0.75)
    assert threshold == pytest.approx(0.75)  # midpoint between 0.8 and 0.7
    assert balanced_accuracy(scores, members, threshold) == pytest.approx(0.75)
    assert balanced_accuracy(scores, members, 0.5) == pytest.approx(0.75)
    # >= 0.25 accepts all 4 members and 2 of 4 non-members (0.7, 0.4): (1 + 0.5) / 2
    assert balanced_accuracy(scores, members, 0.25) == pytest.approx(0.75)
    assert balanced_accuracy(scores, members, 0.95) == pytest.approx(0.5)


def test_best_threshold_ties_and_degenerate_cases():
    scores = np.array([1.0, 1.0, 0.0, 0.0])
    members = np.array([1, 0, 1, 0], bool)
    threshold, balanced = best_threshold(scores, members)  # equal scores cannot be split
    assert balanced == 0.5 and threshold == float("inf")
    threshold, balanced = best_threshold(np.array([2.0, 1.0]), np.array([True, False]))
    assert balanced == 1.0 and threshold == pytest.approx(1.5)


def test_early_stopping_stops_after_patience_plus_one_stale_epochs():
    stopper = EarlyStopping(patience=5)
    model = nn.Linear(1, 1)
    scores = [0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.6, 0.6]
    stops = [stopper.update(s, model, e) for e, s in enumerate(scores)]
    assert stops == [False, False, False, False, False, False, False, True]
    assert stopper.best_epoch == 1


# ----------------------------------------------------------------------------------- splits, mem-scores


def test_study_split_sizes_and_disjointness():
    pools = load_dataset("digits", seed=7)
    assert (pools.n_train, len(pools.y) - pools.n_train) == (1438, 359)
    split = make_study_split(pools, seed=7, shadows=3)
    # RMIA's population: 20% of E with a floor of 300, capped at half of E -> 179 of digits' 359
    assert len(split.population) == population_size(359) == 179
    assert (population_size(10_000), population_size(1_002)) == (2_000, 300)
    victim = split.victim
    assert len(victim.train) == round(719 * 0.9)
    evaluation = 719 - len(victim.train) + 359 - 179
    assert len(victim.dev) == round(evaluation * 0.34) and len(victim.test) == evaluation - len(victim.dev)
    assert not set(victim.train.tolist()) & set(victim.test.tolist())
    shadow_members = set().union(*(set(s.train.tolist()) for s in split.shadows))
    assert not shadow_members & set(victim.train.tolist())  # shadows never see victim members
    assert not shadow_members & set(victim.test.tolist())
    assert all(i < pools.n_train for i in shadow_members)
    used = set().union(*(set(t.tolist()) for _, m in split.models() for t in (m.train, m.dev, m.test)))
    assert all(i >= pools.n_train for i in split.population.tolist())  # held out of E
    assert not used & set(split.population.tolist())  # never trained, selected or attacked on
    again = make_study_split(pools, seed=7, shadows=3)  # seeded: identical
    assert all(
        torch.equal(a, b)
        for (_, x), (_, y) in zip(split.models(), again.models())
        for a, b in zip((x.train, x.dev, x.test), (y.train, y.dev, y.test))
    )
    assert torch.equal(split.population, again.population)


def test_split_version_enters_the_cache_key_and_stale_splits_are_refused(monkeypatch):
    from wemem import config as config_module
    from wemem.config import ExperimentConfig

    pools = load_dataset("digits", seed=7)
    state = make_study_split(pools, seed=7, shadows=1).to_state()
    assert torch.equal(StudySplit.from_state(state).population, torch.as_tensor(state["population"]))
    stale = {k: v for k, v in state.items() if k not in ("version", "population")}  # as cached before version 2
    with pytest.raises(WememError, match="version 1"):
        StudySplit.from_state(stale)
    key = ExperimentConfig().key()
    monkeypatch.setattr(config_module, "SPLIT_VERSION", SPLIT_VERSION + 1)
    assert ExperimentConfig().key() != key


def test_memscore_combination_by_hand():
    probabilities = np.array([[0.9, 0.2, 0.5], [0.1, 0.6, 0.5]])
    in_masks = np.array([[1, 0, 1], [0, 1, 0]], bool)
    # raw: s0 = 0.9 - 0.1 = 0.8; s1 = 0.6 - 0.2 = 0.4; s2 = 0.5 - 0.5 = 0 -> scaled 1, 0.5, 0
    assert combine_memscores(probabilities, in_masks) == pytest.approx([1.0, 0.5, 0.0])
    first, second = pair_halves(10, 7, 0)
    assert sorted(np.r_[first, second].tolist()) == list(range(10)) and len(first) == 5


def test_predict_log_probs_batches_in_index_order_with_the_defense_transform():
    torch.manual_seed(0)
    pools = Pools("t", torch.randn(10, 3), torch.zeros(10, dtype=torch.long), 8, 2)
    model = nn.Linear(3, 2)

    class Halved:  # an output transform that reads the rows it is given
        def output_log_probs(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(model(x) / 2, dim=1)

    indices = torch.tensor([9, 0, 4, 4, 7, 1, 2])
    expected = torch.log_softmax(model(pools.x[indices]) / 2, dim=1)
    assert torch.allclose(predict_log_probs(model, pools, indices, Halved(), batch_size=3), expected)
    assert predict_log_probs(model, pools, indices[:0]).shape == (0, 0)


def test_heap_growth_is_bounded_on_glibc_only():
    assert bound_heap_growth() is (platform.libc_ver()[0] == "glibc")
