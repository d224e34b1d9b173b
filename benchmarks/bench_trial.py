"""Time per trial (victim + K shadows pruned and attacked) serially and on Ray with 1..N workers.

Prints numbers only. Example: .venv/bin/python benchmarks/bench_trial.py --shadows 5 --workers 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

from objectives import TrialSpec, evaluate_trial, reference
from search.runner import RayMap, init_ray
from wemem.assets import prepare_assets
from wemem.config import ExperimentConfig, PruningConfig
from wemem.parallel import serial_map
from wemem.training import TrainConfig

SETTING = ("swmr", {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1,
                    "risky_fraction": 0.2})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=21)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="wemem-bench-")
    config = ExperimentConfig(shadows=args.shadows, train=TrainConfig(finetune_epochs=args.finetune_epochs))
    spec = TrialSpec(config, PruningConfig(), ("conf", "entr", "mentr", "hconf"), cache_dir=cache)
    start = time.perf_counter()
    assets = prepare_assets(config, cache)
    print(f"setting-independent work (split, {args.shadows + 1} pretrained models, mem-scores): "
          f"{time.perf_counter() - start:.1f} s (once per study)")
    base = reference(spec, assets)

    def per_trial(map_fn) -> float:
        evaluate_trial(spec, *SETTING, base, assets, map_fn)  # warm-up: worker start, asset shipping
        start = time.perf_counter()
        for _ in range(args.repeats):
            evaluate_trial(spec, *SETTING, base, assets, map_fn)
        return (time.perf_counter() - start) / args.repeats

    print(f"serial, in-process      : {per_trial(serial_map):6.2f} s/trial")
    for workers in args.workers:
        init_ray(num_cpus=workers)
        share = RayMap(num_cpus=workers / (args.shadows + 1))
        print(f"Ray, {workers} CPU(s), {args.shadows + 1} tasks: {per_trial(share):6.2f} s/trial")
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
