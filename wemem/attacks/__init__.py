"""Attacks by registry name. Importing this package registers every built-in attack."""

from . import lira as _lira  # noqa: F401  (registers lira)
from . import nn as _nn  # noqa: F401  (registers nn, top3_nn, cl_nn)
from . import rmia as _rmia  # noqa: F401  (registers rmia)
from . import samia as _samia  # noqa: F401  (registers samia)
from . import threshold as _threshold  # noqa: F401  (registers conf, entr, mentr, hconf)
from .base import (
    ATTACKS,
    Attack,
    AttackInputs,
    Observations,
    Targets,
    balanced_targets,
    check_attack_requirements,
    needs_sensitivity,
    output_sensitivity,
    parse_attack_names,
    population_indices,
    run_attack,
    run_attacks,
    run_attacks_timed,
    runnable_attacks,
    timed_attack,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackInputs",
    "Observations",
    "Targets",
    "balanced_targets",
    "check_attack_requirements",
    "needs_sensitivity",
    "output_sensitivity",
    "parse_attack_names",
    "population_indices",
    "run_attack",
    "run_attacks",
    "run_attacks_timed",
    "runnable_attacks",
    "timed_attack",
]
