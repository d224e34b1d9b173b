"""The baseline defenses of SPEC section 8: losses checked against hand computations on constructed batches,
AdvReg's alternation, HAMP's soft labels and output replacement, their search spaces, and every baseline end to
end through the experiment pipeline on tiny digits. DP-SGD's own checks live in test_dpsgd.py."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from search.studyfile import REFERENCE_SETTINGS, suggest_setting
from wemem.defenses import DEFENSES, DefenseContext, Setting, make_defense
from wemem.defenses.baselines.hamp import high_entropy_true_probability, rank_matched, spread_label_entropy
from wemem.defenses.baselines.ppb import paired_sorted_kl
from wemem.defenses.baselines.relaxloss import relaxloss_objective
from wemem.models import build_model
from wemem.pipeline import run_experiment

# Opacus hooks the first layer, whose input (data) needs no gradient; PyTorch warns about that, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

BASELINES = ["ppb", "advreg", "dpsgd", "relaxloss", "hamp"]
THRESHOLD_ATTACKS = ["conf", "entr", "mentr", "hconf"]


def logits_of(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly the given rows (each row sums to 1)."""
    return torch.tensor(probabilities, dtype=torch.float64).log()


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def bound_context(assets, model_index: int = 0) -> DefenseContext:
    _, split = assets.split.models()[model_index]
    return DefenseContext(assets.pools, split.train, split.dev, assets.memscores, assets.config.train, seed=3)


def pretrained_victim(assets) -> torch.nn.Module:
    model = build_model(assets.config.model, assets.pools.input_shape, assets.pools.num_classes)
    model.load_state_dict(assets.pretrained["victim"])
    return model


# ----------------------------------------------------------------------------------------------- PPB


def test_ppb_loss_on_a_hand_made_odd_batch():
    probabilities = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5], [0.3, 0.3, 0.4]]
    labels = torch.tensor([0, 1, 1, 2, 0])
    # pairs (0, 2) and (1, 3) of the sorted posteriors; sample 4 has no partner but counts in the CE
    expected_kl = (kl([0.7, 0.2, 0.1], [0.5, 0.3, 0.2]) + kl([0.6, 0.3, 0.1], [0.5, 0.25, 0.25])) / 2
    expected_ce = -(math.log(0.7) + math.log(0.6) + math.log(0.5) + math.log(0.5) + math.log(0.3)) / 5
    defense = make_defense("ppb", {"lambda_kl": 2.0})
    loss = defense.loss(None, None, labels, logits_of(probabilities))
    assert float(paired_sorted_kl(logits_of(probabilities))) == pytest.approx(expected_kl)
    assert float(loss) == pytest.approx(expected_ce + 2.0 * expected_kl)


def test_ppb_kl_vanishes_for_equal_sorted_shapes_and_single_samples():
    # the same sorted posterior in another class order: nothing to balance
    assert float(paired_sorted_kl(logits_of([[0.7, 0.2, 0.1], [0.2, 0.1, 0.7]]))) == pytest.approx(0.0)
    assert float(paired_sorted_kl(logits_of([[0.7, 0.2, 0.1]]))) == 0.0


# ----------------------------------------------------------------------------------------- RelaxLoss


def ce_gradient(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.clone().requires_grad_()
    F.cross_entropy(logits, labels).backward()
    return logits.grad


def objective_and_gradient(logits: torch.Tensor, labels: torch.Tensor, alpha: float, epoch: int):
    logits = logits.clone().requires_grad_()
    loss = relaxloss_objective(logits, labels, alpha, epoch)
    loss.backward()
    return loss.item(), logits.grad


CONFIDENT = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]]  # sample 0 correct, sample 1 (label 1) misclassified
CE_CONFIDENT = -(math.log(0.8) + math.log(0.3)) / 2  # 0.71


def test_relaxloss_even_epochs_descend_above_and_ascend_below_alpha():
    logits, labels = logits_of(CONFIDENT), torch.tensor([0, 1])
    gradient = ce_gradient(logits, labels)
    loss, grad = objective_and_gradient(logits, labels, alpha=0.5, epoch=0)
    assert loss == pytest.approx(CE_CONFIDENT - 0.5) and torch.allclose(grad, gradient)
    loss, grad = objective_and_gradient(logits, labels, alpha=1.0, epoch=2)
    assert loss == pytest.approx(1.0 - CE_CONFIDENT) and torch.allclose(grad, -gradient)


