"""Attacks by registry name. Importing this package registers every built-in attack."""

from .base import ATTACKS, Attack, AttackInputs, Targets, balanced_targets, run_attack, run_attacks
from . import threshold as _threshold  # noqa: F401  (registers conf, entr, mentr, hconf)

__all__ = ["ATTACKS", "Attack", "AttackInputs", "Targets", "balanced_targets", "run_attack", "run_attacks"]
