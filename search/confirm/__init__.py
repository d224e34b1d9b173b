"""Confirmation of a study's best settings on fresh seeds: the candidates and seeds (:mod:`.candidates`), the
statistics (:mod:`.statistics`), stored confirmations per attack suite (:mod:`.suites`) and the per-seed work on
Ray (:mod:`.run`)."""

from .candidates import REFERENCE, Candidate, Evaluate, SeedResult, candidates, confirmation_seeds
from .run import confirm, evaluate_on_seed, ray_evaluator, seed_spec, seed_variation, seed_work
from .statistics import LEVEL, confirm_with, constraint_verdict, known_results, setting_key, summarize, t_interval
from .suites import (confirm_study, export_section, judge_sets, judged_by, judged_by_others, store_confirmation,
                     stored_confirmations, suite_fields, suite_key)

__all__ = ["Candidate", "Evaluate", "LEVEL", "REFERENCE", "SeedResult", "candidates", "confirm", "confirm_study",
           "confirm_with", "confirmation_seeds", "constraint_verdict", "evaluate_on_seed", "export_section",
           "judge_sets", "judged_by", "judged_by_others", "known_results", "ray_evaluator", "seed_spec",
           "seed_variation", "seed_work",
           "setting_key", "store_confirmation", "stored_confirmations", "suite_fields", "suite_key", "summarize",
           "t_interval"]
