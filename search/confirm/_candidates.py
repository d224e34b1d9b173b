"""What a confirmation evaluates: the candidates (the undefended reference and the study's best distinct
settings), the fresh seeds, and one evaluation's result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna

from objectives import TrialSpec
from wemem.config import MAX_SEED
from wemem.defenses import UNDEFENDED, Setting
from wemem.errors import require

from ..storage._records import PruningRecord, TrialMetrics, stored_pruning, stored_reference, trial_setting
from ..study import best_default, ranked_trials
from ._confirmation import DEFAULT, NAMED, PRIVACY, REFERENCE, TUNED, UTILITY, Reported, SeedResult


@dataclass(frozen=True)
class Candidate:
    """A setting to confirm: a study trial's defense and settings, or the undefended reference."""

    label: str  # "trial 21", "reference" or "comparison"
    defense: str
    settings: Mapping[str, Any]
    trial_number: int | None = None
    reported: Reported | None = None  # the study's own (selected) evaluation
    role: str = TUNED
    pruning: PruningRecord | None = None  # the pruning its trial evaluated at (None: the study file's)

    def __post_init__(self) -> None:
        if self.label == REFERENCE:  # the undefended reference is never a tuned setting, however it was built
            object.__setattr__(self, "role", REFERENCE)

    @property
    def is_reference(self) -> bool:
        return self.label == REFERENCE

    @property
    def is_comparison(self) -> bool:
        return self.role in (DEFAULT, NAMED)

    @property
    def setting(self) -> str:
        """The setting's identity (:meth:`wemem.defenses.Setting.key`), with the pruning it is evaluated at when
        its trial stored one: one defense setting at two sparsities is two candidates."""
        key = Setting.recorded(self.defense, self.settings).key()
        return (
            key
            if self.pruning is None
            else f"{key} at sparsity {self.pruning['sparsity']:g}, {self.pruning['steps']} steps"
        )

    def at_pruning(self, spec: TrialSpec) -> TrialSpec:
        """``spec`` pruned as this candidate is evaluated: its trial's pruning, or the spec's own."""
        return spec if self.pruning is None else replace(spec, pruning=replace(spec.pruning, **self.pruning))


# A confirmation's evaluator: (candidate, seed) jobs -> (job index, result) pairs as each finishes (the Ray one
# runs them in parallel), so that every finished evaluation is stored before the next one ends.
Evaluate = Callable[[list[tuple[Candidate, int]]], Iterable[tuple[int, SeedResult]]]

MAX_CONFIRM_SEEDS = 100  # each seed is a full replication: a hundred already gives a tight interval
SEED_STRIDE = 1000  # seed i of a confirmation is the study seed + SEED_STRIDE * i


def confirmation_seeds(study_seed: int, n: int) -> list[int]:
    """N reproducible seeds the search never used, far from the study seed and from small hand-picked ones.
    They never wrap past the largest seed (a wrapped seed could be the study's own or a small hand-picked one)."""
    require(
        2 <= n <= MAX_CONFIRM_SEEDS,
        f"--seeds takes 2 to {MAX_CONFIRM_SEEDS} fresh seeds: two for an interval, "
        f"at most {MAX_CONFIRM_SEEDS} (got {n})",
    )
    room = (MAX_SEED - study_seed) // SEED_STRIDE
    require(
        n <= room,
        f"--seeds {n}: this study's seed {study_seed} leaves room for {room} fresh seed(s) "
        f"(study seed + {SEED_STRIDE} x i must stay within the largest seed, {MAX_SEED}); "
        + (
            f"pass --seeds {room} or fewer"
            if room >= 2
            else "a study seeded this close to the largest seed cannot be confirmed; launch it again "
            "with a smaller [study] seed"
        ),
    )
    return [study_seed + SEED_STRIDE * (i + 1) for i in range(n)]


def _reported(trial: optuna.trial.FrozenTrial) -> Reported:
    metrics = TrialMetrics.of(trial)
    return Reported(metrics.utility, metrics.privacy, trial.values[0])


def trial_candidate(trial: optuna.trial.FrozenTrial, role: str = TUNED) -> Candidate:
    setting = trial_setting(trial)
    return Candidate(
        f"trial {trial.number}",
        setting.defense,
        setting.settings,
        trial.number,
        _reported(trial),
        role,
        stored_pruning(trial),
    )


def named_comparison(defense: str, settings: Mapping[str, Any]) -> Candidate:
    """A comparison setting the user names (``wemem confirm --compare``), for a study without the paper's defaults
    or to judge tuning against another setting."""
    return Candidate(NAMED, defense, dict(settings), role=NAMED)


def candidates(study: optuna.Study, k: int, comparison: Candidate | None = None) -> list[Candidate]:
    """The undefended reference first, then the K best settings, then what tuning is judged against: the named
    ``comparison``, else the best of the paper's defaults the study enqueued (none: no comparison).

    The comparison is evaluated once: when it is one of the K best it is marked so rather than added. When the
    K best are all the comparison's setting, the best other setting is added, so that there is always a tuned
    setting to judge (a study whose best trial is the paper's default says so, with the interval).
    """
    require(k >= 1, f"--top must be >= 1 (got {k})")
    ranked = ranked_trials(study)
    if comparison is None:
        default = best_default(study)
        comparison = None if default is None else trial_candidate(default, DEFAULT)
    chosen = [trial_candidate(t) for t in ranked[:k]]
    if comparison is not None:
        if any(c.setting == comparison.setting for c in chosen):
            chosen = [replace(c, role=comparison.role) if c.setting == comparison.setting else c for c in chosen]
        else:
            chosen.append(comparison)
        if not any(c.role == TUNED for c in chosen):
            others = (c for c in map(trial_candidate, ranked) if c.setting != comparison.setting)
            chosen += [c for c in [next(others, None)] if c is not None]
    ref = stored_reference(study)
    reported = None if ref is None else Reported(ref[UTILITY], ref[PRIVACY])
    return [Candidate(REFERENCE, UNDEFENDED, {}, None, reported)] + chosen
