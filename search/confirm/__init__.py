"""Confirmation of a study's best settings on fresh seeds: the candidates and seeds (:mod:`._candidates`), the
confirmation as values (:mod:`._confirmation`), the statistics (:mod:`._statistics`), stored confirmations per
attack suite (:mod:`._suites`) and the per-seed work on Ray (:mod:`._run`)."""

from ._candidates import Candidate, Evaluate, candidates, confirmation_seeds
from ._confirmation import (
    REFERENCE,
    Comparison,
    Confirmation,
    ConfirmationStatus,
    ConfirmedSetting,
    Interval,
    Paired,
    Reported,
    SeedResult,
    Suite,
)
from ._run import confirm, evaluate_on_seed, ray_evaluator, seed_spec, seed_variation, seed_work
from ._statistics import LEVEL, confirm_with, constraint_verdict, known_results, setting_key, summarize, t_interval
from ._suites import (
    confirm_study,
    export_section,
    judge_sets,
    judged_by,
    judged_by_others,
    latest_confirmation,
    store_confirmation,
    stored_confirmations,
    suite_fields,
    suite_key,
)

__all__ = [
    "Candidate",
    "Comparison",
    "Confirmation",
    "ConfirmationStatus",
    "ConfirmedSetting",
    "Evaluate",
    "Interval",
    "LEVEL",
    "Paired",
    "REFERENCE",
    "Reported",
    "SeedResult",
    "Suite",
    "candidates",
    "confirm",
    "confirm_study",
    "confirm_with",
    "confirmation_seeds",
    "constraint_verdict",
    "evaluate_on_seed",
    "export_section",
    "judge_sets",
    "judged_by",
    "judged_by_others",
    "known_results",
    "latest_confirmation",
    "ray_evaluator",
    "seed_spec",
    "seed_variation",
    "seed_work",
    "setting_key",
    "store_confirmation",
    "stored_confirmations",
    "suite_fields",
    "suite_key",
    "summarize",
    "t_interval",
]
