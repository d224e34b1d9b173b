"""Do changes to the neural attacks keep their numbers the same in distribution? Digits, 5 attack seeds.

Prunes the victim and shadows of one SWMR trial once, then runs the neural attacks with attack seeds 0..4 under
each variant and prints per-attack mean and standard deviation of balanced accuracy and AUC, and each variant's
seconds, as JSON. Variants (the first is always the code as it is):
    current         the attacks as they are
    caller_threads  the classifiers fit on the caller's threads instead of one (wemem.attacks.nn.one_thread)
    torch_encoder   SAMIA's encoder built from torch.nn.TransformerEncoderLayer (the implementation before
                    wemem.attacks.samia.EncoderLayer, which is the same layer with faster dropout masks)
    loss_patience2  every classifier stops on its held-out log-loss after 3 stale epochs (1e-4 nats bar): the
                    rule before fits stopped on the held-out AUC (see wemem.attacks.nn.FitConfig)
    patience5       as loss_patience2 but after 6 stale epochs (the rule before that)
    before          torch_encoder and patience5 together: the attacks as they were before issue 10's second pass
    samia_small     SAMIA with a 2-layer, 32-wide encoder: NOT the paper's attack; prices the cheaper SAMIA that
                    issue 10's "attack stage no longer than pruning" target would need
Examples:
    .venv/bin/python benchmarks/attack_seeds.py --variants torch_encoder --attacks samia
    .venv/bin/python benchmarks/attack_seeds.py --variants caller_threads --threads 2
    .venv/bin/python benchmarks/attack_seeds.py --dataset location   # a synthetic Location-sized set
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import patch

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import write_location_like

import wemem.attacks.nn as neural
from wemem.assets import prepare_assets
from wemem.attacks import AttackInputs, parse_attack_names, run_attacks
from wemem.attacks.samia import Samia, SamiaNetwork
from wemem.config import ExperimentConfig, PruningConfig
from wemem.defenses import Setting
from wemem.pipeline import PruningJob, attack_inputs, prune_job

NEURAL = ["nn", "top3_nn", "cl_nn", "samia"]
SETTING = (
    "swmr",
    {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1, "risky_fraction": 0.2},
)


class TorchEncoderSamia(nn.Module):
    """SAMIA's network as first written: torch's encoder layers (post-norm, ReLU, dropout 0.1), same widths."""

    def __init__(self, token_features: int = 3, d_model: int = 64, heads: int = 4, layers: int = 3):
        super().__init__()
        self.embed = nn.Linear(token_features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def torch_encoder() -> contextlib.AbstractContextManager:
    return patch.object(Samia, "build", lambda self, shape: TorchEncoderSamia(shape[-1]))


def samia_small() -> contextlib.AbstractContextManager:
    return patch.object(Samia, "build", lambda self, shape: SamiaNetwork(shape[-1], d_model=32, layers=2))


@contextlib.contextmanager
def fit_rule(**rule: object) -> Iterator[None]:
    """Every neural attack fits with ``rule`` (SAMIA has a FitConfig of its own)."""
    config = neural.FitConfig(**rule)
    with patch.object(neural.NeuralAttack, "fit_config", config), patch.object(Samia, "fit_config", config):
        yield


LOSS_PATIENCE2 = {"checks_per_epoch": 1, "patience": 2, "min_improvement": 1e-4, "criterion": "loss"}


def patience5() -> contextlib.AbstractContextManager:
    return fit_rule(**{**LOSS_PATIENCE2, "patience": 5})


@contextlib.contextmanager
def before() -> Iterator[None]:
    with torch_encoder(), patience5():
        yield


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "current": contextlib.nullcontext,
    "caller_threads": lambda: patch.object(neural, "one_thread", contextlib.nullcontext),
    "torch_encoder": torch_encoder,
    "loss_patience2": lambda: fit_rule(**LOSS_PATIENCE2),
    "patience5": patience5,
    "before": before,
    "samia_small": samia_small,
}


def pruned_trial_inputs(dataset: str, cache_dir: str) -> AttackInputs:
    """The attack inputs of one SWMR trial (victim and 5 shadows pruned once) on digits or a Location-sized set."""
    name = (
        "digits"
        if dataset == "digits"
        else "npz:" + str(write_location_like(Path(cache_dir) / "location_like.npz").resolve())
    )
    config = ExperimentConfig(dataset=name, shadows=5)
    assets = prepare_assets(config, cache_dir)
    models = [
        prune_job(assets, PruningJob(i, Setting(*SETTING), PruningConfig(), sensitivity=True))
        for i in range(config.shadows + 1)
    ]
    return attack_inputs(assets, models[0], models[1:])


def summary(runs: list[dict], attacks: list[str]) -> dict:
    out = {}
    for name in attacks:
        for metric in ("balanced_accuracy", "auc"):
            values = [run[name][metric] for run in runs]
            out[f"{name}.{metric}"] = {
                "mean": round(statistics.mean(values), 4),
                "sd": round(statistics.stdev(values), 4),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".wemem-bench-cache")
    parser.add_argument("--dataset", choices=["digits", "location"], default="digits")
    parser.add_argument("--variants", nargs="+", choices=sorted(set(VARIANTS) - {"current"}), default=["before"])
    parser.add_argument("--attacks", default=None, help=f"comma-separated or all (default {','.join(NEURAL)})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the caller")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    attacks = parse_attack_names(args.attacks, NEURAL)
    base = pruned_trial_inputs(args.dataset, args.cache_dir)
    torch.set_num_threads(args.threads)
    results, seconds = {}, {}
    for variant in ["current", *args.variants]:
        start = time.perf_counter()
        with VARIANTS[variant]():
            runs = [run_attacks(attacks, dataclasses.replace(base, seed=seed)) for seed in range(args.seeds)]
        seconds[variant] = round(time.perf_counter() - start, 1)
        results[variant] = summary(runs, attacks)
    print(
        json.dumps(
            {
                "benchmark": "attack_seeds",
                "dataset": args.dataset,
                "seeds": args.seeds,
                "threads": args.threads,
                "metrics": results,
                "seconds": seconds,
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
