"""The defense in a user's own training loop (wemem.loop): each component gives what the engine gives, and
examples/own_loop trains, prunes, ships and audits a model from an export."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wemem import loop
from wemem.config import ExperimentConfig, PruningConfig
from wemem.data import Pools
from wemem.defenses import Setting
from wemem.defenses.base import DefenseContext
from wemem.errors import WememError
from wemem.pruning import dense_masks, prune_to
from wemem.training import Step, TrainConfig, minibatches

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    unprunable = ("out",)

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU())
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


# ------------------------------------------------------------------------------------------------ pruning


def test_the_schedule_is_the_engines_hand_computed_for_075_in_3_steps():
    rounds = loop.pruning_schedule(PruningConfig(sparsity=0.75, steps=3))
    # s_r = 1 - (1 - 0.75)^(r/3): 0, 1 - 0.25^(1/3), 1 - 0.25^(2/3), 0.75
    assert rounds == pytest.approx([0.0, 0.370039475, 0.603149737, 0.75])
    assert loop.pruning_schedule(PruningConfig(sparsity=0.75, steps=3, one_shot=True)) == [0.75]


def test_prune_masks_are_the_engines_magnitude_masks_round_after_round_and_fold_to_exact_zeros():
    torch.manual_seed(0)
    ours = Net()
    engine = copy.deepcopy(ours)
    masks = dense_masks(engine)
    for sparsity in loop.pruning_schedule(PruningConfig(sparsity=0.75, steps=3)):
        applied = loop.prune_to_sparsity(ours, sparsity)
        masks = prune_to(engine, masks, sparsity)
        assert applied.keys() == masks.keys() == {"hidden.0.weight", "hidden.2.weight"}
        assert all(torch.equal(applied[name], masks[name]) for name in masks)
        for name in masks:  # torch.nn.utils.prune's form: weight_orig and weight_mask, the weight their product
            module = ours.get_submodule(name.rpartition(".")[0])
            assert torch.equal(module.weight_mask.bool(), masks[name])
            assert torch.equal(module.weight, engine.get_parameter(name))
        with torch.no_grad():  # "training" between rounds: the same change of the live weights in both
            for name in masks:
                step = torch.randn_like(masks[name], dtype=torch.float32) * 0.1
                ours.get_submodule(name.rpartition(".")[0]).weight_orig.add_(step)
                engine.get_parameter(name).add_(step).mul_(masks[name])
    assert (~masks["hidden.0.weight"]).sum() == 45  # floor(60 * 0.75)
    folded = loop.fold_pruning(ours)
    assert set(dict(ours.named_parameters())) == set(dict(engine.named_parameters()))  # plain weights again
    for name, mask in folded.items():  # the live weights as trained, the pruned ones exactly zero
        weight = ours.get_parameter(name)
        assert torch.all(weight[~mask] == 0) and torch.equal(weight, engine.get_parameter(name))


# -------------------------------------------------------------------------------------------------- RSW


def hand_made_context(scores: torch.Tensor, labels: torch.Tensor, batch_size: int = 2) -> DefenseContext:
    """A pool whose training list is every row, with these labels and mem-scores."""
    n = len(labels)
    pools = Pools("hand", torch.zeros(n + 2, 6), torch.cat([labels, torch.tensor([0, 1])]), n, 2)
    return DefenseContext(
        pools, torch.arange(n), torch.tensor([n, n + 1]), scores, TrainConfig(batch_size=batch_size), 0
    )


SCORES = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.05])
LABELS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])


def test_the_window_sampler_yields_the_engines_windows_epoch_by_epoch():
    settings = {"order": "h2l", "width": 2, "stride": 1}
    engine = Setting("rsw", settings).make()
    engine.bind(hand_made_context(SCORES, LABELS))
    sampler = loop.SlidingWindowSampler(LABELS, SCORES, engine.settings, torch.Generator().manual_seed(3))
    # by hand: class 0 ranked high to low is rows 0, 4, 2, 3, 1; class 1 is 6, 8, 7, 5, 9; W=2, D=1
    by_hand = [{0, 4, 6, 8}, {4, 2, 8, 7}, {2, 3, 7, 5}, {3, 1, 5, 9}, {1, 9}, set()]
    generator = torch.Generator().manual_seed(3)
    for epoch, expected in enumerate(by_hand):
        sampler.set_epoch(epoch)
        yielded = list(sampler)
        assert set(yielded) == set(engine.window(epoch).tolist()) == expected and len(sampler) == len(expected)
        engine_order = [i for step in engine.epoch_steps(epoch, generator) for i in step.indices.tolist()]
        assert yielded == engine_order  # the same shuffle as the engine's with the same generator


@pytest.mark.parametrize("defense", ["rmr", "swmr"])
def test_the_epoch_batches_are_the_engines_steps_risky_first(defense: str):
    settings = {"lambda_mem": 0.3, "risky_fraction": 0.3}
    if defense == "swmr":
        settings |= {"order": "l2h", "width": 3, "stride": 1}
    engine = Setting(defense, settings).make()
    engine.bind(hand_made_context(SCORES, LABELS))
    criterion = loop.RiskMemoryLoss(SCORES, engine.settings, weight_decay=5e-4)
    assert criterion.tau == engine.tau
    ours, theirs = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    window = loop.SlidingWindowSampler(LABELS, SCORES, engine.settings, ours) if defense == "swmr" else None
    rows = window if window is not None else torch.arange(len(LABELS))
    sampler = loop.EpochBatchSampler(rows, 2, ours, SCORES, criterion.tau)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        steps = engine.epoch_steps(epoch, theirs)
        batches = list(sampler)
        assert batches == [step.indices.tolist() for step in steps]
        risky = [bool(criterion.risky[batch].all()) for batch in batches]
        assert risky == [step.weight_decay is not None for step in steps]


def test_an_epoch_without_risky_rows_has_no_empty_batch():
    """No step on no rows (its Adam step would still apply the weight decay), in the engine and the sampler."""
    assert minibatches(torch.arange(0), 4, torch.Generator().manual_seed(0)) == []
    sampler = loop.EpochBatchSampler(torch.arange(10), 4, torch.Generator().manual_seed(0), SCORES, tau=2.0)
    batches = list(sampler)
    assert all(batches) and sorted(row for batch in batches for row in batch) == list(range(10))


# -------------------------------------------------------------------------------------------------- RMR


def test_the_rmr_loss_is_cross_entropy_plus_the_decay_difference_on_risky_rows():
    torch.manual_seed(1)
    model = Net().requires_grad_(False)  # values only
    criterion = loop.RiskMemoryLoss(SCORES, Setting("rmr", {"lambda_mem": 0.3, "tau": 0.5}).make().settings, 5e-4)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    logits = model(x)
    squares = sum(float((p**2).sum()) for p in model.parameters())
    cross_entropy = float(F.cross_entropy(logits, y))
    risky, general, mixed = torch.tensor([0, 4]), torch.tensor([1, 3]), torch.tensor([0, 1, 3, 5])
    assert float(criterion(logits, y, risky, model)) == pytest.approx(cross_entropy + (0.3 - 5e-4) / 2 * squares)
    assert float(criterion(logits, y, general, model)) == pytest.approx(cross_entropy)
    assert float(criterion(logits, y, mixed, model)) == pytest.approx(cross_entropy + (0.3 - 5e-4) / 8 * squares)
    plain = loop.RiskMemoryLoss(SCORES, None, 5e-4)
    assert plain.tau is None and float(plain(logits, y, risky, model)) == pytest.approx(cross_entropy)


def test_a_step_with_the_rmr_loss_equals_the_engines_risky_step():
    """The engine raises Adam's coupled L2 to lambda_mem on a risky step; the loss term does the same."""
    context = hand_made_context(SCORES, LABELS)
    torch.manual_seed(2)
    context.pools.x.normal_()
    context.pools.y[:] = torch.arange(len(context.pools.y)) % 3
    engine, ours = Net(), Net()
    ours.load_state_dict(engine.state_dict())
    defense = Setting("rmr", {"lambda_mem": 0.3, "tau": 0.5}).make()
    defense.bind(context)
    engine_adam = defense.make_optimizer(engine)
    our_adam = torch.optim.Adam(ours.parameters(), lr=context.config.lr, weight_decay=context.config.weight_decay)
    criterion = loop.RiskMemoryLoss(SCORES, defense.settings, context.config.weight_decay)
    for rows, decay in [(torch.tensor([0, 4, 6]), 0.3), (torch.tensor([1, 3]), None)]:
        defense.train_step(engine, engine_adam, context.pools, Step(rows, weight_decay=decay), None)
        our_adam.zero_grad()
        criterion(ours(context.pools.x[rows]), context.pools.y[rows], rows, ours).backward()
        our_adam.step()
        for (name, theirs), mine in zip(engine.named_parameters(), ours.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=name)


