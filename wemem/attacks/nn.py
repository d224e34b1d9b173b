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
cross-entropy needs no class weights; early stopping watches the held-out loss.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import best_threshold
from ..training import default_device
from .base import ATTACKS, Attack, AttackInputs, Observations


@dataclass(frozen=True)
class FitConfig:
    """How an attack classifier is trained: Adam, early stopping on a held-out part of the shadow data.

    Training stops after ``patience + 1`` epochs without a held-out loss improvement of at least
    ``min_improvement`` (nats), so a classifier whose loss only creeps towards zero stops early too. The bar is
    low because membership signals are weak: on a well-generalizing model the whole fit gains a few 1e-3 nats.
    Patience 2 rather than 5: over 5 seeds on Location-sized outputs SAMIA's metrics were the same either way
    (balanced accuracy 0.582 +- 0.006 vs 0.576 +- 0.015, AUC 0.597 vs 0.598) at 27 s instead of 47 s a fit; the
    held-out loss moves by noise of a few 1e-3 nats from epoch to epoch, so a longer wait mostly waits for noise
    (benchmarks/attack_seeds.py compares the two on digits).
    """

    max_epochs: int = 50
    patience: int = 2
    min_improvement: float = 1e-4
    batch_size: int = 128
    lr: float = 1e-3
    held_out_fraction: float = 0.2


def membership_mlp(in_features: int) -> nn.Module:
    widths = (in_features, 512, 256, 128)
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 2))


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators (module initialization and dropout use them) and restore them after."""
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
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
    n_held_out = max(1, int(round(n * fraction)))
    return order[n_held_out:], order[:n_held_out]


@torch.no_grad()
def mean_loss(model: nn.Module, features: torch.Tensor, targets: torch.Tensor, batch_size: int = 4096) -> float:
    model.eval()
    total = sum(F.cross_entropy(model(x), y, reduction="sum").item()
                for x, y in zip(torch.split(features, batch_size), torch.split(targets, batch_size)))
    return total / len(targets)


class HeldOutEarlyStopping:
    """Keep the lowest-held-out-loss weights; stop after ``patience + 1`` epochs without a real improvement."""

    def __init__(self, config: FitConfig):
        self.config = config
        self.best_loss, self.best_state, self.stale_epochs = float("inf"), None, 0

    def update(self, loss: float, model: nn.Module) -> bool:
        """Record an epoch's held-out loss; return True when training should stop."""
        if loss < self.best_loss:
            improved_enough = self.best_loss - loss >= self.config.min_improvement
            self.best_loss, self.best_state = loss, copy.deepcopy(model.state_dict())
            self.stale_epochs = 0 if improved_enough else self.stale_epochs + 1
        else:
            self.stale_epochs += 1
        return self.stale_epochs > self.config.patience


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                order: torch.Tensor, batch_size: int) -> None:
    model.train()
    for batch in torch.split(order, batch_size):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics, so a fitted classifier carries its own feature scaling."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fitted(cls, x: torch.Tensor) -> "Standardize":
        """Statistics per feature of the last axis (a token's channel for SAMIA); constant features stay put."""
        flat = x.reshape(-1, x.shape[-1])
        std = flat.std(dim=0)
        return cls(flat.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std)))


@dataclass
class FittedClassifier:
    """A trained membership classifier and the shadow rows it never trained on (for fitting the threshold)."""

    model: nn.Module
    held_out: np.ndarray


def fit_membership_classifier(build: Callable[[], nn.Module], features: np.ndarray, is_member: np.ndarray,
                              seed: int, config: FitConfig = FitConfig()) -> FittedClassifier:
    """Train a two-class member/non-member classifier on shadow observations (Adam, early stopping).

    The features are standardized with the training part's statistics by the model's first layer.
    """
    device = default_device()
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(is_member, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)
    train, held_out = (part.to(device) for part in held_out_split(len(y), config.held_out_fraction, generator))
    with seeded_torch(seed, device), one_thread():
        model = nn.Sequential(Standardize.fitted(x[train]), build()).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        stopper = HeldOutEarlyStopping(config)
        for _ in range(config.max_epochs):
            order = train[torch.randperm(len(train), generator=generator).to(device)]
            train_epoch(model, optimizer, x, y, order, config.batch_size)
            if stopper.update(mean_loss(model, x[held_out], y[held_out]), model):
                break
    model.load_state_dict(stopper.best_state)
    return FittedClassifier(model.eval(), held_out.cpu().numpy())


@torch.no_grad()
def membership_log_odds(model: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """logit(member) - logit(non-member): ranks like the member probability but never saturates, and the
    classifier's own decision is the threshold 0."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    with one_thread():
        logits = torch.cat([model(batch) for batch in torch.split(x, batch_size)])
    return (logits[:, 1] - logits[:, 0]).double().cpu().numpy()


# ------------------------------------------------------------------------------------------- features


LOG_ODDS_LIMIT = 50.0  # |log-odds| beyond this is float noise (p within 2e-22 of 0 or 1)


def log_odds(log_probs: np.ndarray) -> np.ndarray:
    """log(p_j / (1 - p_j)) for every class, computed from log-probabilities without cancellation.

    log(1 - p_j) is log1p(-p_j) where p_j <= 1/2; at most one class per row has p_j > 1/2, and there it is the
    log-sum of the other classes' probabilities, which stays exact when p_j rounds to 1.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_rest = np.log1p(-np.exp(np.minimum(log_probs, np.log(0.5))))
    rows, top = np.arange(len(log_probs)), log_probs.argmax(axis=1)
    others = log_probs.copy()
    others[rows, top] = -np.inf
    dominant = log_probs[rows, top] > np.log(0.5)
    log_rest[rows[dominant], top[dominant]] = np.logaddexp.reduce(others[dominant], axis=1)
    return np.clip(log_probs - log_rest, -LOG_ODDS_LIMIT, LOG_ODDS_LIMIT)


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

    @staticmethod
    def features(observed: Observations) -> np.ndarray:
        raise NotImplementedError

    def build(self, feature_shape: tuple[int, ...]) -> nn.Module:
        return membership_mlp(feature_shape[-1])

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        shadow = inputs.shadow_observations()
        train_features = self.features(shadow)
        fitted = fit_membership_classifier(lambda: self.build(train_features.shape[1:]), train_features,
                                           shadow.is_member, inputs.seed)
        held_out = fitted.held_out
        threshold, _ = best_threshold(membership_log_odds(fitted.model, train_features[held_out]),
                                      shadow.is_member[held_out])
        fitted_at = time.perf_counter()
        scores = membership_log_odds(fitted.model, self.features(inputs.victim_observations()))
        self.timings.update(fit=fitted_at - start, score=time.perf_counter() - fitted_at)
        return scores, threshold


@ATTACKS.register("nn")
class NN(NeuralAttack):
    name: ClassVar[str] = "nn"
    features = staticmethod(posterior)


@ATTACKS.register("top3_nn")
class Top3NN(NeuralAttack):
    name: ClassVar[str] = "top3_nn"
    features = staticmethod(top3_posterior)


@ATTACKS.register("cl_nn")
class ClNN(NeuralAttack):
    name: ClassVar[str] = "cl_nn"
    features = staticmethod(posterior_and_label)
