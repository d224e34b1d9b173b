"""The training engine of SPEC section 4: Adam, coupled L2, index-slice batches, early stopping on dev accuracy.

The engine knows nothing of the tuning layer. Defenses shape training through the hooks of
:class:`wemem.defenses.base.Defense` (which steps an epoch takes, the loss, the optimizer step, the outputs).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import dataclasses
import functools
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from .data import Pools
from .pruning import Masks


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    pretrain_epochs: int = 100
    finetune_epochs: int = 21
    patience: int = 5
    # CNN speed-ups, used only where the model trains on CUDA: bf16 autocast of forward and loss (no loss
    # scaler needed, unlike fp16), and channels_last (NHWC) weights so convolutions take the tensor-core paths
    bf16: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and math.isfinite(self.weight_decay)):
            raise ValueError(f"invalid training config {self}: lr and weight_decay must be finite numbers")
        if self.lr <= 0 or self.weight_decay < 0 or self.batch_size < 1:
            raise ValueError(f"invalid training config {self}: need lr > 0, weight_decay >= 0, batch_size >= 1")
        if self.pretrain_epochs < 1 or self.finetune_epochs < 1 or self.patience < 0:
            raise ValueError(f"invalid training config {self}: need epochs >= 1 and patience >= 0")


@dataclass
class Step:
    """One optimizer step: the pool indices of its mini-batch and an optional weight-decay override (RMR)."""

    indices: torch.Tensor
    weight_decay: float | None = None


class TrainingHooks(Protocol):
    """What the engine calls on a defense (:class:`wemem.defenses.base.Defense` has them all): the engine does
    not import the defenses, which import it."""

    def epoch_steps(self, epoch: int, generator: torch.Generator) -> list[Step]: ...

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, pools: Pools, step: Step, masks: Masks | None
    ) -> object: ...

    def output_log_probs(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def bound_heap_growth(mmap_threshold: int = 2**20, trim_threshold: int = 64 * 2**20) -> bool:
    """Fix glibc's malloc thresholds for this process (once; False where the C library is not glibc).

    glibc raises its mmap threshold to the size of every mapped block freed (up to 32 MiB): from then on the
    multi-MiB transients of a batched loop (SAMIA's perturbed copies of 256 rows, an attack network's activations)
    come from the heap, where the small result each batch keeps splits the freed blocks, so the heap grows by
    about one batch's transients per batch and never shrinks. At 80,000 rows that was 230 MiB of the trial's peak
    in the victim's sensitivity probe alone. A fixed threshold keeps such blocks mapped (returned on free); the
    high trim threshold keeps the heap from being returned and refaulted between the small batches of training.
    Python's standard library has no binding for mallopt, hence ctypes.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def default_device() -> torch.device:
    """The device torch sees in this process (under Ray: the GPU Ray assigned, via CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_training_device(pools: Pools) -> Pools:
    """The pools resident on this process's training device (batches are then index slices, no copies)."""
    device = default_device()
    if pools.x.device == device:
        return pools
    return dataclasses.replace(pools, x=pools.x.to(device), y=pools.y.to(device))


def place_model(model: nn.Module, device: torch.device, config: TrainConfig) -> nn.Module:
    """Move a freshly built model to the device; channels_last for conv nets on CUDA (see TrainConfig)."""
    model = model.to(device)
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if device.type == "cuda" and config.channels_last and has_conv:
        model = model.to(memory_format=torch.channels_last)
    return model


