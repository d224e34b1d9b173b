"""The attack interface and registry (SPEC section 9).

Attacks are black-box and adaptive: they see the deployed models' output log-probabilities (after any defense
output transform) and the true labels, are fitted on the shadows' balanced member/non-member sets, and
score the victim's balanced set. Every attack returns scores on the victim's targets (higher = member), on which
AUC and TPR at low FPR are computed, and its decision threshold (fitted on the shadows, or for LiRA and RMIA
without labels on the population), which gives the balanced accuracy, so metrics are computed identically for
all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..data import ModelSplit, StudySplit
from ..defenses.base import Defense
from ..errors import WememError, require
from ..metrics import attack_metrics, attack_uncertainty, roc_points
from ..registry import Registry


@dataclass(frozen=True)
class Targets:
    """A model's balanced member/non-member set: pool indices and membership."""

    indices: np.ndarray
    is_member: np.ndarray


def balanced_targets(split: ModelSplit, seed: int) -> Targets:
    """Members = the model's training set, non-members = its test set, the larger side subsampled.

    **Fix** (SPEC section 2): every attack is evaluated on a balanced set, so 50% is chance.
    """
    rng = np.random.default_rng(seed)
    members, non_members = split.train.numpy(), split.test.numpy()
    n = min(len(members), len(non_members))
    members = np.sort(rng.choice(members, n, replace=False))
    non_members = np.sort(rng.choice(non_members, n, replace=False))
    return Targets(np.concatenate([members, non_members]), np.r_[np.ones(n, bool), np.zeros(n, bool)])


def population_indices(split: StudySplit, victim_targets: Targets) -> np.ndarray:
    """RMIA's reference population: the split's held-out slice of E (SPEC 9).

    By construction (:func:`wemem.data.make_study_split`) no model trains on it, selects checkpoints on it (dev)
    or is attacked on it (test); this checks that, so a hand-built or stale split cannot leak into it.
    """
    population = split.population.numpy()
    used = [victim_targets.indices] + [part.numpy() for _, s in split.models() for part in (s.train, s.dev, s.test)]
    require(
        not np.isin(population, np.concatenate(used)).any(),
        "the split's RMIA population overlaps a model's train, dev or test set; rebuild the split with "
        "wemem.data.make_study_split (delete the study's cache directory)",
    )
    return population


# a deployed model as an attacker queries it: inputs [n, ...] -> output probabilities [n, C]
DeployedProbabilities = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Observations:
    """Outputs of one or more models on their targets, row-aligned; sensitivity only when it was computed."""

    log_probs: np.ndarray
    labels: np.ndarray
    is_member: np.ndarray
    sensitivity: np.ndarray | None = None


@dataclass
class AttackInputs:
    """Everything an adaptive black-box attacker observes. Per-model arrays cover the whole pool [n_pool, C]."""

    labels: np.ndarray
    victim_log_probs: np.ndarray
    shadow_log_probs: list[np.ndarray]
    victim_targets: Targets
    shadow_targets: list[Targets]
    seed: int = 7
    # output sensitivities (SAMIA), present when a requested attack declares ``needs_sensitivity``
    victim_sensitivity: np.ndarray | None = None
    shadow_sensitivity: list[np.ndarray] | None = None
    population: np.ndarray | None = None  # pool indices of reference non-members (RMIA), see population_indices
    # the pooled observations, built once and shared by every attack of a trial
    _pooled: dict[str, Observations] = field(default_factory=dict, init=False, repr=False, compare=False)

    def shadow_observations(self) -> Observations:
        """All shadows' balanced sets pooled (computed once per inputs)."""
        if "shadows" not in self._pooled:
            self._pooled["shadows"] = self._pool_shadows()
        return self._pooled["shadows"]

    def _pool_shadows(self) -> Observations:
        sensitivities: Sequence[np.ndarray | None] = self.shadow_sensitivity or (None,) * len(self.shadow_targets)
        parts = [self._observe(lp, s, t) for lp, s, t in zip(self.shadow_log_probs, sensitivities, self.shadow_targets)]
        return Observations(
            np.concatenate([p.log_probs for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.is_member for p in parts]),
            None if self.shadow_sensitivity is None else np.concatenate([p.sensitivity for p in parts]),
        )

    def victim_observations(self) -> Observations:
        return self._observe(self.victim_log_probs, self.victim_sensitivity, self.victim_targets)

    def _observe(self, log_probs: np.ndarray, sensitivity: np.ndarray | None, targets: Targets) -> Observations:
        rows = targets.indices
        return Observations(
            log_probs[rows], self.labels[rows], targets.is_member, None if sensitivity is None else sensitivity[rows]
        )


