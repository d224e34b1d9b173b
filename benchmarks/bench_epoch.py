"""Fine-tuning throughput: our index-slice engine vs a bare training loop on the same model and batches, and vs
the reference code's pattern (a ``DataLoader`` with 4 worker processes built anew every epoch).

Prints one JSON object (never asserts). Targets (issue 10): engine >= 0.8x the bare loop, >= 5x faster than the
per-epoch 4-worker DataLoader. Examples:
    .venv/bin/python benchmarks/bench_epoch.py --preset digits     # columnfc, 1,617 x 64, 10 classes
    .venv/bin/python benchmarks/bench_epoch.py --preset location   # columnfc, 1,804 x 446 binary, 30 classes
    .venv/bin/python benchmarks/bench_epoch.py --model resnet18 --samples 22500 --shape 3 32 32   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from wemem.data import Pools
from wemem.defenses.base import Defense, DefenseContext
from wemem.models import build_model
from wemem.pruning import dense_masks, prune_to
from wemem.training import TrainConfig, default_device, make_adam, minibatches

# (samples, feature shape, classes): a digits victim's training set (90% of half of 80% of 1,797 is 647; the
# whole 80% pool is used for steadier timings) and a Location victim's (90% of half of 80% of 5,010)
PRESETS = {"digits": (1617, [64], 10), "location": (1804, [446], 30)}


def engine_epoch(model, optimizer, pools, defense, masks, generator) -> None:
    model.train()
    for step in defense.epoch_steps(0, generator):
        defense.train_step(model, optimizer, pools, step, masks)


def masked_step(model, optimizer, x, y, masks_params) -> None:
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    with torch.no_grad():
        for param, mask in masks_params:
            param.mul_(mask)


def bare_epoch(model, optimizer, pools, batches, masks_params) -> None:
    """The floor: the same index-slice batches fed to a hand-written loop, no engine or defense hooks."""
    model.train()
    for batch in batches:
        masked_step(model, optimizer, pools.x[batch], pools.y[batch], masks_params)


def dataloader_epoch(model, optimizer, loader, masks_params) -> None:
    """The reference pattern: a DataLoader (worker processes) built every epoch, a host->device copy per batch."""
    device = next(model.parameters()).device
    model.train()
    for x, y in loader:
        masked_step(model, optimizer, x.to(device), y.to(device), masks_params)


def median_seconds(run, epochs: int, device: torch.device) -> float:
    run()  # warm-up
    times = []
    for _ in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--model", default="columnfc")
    parser.add_argument("--samples", type=int, default=647)
    parser.add_argument("--shape", type=int, nargs="+", default=[64])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes of the reference pattern")
    args = parser.parse_args()
    if args.preset:
        args.samples, args.shape, args.classes = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    device = default_device()
    x = (torch.rand(args.samples, *args.shape) < 0.3).float()
    y = torch.randint(0, args.classes, (args.samples,))
    pools = Pools("bench", x.to(device), y.to(device), args.samples, args.classes)
    config = TrainConfig()
    model = build_model(args.model, tuple(args.shape), args.classes).to(device)
    masks = prune_to(model, dense_masks(model), 0.368)
    defense = Defense()
    defense.bind(DefenseContext(pools, torch.arange(args.samples), torch.arange(0), None, config, 0))
    optimizer = make_adam(model, config)
    params = dict(model.named_parameters())
    masks_params = [(params[n], m) for n, m in masks.items()]
    load_before = os.getloadavg()

    engine = median_seconds(
        lambda: engine_epoch(model, optimizer, pools, defense, masks, torch.Generator().manual_seed(0)),
        args.epochs,
        device,
    )
    batches = [
        b.to(device)
        for b in minibatches(torch.arange(args.samples), config.batch_size, torch.Generator().manual_seed(0))
    ]
    bare = median_seconds(lambda: bare_epoch(model, optimizer, pools, batches, masks_params), args.epochs, device)
    dataset = TensorDataset(x, y)

    def loader():
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=False,
        )

    per_epoch_loader = median_seconds(
        lambda: dataloader_epoch(model, optimizer, loader(), masks_params), args.epochs, device
    )
    print(
        json.dumps(
            {
                "benchmark": "epoch",
                "device": str(device),
                "model": args.model,
                "samples": args.samples,
                "shape": args.shape,
                "classes": args.classes,
                "batch_size": config.batch_size,
                "threads": args.threads,
                "ms_per_epoch": {
                    "engine": engine * 1e3,
                    "bare_loop": bare * 1e3,
                    f"dataloader_{args.workers}_workers_per_epoch": per_epoch_loader * 1e3,
                },
                "engine_throughput_vs_bare_loop": bare / engine,
                "engine_speedup_vs_per_epoch_dataloader": per_epoch_loader / engine,
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
