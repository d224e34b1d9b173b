"""Leakage P of a trial: the strongest attack under a chosen metric (default: balanced accuracy)."""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

PrivacyMetric = Literal["balanced_accuracy", "auc", "tpr_at_1%_fpr", "tpr_at_0.1%_fpr"]
PRIVACY_METRICS: tuple[str, ...] = get_args(PrivacyMetric)


def leakage(attacks: dict[str, dict[str, Any]], metric: str = "balanced_accuracy",
            among: list[str] | None = None) -> tuple[float, str]:
    """(largest ``metric`` over the attacks, the attack that reached it). NaN metrics are ignored."""
    if metric not in PRIVACY_METRICS:
        raise ValueError(f"unknown privacy metric {metric!r}; choose one of {', '.join(PRIVACY_METRICS)}")
    names = among if among is not None else list(attacks)
    candidates = [(float(attacks[n][metric]), n) for n in names if not math.isnan(float(attacks[n][metric]))]
    if not candidates:
        raise ValueError(f"no attack produced a finite {metric}")
    return max(candidates)
