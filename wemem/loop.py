"""The WeMeM defenses in your own PyTorch training loop, with an exported setting as their input.

Each component calls the engine's own functions, so a loop built from them trains what ``wemem apply`` trains:

- :func:`pruning_schedule` and :func:`prune_to_sparsity`: the engine's iterative magnitude schedule, its masks
  applied through ``torch.nn.utils.prune.custom_from_mask`` (the ``weight_orig``/``weight_mask`` form prune's
  users expect); :func:`fold_pruning` removes the reparametrization at the end (pruned weights exactly zero).
- :class:`SlidingWindowSampler`: RSW's window of each epoch of a pruning round, a ``torch.utils.data.Sampler``.
- :class:`EpochBatchSampler`: the engine's mini-batches of an epoch, RMR's risky ones first; :class:`RiskMemoryLoss`:
  RMR's stronger L2 on risky samples as a loss term.
- :func:`memscores`: the mem-scores of your training set, trained with your model factory.

``search.load_setting`` reads ``wemem export``'s file into a :class:`LoopSetting`. docs/own_loop.md shows a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import Sampler

from .config import PruningConfig
from .data import Pools
from .defenses import Setting
from .defenses.wemem import (
    RiskSettings,
    WindowSettings,
    class_windows,
    risk_batches,
    risk_threshold,
    sliding_window,
)
from .errors import WememError
from .memscore import half_probabilities, memscores_of_pairs
from .models import prunable_parameters
from .pruning import Masks, grown_masks, sparsity_schedule
from .training import TrainConfig, minibatches, on_training_device

# the defenses these components reproduce whole; any other needs the engine's hooks (``wemem apply``)
LOOP_DEFENSES = ("none", "rsw", "rmr", "swmr")


@dataclass(frozen=True)
class LoopSetting:
    """An exported setting as a training loop uses it: the defense setting, the pruning and training the study
    used, its mem-score models and seed, and what names the result (study, trial, the study's model and data)."""

    setting: Setting
    pruning: PruningConfig
    training: TrainConfig
    memscore_models: int
    seed: int
    study: str
    trial: int
    model: str
    dataset: str

    def rounds(self) -> list[float]:
        """The sparsity of each fine-tuning round (:func:`pruning_schedule`)."""
        return pruning_schedule(self.pruning)

    @property
    def windows(self) -> WindowSettings | None:
        """RSW's window settings (rsw, swmr), None for a defense without sliding windows."""
        settings = loop_defense_settings(self.setting)
        return settings if isinstance(settings, WindowSettings) else None

    @property
    def risk(self) -> RiskSettings | None:
        """RMR's settings (rmr, swmr), None for a defense without risk memory regularization."""
        settings = loop_defense_settings(self.setting)
        return settings if isinstance(settings, RiskSettings) else None


def loop_defense_settings(setting: Setting) -> BaseModel:
    """The setting's validated settings model; a defense these components do not reproduce is refused."""
    if setting.defense not in LOOP_DEFENSES:
        raise WememError(
            f"defense {setting.defense!r} shapes training through the engine's own hooks, which these loop "
            f"components do not reproduce (they cover {', '.join(LOOP_DEFENSES)}); rebuild its model with "
            "`wemem apply`"
        )
    return setting.make().settings


# ------------------------------------------------------------------------------------------------ pruning


def pruning_schedule(pruning: PruningConfig) -> list[float]:
    """Sparsity of each fine-tuning round: round 0 dense then ``1 - (1 - s)^(r / P)``, or one round (one-shot)."""
    return sparsity_schedule(pruning.sparsity, pruning.steps, pruning.one_shot)


def owner(model: nn.Module, weight_name: str) -> nn.Module:
    """The module holding a prunable weight (``hidden.0.weight`` -> ``hidden.0``)."""
    return model.get_submodule(weight_name.rpartition(".")[0])


def current_masks(model: nn.Module) -> Masks:
    """The masks ``torch.nn.utils.prune`` holds (``weight_mask``) for every prunable weight; dense where none."""
    masks = {}
    for name, weight in prunable_parameters(model).items():
        mask = getattr(owner(model, name), "weight_mask", None)
        masks[name] = mask.bool() if mask is not None else torch.ones_like(weight, dtype=torch.bool)
    return masks


def live_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every prunable weight as the model computes with it now: ``weight_orig * weight_mask`` where prune holds
    one (prune refreshes ``module.weight`` only in the next forward pass, so after an optimizer step it is stale)."""
    weights = {}
    for name, weight in prunable_parameters(model).items():
        module = owner(model, name)
        orig: torch.Tensor | None = getattr(module, "weight_orig", None)
        mask: torch.Tensor | None = getattr(module, "weight_mask", None)
        weights[name] = (orig * mask if orig is not None and mask is not None else weight).detach()
    return weights


def prune_to_sparsity(model: nn.Module, sparsity: float) -> Masks:
    """Grow every prunable weight's mask to ``sparsity`` of its whole tensor by magnitude, as the engine does,
    and apply it with ``prune.custom_from_mask``; returns the masks, keyed like the engine's (``layer.weight``).

    The engine's schedule is defined on the full tensor while ``prune.l1_unstructured``'s ``amount`` is relative
    to the weights still live, so the masks are computed by the engine's :func:`wemem.pruning.magnitude_mask`
    and handed to prune, which then keeps pruned weights at zero in every forward pass.
    """
    masks = grown_masks(live_weights(model), current_masks(model), sparsity)
    for name, mask in masks.items():
        prune.custom_from_mask(owner(model, name), "weight", mask)
    return masks


def fold_pruning(model: nn.Module) -> Masks:
    """End of pruning: ``prune.remove`` every reparametrization, so each weight is a plain parameter with its
    pruned entries exactly zero; returns the final masks (for the artifact's metadata and checks)."""
    masks = current_masks(model)
    for name in masks:
        module = owner(model, name)
        if prune.is_pruned(module):
            prune.remove(module, "weight")
    return masks


# -------------------------------------------------------------------------------------------------- RSW


class SlidingWindowSampler(Sampler[int]):
    """RSW: the rows of your training set that one epoch of a pruning round trains on, shuffled.

    ``labels`` and ``memscores`` hold one entry per row of your training set; the sampler yields row positions.
    Call :meth:`set_epoch` at the start of every epoch, from 0 again in every pruning round (the windows restart
    each round, as in the engine). An empty window means every class's list is exhausted: end the round.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        memscores: torch.Tensor,
        settings: WindowSettings,
        generator: torch.Generator | None = None,
    ):
        rows = torch.arange(len(labels))
        self.class_lists, self.sizes = class_windows(rows, labels.cpu(), memscores.cpu(), settings)
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def window(self) -> torch.Tensor:
        """This epoch's window in the engine's order (class by class, each ranked by mem-score)."""
        return sliding_window(self.class_lists, self.sizes, self.epoch)

    def __len__(self) -> int:
        return len(self.window())

    def __iter__(self) -> Iterator[int]:
        window = self.window()
        # the engine's shuffle (wemem.training.minibatches): with the same generator, the same order
        yield from window[torch.randperm(len(window), generator=self.generator)].tolist()


# -------------------------------------------------------------------------------------------------- RMR


class EpochBatchSampler(Sampler[list[int]]):
    """The engine's mini-batches of one epoch, as a ``batch_sampler``: over all rows, or over the current window
    of a :class:`SlidingWindowSampler` (rsw, swmr); with RMR's ``tau`` (rmr, swmr), every batch of risky rows
    (mem-score >= tau) first, then the general rows' (:func:`wemem.defenses.wemem.risk_batches`).

    Batches are shuffled with ``generator`` and cut as :func:`wemem.training.minibatches` cuts them (a trailing
    single row joins the batch before it). Each holds only risky or only general rows, so
    :class:`RiskMemoryLoss` applies RMR's decay to exactly the engine's steps. Call :meth:`set_epoch` at the start
    of every epoch (from 0 again in every pruning round).
    """

    def __init__(
        self,
        rows: torch.Tensor | SlidingWindowSampler,
        batch_size: int,
        generator: torch.Generator,
        memscores: torch.Tensor | None = None,
        tau: float | None = None,
    ):
        if tau is not None and memscores is None:
            raise ValueError("RMR's risky-first batches (a tau) need the rows' mem-scores")
        self.rows, self.batch_size, self.generator = rows, batch_size, generator
        self.memscores, self.tau = None if memscores is None else memscores.cpu(), tau

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.rows, SlidingWindowSampler):
            self.rows.set_epoch(epoch)

    def epoch_rows(self) -> torch.Tensor:
        """The rows this epoch trains on (empty: every class's window is exhausted, the round ends)."""
        return self.rows.window() if isinstance(self.rows, SlidingWindowSampler) else self.rows.cpu()

    def batches(self) -> list[torch.Tensor]:
        rows = self.epoch_rows()
        if self.memscores is None or self.tau is None:
            batches = minibatches(rows, self.batch_size, self.generator)
        else:
            risky, general = risk_batches(rows, self.memscores[rows], self.tau, self.batch_size, self.generator)
            batches = risky + general
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield batch.tolist()


def rmr_penalty(
    parameters: list[torch.Tensor], risky_share: torch.Tensor, lambda_mem: float, weight_decay: float
) -> torch.Tensor:
    """RMR's extra L2 on a batch: ``risky_share * (lambda_mem - weight_decay) / 2 * sum ||theta||^2``.

    The engine steps Adam with coupled L2 (gradient + decay * theta) and raises the decay from ``weight_decay``
    to ``lambda_mem`` on risky steps; with an Adam whose ``weight_decay`` is the study's, this term's gradient
    ``(lambda_mem - weight_decay) * theta`` makes the step's decay exactly ``lambda_mem``. ``risky_share`` is the
    batch's fraction of risky rows (each row's loss carries its own decay): 1 or 0 on the engine's batches.
    """
    squares = torch.stack([p.pow(2).sum() for p in parameters]).sum()
    return risky_share * (lambda_mem - weight_decay) / 2 * squares


class RiskMemoryLoss(nn.Module):
    """The training loss under a setting: cross-entropy, plus RMR's stronger L2 on risky rows
    (:func:`rmr_penalty`) when ``settings`` are RMR's (rmr, swmr; None: no RMR, plain cross-entropy).

    It assumes an Adam with coupled L2 (not AdamW) whose ``weight_decay`` is the study's
    ``training.weight_decay``. ``memscores`` hold one score per row of your training set; :attr:`tau` is the
    setting's, or the quantile ``risky_fraction`` of these scores names
    (:func:`wemem.defenses.wemem.risk_threshold`); None without RMR.
    """

    risky: torch.Tensor | None  # a buffer (it follows the module's device): which rows are risky

    def __init__(self, memscores: torch.Tensor, settings: RiskSettings | None, weight_decay: float):
        super().__init__()
        if settings is not None and settings.optimizer != "single":
            raise WememError(
                f"this RMR setting steps risky batches with an Adam of their own (optimizer = {settings.optimizer!r}),"
                " which a loss term cannot express; the loop components reproduce optimizer = 'single' (the "
                "default): export a setting with it, or rebuild this one with `wemem apply`"
            )
        self.settings, self.weight_decay = settings, weight_decay
        self.tau = None if settings is None else risk_threshold(settings, memscores)
        self.register_buffer("risky", memscores >= self.tau if self.tau is not None else None)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, model: nn.Module
    ) -> torch.Tensor:
        """The loss of a batch of training rows ``rows`` (their positions in your training set)."""
        loss = F.cross_entropy(logits, targets)
        if self.settings is None or self.risky is None:
            return loss
        risky_share = self.risky[rows.to(self.risky.device)].float().mean()
        return loss + rmr_penalty(list(model.parameters()), risky_share, self.settings.lambda_mem, self.weight_decay)


# ------------------------------------------------------------------------------------------ mem-scores


def memscores(
    new_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    x_held_out: torch.Tensor,
    y_held_out: torch.Tensor,
    training: TrainConfig,
    models: int,
    seed: int,
) -> torch.Tensor:
    """The mem-score of every training row (x, y), computed as the engine does (:mod:`wemem.memscore`).

    ``models`` fresh ``new_model()`` are trained in complementary pairs on seeded halves of the rows, with the
    engine's training (Adam, ``training.pretrain_epochs`` with early stopping on the held-out rows, which none
    trains on); a row's score is its mean true-class probability over the models that trained on it minus that
    over those that did not, min-max scaled to [0, 1].
    """
    if models < 2 or models % 2:
        raise WememError(f"mem-scores need an even number of models >= 2 (complementary pairs), got {models}")
    labels = torch.cat([y, y_held_out]).long()
    pools = on_training_device(Pools("own", torch.cat([x, x_held_out]), labels, len(y), int(labels.max()) + 1))
    probabilities = [
        half_probabilities(new_model, training, seed, pools, pair, half)
        for pair in range(models // 2)
        for half in (0, 1)
    ]
    return memscores_of_pairs(np.stack(probabilities), len(y), seed)


__all__ = [
    "EpochBatchSampler",
    "LOOP_DEFENSES",
    "LoopSetting",
    "RiskMemoryLoss",
    "SlidingWindowSampler",
    "fold_pruning",
    "memscores",
    "prune_to_sparsity",
    "pruning_schedule",
    "rmr_penalty",
]
