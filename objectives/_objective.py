"""The joint privacy-utility objective of SPEC section 10.

- constrained (default): minimize P subject to U >= U_base - delta. The constraint value
  c = (U_base - delta) - U is recorded (feasible when c <= 0); an infeasible trial's value is 1 + c, worse than
  any feasible one (P <= 1), so even samplers that ignore constraints move away from it.
- weighted: minimize P - w * U.
- pareto: two objectives, minimize P and maximize U.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ._leakage import PRIVACY_METRICS, PrivacyMetric

Mode = Literal["constrained", "weighted", "pareto"]
# A new mode is one entry here, in ``Mode`` and in ``score``: the study file, storage, ranking, confirm and report
# read the mode's directions and constraint from this module.
DIRECTIONS: dict[str, list[str]] = {
    "constrained": ["minimize"],
    "weighted": ["minimize"],
    "pareto": ["minimize", "maximize"],
}
assert set(DIRECTIONS) == set(get_args(Mode))


@dataclass(frozen=True)
class ObjectiveConfig:
    mode: Mode = "constrained"
    delta: float = 0.02
    weight: float = 1.0
    privacy_metric: PrivacyMetric = "balanced_accuracy"
    privacy_attacks: tuple[str, ...] | None = None  # the attacks P is the maximum over (None: all that ran)

    def __post_init__(self) -> None:
        if self.mode not in DIRECTIONS:
            raise ValueError(f"unknown objective mode {self.mode!r}; choose one of {', '.join(DIRECTIONS)}")
        if self.privacy_metric not in PRIVACY_METRICS:
            raise ValueError(
                f"unknown privacy metric {self.privacy_metric!r}; choose one of {', '.join(PRIVACY_METRICS)}"
            )
        if not 0 <= self.delta <= 1:
            raise ValueError(f"delta must be in [0, 1], got {self.delta}")

    @property
    def directions(self) -> list[str]:
        return DIRECTIONS[self.mode]

    @property
    def constraint_delta(self) -> float | None:
        """The accuracy drop the mode allows (its constraint), or None when it has no constraint."""
        return self.delta if self.mode == "constrained" else None


@dataclass(frozen=True)
class ObjectiveValue:
    values: list[float]
    constraint: float | None  # <= 0 when feasible; None when the mode has no constraint

    @property
    def feasible(self) -> bool:
        return self.constraint is None or self.constraint <= 0


def score(privacy: float, utility: float, base_utility: float, config: ObjectiveConfig) -> ObjectiveValue:
    if config.mode == "constrained":
        violation = (base_utility - config.delta) - utility
        return ObjectiveValue([privacy if violation <= 0 else 1.0 + violation], violation)
    if config.mode == "weighted":
        return ObjectiveValue([privacy - config.weight * utility], None)
    return ObjectiveValue([privacy, utility], None)
