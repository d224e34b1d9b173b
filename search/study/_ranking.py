"""Which trials count and which are best: the budget's trial count, the one feasibility rule, the best trial (or
the Pareto set) and the top-K distinct settings."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from wemem.errors import WememError, require

from ..storage._records import WARM_START_ATTR, has_setting, stored_pruning, trial_setting

ACTIVE_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
PAPER_DEFAULT = "reference"  # the WARM_START_ATTR of the paper's default settings the launcher enqueues (SPEC 7)


def active_count(study: optuna.Study) -> int:
    """Trials that use the study's budget: finished (COMPLETE, PRUNED) or running."""
    return len(study.get_trials(deepcopy=False, states=ACTIVE_STATES))


def running_numbers(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def is_feasible(trial: FrozenTrial) -> bool:
    """The accuracy constraint holds (a trial without constraints is feasible)."""
    return all(v <= 0 for v in trial.constraints.values())


def feasible_or_all(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The feasible trials; all of them when none is (the least infeasible then ranks first)."""
    return [t for t in trials if is_feasible(t)] or trials


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Single objective: the best feasible trial (or the least infeasible). Two or three objectives (pareto, with
    the sparsity as the third): the Pareto set."""
    if len(study.directions) > 1:
        return list(study.best_trials)
    trials = completed(study)
    if not trials:
        return []
    return [min(feasible_or_all(trials), key=lambda t: t.values[0])]


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every distinct setting's best trial, best first, as the study ranks them.

    One objective: feasible trials by value (all trials by value if none is feasible). Two objectives: the Pareto
    set, least leaky first. Repeated settings (re-queued or duplicated proposals) count once.
    """
    trials = [t for t in completed(study) if has_setting(t)]
    if not trials:
        raise WememError(f"study {study.study_name!r} has no completed trial to confirm; run or resume it first")
    if len(study.directions) > 1:
        ranked = sorted(study.best_trials, key=lambda t: t.values[0])
    else:
        ranked = sorted(feasible_or_all(trials), key=lambda t: t.values[0])
    chosen: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in ranked:
        key = f"{trial_setting(trial).key()} {stored_pruning(trial)}"  # one setting at two sparsities: two
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
    return chosen


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The K best distinct settings as the study ranks them (see :func:`ranked_trials`)."""
    require(k >= 1, f"--top must be >= 1 (got {k})")
    return ranked_trials(study)[:k]


def is_paper_default(trial: FrozenTrial) -> bool:
    """A trial of the paper's reference setting, enqueued by the launcher ([search] enqueue_reference)."""
    return trial.user_attrs.get(WARM_START_ATTR) == PAPER_DEFAULT


def best_default(study: optuna.Study) -> FrozenTrial | None:
    """The best trial of a paper's default setting (None: the study enqueued none, or none completed): feasible
    before infeasible, then by the first objective (the leakage in a pareto study)."""
    defaults = [t for t in completed(study) if is_paper_default(t) and has_setting(t)]
    return min(defaults, key=lambda t: (not is_feasible(t), t.values[0]), default=None)
