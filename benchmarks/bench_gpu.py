"""GPU benchmark: a ResNet-18 epoch (engine vs a bare loop) and one full CIFAR-shaped trial on Ray, as JSON.

1. One fine-tuning epoch of ResNet-18 on 22,500 random CIFAR-shaped samples (the size of a CIFAR-10 victim's
   training list), through wemem's engine (Defense.train_step with pruning masks) and through a bare loop (the
   same data resident on the device, the same bf16/channels_last settings, no masks, no hooks).
2. One full trial on random CIFAR-shaped data read as ``npz:`` (60,000 samples, 10 classes): the shared work
   (split, victim + 5 shadows pretrained, mem-scores), then the victim and 5 shadows pruned in 5 rounds with
   SWMR, then the ten attacks -- everything as Ray jobs on the shares a study would use (one GPU split over the
   K + 1 model jobs). Times are split into pretrain, mem-scores, pruning and attacks.

Random labels make early stopping end every round after patience + 1 epochs, so the amount of work is fixed.
Prints JSON only. GPU time is scarce (a lent machine, minutes per session): with ``--out FILE`` the report is
rewritten after each part, so a run cut off by its time limit still returns the parts it finished, and
``--parts`` runs one part per call. Examples:
    .venv/bin/python benchmarks/bench_gpu.py --out $OUT/gpu.json     # a GPU machine (under 8 minutes on one H200)
    .venv/bin/python benchmarks/bench_gpu.py --parts trial            # the trial alone
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --no-ray --out $OUT/gpu.json   # a lent GPU machine without Ray
    .venv/bin/python benchmarks/bench_gpu.py --small    # the same pipeline shrunk to run on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wemem.data import Pools
from wemem.defenses.base import Defense, DefenseContext
from wemem.models import build_model
from wemem.pruning import dense_masks, prune_to
from wemem.training import TrainConfig, default_device, make_adam, place_model, training_autocast

ALL_ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "cl_nn", "samia", "lira", "rmia"]
SWMR = {"order": "h2l", "width_fraction": 0.1, "stride_fraction": 0.02, "lambda_mem": 0.1, "risky_fraction": 0.2}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], None]) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# -------------------------------------------------------------------------------------------- epoch


def epoch_benchmark(samples: int, epochs: int, config: TrainConfig) -> dict[str, Any]:
    device = default_device()
    torch.manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (samples,), device=device)
    pools = Pools("random-cifar", x, y, samples, 10)
    generator = torch.Generator().manual_seed(0)

    engine_model = place_model(build_model("resnet18", (3, 32, 32), 10), device, config)
    masks = prune_to(engine_model, dense_masks(engine_model), 0.368)  # a mid-schedule round: masks are live
    defense = Defense()
    defense.bind(DefenseContext(pools, torch.arange(samples), torch.arange(0), None, config, 0))
    engine_optimizer = make_adam(engine_model, config)

    def engine_epoch() -> None:
        engine_model.train()
        for step in defense.epoch_steps(0, generator):
            defense.train_step(engine_model, engine_optimizer, pools, step, masks)

    bare_model = place_model(build_model("resnet18", (3, 32, 32), 10), device, config)
    bare_optimizer = make_adam(bare_model, config)

    def bare_epoch() -> None:
        bare_model.train()
        for batch in torch.randperm(samples, device=device).split(config.batch_size):
            bare_optimizer.zero_grad(set_to_none=True)
            with training_autocast(device, config):
                loss = torch.nn.functional.cross_entropy(bare_model(x[batch]), y[batch])
            loss.backward()
            bare_optimizer.step()

    for epoch in (engine_epoch, bare_epoch):  # warm-up: cuDNN autotuning, allocator
        timed(device, epoch)
    engine_s = min(timed(device, engine_epoch) for _ in range(epochs))
    bare_s = min(timed(device, bare_epoch) for _ in range(epochs))
    return {
        "samples": samples,
        "engine_s": round(engine_s, 3),
        "bare_s": round(bare_s, 3),
        "engine_samples_per_s": round(samples / engine_s, 1),
        "bare_samples_per_s": round(samples / bare_s, 1),
        "engine_vs_bare_throughput": round(bare_s / engine_s, 3),
    }


# -------------------------------------------------------------------------------------------- trial


class TimedMap:
    """Wraps a MapFn and adds up the wall time of its calls per job function (pretrain_job, prune_job, ...)."""

    def __init__(self, inner: Callable[..., list[Any]]):
        self.inner, self.seconds = inner, defaultdict(float)

    def __call__(self, fn: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> list[Any]:
        start = time.perf_counter()
        try:
            return self.inner(fn, jobs)
        finally:
            self.seconds[fn.__name__] += time.perf_counter() - start


def trial_benchmark(
    samples: int,
    shadows: int,
    memscore_models: int,
    config: TrainConfig,
    workdir: Path,
    model: str = "resnet18",
    shape: tuple[int, ...] = (3, 32, 32),
    cpus_per_job: float | None = None,
    use_ray: bool = True,
) -> dict[str, Any]:
    """One trial on a local Ray; each model job gets 1/(K+1) of the machine (or ``cpus_per_job`` CPUs, so that
    fewer jobs run at once where memory is short). Without Ray (``use_ray=False``) every job runs in this
    process one after the other: an upper bound on the Ray trial's time, for a machine where Ray cannot be
    installed (the lent GPU machines fetch nothing and carry at most 64 MiB; Ray's wheel is 79 MB)."""
    from wemem.assets import prepare_assets
    from wemem.config import ExperimentConfig, PruningConfig
    from wemem.defenses import Setting
    from wemem.parallel import serial_map
    from wemem.pipeline import run_experiment

    rng = np.random.default_rng(0)
    data = workdir / "random.npz"
    np.savez(data, x=rng.standard_normal((samples, *shape), dtype=np.float32), y=rng.integers(0, 10, samples))
    experiment = ExperimentConfig(
        dataset=f"npz:{data}", model=model, shadows=shadows, train=config, memscore_models=memscore_models
    )
    models = shadows + 1
    if use_ray:
        import ray

        from search.execution._cluster import init_ray
        from search.execution._jobs import RayMap

        init_ray()
        resources = ray.cluster_resources()
        gpus = min(1.0, resources.get("GPU", 0.0))  # the study default: one GPU per trial
        cpus = cpus_per_job if cpus_per_job is not None else (resources["CPU"] - 0.001) / models
        share = TimedMap(RayMap(num_cpus=cpus, num_gpus=gpus / models))
    else:
        gpus, cpus = float(torch.cuda.is_available()), float(torch.get_num_threads())
        share = TimedMap(serial_map)
    start = time.perf_counter()
    assets = prepare_assets(experiment, workdir / "cache", share, log=progress)
    shared_s = time.perf_counter() - start
    progress("shared work done; running the trial")
    trial_start = time.perf_counter()
    result = run_experiment(assets, Setting("swmr", SWMR), PruningConfig(0.6, 4), ALL_ATTACKS, share)
    trial_s = time.perf_counter() - trial_start
    seconds = share.seconds
    return {
        "model": model,
        "shape": list(shape),
        "samples": samples,
        "shadows": shadows,
        "rounds": 5,
        "memscore_models": memscore_models,
        "ray": use_ray,
        "gpus_per_trial": gpus,
        "cpus_per_job": round(cpus, 3),
        "pretrain_s": round(seconds["pretrain_job"], 2),
        "memscore_s": round(seconds["memscore_job"], 2),
        "shared_work_s": round(shared_s, 2),
        "pruning_s": round(seconds["prune_job"], 2),
        "attacks_s": round(seconds["attack_job"], 2),
        "trial_s": round(trial_s, 2),
        "attack_seconds": {name: round(t["total"], 2) for name, t in result.timings["attacks"].items()},
        "victim_rounds_epochs": [r["epochs"] for r in result.victim_rounds],
        "victim_test_accuracy": round(result.utility, 4),
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)  # stdout stays pure JSON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="shrunk sizes that finish on 2 CPU cores")
    parser.add_argument(
        "--tabular",
        action="store_true",
        help="only the trial, on 10,000 random 600-feature samples with columnfc (CPU target: "
        "no more time in attacks than in pruning)",
    )
    parser.add_argument("--no-bf16", action="store_true", help="turn bf16 autocast off (CUDA)")
    parser.add_argument("--no-channels-last", action="store_true", help="turn channels_last off (CUDA)")
    parser.add_argument(
        "--no-ray",
        action="store_true",
        help="run the trial's jobs in this process, one after the other (an upper bound on the Ray "
        "trial), where Ray is not installed",
    )
    parser.add_argument("--parts", default="epoch,trial", help="which parts to run: epoch, trial or both (default)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the report here after every part (kept if a later part is cut off)",
    )
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",")}
    if not parts or parts - {"epoch", "trial"}:
        parser.error(f"--parts takes epoch, trial or epoch,trial (got {args.parts!r})")
    fast = {"bf16": not args.no_bf16, "channels_last": not args.no_channels_last}
    if args.small:
        torch.set_num_threads(2)
        epoch_samples, trial_samples, memscore_models, repeats = 128, 240, 2, 1
        config = TrainConfig(pretrain_epochs=1, finetune_epochs=1, patience=0, batch_size=32, **fast)
    else:
        epoch_samples, trial_samples, memscore_models, repeats = 22_500, 60_000, 2, 2
        config = TrainConfig(**fast)
    device = default_device()
    if args.tabular:
        with tempfile.TemporaryDirectory(prefix="wemem-bench-tabular-") as workdir:
            trial = trial_benchmark(
                10_000, 5, 2, TrainConfig(**fast), Path(workdir), "columnfc", (600,), use_ray=not args.no_ray
            )
        tabular = {"device": str(device), "tabular_trial": trial}
        save_partial(tabular, args.out)
        print(json.dumps(tabular, indent=2))
        return
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "small": args.small,
        "bf16": config.bf16,
        "channels_last": config.channels_last,
    }
    if "epoch" in parts:
        report["epoch"] = epoch_benchmark(epoch_samples, repeats, config)
        progress(f"epoch: {report['epoch']}")
        save_partial(report, args.out)
    if "trial" in parts:
        with tempfile.TemporaryDirectory(prefix="wemem-bench-gpu-") as workdir:
            # --small: one CPU per job, so two jobs run at once on 2 cores (SAMIA's batched sensitivity queries
            # take about 2 GB per ResNet job on a CPU)
            report["trial"] = trial_benchmark(
                trial_samples,
                5,
                memscore_models,
                config,
                Path(workdir),
                cpus_per_job=1.0 if args.small else None,
                use_ray=not args.no_ray,
            )
        save_partial(report, args.out)
    print(json.dumps(report, indent=2))


def save_partial(report: dict[str, Any], path: Path | None) -> None:
    """The report so far, written whole to a temporary name and renamed, so the file is never half-written."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(report, indent=2))
        temporary.replace(path)


if __name__ == "__main__":
    main()