def training_autocast(
    device: torch.device, config: TrainConfig, allowed: bool = True
) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA when the config asks for it (and the caller allows it); a no-op elsewhere."""
    if device.type == "cuda" and config.bf16 and allowed:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def minibatches(
    indices: torch.Tensor, batch_size: int, generator: torch.Generator, shuffle: bool = True
) -> list[torch.Tensor]:
    """The (shuffled) indices cut into batches of ``batch_size``, every index once.

    A trailing batch of one row joins the batch before it: BatchNorm cannot train on one row (its batch variance
    is undefined), and dropping the row would change what an RSW window trains on. A set of one row stays one
    batch, and ``batch_size`` 1 asks for single rows. No rows give no batch (``torch.split`` would give one
    empty batch, whose Adam step would still apply the weight decay): an exhausted RSW window then ends its
    round, and an RMR epoch without risky rows takes no risky step.
    """
    if len(indices) == 0:
        return []
    if shuffle:
        indices = indices[torch.randperm(len(indices), generator=generator)]
    batches = list(torch.split(indices, batch_size))
    if len(batches) >= 2 and len(batches[-1]) == 1 and batch_size > 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def make_adam(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Adam with coupled L2 (PyTorch's weight_decay), as SPEC section 4 prescribes -- not AdamW. Fused: one kernel
    # for all parameters on CPU and CUDA (PyTorch defaults to a per-tensor loop on the CPU): a step of Location's
    # columnfc took 0.13 instead of 0.40 ms, a tenth of its training step; same algorithm, rounding differs.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


@torch.no_grad()
def predict_log_probs(
    model: nn.Module, pools: Pools, indices: torch.Tensor, defense: TrainingHooks | None = None, batch_size: int = 1024
) -> torch.Tensor:
    """Log-probabilities the deployed model answers with (after any defense output transform).

    Each batch is written into one preallocated result: keeping every batch's small output alive between the
    next batch's large transients (its rows, activations) fragments the C heap, which then grows by about the
    transients' size per batch instead of reusing them (measured: over 100 MiB for an 80,000-row pool).
    """
    model.eval()
    result: torch.Tensor | None = None
    indices = indices.to(pools.x.device)
    for start in range(0, len(indices), batch_size):
        rows = pools.x[indices[start : start + batch_size]]
        logits = model(rows)
        log_probs = (
            defense.output_log_probs(model, rows, logits) if defense is not None else torch.log_softmax(logits, dim=1)
        )
        if result is None:
            result = log_probs.new_empty((len(indices), *log_probs.shape[1:]))
        result[start : start + len(log_probs)] = log_probs
    return torch.empty(0, 0) if result is None else result


def accuracy(model: nn.Module, pools: Pools, indices: torch.Tensor) -> float:
    """Argmax accuracy (defense output transforms keep the predicted label, so raw logits suffice)."""
    if len(indices) == 0:
        return float("nan")
    log_probs = predict_log_probs(model, pools, indices)
    return float((log_probs.argmax(1).cpu() == pools.y[indices.cpu()].cpu()).float().mean())


class EarlyStopping:
    """Keep the best-dev weights; stop after ``patience + 1`` epochs without strict improvement.

    SPEC section 4: "stop after 6 epochs without strict improvement (patience 5)".
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score = float("-inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self.stale_epochs = 0

    def update(self, score: float, model: nn.Module, epoch: int) -> bool:
        """Record an epoch's dev score; return True when training should stop."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale_epochs = score, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.stale_epochs += 1
        return self.stale_epochs > self.patience


@dataclass
class RoundResult:
    best_state: dict[str, torch.Tensor]
    best_dev_accuracy: float
    best_epoch: int
    epochs: int
    seconds: float
    dev_history: list[float] = field(default_factory=list)


def train_round(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    pools: Pools,
    dev: torch.Tensor,
    defense: TrainingHooks,
    masks: Masks | None,
    max_epochs: int,
    patience: int,
    generator: torch.Generator,
) -> RoundResult:
    """Train up to ``max_epochs`` epochs with early stopping on dev accuracy.

    The model is left at the weights of the last epoch run (the next pruning round continues from there);
    the best-dev weights are returned in the result.
    """
    start = time.perf_counter()
    stopper = EarlyStopping(patience)
    history: list[float] = []
    epochs = 0
    for epoch in range(max_epochs):
        steps = defense.epoch_steps(epoch, generator)
        if not steps:  # e.g. RSW: every class's sliding window is exhausted
            break
        model.train()
        for step in steps:
            defense.train_step(model, optimizer, pools, step, masks)
        epochs += 1
        dev_accuracy = accuracy(model, pools, dev)
        history.append(dev_accuracy)
        if stopper.update(dev_accuracy, model, epoch):
            break
    if stopper.best_state is None:  # no epoch ran: the current weights are the result
        stopper.best_state = copy.deepcopy(model.state_dict())
        stopper.best_score = accuracy(model, pools, dev)
    return RoundResult(
        stopper.best_state, stopper.best_score, stopper.best_epoch, epochs, time.perf_counter() - start, history
    )
