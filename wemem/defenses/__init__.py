"""Defenses by registry name. Importing this package registers every built-in defense."""

from . import baselines as _baselines  # noqa: F401  (registers ppb, advreg, dpsgd, relaxloss, hamp)
from . import wemem as _wemem  # noqa: F401  (registers rsw, rmr, swmr)
from .base import DEFENSES, UNDEFENDED, Defense, DefenseContext, Setting, make_defense

__all__ = ["DEFENSES", "UNDEFENDED", "Defense", "DefenseContext", "Setting", "make_defense"]
