"""Neural attacks (NN, Top3-NN, Cl-NN, SAMIA) on synthetic outputs, and SAMIA's output sensitivity on a tiny
linear model where it can be computed in closed form (SPEC section 9, 5-8)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from wemem.attacks import ATTACKS, AttackInputs, Targets, run_attack
from wemem.attacks.nn import FitConfig, HeldOutEarlyStopping
from wemem.attacks.samia import SENSITIVITY_QUERIES, output_sensitivity
from wemem.defenses import Defense

CLASSES, PER_MODEL = 10, 200


def separable_inputs(seed: int = 0) -> AttackInputs:
    """Two shadows and a victim, each attacked on its own block of the pool; members are confidently right
    (true-class logit 6 vs 1) and flat around x (sensitivity ~0.01 vs ~1)."""
    rng = np.random.default_rng(seed)
    n = 3 * PER_MODEL
    labels = rng.integers(0, CLASSES, n)
    is_member = np.tile(np.r_[np.ones(PER_MODEL // 2, bool), np.zeros(PER_MODEL // 2, bool)], 3)
    logits = rng.normal(size=(n, CLASSES))
    logits[np.arange(n), labels] += np.where(is_member, 6.0, 1.0)
    log_probs = torch.log_softmax(torch.as_tensor(logits), dim=1).numpy()
    sensitivity = np.where(is_member[:, None], 0.01, 1.0) * rng.random((n, CLASSES))
    blocks = [Targets(np.arange(k * PER_MODEL, (k + 1) * PER_MODEL), is_member[k * PER_MODEL:(k + 1) * PER_MODEL])
              for k in range(3)]
    return AttackInputs(labels=labels, victim_log_probs=log_probs, shadow_log_probs=[log_probs, log_probs],
                        victim_targets=blocks[2], shadow_targets=blocks[:2], seed=seed,
                        victim_sensitivity=sensitivity, shadow_sensitivity=[sensitivity, sensitivity])


@pytest.fixture(scope="module")
def inputs() -> AttackInputs:
    return separable_inputs()


@pytest.mark.parametrize("name", ["nn", "top3_nn", "cl_nn", "samia"])
def test_neural_attacks_separate_a_clearly_separable_case(inputs, name):
    metrics = run_attack(name, inputs)
    assert metrics["auc"] > 0.95
    assert metrics["balanced_accuracy"] > 0.85


@pytest.mark.parametrize("name", ["nn", "samia"])
def test_neural_attacks_are_deterministic_for_a_seed(inputs, name):
    attack = ATTACKS.get(name)()
    global_state = torch.random.get_rng_state()
    first, threshold = attack.decision_scores(inputs)
    second, _ = attack.decision_scores(inputs)
    np.testing.assert_array_equal(first, second)
    assert threshold == 0.0
    assert torch.equal(torch.random.get_rng_state(), global_state)  # the caller's random state is untouched


def test_the_seed_drives_the_neural_attack(inputs):
    attack = ATTACKS.get("nn")()
    first, _ = attack.decision_scores(inputs)
    other, _ = attack.decision_scores(dataclasses.replace(inputs, seed=inputs.seed + 1))
    assert not np.array_equal(first, other)


def test_early_stopping_counts_tiny_improvements_as_stale():
    stopper = HeldOutEarlyStopping(FitConfig(patience=2, min_improvement=1e-3))
    model = nn.Linear(1, 1)
    # 1.0 -> 0.5 is a real improvement; the three creeping steps after it are stale (but still kept as best)
    decisions = [stopper.update(loss, model) for loss in (1.0, 0.5, 0.4999, 0.4998, 0.4997)]
    assert decisions == [False, False, False, False, True]
    assert stopper.best_loss == 0.4997


# ------------------------------------------------------------------------------------ sensitivity


def two_class_linear_model(slope: float) -> nn.Module:
    """f(x) = (slope * x, 0) on a scalar x, so p_0 = sigmoid(slope * x)."""
    model = nn.Linear(1, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[slope], [0.0]]))
        model.bias.zero_()
    return model


def test_sensitivity_of_a_constant_model_is_zero():
    x = torch.randn(5, 1, dtype=torch.float64)
    sensitivity = output_sensitivity(two_class_linear_model(0.0), Defense(), x, seed=0)
    assert sensitivity.shape == (5, 2)
    assert torch.equal(sensitivity, torch.zeros(5, 2, dtype=torch.float64))


@pytest.mark.parametrize("x0", [0.0, 1.5])
def test_sensitivity_of_a_linear_model_matches_its_closed_form(x0):
    # To first order in eps, softmax_0(f(x + eps u)) - p_0 = p_0 (1 - p_0) * slope * eps * u, so
    # |change| / eps = p_0 (1 - p_0) |slope| |u| with E|u| = sqrt(2 / pi); class 1 changes by the opposite amount.
    # Averaged over 2000 copies of x (m = 10 draws each) the relative standard error of mean |u| is
    # sqrt(pi / 2 - 1) / sqrt(20000) = 0.53%, so 3% is a bound of over 5 sigma.
    slope, copies = 2.0, 2000
    p0 = 1.0 / (1.0 + math.exp(-slope * x0))
    x = torch.full((copies, 1), x0, dtype=torch.float64)
    sensitivity = output_sensitivity(two_class_linear_model(slope), Defense(), x, seed=0)
    assert SENSITIVITY_QUERIES * copies == 20000
    assert torch.allclose(sensitivity[:, 0], sensitivity[:, 1], rtol=1e-6)
    assert sensitivity.mean().item() == pytest.approx(p0 * (1 - p0) * slope * math.sqrt(2 / math.pi), rel=0.03)


def test_sensitivity_is_deterministic_for_a_seed():
    x, model = torch.randn(40, 1, dtype=torch.float64), two_class_linear_model(1.0)
    first = output_sensitivity(model, Defense(), x, seed=3)
    assert torch.equal(first, output_sensitivity(model, Defense(), x, seed=3))
    assert not torch.equal(first, output_sensitivity(model, Defense(), x, seed=4))
