"""The experiment pipeline: pretrained models -> prune each with the defense -> attack adaptively.

One experiment = one defense setting applied to the victim and all K shadows (adaptive attacker), each pruned
by its own job so a caller can run them in parallel through a ``MapFn``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .assets import StudyAssets, load_assets
from .attacks import AttackInputs, balanced_targets, needs_sensitivity, population_indices, run_attacks
from .attacks.samia import output_sensitivity
from .config import ExperimentConfig, PruningConfig
from .defenses import Defense, DefenseContext, make_defense
from .models import build_model
from .parallel import MapFn, job_seed, serial_map
from .pruning import Masks, dense_masks, layer_sparsity, prune_to, sparsity_schedule
from .training import accuracy, predict_log_probs, train_round


@dataclass
class PrunedModel:
    name: str
    test_accuracy: float
    dev_accuracy: float
    defense_seconds: float
    rounds: list[dict[str, float]]
    layer_sparsity: dict[str, float]
    report: dict[str, float]
    log_probs: np.ndarray  # deployed outputs over the whole pool, for the attacks
    sensitivity: np.ndarray | None = None  # output sensitivities over the whole pool, when an attack needs them
    state: dict[str, torch.Tensor] | None = None
    masks: Masks | None = None


def fine_tuning_schedule(pruning: PruningConfig | None) -> list[float]:
    """Sparsity of each fine-tuning round; no round at all without pruning (the dense pretrained original)."""
    return [] if pruning is None else sparsity_schedule(pruning.sparsity, pruning.steps, pruning.one_shot)


def prune_with_defense(assets: StudyAssets, model_index: int, defense: Defense, pruning: PruningConfig | None,
                       seed: int, keep_state: bool = False, sensitivity: bool = False) -> PrunedModel:
    """Prune one pretrained model round by round, fine-tuning every round under the defense (SPEC 5, 7).

    Each round starts by growing the masks to the round's sparsity, continues from the previous round's
    last-epoch weights with the same optimizer state, and keeps its best-dev checkpoint; the output is the
    best-dev checkpoint of the last round. With ``pruning=None`` no round runs and the dense pretrained
    model is deployed as is, so the original is observed exactly like its pruned versions. With
    ``sensitivity`` the deployed model's output sensitivity (SAMIA) is measured on every pool sample.
    """
    name, split = assets.split.models()[model_index]
    pools, config = assets.pools, assets.config
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(config.model, pools.input_shape, pools.num_classes).to(pools.x.device)
    model.load_state_dict(assets.pretrained[name])
    defense.bind(DefenseContext(pools, split.train, split.dev, assets.memscores, config.train, seed))
    optimizer = defense.make_optimizer(model)
    masks = dense_masks(model)
    rounds, result = [], None
    start = time.perf_counter()
    for round_index, sparsity in enumerate(fine_tuning_schedule(pruning)):
        masks = prune_to(model, masks, sparsity)
        result = train_round(model, optimizer, pools, split.dev, defense, masks, config.train.finetune_epochs,
                             config.train.patience, generator)
        rounds.append({"round": round_index, "sparsity": sparsity, "epochs": result.epochs,
                       "best_epoch": result.best_epoch, "best_dev_accuracy": result.best_dev_accuracy})
    defense_seconds = time.perf_counter() - start
    if result is None:
        dev_accuracy = accuracy(model, pools, split.dev)
    else:
        model.load_state_dict(result.best_state)
        dev_accuracy = result.best_dev_accuracy
    return PrunedModel(
        name=name,
        test_accuracy=accuracy(model, pools, split.test),
        dev_accuracy=dev_accuracy,
        defense_seconds=defense_seconds,
        rounds=rounds,
        layer_sparsity=layer_sparsity(model),
        report=defense.report(),
        log_probs=predict_log_probs(model, pools, torch.arange(len(pools.y)), defense).cpu().numpy(),
        sensitivity=output_sensitivity(model, defense, pools.x, seed).cpu().numpy() if sensitivity else None,
        state={k: v.cpu() for k, v in model.state_dict().items()} if keep_state else None,
        masks={k: v.cpu() for k, v in masks.items()} if keep_state else None,
    )


def prune_job(config: ExperimentConfig, cache_dir: str, model_index: int, defense_name: str,
              settings: dict[str, Any], pruning: PruningConfig | None, keep_state: bool = False,
              sensitivity: bool = False) -> PrunedModel:
    """One model of one experiment; runs in a worker, loading the cached assets once per process."""
    assets = load_assets(config, cache_dir)
    return prune_with_defense(assets, model_index, make_defense(defense_name, settings), pruning,
                              job_seed(config.seed, "prune", model_index), keep_state, sensitivity)


@dataclass
class ExperimentResult:
    defense: str
    settings: dict[str, Any]
    utility: float  # pruned victim test accuracy
    pretrained_accuracy: float
    attacks: dict[str, dict[str, Any]]
    defense_seconds: float
    seconds: float
    victim_rounds: list[dict[str, float]]
    victim_layer_sparsity: dict[str, float]
    shadow_accuracy: list[float]
    defense_report: dict[str, float] = field(default_factory=dict)
    victim: PrunedModel | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("victim")
        return data


def attack_inputs(assets: StudyAssets, victim: PrunedModel, shadows: list[PrunedModel]) -> AttackInputs:
    seed = job_seed(assets.config.seed, "attack")
    models = assets.split.models()
    victim_targets = balanced_targets(models[0][1], seed)
    return AttackInputs(
        labels=assets.pools.y.cpu().numpy(),
        victim_log_probs=victim.log_probs,
        shadow_log_probs=[s.log_probs for s in shadows],
        victim_targets=victim_targets,
        shadow_targets=[balanced_targets(split, seed + k + 1) for k, (_, split) in enumerate(models[1:])],
        seed=seed,
        victim_sensitivity=victim.sensitivity,
        shadow_sensitivity=None if victim.sensitivity is None else [s.sensitivity for s in shadows],
        population=population_indices(assets.split, victim_targets, len(assets.pools.y)),
    )


def run_experiment(config: ExperimentConfig, cache_dir: str | Path, defense: str, settings: dict[str, Any],
                   pruning: PruningConfig | None, attacks: list[str], map_fn: MapFn = serial_map,
                   adaptive: bool = True, keep_victim_state: bool = False) -> ExperimentResult:
    """Prune the victim and the K shadows with one defense setting (in parallel through ``map_fn``), attack.

    Adaptive by default: the shadows are pruned with the very same defense and settings. With
    ``adaptive=False`` the shadows are pruned undefended (the non-adaptive attacker of the comparisons).
    ``pruning=None`` attacks the dense pretrained victim and shadows (the "original" of the paper's comparison).
    """
    start = time.perf_counter()
    make_defense(defense, settings)  # validate before fanning out
    sensitivity = needs_sensitivity(attacks)  # also validates the attack names
    assets = load_assets(config, cache_dir)
    jobs = [(config, str(cache_dir), 0, defense, settings, pruning, keep_victim_state, sensitivity)]
    for index in range(1, config.shadows + 1):
        jobs.append((config, str(cache_dir), index, defense if adaptive else "none",
                     settings if adaptive else {}, pruning, False, sensitivity))
    victim, *shadows = map_fn(prune_job, jobs)
    results = run_attacks(attacks, attack_inputs(assets, victim, shadows))
    return ExperimentResult(
        defense=defense,
        settings=dict(settings),
        utility=victim.test_accuracy,
        pretrained_accuracy=assets.pretrained_accuracy["victim"],
        attacks=results,
        defense_seconds=victim.defense_seconds,
        seconds=time.perf_counter() - start,
        victim_rounds=victim.rounds,
        victim_layer_sparsity=victim.layer_sparsity,
        shadow_accuracy=[s.test_accuracy for s in shadows],
        defense_report=victim.report,
        victim=victim if keep_victim_state else None,
    )
