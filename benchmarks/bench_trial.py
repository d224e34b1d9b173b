"""One full trial (victim + K shadows pruned with a defense, every attack), with the stage split its record
carries; optionally 1 vs 2 concurrent trials on Ray.

Prints one JSON object (never asserts). ``--dataset location`` is a synthetic Location-sized set
(:mod:`synthetic`, for timing only). Targets (issue 10): a Location-sized trial (K = 5, 5 rounds, ten attacks)
within 60 s on 2 cores, its attack stage no longer than its pruning stage. Examples:
    .venv/bin/python benchmarks/bench_trial.py --dataset digits
    .venv/bin/python benchmarks/bench_trial.py --dataset location
    .venv/bin/python benchmarks/bench_trial.py --dataset digits --concurrent 1 2   # trials/minute on Ray, 2 CPUs
The shared work (split, pretraining, mem-scores, reference) is cached in ``--cache-dir`` and reported as
recorded when it was computed; delete the folder to time it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import write_location_like

from objectives import TrialSpec, evaluate_trial, reference
from wemem.assets import prepare_assets
from wemem.attacks import parse_attack_names
from wemem.config import ExperimentConfig, PruningConfig
from wemem.defenses import Setting
from wemem.parallel import serial_map

SETTING = (
    "swmr",
    {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1, "risky_fraction": 0.2},
)


def rounded(value):
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def run_trials(spec: TrialSpec, base, assets, share, concurrency: int, trials: int) -> float:
    """Seconds for ``trials`` trials on ``share``, ``concurrency`` at a time."""
    queue = list(range(trials))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            evaluate_trial(spec, Setting(*SETTING), base, assets, share)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def concurrent_trials(spec: TrialSpec, base, assets, concurrency: int, trials: int, cpus: int) -> dict[str, float]:
    """``trials`` trials on a Ray of ``cpus`` CPUs, ``concurrency`` at a time, each with cpus / concurrency CPUs
    shared by its K+1 pruning tasks (as ``[resources] cpus_per_trial`` would).

    A warm-up round (``concurrency`` trials at once on the same share) first starts every worker process the
    measurement needs: a fresh worker spends seconds importing torch, which is not a trial's cost.
    """
    from search.execution._jobs import RayMap

    share = RayMap(num_cpus=cpus / concurrency / (spec.experiment.shadows + 1))
    run_trials(spec, base, assets, share, concurrency, concurrency)
    seconds = run_trials(spec, base, assets, share, concurrency, trials)
    return {"seconds": seconds, "trials_per_minute": 60 * trials / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "location"], default="digits")
    parser.add_argument("--shadows", type=int, default=5)
    parser.add_argument("--attacks", default="all", help="comma-separated or all (the default)")
    parser.add_argument("--cache-dir", default=".wemem-bench-cache")
    parser.add_argument(
        "--location-file",
        default=None,
        help="where the synthetic Location-sized set lives (default: in the cache folder)",
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        nargs="*",
        default=[],
        help="also time trials on Ray with these numbers of concurrent trials (e.g. 1 2)",
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4, help="trials per concurrency measurement")
    args = parser.parse_args()
    location_file = args.location_file or Path(args.cache_dir) / "location_like.npz"
    dataset = "digits" if args.dataset == "digits" else "npz:" + str(write_location_like(location_file).resolve())
    config = ExperimentConfig(dataset=dataset, shadows=args.shadows)
    spec = TrialSpec(config, PruningConfig(), tuple(parse_attack_names(args.attacks, [])), cache_dir=args.cache_dir)
    assets = prepare_assets(config, args.cache_dir)
    base = reference(spec, assets)
    load_before = os.getloadavg()
    outcome = evaluate_trial(spec, Setting(*SETTING), base, assets, serial_map)
    timings = outcome.user_attrs()["timings"]
    report = {
        "benchmark": "trial",
        "dataset": args.dataset,
        "shadows": args.shadows,
        "attacks": list(spec.attacks),
        "defense": SETTING[0],
        "serial_in_process": True,
        "trial_seconds": timings["total"],
        "pruning_stage": timings["pruning_stage"],
        "attack_stage": timings["attack_stage"],
        "timings": timings,
        "leakage": {name: m["balanced_accuracy"] for name, m in outcome.result.attacks.items()},
        "auc": {name: m["auc"] for name, m in outcome.result.attacks.items()},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    if args.concurrent:
        from search.execution._cluster import init_ray

        init_ray(num_cpus=args.cpus)
        report["concurrent"] = {
            str(n): concurrent_trials(spec, base, assets, n, args.trials, args.cpus) for n in args.concurrent
        }
        report["loadavg_after_concurrent"] = os.getloadavg()
    print(json.dumps(rounded(report), indent=2))


if __name__ == "__main__":
    main()
