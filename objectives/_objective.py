"""The joint privacy-utility objective of SPEC section 10, and the questions a study may ask instead.

- constrained (default): minimize P subject to U >= U_floor - delta, U_floor the undefended model's accuracy
  (``accuracy_reference``: pruned at the trial's sparsity, or dense). The constraint value
  c = (U_floor - delta) - U is recorded (feasible when c <= 0); an infeasible trial's value is 1 + c, worse than
  any feasible one (P <= 1), so even samplers that ignore constraints move away from it.
- leakage_cap: maximize U subject to P's upper bound P + z * se(P) <= tau (``max_leakage``, z =
  ``leakage_se_multiple``). The stored value is the test error 1 - U, minimized like every other single
  objective; the constraint value is c = P + z * se - tau and an infeasible trial's value is 1 + c, again worse
  than any feasible one (1 - U <= 1).
- weighted: minimize P - w * U.
- pareto: two objectives, minimize P and maximize U; with ``sparsity_objective`` a third, maximize the sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ._leakage import PRIVACY_METRICS, PrivacyMetric

Mode = Literal["constrained", "weighted", "pareto", "leakage_cap"]
AccuracyReference = Literal["pruned", "dense"]
# A new mode is one entry here, in ``Mode`` and in ``score``: the study file, storage, ranking, confirm and report
# read the mode's directions and constraint from this module.
DIRECTIONS: dict[str, list[str]] = {
    "constrained": ["minimize"],
    "weighted": ["minimize"],
    "pareto": ["minimize", "maximize"],
    "leakage_cap": ["minimize"],  # the test error 1 - U
}
assert set(DIRECTIONS) == set(get_args(Mode))
# Optuna's name of each mode's constraint (``trial.set_constraint``); a mode without one is not a key
CONSTRAINT_NAMES: dict[str, str] = {"constrained": "utility_drop", "leakage_cap": "leakage_over_cap"}
# one-sided 95% normal quantile: a trial is feasible when its leakage is below the cap with 95% confidence
DEFAULT_SE_MULTIPLE = 1.645


@dataclass(frozen=True)
class ObjectiveConfig:
    mode: Mode = "constrained"
    delta: float = 0.02
    weight: float = 1.0
    privacy_metric: PrivacyMetric = "balanced_accuracy"
    privacy_attacks: tuple[str, ...] | None = None  # the attacks P is the maximum over (None: all that ran)
    max_leakage: float | None = None  # leakage_cap's tau
    leakage_se_multiple: float = DEFAULT_SE_MULTIPLE  # leakage_cap's z
    accuracy_reference: AccuracyReference = "pruned"  # the undefended model the accuracy floor is stated against
    sparsity_objective: bool = False  # pareto: maximize the sparsity as a third objective

    def __post_init__(self) -> None:
        if self.mode not in DIRECTIONS:
            raise ValueError(f"unknown objective mode {self.mode!r}; choose one of {', '.join(DIRECTIONS)}")
        if self.privacy_metric not in PRIVACY_METRICS:
            raise ValueError(
                f"unknown privacy metric {self.privacy_metric!r}; choose one of {', '.join(PRIVACY_METRICS)}"
            )
        if not 0 <= self.delta <= 1:
            raise ValueError(f"delta must be in [0, 1], got {self.delta}")
        if (self.mode == "leakage_cap") != (self.max_leakage is not None):
            raise ValueError("max_leakage is leakage_cap's cap: give it exactly when mode is 'leakage_cap'")
        if self.max_leakage is not None and not 0 < self.max_leakage <= 1:
            raise ValueError(f"max_leakage must be in (0, 1], got {self.max_leakage}")
        if self.leakage_se_multiple < 0:
            raise ValueError(f"leakage_se_multiple must be >= 0, got {self.leakage_se_multiple}")
        if self.accuracy_reference not in get_args(AccuracyReference):
            raise ValueError(f"accuracy_reference must be 'pruned' or 'dense', got {self.accuracy_reference!r}")
        if self.sparsity_objective and self.mode != "pareto":
            raise ValueError("sparsity_objective is a third pareto objective: it needs mode 'pareto'")

    @property
    def directions(self) -> list[str]:
        return DIRECTIONS[self.mode] + (["maximize"] if self.sparsity_objective else [])

    @property
    def constraint_delta(self) -> float | None:
        """The accuracy drop the mode allows (its constraint), or None when it has no accuracy constraint."""
        return self.delta if self.mode == "constrained" else None

    @property
    def constraint_name(self) -> str | None:
        """The name the trial's constraint is stored under (None: the mode has no constraint)."""
        return CONSTRAINT_NAMES.get(self.mode)

    def floor_utility(self, pruned_utility: float, dense_utility: float | None) -> float:
        """The accuracy the floor is stated against: the undefended model pruned like the trial, or dense."""
        if self.accuracy_reference == "dense":
            if dense_utility is None:
                raise ValueError("accuracy_reference 'dense' needs the dense model's accuracy; none was recorded")
            return dense_utility
        return pruned_utility

    def leakage_bound(self, privacy: float, privacy_se: float) -> float:
        """leakage_cap's upper bound of a trial's leakage: P + z * se."""
        return privacy + self.leakage_se_multiple * privacy_se


@dataclass(frozen=True)
class ObjectiveValue:
    values: list[float]
    constraint: float | None  # <= 0 when feasible; None when the mode has no constraint

    @property
    def feasible(self) -> bool:
        return self.constraint is None or self.constraint <= 0


def score(
    privacy: float,
    utility: float,
    base_utility: float,
    config: ObjectiveConfig,
    privacy_se: float = 0.0,
    sparsity: float | None = None,
) -> ObjectiveValue:
    """A trial's objective. ``base_utility`` is the floor's reference accuracy (:meth:`ObjectiveConfig.floor_utility`),
    ``privacy_se`` the leakage's standard error (leakage_cap), ``sparsity`` the trial's (pareto with
    ``sparsity_objective``)."""
    if config.mode == "constrained":
        violation = (base_utility - config.delta) - utility
        return ObjectiveValue([privacy if violation <= 0 else 1.0 + violation], violation)
    if config.mode == "leakage_cap":
        assert config.max_leakage is not None  # __post_init__
        excess = config.leakage_bound(privacy, privacy_se) - config.max_leakage
        return ObjectiveValue([1.0 - utility if excess <= 0 else 1.0 + excess], excess)
    if config.mode == "weighted":
        return ObjectiveValue([privacy - config.weight * utility], None)
    if config.sparsity_objective:
        if sparsity is None:
            raise ValueError("a pareto study with sparsity_objective scores each trial's sparsity; none was given")
        return ObjectiveValue([privacy, utility, sparsity], None)
    return ObjectiveValue([privacy, utility], None)
