"""What a confirmation evaluates: the candidates (the undefended reference and the study's best distinct
settings), the fresh seeds, and one evaluation's result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import optuna

from wemem.config import MAX_SEED
from wemem.errors import require

from ..storage.records import TrialMetrics, stored_reference, trial_setting
from ..study import top_trials

REFERENCE = "reference"


@dataclass(frozen=True)
class Candidate:
    """A setting to confirm: a study trial's defense and settings, or the undefended reference."""

    label: str  # "trial 21" or "reference"
    defense: str
    settings: dict[str, Any]
    trial_number: int | None = None
    reported: dict[str, float] | None = None  # the study's own (selected) evaluation

    @property
    def is_reference(self) -> bool:
        return self.trial_number is None


@dataclass(frozen=True)
class SeedResult:
    utility: float
    privacy: float
    strongest_attack: str


# A confirmation's evaluator: (candidate, seed) jobs -> (job index, result) pairs as each finishes (the Ray one
# runs them in parallel), so that every finished evaluation is stored before the next one ends.
Evaluate = Callable[[list[tuple[Candidate, int]]], Iterable[tuple[int, SeedResult]]]

def confirmation_seeds(study_seed: int, n: int) -> list[int]:
    """N reproducible seeds the search never used, far from the study seed and from small hand-picked ones."""
    require(n >= 2, f"--seeds must be >= 2 to give an interval (got {n})")
    return [(study_seed + 1000 * (i + 1)) % (MAX_SEED + 1) for i in range(n)]  # wraps only near the largest seed


def _reported(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    metrics = TrialMetrics.of(trial)
    return {"utility": metrics.utility, "privacy": metrics.privacy,
            "value": trial.values[0]}


def candidates(study: optuna.Study, k: int) -> list[Candidate]:
    """The undefended reference first, then the K best settings."""
    ref = stored_reference(study)
    reference = Candidate(REFERENCE, "none", {}, None,
                          None if ref is None else {"utility": ref["utility"], "privacy": ref["privacy"]})
    return [reference] + [Candidate(f"trial {t.number}", *trial_setting(t), t.number, _reported(t))
                          for t in top_trials(study, k)]