def test_settings_a_loop_cannot_reproduce_are_refused_by_name():
    with pytest.raises(WememError, match="two_adam"):
        loop.RiskMemoryLoss(SCORES, Setting("rmr", {"tau": 0.5, "optimizer": "two_adam"}).make().settings, 5e-4)
    with pytest.raises(WememError, match="wemem apply"):
        loop.loop_defense_settings(Setting("dpsgd", {}))


# ------------------------------------------------------------------------------------------- mem-scores


def test_memscores_of_a_model_factory_are_the_engines(tiny_config: ExperimentConfig):
    from wemem.memscore import compute_memscores

    pools = tiny_config.load_pools()
    train, test = pools.train_indices, pools.test_indices
    ours = loop.memscores(
        lambda: tiny_config.new_model(pools),
        pools.x[train],
        pools.y[train],
        pools.x[test],
        pools.y[test],
        tiny_config.train,
        tiny_config.memscore_models,
        tiny_config.seed,
    )
    torch.testing.assert_close(ours, compute_memscores(tiny_config, pools), rtol=0, atol=0)
    with pytest.raises(WememError, match="even number"):
        loop.memscores(Net, pools.x[train], pools.y[train], pools.x[test], pools.y[test], tiny_config.train, 3, 7)


# --------------------------------------------------------------------------------------------- the example