def test_relaxloss_odd_epochs_descend_above_alpha_and_flatten_below():
    logits, labels = logits_of(CONFIDENT), torch.tensor([0, 1])
    loss, grad = objective_and_gradient(logits, labels, alpha=0.5, epoch=1)
    assert loss == pytest.approx(CE_CONFIDENT) and torch.allclose(grad, ce_gradient(logits, labels))
    # below alpha: the correct sample ascends its CE; the misclassified one adds the CE against the soft label
    # t = (0.35, 0.3, 0.35) that keeps p_y = 0.3 and spreads the rest evenly
    soft_ce = -(0.35 * math.log(0.6) + 0.3 * math.log(0.3) + 0.35 * math.log(0.1))
    expected = (math.log(0.8) + (soft_ce + math.log(0.3))) / 2
    loss, _ = objective_and_gradient(logits, labels, alpha=1.0, epoch=3)
    assert loss == pytest.approx(expected)


def test_relaxloss_defense_follows_the_epoch_the_engine_announces(tiny_assets):
    defense = make_defense("relaxloss", {"alpha": 1.0})
    defense.bind(bound_context(tiny_assets))
    logits, labels = logits_of(CONFIDENT), torch.tensor([0, 1])
    for epoch in (0, 1):
        assert defense.epoch_steps(epoch, torch.Generator().manual_seed(0))
        assert float(defense.loss(None, None, labels, logits)) == pytest.approx(
            float(relaxloss_objective(logits, labels, 1.0, epoch))
        )


def test_relaxloss_flattening_gradient_flows_through_the_soft_target():
    # Two classes, one misclassified sample (y = 0, logits (0, 1)): the soft target t = (p_0, 1 - p_0) is p
    # itself, so the flattening term CE(f(x), t) is the entropy H(p). Not detaching p_y (as the authors' code),
    # the gradient of H(p) - CE(f(x), y) is dH/dz_i - (p - e_y)_i with dH/dz_i = -p_i (log p_i + H); detaching
    # it would leave only p - t = 0 from the first term.
    logits, labels = torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.tensor([0])
    p = torch.softmax(logits, 1)[0]
    entropy = -(p * p.log()).sum()
    expected = -p * (p.log() + entropy) - (p - torch.tensor([1.0, 0.0], dtype=torch.float64))
    loss, grad = objective_and_gradient(logits, labels, alpha=10.0, epoch=1)
    assert loss == pytest.approx(float(entropy - F.cross_entropy(logits, labels)))
    assert torch.allclose(grad[0], expected)
    # by hand: p = (0.268941, 0.731059), dH/dz = (p_0 p_1 (z_1 - z_0), -p_0 p_1 (z_1 - z_0)) = (0.196612, -0.196612)
    assert torch.allclose(-p * (p.log() + entropy), torch.tensor([0.196612, -0.196612], dtype=torch.float64), atol=1e-6)


# -------------------------------------------------------------------------------------------- AdvReg


def test_advreg_defaults_to_nasr_et_al_k_and_inference_network():
    from wemem.defenses.baselines.advreg import InferenceNetwork

    assert make_defense("advreg", {}).settings.k == 7
    network = InferenceNetwork(10)
    widths = lambda seq: [m.out_features for m in seq.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert (widths(network.posterior), widths(network.label), widths(network.combined)) == (
        [1024, 512, 64],
        [512, 64],
        [256, 64, 1],
    )
    # weights + biases: posterior 10*1024+1024 + 1024*512+512 + 512*64+64 = 568,896; label 10*512+512 + 512*64+64
    # = 38,464; combined 128*256+256 + 256*64+64 + 64+1 = 49,537
    assert sum(p.numel() for p in network.parameters()) == 568_896 + 38_464 + 49_537
    features = torch.cat([torch.full((3, 10), 0.1), torch.eye(10)[:3]], 1)
    assert network(features).shape == (3, 1)


def test_advreg_takes_k_inference_steps_per_classifier_step(tiny_assets):
    defense = make_defense("advreg", {"theta": 1.0, "k": 3})
    defense.bind(bound_context(tiny_assets))
    model = pretrained_victim(tiny_assets)
    optimizer = defense.make_optimizer(model)
    steps = defense.epoch_steps(0, torch.Generator().manual_seed(0))[:2]
    for step in steps:
        defense.train_step(model, optimizer, tiny_assets.pools, step, None)
    inference_state = defense.inference_optimizer.state[next(defense.inference.parameters())]
    assert float(inference_state["step"]) == 3 * 2
    assert float(optimizer.state[next(model.parameters())]["step"]) == 2


def test_advreg_k_is_searchable():
    assert [p.name for p in DEFENSES.get("advreg").space()] == ["theta", "k"]
    assert REFERENCE_SETTINGS["advreg"] == {"theta": 3.0, "k": 7}
    trial = optuna.create_study().ask()
    settings = suggest_setting(trial, ["advreg"]).settings
    assert isinstance(settings["k"], int) and 1 <= settings["k"] <= 10


def test_advreg_step_trains_the_inference_network_and_the_classifier(tiny_assets):
    defense = make_defense("advreg", {"theta": 2.0})
    context = bound_context(tiny_assets)
    defense.bind(context)
    model = pretrained_victim(tiny_assets)
    optimizer = defense.make_optimizer(model)
    before_model = [p.detach().clone() for p in model.parameters()]
    before_inference = [p.detach().clone() for p in defense.inference.parameters()]
    step = defense.epoch_steps(0, torch.Generator().manual_seed(0))[0]
    model.train()
    loss = defense.train_step(model, optimizer, tiny_assets.pools, step, None)
    assert math.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before_model, model.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_inference, defense.inference.parameters()))