class Attack:
    name: ClassVar[str]  # the registry name, set by ATTACKS.register
    # True when the attack reads output sensitivities; the pipeline then computes them while pruning, with
    # the attack's :meth:`sensitivity`
    needs_sensitivity: ClassVar[bool] = False
    # True when the attack trains a network of its own (the NN family, SAMIA): the pipeline runs it as a job of
    # its own, while the closed-form attacks (thresholds, LiRA, RMIA) take milliseconds and share one
    trains_network: ClassVar[bool] = False
    # True for the threshold attacks: no model training, no shadow statistics beyond one threshold per class
    cheap: ClassVar[bool] = False
    # the fewest shadow models the attack can be fitted with; checked before any work starts
    min_shadows: ClassVar[int] = 1

    def __init__(self) -> None:
        # parts of the attack's wall time worth reporting separately (e.g. "fit" and "score" of a trained attack)
        self.timings: dict[str, float] = {}

    def decision_scores(self, inputs: AttackInputs) -> tuple[np.ndarray, float | np.ndarray]:
        """Scores of the victim's targets (higher = member) and the decision threshold: one value, or one per
        target (the threshold of its class); a target is called a member when its score reaches it."""
        raise NotImplementedError

    @classmethod
    def sensitivity(cls, deployed: DeployedProbabilities, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Output sensitivities [n, C] of the deployed model on ``x``, for an attack that declares
        ``needs_sensitivity``; ``deployed`` answers a batch of inputs with its output probabilities, the only
        access a black-box attacker has (a module in memory, or a shipped file through its runtime)."""
        raise NotImplementedError(f"attack {cls.name!r} reads no output sensitivities")


ATTACKS: Registry[type[Attack]] = Registry("attack", group="wemem.attacks")


def timed_attack(
    name: str, inputs: AttackInputs, uncertainty: bool = True, scores: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, object], dict[str, float]]:
    """An attack's metrics on the victim's targets, and its wall seconds (``total`` and the attack's own parts).

    The four float metrics of :func:`wemem.metrics.attack_metrics` (what objectives read), their ``intervals``,
    the ``targets`` counts and the ``epsilon_lower_bound`` (:func:`wemem.metrics.attack_uncertainty`), and ``roc``
    points; all plain JSON, stored with the trial. ``uncertainty=False`` leaves out the intervals and the bound
    (a thousand bootstrap resamples) where nobody reads them: per-round objectives, further target draws.
    ``scores``, when given, receives the attack's per-target scores (row-aligned with ``inputs.victim_targets``):
    they are arrays, kept out of the JSON metrics so that nothing stores them unasked."""
    start = time.perf_counter()
    attack = ATTACKS.get(name)()
    target_scores, threshold = attack.decision_scores(inputs)
    is_member = inputs.victim_targets.is_member
    metrics: dict[str, object] = {**attack_metrics(target_scores, is_member, threshold)}
    if uncertainty:
        metrics.update(attack_uncertainty(target_scores, is_member, threshold))
    metrics["roc"] = roc_points(target_scores, is_member)
    if scores is not None:
        scores[name] = np.asarray(target_scores, dtype=float)
    return metrics, {**attack.timings, "total": time.perf_counter() - start}


def run_attack(name: str, inputs: AttackInputs) -> dict[str, object]:
    return timed_attack(name, inputs)[0]


def run_attacks_timed(
    names: list[str], inputs: AttackInputs, uncertainty: bool = True, scores: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, float]]]:
    """Every named attack's metrics and timings (see :func:`timed_attack`, also for ``scores``), keyed by attack
    name."""
    runs = {name: timed_attack(name, inputs, uncertainty, scores) for name in names}
    return {name: run[0] for name, run in runs.items()}, {name: run[1] for name, run in runs.items()}


def run_attacks(names: list[str], inputs: AttackInputs, uncertainty: bool = True) -> dict[str, dict[str, object]]:
    return run_attacks_timed(names, inputs, uncertainty)[0]


def needs_sensitivity(names: list[str]) -> bool:
    """Whether any of the named attacks reads output sensitivities (unknown names raise a WememError)."""
    return any(ATTACKS.get(name).needs_sensitivity for name in names)


def deployed_probabilities(model: nn.Module, defense: Defense) -> DeployedProbabilities:
    """A module in memory as an attacker queries it: its output probabilities after the defense's transform."""
    model.eval()
    return lambda inputs: torch.exp(defense.output_log_probs(model, inputs, model(inputs)))


def probed_sensitivity(deployed: DeployedProbabilities, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The output sensitivities the attacks that declare ``needs_sensitivity`` read (SAMIA's), of a deployed
    model queried as a black box on ``x``: measured by the first registered attack (in name order) that
    declares it."""
    measuring = next(ATTACKS.get(name) for name in ATTACKS.names() if ATTACKS.get(name).needs_sensitivity)
    return measuring.sensitivity(deployed, x, seed)


def output_sensitivity(model: nn.Module, defense: Defense, x: torch.Tensor, seed: int) -> torch.Tensor:
    """:func:`probed_sensitivity` of a module in memory under its defense."""
    return probed_sensitivity(deployed_probabilities(model, defense), x, seed)


def parse_attack_names(text: str | None, default: list[str]) -> list[str]:
    """An attack list as the command line takes it: comma-separated names, ``all`` for every registered attack,
    None for ``default``. Unknown names raise a WememError naming the choices; repeats count once."""
    if text is None:
        return list(default)
    names = ATTACKS.names() if text.strip() == "all" else [name.strip() for name in text.split(",") if name.strip()]
    require(
        bool(names),
        f"no attack named in {text!r}; give comma-separated names or 'all' (choose from {', '.join(ATTACKS.names())})",
    )
    for name in names:
        ATTACKS.check(name)
    return list(dict.fromkeys(names))


def runnable_attacks(shadows: int) -> list[str]:
    """The registered attacks an experiment with ``shadows`` shadow models can run, in name order."""
    return [name for name in ATTACKS.names() if ATTACKS.get(name).min_shadows <= shadows]


def check_attack_requirements(names: list[str], shadows: int) -> None:
    """Refuse, before anything trains, attacks the experiment cannot run, naming those it can (unknown names
    raise too)."""
    short = [name for name in names if ATTACKS.get(name).min_shadows > shadows]
    if not short:
        return
    needs = "; ".join(f"attack {name!r} needs at least {ATTACKS.get(name).min_shadows} shadow models" for name in short)
    runnable = ",".join(runnable_attacks(shadows))
    raise WememError(
        f"{needs} (got {shadows}); with {shadows} shadow model(s) these attacks can run: {runnable} "
        f"(--attacks {runnable}). Drop {', '.join(map(repr, short))}, or raise the number of shadows "
        "(--shadows, or data.shadows in a study file)"
    )