TINY_STUDY = {
    "study": {"name": "own_loop", "n_trials": 1, "seed": 7, "sampler": "random"},
    "data": {"dataset": "csv:table.csv", "label": "species", "member_column": "train", "shadows": 2},
    "model": {"name": "model:Net", "checkpoint": "victim.pt"},
    "training": {"batch_size": 64, "pretrain_epochs": 4, "finetune_epochs": 2, "patience": 1},
    "pruning": {"sparsity": 0.5, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["swmr"], "enqueue_reference": False},
    "attacks": {"names": ["conf", "entr"]},
}


def run_script(*arguments: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def exported(ray_session, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A study from a victim trained outside the tool (examples/own_model), exported: the example's input."""
    import tomli_w

    from search.cli import main

    folder = tmp_path_factory.mktemp("own_loop")
    outside = ROOT / "examples" / "own_model"
    table = str(outside / "penguins.csv")
    run_script(
        str(outside / "train_outside.py"),
        "--table",
        table,
        "--label",
        "species",
        "--out",
        ".",
        "--epochs",
        "5",
        cwd=folder,
    )
    (folder / "study.toml").write_text(tomli_w.dumps(TINY_STUDY))
    storage = f"sqlite:///{folder / 'study.db'}"
    places = ["--storage", storage, "--cache-dir", str(folder / "cache")]
    assert main(["launch", str(folder / "study.toml"), *places]) == 0
    assert main(["export", "own_loop", "--out", str(folder / "best.toml"), *places]) == 0
    return folder, storage


def test_load_setting_reads_the_export_into_the_studys_setting_pruning_and_training(exported: tuple[Path, str]):
    from search import load_setting

    folder, _ = exported
    run = load_setting(folder / "best.toml")
    document = json.loads(json.dumps(__import__("tomllib").loads((folder / "best.toml").read_text())))
    assert run.setting == Setting(document["best"]["defense"], document["best"]["settings"])
    assert (run.study, run.trial, run.model, run.dataset) == (
        "own_loop",
        document["best"]["trial_number"],
        "model:Net",
        "csv:table.csv",
    )
    assert run.pruning == PruningConfig(sparsity=0.5, steps=1) and run.rounds() == [0.0, 0.5]
    assert (run.training.batch_size, run.training.finetune_epochs, run.training.patience) == (64, 2, 1)
    assert (run.memscore_models, run.seed) == (2, 7)
    assert run.windows is not None and run.risk is not None  # swmr: both components


def test_load_setting_refuses_a_file_that_is_no_export(tmp_path: Path):
    from search import load_setting

    (tmp_path / "study.toml").write_text('[study]\nname = "x"\n')
    with pytest.raises(WememError, match="neither a best trial nor a Pareto set"):
        load_setting(tmp_path / "study.toml")


def test_the_example_trains_prunes_ships_and_audits_from_the_export(exported: tuple[Path, str]):
    """examples/own_loop/train.py as a user runs it, the `wemem` of this environment on the PATH."""
    from wemem.artifact import load_safetensors

    folder, storage = exported
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WEMEM_STORAGE": storage,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = run_script(str(ROOT / "examples" / "own_loop" / "train.py"), str(folder), cwd=folder, env=env)
    state, meta = load_safetensors(folder / "shipped" / "model.safetensors")
    run_setting = __import__("search").load_setting(folder / "best.toml")
    assert meta is not None and (meta.study, meta.trial, meta.setting) == (
        "own_loop",
        run_setting.trial,
        run_setting.setting,
    )
    assert meta.sparsity == pytest.approx(0.5, abs=0.01)  # the schedule's last round, over the prunable layers
    assert {"hidden.0.weight", "hidden.2.weight", "out.weight"} <= set(state) and not any("_orig" in k for k in state)
    assert (state["out.weight"] != 0).all()  # the unprunable output layer stays dense
    assert (folder / "shipped" / "model.onnx").is_file()
    assert "model.onnx" in done.stdout  # the audit names the file it audited