def test_advreg_classifier_loss_subtracts_the_inference_log_loss_on_members(tiny_assets):
    defense = make_defense("advreg", {"theta": 2.0})
    defense.bind(bound_context(tiny_assets))
    logits, labels = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    features = torch.cat([torch.softmax(logits, 1), F.one_hot(labels, 10).float()], 1)
    member_log_loss = -F.logsigmoid(defense.inference(features)).mean()
    expected = F.cross_entropy(logits, labels) - 2.0 * member_log_loss
    assert defense.loss(None, None, labels, logits).item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------- HAMP


def test_hamp_true_probability_solves_the_entropy_equation():
    binary_entropy_of_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert high_entropy_true_probability(binary_entropy_of_09 / math.log(2), 2) == pytest.approx(0.9)
    for gamma in (0.3, 0.9, 0.99):
        p_star = high_entropy_true_probability(gamma, 10)
        assert 0.1 < p_star < 1.0
        assert spread_label_entropy(p_star, 10) == pytest.approx(gamma * math.log(10))
    with pytest.raises(ValueError, match="need 0 < gamma < 1"):
        high_entropy_true_probability(1.0, 10)


def test_rank_matched_moves_donor_values_to_the_reference_ranking():
    donor = torch.tensor([[0.5, 0.3, 0.2]]).log()
    out = rank_matched(donor, torch.tensor([[0.0, 5.0, 1.0]]))
    assert torch.allclose(out.exp(), torch.tensor([[0.2, 0.5, 0.3]]))


def test_hamp_outputs_keep_the_label_and_change_the_scores(tiny_assets):
    defense = make_defense("hamp", {})
    defense.bind(bound_context(tiny_assets))
    model = pretrained_victim(tiny_assets).eval()
    x = tiny_assets.pools.x[:200]
    with torch.no_grad():
        logits = model(x)
        outputs = defense.output_log_probs(model, x, logits)
    assert torch.equal(outputs.argmax(1), logits.argmax(1))
    assert torch.allclose(outputs.exp().sum(1), torch.ones(len(x)))
    real = torch.log_softmax(logits, 1)
    changed = ~torch.isclose(outputs, real).all(dim=1)
    assert changed.float().mean() > 0.9  # the confidences come from random inputs, not from x


def test_hamp_loss_is_soft_label_ce_minus_alpha_times_prediction_entropy(tiny_assets):
    defense = make_defense("hamp", {"gamma": 0.9, "alpha": 0.5})
    defense.bind(bound_context(tiny_assets))
    p_star = high_entropy_true_probability(0.9, 10)
    prediction = [0.55 if c == 3 else 0.05 for c in range(10)]  # label 3
    soft_ce = -(p_star * math.log(0.55) + (1 - p_star) * math.log(0.05))  # the 9 others share 1 - p* evenly
    entropy = -(0.55 * math.log(0.55) + 9 * 0.05 * math.log(0.05))
    loss = defense.loss(None, None, torch.tensor([3]), logits_of([prediction]))
    assert float(loss) == pytest.approx(soft_ce - 0.5 * entropy)


# --------------------------------------------------------------------------------- spaces, end to end


@pytest.mark.parametrize("name", BASELINES)
def test_search_space_samples_valid_settings(name):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    setting = suggest_setting(trial, [name])
    assert setting.defense == name and set(setting.settings) == {p.name for p in DEFENSES.get(name).space()}
    make_defense(name, setting.settings)
    make_defense(name, REFERENCE_SETTINGS[name])


# AdvReg's default (k = 7 steps of Nasr et al.'s 0.66M-parameter inference network per batch) costs minutes of
# CPU end to end; the defaults are checked by the unit tests above, the pipeline with one inference step.
END_TO_END_SETTINGS = {"advreg": {"k": 1}}


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_runs_end_to_end(name, tiny_config, tiny_pruning, cache_dir, tiny_assets):
    result = run_experiment(
        tiny_assets, Setting(name, END_TO_END_SETTINGS.get(name, {})), tiny_pruning, THRESHOLD_ATTACKS
    )
    assert result.utility > 0.5
    assert set(result.attacks) == set(THRESHOLD_ATTACKS)
    assert result.defense_seconds > 0
    for layer, numel in (("fc1.weight", 256 * 64), ("fc2.weight", 128 * 256)):
        assert result.victim_layer_sparsity[layer] == math.floor(numel * 0.6) / numel
    assert ("epsilon" in result.defense_report) == (name == "dpsgd")
