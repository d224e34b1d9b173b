"""Racing: a trial scored over several (fine-tuning, target draw) instances reports them one at a time, and
Optuna's pruner (``[search] racing``, built by :func:`~._lifecycle.make_pruner`) may stop it once it is clearly
worse than the best trial; what a stopped trial stores as the evidence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

RACING_ATTR = "racing"  # a trial that racing stopped: its RacingEvidence


class RacingEvidence(TypedDict):
    """What a trial stopped by racing stores (user attribute :data:`RACING_ATTR`)."""

    pruner: str
    instances: list[int]  # the instances it ran, r * target_draws + d
    values: list[float]  # each instance's objective
    best_trial: NotRequired[int]
    p_value: NotRequired[float]
    # racing_rounds: how many of the study's first instances judge the first fine-tuning's pruning rounds
    round_instances: NotRequired[int]


def racing_value(racing: str, values: Sequence[float]) -> float:
    """What a racing trial reports to the pruner after the instances ``values`` (in instance order): Wilcoxon pairs
    each instance's own value with the best trial's on that instance; successive halving compares trials at one
    step, so it needs an estimate of the final value there, the running mean (an instance alone is mostly noise)."""
    return values[-1] if racing == "wilcoxon" else float(np.mean(values))


def racing_judges(instance: int, instances: int) -> bool:
    """Whether the pruner is asked after ``instance``: not after the last, where stopping would save nothing and
    throw a whole evaluation away."""
    return instance < instances - 1


def wilcoxon_p_value(study: optuna.Study, trial: FrozenTrial) -> tuple[int, float] | None:
    """The best trial and the one-sided p-value that ``trial`` is worse than it on their shared instances, the
    test :class:`optuna.pruners.WilcoxonPruner` decides by (None: no best trial or fewer than two shared)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    shared = sorted(set(trial.intermediate_values) & set(best.intermediate_values))
    if len(shared) < 2:
        return None
    import scipy.stats  # here: the module is imported by every trial's Ray actor, which never needs it

    differences = [trial.intermediate_values[i] - best.intermediate_values[i] for i in shared]
    worse = "less" if study.direction == StudyDirection.MAXIMIZE else "greater"
    return best.number, float(scipy.stats.wilcoxon(differences, alternative=worse, zero_method="zsplit").pvalue)


def racing_evidence(
    study: optuna.Study, trial: FrozenTrial, racing: str, values: Sequence[float], round_instances: int = 0
) -> RacingEvidence:
    """Why racing stopped ``trial`` after the instance ``values`` (in instance order): the instances it ran, their
    values, the pruner, how many of the study's instances are pruning rounds (``racing_rounds``) and, for
    Wilcoxon, the best trial it was compared with and the p-value."""
    evidence = RacingEvidence(pruner=racing, instances=list(range(len(values))), values=list(values))
    if round_instances:
        evidence["round_instances"] = round_instances
    tested = wilcoxon_p_value(study, trial) if racing == "wilcoxon" else None
    if tested is not None:
        evidence["best_trial"], evidence["p_value"] = tested
    return evidence
