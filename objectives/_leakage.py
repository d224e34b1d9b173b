"""Leakage P of a trial: the strongest attack under a chosen metric (default: balanced accuracy)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Literal, get_args

PrivacyMetric = Literal["balanced_accuracy", "auc", "tpr_at_1%_fpr", "tpr_at_0.1%_fpr"]
PRIVACY_METRICS: tuple[str, ...] = get_args(PrivacyMetric)


def figure(metrics: Mapping[str, object], metric: str) -> float:
    """One attack's ``metric`` (stored metrics are plain JSON: a number is checked to be one)."""
    value = metrics[metric]
    if not isinstance(value, numbers.Real):  # numpy's scalars too
        raise ValueError(f"the attack's {metric} is not a number: {value!r}")
    return float(value)


def leakage(
    attacks: Mapping[str, Mapping[str, object]], metric: str = "balanced_accuracy", among: list[str] | None = None
) -> tuple[float, str]:
    """(largest ``metric`` over the attacks, the attack that reached it). NaN metrics are ignored."""
    if metric not in PRIVACY_METRICS:
        raise ValueError(f"unknown privacy metric {metric!r}; choose one of {', '.join(PRIVACY_METRICS)}")
    names = among if among is not None else list(attacks)
    figures = [(figure(attacks[n], metric), n) for n in names]
    candidates = [(value, n) for value, n in figures if not math.isnan(value)]
    if not candidates:
        raise ValueError(f"no attack produced a finite {metric}")
    return max(candidates)
