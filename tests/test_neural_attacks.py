"""Neural attacks (NN, Top3-NN, Cl-NN, SAMIA) on synthetic outputs, and SAMIA's output sensitivity on a tiny
linear model where it can be computed in closed form (SPEC section 9, 5-8)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from wemem.attacks import ATTACKS, AttackInputs, Targets, output_sensitivity, run_attack
from wemem.attacks.nn import (
    FitConfig,
    HeldOutEarlyStopping,
    Standardize,
    check_runs,
    fit_membership_classifier,
    held_out_quality,
    log_odds,
    membership_log_odds,
    membership_mlp,
)
from wemem.attacks.samia import SENSITIVITY_QUERIES
from wemem.defenses import Defense
from wemem.errors import WememError

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
    blocks = [
        Targets(np.arange(k * PER_MODEL, (k + 1) * PER_MODEL), is_member[k * PER_MODEL : (k + 1) * PER_MODEL])
        for k in range(3)
    ]
    return AttackInputs(
        labels=labels,
        victim_log_probs=log_probs,
        shadow_log_probs=[log_probs, log_probs],
        victim_targets=blocks[2],
        shadow_targets=blocks[:2],
        seed=seed,
        victim_sensitivity=sensitivity,
        shadow_sensitivity=[sensitivity, sensitivity],
    )


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
    second, again = attack.decision_scores(inputs)
    np.testing.assert_array_equal(first, second)
    assert threshold == again and np.isfinite(threshold)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # the caller's random state is untouched


def test_fitting_runs_on_one_thread_and_restores_the_callers_setting(inputs):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, _ = ATTACKS.get("nn")().decision_scores(inputs)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        np.testing.assert_array_equal(first, ATTACKS.get("nn")().decision_scores(inputs)[0])
    finally:
        torch.set_num_threads(before)


def test_the_seed_drives_the_neural_attack(inputs):
    attack = ATTACKS.get("nn")()
    first, _ = attack.decision_scores(inputs)
    other, _ = attack.decision_scores(dataclasses.replace(inputs, seed=inputs.seed + 1))
    assert not np.array_equal(first, other)


def confidence_only_inputs(seed: int = 0, per_model: int = 600) -> AttackInputs:
    """Two shadows and a victim whose membership shows only in how close p_y is to 1: 1 - p_y is log-uniform
    in [1e-6, 1e-3] for members and in [1e-4, 1e-1] for non-members, the rest spread evenly over the other
    classes. Every probability is near 0 or 1, where raw posteriors hide the difference from an MLP."""
    rng = np.random.default_rng(seed)
    n = 3 * per_model
    labels = rng.integers(0, CLASSES, n)
    is_member = np.tile(np.r_[np.ones(per_model // 2, bool), np.zeros(per_model // 2, bool)], 3)
    log_rest = np.where(
        is_member, rng.uniform(np.log(1e-6), np.log(1e-3), n), rng.uniform(np.log(1e-4), np.log(1e-1), n)
    )
    log_probs = np.tile((log_rest - np.log(CLASSES - 1))[:, None], (1, CLASSES))
    log_probs[np.arange(n), labels] = np.log1p(-np.exp(log_rest))
    blocks = [
        Targets(np.arange(k * per_model, (k + 1) * per_model), is_member[k * per_model : (k + 1) * per_model])
        for k in range(3)
    ]
    return AttackInputs(
        labels=labels,
        victim_log_probs=log_probs,
        shadow_log_probs=[log_probs, log_probs],
        victim_targets=blocks[2],
        shadow_targets=blocks[:2],
        seed=seed,
    )


@pytest.mark.parametrize("name", ["nn", "top3_nn", "cl_nn"])
def test_neural_attacks_match_conf_when_the_signal_is_in_the_confidence_alone(name):
    # the overlap of the two ranges caps every attack near 0.83 balanced accuracy (1/3 of each side overlaps,
    # so the best cut errs on about half of that); a fixed 0.5 decision on raw probabilities scored 0.5 here
    inputs = confidence_only_inputs()
    conf, neural = run_attack("conf", inputs), run_attack(name, inputs)
    assert conf["balanced_accuracy"] > 0.75
    # within two standard errors of sampling noise on 600 targets (about 0.015 each)
    assert neural["balanced_accuracy"] >= conf["balanced_accuracy"] - 0.03
    assert neural["auc"] >= conf["auc"] - 0.02


def test_the_decision_threshold_is_fitted_on_held_out_shadow_scores():
    # a weak signal: the fitted threshold must give the held-out shadows better than chance, on both sides
    inputs = confidence_only_inputs(seed=1)
    scores, threshold = ATTACKS.get("nn")().decision_scores(inputs)
    predicted = scores >= threshold
    assert 0.2 < predicted.mean() < 0.8  # neither class swallows the other


def test_log_odds_by_hand_and_where_p_rounds_to_one():
    probs = np.array([[0.5, 0.25, 0.25], [0.8, 0.1, 0.1]])
    expected = np.log(probs / (1 - probs))
    np.testing.assert_allclose(log_odds(np.log(probs)), expected, rtol=1e-12)
    # p_0 = 1 - 2e-20 is 1.0 in floating point; its log-odds come from the other classes: log(1 / 2e-20)
    saturated = np.log(np.array([[1.0, 1e-20, 1e-20]]))
    np.testing.assert_allclose(log_odds(saturated)[0, 0], np.log(1 / 2e-20), rtol=1e-12)
    assert np.all(np.isfinite(log_odds(np.array([[0.0, -np.inf]]))))


def test_top3_features_are_the_largest_log_odds_of_the_whole_posterior():
    from wemem.attacks.base import Observations
    from wemem.attacks.nn import top3_posterior

    probs = np.array([[0.1, 0.6, 0.05, 0.2, 0.05]])
    observed = Observations(np.log(probs), np.array([0]), np.array([True]))
    top = np.array([0.6, 0.2, 0.1])
    np.testing.assert_allclose(top3_posterior(observed)[0], np.log(top / (1 - top)), rtol=1e-12)


def test_standardize_scales_each_feature_and_keeps_constant_ones():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    scaled = Standardize.fitted(x)(x)
    assert torch.allclose(scaled[:, 0], torch.tensor([-1.0, 1.0]) / np.sqrt(2.0))
    assert torch.equal(scaled[:, 1], torch.zeros(2))


def test_early_stopping_counts_tiny_improvements_as_stale():
    stopper = HeldOutEarlyStopping(FitConfig(patience=2, min_improvement=1e-3))
    model = nn.Linear(1, 1)
    # quality -1.0 -> -0.5 is a real improvement; the three creeping steps after it are stale (but still kept)
    decisions = [stopper.update(quality, model) for quality in (-1.0, -0.5, -0.4999, -0.4998, -0.4997)]
    assert decisions == [False, False, False, False, True]
    assert stopper.best == -0.4997


def test_held_out_quality_is_the_auc_or_the_negative_log_loss():
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0], [0.0, 0.5], [0.0, 1.0]])  # margins 2, -1, 0.5, 1
    targets = torch.tensor([1, 0, 0, 1])
    # members score 2 and 1, non-members -1 and 0.5: every member outranks every non-member
    assert held_out_quality("auc", logits, targets) == 1.0
    assert held_out_quality("auc", logits, torch.tensor([0, 1, 1, 0])) == 0.0
    expected = -torch.nn.functional.cross_entropy(logits, targets).item()
    assert held_out_quality("loss", logits, targets) == pytest.approx(expected)
    # one class only: no AUC, and no check ever beats the first
    assert held_out_quality("auc", logits, torch.ones(4, dtype=torch.long)) == -math.inf
    stopper = HeldOutEarlyStopping(FitConfig(patience=1))
    assert [stopper.update(-math.inf, nn.Linear(1, 1)) for _ in range(3)] == [False, True, True]
    assert stopper.best_state is not None
    with pytest.raises(WememError, match="criterion"):
        FitConfig(criterion="accuracy")


def test_an_epoch_is_cut_into_runs_of_whole_batches():
    # 10 samples in batches of 3 are 4 batches; 2 checks -> runs of 2 batches (6 samples) and the rest (4)
    runs = check_runs(torch.arange(10), batch_size=3, checks=2)
    assert [run.tolist() for run in runs] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]]
    # more checks than batches: one batch a run
    assert [len(run) for run in check_runs(torch.arange(5), batch_size=2, checks=7)] == [2, 2, 1]
    assert len(check_runs(torch.arange(12), batch_size=3, checks=4)) == 4


def test_the_held_out_loss_is_checked_checks_per_epoch_times_and_stops_mid_epoch(monkeypatch):
    inputs = confidence_only_inputs(seed=2)
    observed = inputs.shadow_observations()
    features = observed.log_probs
    seen: list[float] = []
    original = HeldOutEarlyStopping.update

    def recording(self, quality, model, scores=None):
        seen.append(quality)
        return original(self, quality, model, scores)

    monkeypatch.setattr(HeldOutEarlyStopping, "update", recording)
    build = lambda: membership_mlp(features.shape[1])  # noqa: E731
    fit_membership_classifier(
        build, features, observed.is_member, seed=0, config=FitConfig(max_epochs=2, checks_per_epoch=3, patience=100)
    )
    assert len(seen) == 6  # 3 checks in each of 2 epochs, never stopped
    seen.clear()
    # patience 0 with an unreachable bar: the first check sets the best, the second is stale and stops the fit
    fit_membership_classifier(
        build,
        features,
        observed.is_member,
        seed=0,
        config=FitConfig(max_epochs=5, checks_per_epoch=4, patience=0, min_improvement=1e9),
    )
    assert len(seen) == 2


def test_the_kept_held_out_scores_are_the_kept_models_scores():
    inputs = confidence_only_inputs(seed=3)
    observed = inputs.shadow_observations()
    features = observed.log_probs
    fitted = fit_membership_classifier(lambda: membership_mlp(features.shape[1]), features, observed.is_member, seed=0)
    np.testing.assert_array_equal(fitted.held_out_scores, membership_log_odds(fitted.model, features[fitted.held_out]))


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


def test_samia_encoder_layer_computes_torchs_post_norm_layer() -> None:
    """EncoderLayer is nn.TransformerEncoderLayer written out (faster on a CPU): same weights, same outputs."""
    from wemem.attacks.samia import DropoutStream, EncoderLayer

    torch.manual_seed(0)
    ours = EncoderLayer(16, 4, 32, 0.1, DropoutStream()).eval()
    theirs = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(theirs.self_attn.in_proj_weight)
        ours.qkv.bias.copy_(theirs.self_attn.in_proj_bias)
        for mine, torchs in [
            (ours.out, theirs.self_attn.out_proj),
            (ours.ff1, theirs.linear1),
            (ours.ff2, theirs.linear2),
            (ours.norm1, theirs.norm1),
            (ours.norm2, theirs.norm2),
        ]:
            mine.load_state_dict(torchs.state_dict())
    tokens = torch.randn(5, 7, 16)
    torch.testing.assert_close(ours(tokens), theirs(tokens), atol=1e-5, rtol=1e-5)


def test_dropout_stream_drops_a_fraction_p_and_keeps_the_mean() -> None:
    from wemem.attacks.samia import DropoutStream

    torch.manual_seed(3)
    first = DropoutStream()(torch.ones(200_000), 0.1)
    torch.manual_seed(3)
    again = DropoutStream()(torch.ones(200_000), 0.1)
    assert torch.equal(first, again)  # seeded from torch's generator
    assert abs(float((first == 0).float().mean()) - 0.1) < 0.003  # 4 standard errors
    assert abs(float(first.mean()) - 1.0) < 0.01
    assert first.unique().tolist() == pytest.approx([0.0, 65536 / (65536 - 6554)])  # exact inverse keep rate
