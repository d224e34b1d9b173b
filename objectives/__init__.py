"""objectives: one defense setting -> numbers. Runs the wemem pipeline for a trial and computes the joint
privacy-utility objective (SPEC section 10). Knows nothing of Optuna storage or Ray."""

from ._leakage import PRIVACY_METRICS, PrivacyMetric, leakage
from ._objective import CONSTRAINT_NAMES, DIRECTIONS, AccuracyReference, Mode, ObjectiveConfig, ObjectiveValue, score
from ._trial import CHEAP_ATTACKS, Reference, RoundHooks, TrialAttrs, TrialOutcome, TrialSpec, evaluate_trial, reference

__all__ = [
    "PRIVACY_METRICS",
    "PrivacyMetric",
    "leakage",
    "CONSTRAINT_NAMES",
    "DIRECTIONS",
    "AccuracyReference",
    "Mode",
    "ObjectiveConfig",
    "ObjectiveValue",
    "score",
    "CHEAP_ATTACKS",
    "Reference",
    "RoundHooks",
    "TrialAttrs",
    "TrialSpec",
    "TrialOutcome",
    "evaluate_trial",
    "reference",
]
