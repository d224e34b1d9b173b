"""Neural attacks (SPEC section 9, 5-7): a member/non-member classifier trained on the shadows' outputs.

NN reads the posterior, Top3-NN its three largest values sorted, Cl-NN the posterior with the one-hot label;
all use the MLP 512-256-128-2 with dropout 0.2. SAMIA (:mod:`.samia`) reuses the fitting routine here with a
transformer. Fitting is deterministic for ``AttackInputs.seed``: initialization, dropout, the held-out split
and the batch order all draw from that seed, without disturbing the caller's global random state.

Three choices make a neural attack decide as well as it ranks (without them, on well-generalizing models the
classifier's own 0.5 decision often put every target on one side: balanced accuracy exactly 0.5 at AUC 0.57):

- the decision threshold is fitted on the shadows' held-out member/non-member scores by the same balanced-accuracy
  search as the threshold attacks (:func:`wemem.metrics.best_threshold`), not fixed at the classifier's 0.5;
- probabilities enter as per-class log-odds log(p / (1 - p)) (the same information, an invertible map), because
  membership often lives in 1 - p_y at the 1e-4 scale, which raw probabilities near 1 hide from an MLP;
- every feature is standardized with the shadow training data's mean and deviation (a fixed first layer).

The shadows' observations are balanced per shadow (:func:`wemem.attacks.base.balanced_targets`), so the plain
cross-entropy needs no class weights; early stopping watches the held-out AUC (see
:class:`FitConfig`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import require
from ..metrics import auc, best_threshold
from ..training import default_device
from .base import ATTACKS, Attack, AttackInputs, Observations
from .features import log_odds as unclipped_log_odds


@dataclass(frozen=True)
class FitConfig:
    """How an attack classifier is trained: Adam, early stopping on a held-out part of the shadow data.

    The held-out rows are checked ``checks_per_epoch`` times an epoch (after equal runs of whole batches) for the
    ``criterion``: their AUC (``"auc"``) or their log-loss (``"loss"``). Training stops after ``patience + 1``
    checks in a row without an improvement of at least ``min_improvement``; the weights of the best check are
    kept.

    Why the AUC and these numbers (``benchmarks/fit_rules.py`` replays any rule on recorded fits; the figures are
    in docs/deviations.md): a classifier is used only through its ranking, with a threshold fitted on the
    held-out scores, so its calibration does not matter, and the log-loss mostly measures calibration. On digits
    the MLP attacks' held-out loss rises after a few epochs while the ranking keeps improving for 20 or more;
    stopping on the loss with patience 2 left NN and Cl-NN about 0.014 and 0.021 AUC weaker (10 seeds, paired)
    than their best-loss weights over 30 epochs. The default (one check an epoch, patience 5) is within noise of
    that reference on digits and on a Location-sized set, at 8 to 21 epochs of a cheap MLP. SAMIA sets its own.
    """

    max_epochs: int = 50
    checks_per_epoch: int = 1
    patience: int = 5
    min_improvement: float = 0.0
    criterion: str = "auc"
    batch_size: int = 128
    lr: float = 1e-3
    held_out_fraction: float = 0.2

    def __post_init__(self) -> None:
        require(
            self.criterion in ("auc", "loss"), f"FitConfig.criterion must be 'auc' or 'loss', not {self.criterion!r}"
        )
        require(
            self.checks_per_epoch >= 1 and self.patience >= 0 and self.max_epochs >= 1,
            "FitConfig needs checks_per_epoch >= 1, patience >= 0 and max_epochs >= 1",
        )


def membership_mlp(in_features: int) -> nn.Module:
    widths = (in_features, 512, 256, 128)
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 2))


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators (module initialization and dropout use them) and restore them after."""
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU work on one thread, restoring the caller's setting after.

    The attack classifiers are small: intra-op threads gain nothing on them, and when the cores are shared (the
    K+1 pruning tasks of other trials, other jobs) thread synchronization made a 512-256-128 MLP step 27x slower
    with two threads than with one (580 vs 21 ms on the project's 2-core machine at load 30). One thread also
    makes a fit's floating-point results independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def held_out_split(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    n_held_out = max(1, round(n * fraction))
    return order[n_held_out:], order[:n_held_out]


@torch.no_grad()
def membership_logits(model: nn.Module, features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The classifier's two logits per row. Batches of 256: SAMIA's activations for 4,096 rows of 30 class tokens
    spill out of the cache, and a held-out check over 1,190 rows took 0.21 s in one batch against 0.15 s in
    batches of 128 to 256 (the MLPs take the same time either way)."""
    model.eval()
    return torch.cat([model(batch) for batch in torch.split(features, batch_size)])


def logit_margin(logits: torch.Tensor) -> np.ndarray:
    """logit(member) - logit(non-member): ranks like the member probability but never saturates, and the
    classifier's own decision is the threshold 0."""
    return (logits[:, 1] - logits[:, 0]).double().cpu().numpy()


def held_out_quality(criterion: str, logits: torch.Tensor, targets: torch.Tensor) -> float:
    """How good a classifier is on the held-out rows, higher being better: their AUC (``"auc"``) or their
    negative mean log-loss (``"loss"``). An AUC is -inf when the held-out rows hold one class only (tiny shadow
    sets): no check then improves on the first."""
    if criterion == "loss":
        return -F.cross_entropy(logits, targets).item()
    value = auc(logit_margin(logits), targets.cpu().numpy().astype(bool))
    return -math.inf if math.isnan(value) else value


class HeldOutEarlyStopping:
    """Keep the weights of the best held-out quality (and their held-out scores); stop after ``patience + 1``
    checks without an improvement of at least ``min_improvement``."""

    def __init__(self, config: FitConfig):
        self.config = config
        self.best = -float("inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_scores: np.ndarray | None = None
        self.stale_checks = 0

    def update(self, quality: float, model: nn.Module, scores: np.ndarray | None = None) -> bool:
        """Record a check's held-out quality (higher is better); return True when training should stop."""
        if quality > self.best or self.best_state is None:
            improved_enough = quality - self.best >= self.config.min_improvement
            self.best, self.best_state, self.best_scores = quality, copy.deepcopy(model.state_dict()), scores
            self.stale_checks = 0 if improved_enough else self.stale_checks + 1
        else:
            self.stale_checks += 1
        return self.stale_checks > self.config.patience


def train_batches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
) -> None:
    model.train()
    for batch in torch.split(order, batch_size):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()


def check_runs(order: torch.Tensor, batch_size: int, checks: int) -> tuple[torch.Tensor, ...]:
    """An epoch's sample order cut into ``checks`` runs of whole batches (the last run may be shorter)."""
    batches = -(-len(order) // batch_size)
    return torch.split(order, -(-batches // checks) * batch_size)


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics, so a fitted classifier carries its own feature scaling."""

    mean: torch.Tensor  # buffers (saved with the weights); declared so the type checker knows them
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fitted(cls, x: torch.Tensor) -> Standardize:
        """Statistics per feature of the last axis (a token's channel for SAMIA); constant features stay put."""
        flat = x.reshape(-1, x.shape[-1])
        std = flat.std(dim=0)
        return cls(flat.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)))


@dataclass
class FittedClassifier:
    """A trained membership classifier, the shadow rows it never trained on, and its scores on them (for
    fitting the threshold)."""

    model: nn.Module
    held_out: np.ndarray
    held_out_scores: np.ndarray


@dataclass
class ClassifierFit:
    """A fit in progress: the model, its optimizer, the data on the device and the train / held-out split."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    held_out: torch.Tensor
    generator: torch.Generator

    def epoch_order(self) -> torch.Tensor:
        return self.train[torch.randperm(len(self.train), generator=self.generator).to(self.x.device)]

    def train_on(self, run: torch.Tensor, batch_size: int) -> None:
        train_batches(self.model, self.optimizer, self.x, self.y, run, batch_size)

    def held_out_logits(self) -> torch.Tensor:
        return membership_logits(self.model, self.x[self.held_out])


@contextlib.contextmanager
def fitting(
    build: Callable[[], nn.Module], features: np.ndarray, is_member: np.ndarray, seed: int, config: FitConfig
) -> Iterator[ClassifierFit]:
    """Set up a fit: the held-out split, the model (standardized by the training part's statistics in its first
    layer) and Adam, all drawn from ``seed``; torch is seeded and on one thread until the block ends."""
    device = default_device()
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(is_member, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    train, held_out = (part.to(device) for part in held_out_split(len(y), config.held_out_fraction, generator))
    with seeded_torch(seed, device), one_thread():
        model = nn.Sequential(Standardize.fitted(x[train]), build()).to(device)
        yield ClassifierFit(model, torch.optim.Adam(model.parameters(), lr=config.lr), x, y, train, held_out, generator)


def fit_membership_classifier(
    build: Callable[[], nn.Module],
    features: np.ndarray,
    is_member: np.ndarray,
    seed: int,
    config: FitConfig = FitConfig(),
) -> FittedClassifier:
    """Train a two-class member/non-member classifier on shadow observations (Adam, early stopping)."""
    stopper = HeldOutEarlyStopping(config)
    with fitting(build, features, is_member, seed, config) as fit:
        for _ in range(config.max_epochs):
            if any(
                stop_after(stopper, fit, run, config)
                for run in check_runs(fit.epoch_order(), config.batch_size, config.checks_per_epoch)
            ):
                break
    if stopper.best_state is None or stopper.best_scores is None:  # FitConfig: max_epochs and checks_per_epoch >= 1
        raise RuntimeError("the membership classifier was never checked on its held-out rows")
    fit.model.load_state_dict(stopper.best_state)
    return FittedClassifier(fit.model.eval(), fit.held_out.cpu().numpy(), stopper.best_scores)


def stop_after(stopper: HeldOutEarlyStopping, fit: ClassifierFit, run: torch.Tensor, config: FitConfig) -> bool:
    """Train on one run of batches, then check the held-out rows: whether training should stop."""
    fit.train_on(run, config.batch_size)
    logits = fit.held_out_logits()
    return stopper.update(
        held_out_quality(config.criterion, logits, fit.y[fit.held_out]), fit.model, logit_margin(logits)
    )


def membership_log_odds(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """The classifier's membership scores (:func:`logit_margin`) of some observations' features."""
    device = next(model.parameters()).device
    with one_thread():
        return logit_margin(membership_logits(model, torch.as_tensor(features, dtype=torch.float32, device=device)))


# ------------------------------------------------------------------------------------------- features


LOG_ODDS_LIMIT = 50.0  # |log-odds| beyond this is float noise (p within 2e-22 of 0 or 1)


def log_odds(log_probs: np.ndarray) -> np.ndarray:
    """log(p_j / (1 - p_j)) for every class (:func:`wemem.attacks.features.log_odds`), clipped for the networks."""
    return np.clip(unclipped_log_odds(log_probs), -LOG_ODDS_LIMIT, LOG_ODDS_LIMIT)


def posterior(observed: Observations) -> np.ndarray:
    """The posterior vector, as per-class log-odds."""
    return log_odds(observed.log_probs)


def top3_posterior(observed: Observations) -> np.ndarray:
    """The three largest posterior values in descending order (label-free and class-order-free), as log-odds."""
    # log-odds are increasing in p, so sorting them sorts the probabilities; they need the whole vector
    return -np.sort(-posterior(observed), axis=1)[:, :3]


def posterior_and_label(observed: Observations) -> np.ndarray:
    odds = posterior(observed)
    return np.concatenate([odds, np.eye(odds.shape[1])[observed.labels]], axis=1)


class NeuralAttack(Attack):
    """Fit a classifier on the shadows' balanced sets, score the victim's, decide at the threshold that
    maximizes the shadows' held-out balanced accuracy."""

    trains_network: ClassVar[bool] = True
    fit_config: ClassVar[FitConfig] = FitConfig()

    @staticmethod
    def features(observed: Observations) -> np.ndarray:
        raise NotImplementedError

    def build(self, feature_shape: tuple[int, ...]) -> nn.Module:
        return membership_mlp(feature_shape[-1])

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        shadow = inputs.shadow_observations()
        train_features = self.features(shadow)
        fitted = fit_membership_classifier(
            lambda: self.build(train_features.shape[1:]), train_features, shadow.is_member, inputs.seed, self.fit_config
        )
        threshold, _ = best_threshold(fitted.held_out_scores, shadow.is_member[fitted.held_out])
        fitted_at = time.perf_counter()
        scores = membership_log_odds(fitted.model, self.features(inputs.victim_observations()))
        self.timings.update(fit=fitted_at - start, score=time.perf_counter() - fitted_at)
        return scores, threshold


@ATTACKS.register("nn")
class NN(NeuralAttack):
    features = staticmethod(posterior)


@ATTACKS.register("top3_nn")
class Top3NN(NeuralAttack):
    features = staticmethod(top3_posterior)


@ATTACKS.register("cl_nn")
class ClNN(NeuralAttack):
    features = staticmethod(posterior_and_label)
