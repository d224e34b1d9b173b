"""Do the neural attacks give the same numbers on one thread as on the caller's threads? Digits, 5 attack seeds.

The attack classifiers now fit on one thread (:func:`wemem.attacks.nn.one_thread`), which changes the order of
floating-point sums in their matrix products, so results are not bit-identical to a multi-threaded fit. This
prunes the victim and shadows of one SWMR trial once, then runs the neural attacks with attack seeds 0..4 both
ways and prints per-attack mean and standard deviation of balanced accuracy and AUC as JSON.
    .venv/bin/python benchmarks/attack_seeds.py [--cache-dir DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import time

import torch

import wemem.attacks.nn as neural
from wemem.assets import load_assets, prepare_assets
from wemem.attacks import run_attacks
from wemem.config import ExperimentConfig, PruningConfig
from wemem.pipeline import attack_inputs, prune_job

NEURAL = ["nn", "top3_nn", "cl_nn", "samia"]
SETTING = ("swmr", {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1,
                    "risky_fraction": 0.2})


def summary(runs: list[dict]) -> dict:
    out = {}
    for name in NEURAL:
        for metric in ("balanced_accuracy", "auc"):
            values = [run[name][metric] for run in runs]
            out[f"{name}.{metric}"] = {"mean": round(statistics.mean(values), 4),
                                       "sd": round(statistics.stdev(values), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".wemem-bench-cache")
    parser.add_argument("--threads", type=int, default=2, help="the caller's threads for the comparison")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    config = ExperimentConfig(dataset="digits", shadows=5)
    prepare_assets(config, args.cache_dir)
    assets = load_assets(config, args.cache_dir)
    models = [prune_job(config, args.cache_dir, i, *SETTING, PruningConfig(), False, True)
              for i in range(config.shadows + 1)]
    base = attack_inputs(assets, models[0], models[1:])
    torch.set_num_threads(args.threads)
    results, seconds = {}, {}
    for mode in ("one_thread", "caller_threads"):
        patch = contextlib.nullcontext if mode == "caller_threads" else neural.one_thread
        original, neural.one_thread = neural.one_thread, patch
        start = time.perf_counter()
        try:
            runs = [run_attacks(NEURAL, dataclasses.replace(base, seed=seed)) for seed in range(args.seeds)]
        finally:
            neural.one_thread = original
        seconds[mode] = time.perf_counter() - start
        results[mode] = summary(runs)
    print(json.dumps({"benchmark": "attack_seeds", "dataset": "digits", "seeds": args.seeds,
                      "caller_threads": args.threads, "metrics": results, "seconds": seconds,
                      "loadavg": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
