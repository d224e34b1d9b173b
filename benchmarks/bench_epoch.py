"""Time per fine-tuning epoch: our index-slice engine vs a straightforward per-epoch DataLoader loop.

Prints numbers only (never asserts). Examples:
    .venv/bin/python benchmarks/bench_epoch.py                                # digits-sized columnfc
    .venv/bin/python benchmarks/bench_epoch.py --model resnet18 --samples 22500 --shape 3 32 32   # CIFAR-sized
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from wemem.data import Pools
from wemem.defenses.base import Defense, DefenseContext
from wemem.models import build_model
from wemem.pruning import dense_masks, prune_to
from wemem.training import TrainConfig, default_device, make_adam


def engine_epoch(model, optimizer, pools, defense, masks, generator) -> None:
    model.train()
    for step in defense.epoch_steps(0, generator):
        defense.train_step(model, optimizer, pools, step, masks)


def dataloader_epoch(model, optimizer, loader, masks_params) -> None:
    """The common baseline: a DataLoader re-created per epoch, a CPU->device copy per batch, masks re-applied."""
    device = next(model.parameters()).device
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            for param, mask in masks_params:
                param.mul_(mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="columnfc")
    parser.add_argument("--samples", type=int, default=647)
    parser.add_argument("--shape", type=int, nargs="+", default=[64])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = default_device()
    x = torch.rand(args.samples, *args.shape)
    y = torch.randint(0, args.classes, (args.samples,))
    pools = Pools("bench", x.to(device), y.to(device), args.samples, args.classes)
    config = TrainConfig()
    model = build_model(args.model, tuple(args.shape), args.classes).to(device)
    masks = prune_to(model, dense_masks(model), 0.368)
    defense = Defense()
    defense.bind(DefenseContext(pools, torch.arange(args.samples), torch.arange(0), None, config, 0))
    optimizer = make_adam(model, config)
    generator = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    masks_params = [(params[n], m) for n, m in masks.items()]

    def timed(run) -> list[float]:
        run()  # warm-up
        times = []
        for _ in range(args.epochs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return times

    engine = timed(lambda: engine_epoch(model, optimizer, pools, defense, masks, generator))
    dataset = TensorDataset(x, y)
    loader = lambda: DataLoader(dataset, batch_size=config.batch_size, shuffle=True)  # noqa: E731
    baseline = timed(lambda: dataloader_epoch(model, optimizer, loader(), masks_params))
    print(f"device {device}, model {args.model}, {args.samples} samples of shape {tuple(args.shape)}, "
          f"batch {config.batch_size}, {args.threads} thread(s)")
    print(f"index-slice engine : median {statistics.median(engine) * 1e3:8.1f} ms/epoch")
    print(f"DataLoader baseline: median {statistics.median(baseline) * 1e3:8.1f} ms/epoch")
    print(f"speed-up           : {statistics.median(baseline) / statistics.median(engine):.2f}x")


if __name__ == "__main__":
    main()
