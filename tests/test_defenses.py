"""RMR's two optimizers (SPEC 7): the reference's two Adam optimizers with separate moments, and the single
optimizer with a per-step weight-decay override, checked on Adam's first step computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wemem.data import Pools
from wemem.defenses import DefenseContext, make_defense
from wemem.training import TrainConfig

LR = 0.01


def tiny_setting(optimizer: str) -> tuple[nn.Module, object, Pools]:
    """Four samples, two features, two classes; samples 0 and 1 risky (scores 0.9), 2 and 3 general."""
    torch.manual_seed(0)
    pools = Pools(
        "tiny",
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]]),
        torch.tensor([0, 1, 1, 0]),
        n_train=4,
        num_classes=2,
    )
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(2, 2))
    defense = make_defense("rmr", {"lambda_mem": 0.1, "tau": 0.5, "optimizer": optimizer})
    defense.bind(
        DefenseContext(
            pools,
            torch.arange(4),
            torch.arange(4),
            torch.tensor([0.9, 0.9, 0.1, 0.1]),
            TrainConfig(lr=LR, weight_decay=5e-4, batch_size=2),
            seed=0,
        )
    )
    return model, defense, pools


def run_steps(optimizer: str) -> list[torch.Tensor]:
    """The parameter changes of one risky step followed by one general step."""
    model, defense, pools = tiny_setting(optimizer)
    general = defense.make_optimizer(model)
    steps = defense.epoch_steps(0, torch.Generator().manual_seed(0))
    assert [s.weight_decay for s in steps] == [0.1, None]  # risky batch first, with lambda_mem
    changes = []
    for step in steps:
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        defense.train_step(model, general, pools, step, None)
        changes.append(torch.cat([p.detach().flatten() for p in model.parameters()]) - before)
    return changes


def test_two_adam_gives_the_general_steps_their_own_fresh_moments():
    # Adam's first step moves every parameter by lr * g / (|g| + eps) = lr in magnitude. With two optimizers the
    # general step is the general optimizer's *first* step, so it too moves every parameter by exactly lr.
    risky_change, general_change = run_steps("two_adam")
    assert risky_change.abs() == pytest.approx(torch.full_like(risky_change, LR), rel=1e-4)
    assert general_change.abs() == pytest.approx(torch.full_like(general_change, LR), rel=1e-4)


def test_single_optimizer_shares_moments_between_risky_and_general_steps():
    # One Adam: the general step is its second step, normalized by moments that include the risky gradient,
    # so its magnitudes differ from lr (m2 / sqrt(v2) with bias corrections is not +-1 unless g1 = g2).
    risky_change, general_change = run_steps("single")
    assert risky_change.abs() == pytest.approx(torch.full_like(risky_change, LR), rel=1e-4)
    assert not torch.allclose(general_change.abs(), torch.full_like(general_change, LR), rtol=1e-2)


def test_two_adam_risky_optimizer_has_lambda_mem_and_keeps_masks():
    model, defense, pools = tiny_setting("two_adam")
    general = defense.make_optimizer(model)
    assert [g["weight_decay"] for g in general.param_groups] == [5e-4]
    assert [g["weight_decay"] for g in defense.risky_optimizer.param_groups] == [0.1]
    masks = {"fc1.weight": torch.tensor([[True, False], [True, True]])}
    with torch.no_grad():
        model.fc1.weight[0, 1] = 0.0
    for step in defense.epoch_steps(0, torch.Generator().manual_seed(0)) * 3:
        defense.train_step(model, general, pools, step, masks)
    assert model.fc1.weight[0, 1].item() == 0.0  # pruned weight stays pruned under both optimizers
    assert len(defense.risky_optimizer.state) == len(general.state) == 2  # each optimizer stepped every parameter
    risky_steps = defense.risky_optimizer.state[model.fc1.weight]["step"]
    assert float(risky_steps) == 3.0 and float(general.state[model.fc1.weight]["step"]) == 3.0


def test_single_optimizer_restores_the_usual_weight_decay_after_risky_steps():
    model, defense, pools = tiny_setting("single")
    optimizer = defense.make_optimizer(model)
    assert defense.risky_optimizer is None
    for step in defense.epoch_steps(0, torch.Generator().manual_seed(0)):
        defense.train_step(model, optimizer, pools, step, None)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4]
    assert float(optimizer.state[model.fc1.weight]["step"]) == 2.0


def test_rmr_optimizer_is_fixed_in_the_search_space_unless_a_study_searches_it():
    import optuna

    from search.studyfile import space_for, suggest_setting
    from wemem.defenses.wemem import RiskSettings

    trial = optuna.create_study().ask()
    settings = suggest_setting(trial, ["rmr"]).settings
    assert (
        settings["optimizer"] == RiskSettings.model_fields["optimizer"].default and "rmr.optimizer" not in trial.params
    )
    searched = {p.name: p for p in space_for("swmr", {"swmr": {"optimizer": ["two_adam", "single"]}})}["optimizer"]
    assert searched.fixed is None and searched.choices == ("two_adam", "single")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    settings = suggest_setting(trial, ["swmr"], {"swmr": {"optimizer": ["two_adam", "single"]}}).settings
    assert trial.params["swmr.optimizer"] == settings["optimizer"]
    fixed = {p.name: p for p in space_for("rmr", {"rmr": {"optimizer": "single"}})}["optimizer"]
    assert fixed.fixed == "single"


BUILT_IN = ("rsw", "rmr", "swmr", "ppb", "advreg", "dpsgd", "relaxloss", "hamp")


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_built_in_defense_declares_a_space_and_paper_defaults_it_accepts(name):
    from wemem.defenses import DEFENSES, Setting

    cls = DEFENSES.get(name)
    assert cls.space() and cls.paper_defaults
    Setting(name, cls.paper_defaults)  # validated by the defense's own settings model
    assert set(cls.paper_defaults) <= {p.name for p in cls.space()}


def test_a_space_declared_as_a_table_reads_as_space_params():
    """The declaration docs/own_model.md shows for an installed defense: (low, high), choices, or a table."""
    from wemem.defenses import Defense
    from wemem.defenses.space import SpaceParam

    class Declared(Defense):
        # an installed package's table form, as docs/own_model.md documents it
        search_space = {"alpha": (0.1, 3), "mode": ["a", "b"], "beta": {"low": 1e-3, "high": 1.0, "log": True}}  # noqa: RUF012

    Declared.name = "declared"
    assert Declared.space() == (
        SpaceParam("alpha", 0.1, 3.0),
        SpaceParam("mode", choices=("a", "b")),
        SpaceParam("beta", 1e-3, 1.0, log=True),
    )
    Declared.search_space = {"alpha": "wide"}
    with pytest.raises(ValueError, match=r"search_space\['alpha'\] = 'wide'"):
        Declared.space()
    assert Defense.space() == ()  # plain fine-tuning: nothing to search


def test_the_window_rule_is_strict_for_a_setting_and_keeps_a_gap_in_a_space():
    from wemem.defenses.wemem import MIN_GAP, stride_below_width

    assert stride_below_width(0.02, 0.22) and not stride_below_width(0.22, 0.22)
    assert stride_below_width(0.045, 0.05, MIN_GAP) and not stride_below_width(0.046, 0.05, MIN_GAP)
