"""The statistics of a confirmation: means and t-intervals over seeds, the paired differences from the
reference, the accuracy-constraint and leakage-cap verdicts, and reusing per-seed results already known."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from wemem.defenses import Setting

from ._candidates import Candidate, Evaluate
from ._confirmation import (
    REFERENCE,
    TUNED,
    Comparison,
    Confirmation,
    ConfirmedSetting,
    Constraint,
    Interval,
    LeakageCap,
    Paired,
    SeedResult,
)

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and two-sided t-interval of the mean over seeds (the seeds are independent replications)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan)
    from scipy import stats  # here: every wemem command imports this module, and scipy.stats takes a second

    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half)


def paired(rows: Sequence[SeedResult], base: Sequence[SeedResult]) -> Paired:
    """``rows`` minus ``base``, seed by seed (both in the confirmation's seed order)."""
    return Paired(
        t_interval([a.privacy - b.privacy for a, b in zip(rows, base)]),
        t_interval([a.utility - b.utility for a, b in zip(rows, base)]),
    )


def summarize(
    candidates_: list[Candidate],
    seeds: list[int],
    results: dict[tuple[str, int], SeedResult],
    delta: float | None,
    cap: LeakageCap | None = None,
) -> Confirmation:
    """Per-candidate means and intervals, and each setting's difference from the reference paired by seed; each
    tuned setting's difference from the comparison (the paper's default or a named setting) paired by seed too.

    A setting's accuracy constraint is judged on the paired difference: it holds when the interval of
    (U - U_ref) lies above -delta, and is "uncertain" when the interval straddles it. A leakage cap is judged on
    the setting's own leakage interval over the seeds (:meth:`LeakageCap.verdict`): the cap is on the leakage
    itself, not on its difference from the undefended model.
    """
    ref = [results[(REFERENCE, s)] for s in seeds]
    comparison = next((c for c in candidates_ if c.is_comparison), None)
    base = None if comparison is None else [results[(comparison.label, s)] for s in seeds]

    def confirmed(candidate: Candidate) -> ConfirmedSetting:
        rows = [results[(candidate.label, s)] for s in seeds]
        vs_reference = None if candidate.is_reference else paired(rows, ref)
        privacy = t_interval([r.privacy for r in rows])
        return ConfirmedSetting(
            candidate.label,
            candidate.role,
            candidate.defense,
            candidate.settings,
            tuple(zip(seeds, rows)),
            t_interval([r.utility for r in rows]),
            privacy,
            candidate.trial_number,
            candidate.reported,
            vs_reference,
            None if vs_reference is None or delta is None else constraint_verdict(vs_reference.utility, delta),
            paired(rows, base) if base is not None and candidate.role == TUNED else None,
            None if cap is None else cap.verdict(privacy),
            candidate.pruning,
        )

    return Confirmation(
        tuple(seeds),
        LEVEL,
        delta,
        tuple(map(confirmed, candidates_)),
        None
        if comparison is None
        else Comparison(comparison.label, comparison.role, comparison.defense, comparison.settings),
        cap=cap,
    )


def constraint_verdict(utility_difference: Interval, delta: float) -> Constraint:
    if utility_difference.low >= -delta:
        return "holds"
    if utility_difference.high < -delta:
        return "violated"
    return "uncertain"


def points(ci: Interval, label: str = "95% CI ") -> str:
    """A difference and its interval in points (x100): ``-1.6 points [95% CI -2.9, -0.3]``."""
    return f"{100 * ci.mean:+.1f} points [{label}{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]"


def comparison_verdict(confirmation: Confirmation) -> str | None:
    """The answer to "did tuning beat the paper's default, and by how much?": the best tuned setting's leakage
    minus the comparison's, paired by seed. A gain is claimed only when the interval excludes 0; otherwise the
    comparison is the setting to use (it needs no search to reproduce). None: nothing to compare with."""
    comparison = confirmation.comparison
    if comparison is None:
        return None
    named = comparison_name(comparison)
    tuned = next((c for c in confirmation.candidates if c.vs_comparison is not None), None)
    if tuned is None or tuned.vs_comparison is None:
        return f"only {named} was evaluated: no tuned setting to compare with it"
    p, u = tuned.vs_comparison.privacy, tuned.vs_comparison.utility
    seeds = f"{tuned.label} vs it on {len(confirmation.seeds)} fresh seeds, paired"
    if p.below_zero:
        gain = p.negated()
        return (
            f"tuning gained {100 * gain.mean:.1f} points of leakage [95% CI {100 * gain.low:.1f}, "
            f"{100 * gain.high:.1f}] over {named} ({seeds}; accuracy {points(u, '')})"
        )
    use = "the default" if comparison.is_default else "the comparison setting"
    return (
        f"tuning is no better than {named} (leakage {points(p)}, accuracy {points(u, '')}; {seeds}): "
        f"{use} is the setting to use"
    )


def cap_verdict(confirmation: Confirmation) -> str | None:
    """The answer to "what is the most accurate setting whose leakage stays under the cap?": the most accurate
    confirmed setting whose leakage interval over the fresh seeds lies at or below the cap, or that none does (and
    why, setting by setting). None: the study has no cap."""
    cap = confirmation.cap
    if cap is None:
        return None
    level, seeds = f"{confirmation.level:.0%}", len(confirmation.seeds)
    best = confirmation.best
    if best is not None:
        return (
            f"the most accurate confirmed setting whose leakage keeps the cap {cap.max_leakage:g} is {best.label} "
            f"({best.defense}): accuracy {best.utility.mean:.4f} [{level} CI {best.utility.low:.4f}, "
            f"{best.utility.high:.4f}], leakage {best.privacy.mean:.4f} [{level} CI {best.privacy.low:.4f}, "
            f"{best.privacy.high:.4f}] on {seeds} fresh seeds"
        )
    judged = [c for c in confirmation.candidates if c.vs_reference is not None]
    return f"no confirmed setting keeps the cap {cap.max_leakage:g} on {seeds} fresh seeds: " + (
        "; ".join(
            f"{c.label} {c.leakage_cap} (leakage {c.privacy.mean:.4f} [{level} CI {c.privacy.low:.4f}, "
            f"{c.privacy.high:.4f}])"
            for c in judged
        )
        or "no tuned setting was evaluated"
    )


def verdict(confirmation: Confirmation) -> str | None:
    """The closing sentences a confirmation stores: the cap's answer (a leakage_cap study), then whether tuning
    beat the comparison. None: neither applies."""
    versus = comparison_verdict(confirmation) if confirmation.cap is None else cap_comparison_verdict(confirmation)
    return "; ".join(s for s in (cap_verdict(confirmation), versus) if s) or None


def comparison_name(comparison: Comparison) -> str:
    if comparison.is_default:
        return f"the paper's default ({comparison.label}, {comparison.defense})"
    return f"the comparison setting ({comparison.defense})"


def cap_comparison_verdict(confirmation: Confirmation) -> str | None:
    """Under a leakage cap "did tuning beat the default?" asks about accuracy among the settings that keep the cap:
    the most accurate one that keeps it against the comparison, paired by seed. None: nothing to compare with, or
    no setting keeps the cap (:func:`cap_verdict` says so)."""
    comparison, best = confirmation.comparison, confirmation.best
    if comparison is None or best is None:
        return None
    named = comparison_name(comparison)
    use = "the default" if comparison.is_default else "the comparison setting"
    if best.vs_comparison is None:  # the most accurate setting that keeps the cap is the comparison itself
        return f"{named} is the most accurate setting that keeps the cap: {use} is the setting to use"
    entry = next((c for c in confirmation.candidates if c.role == comparison.role), None)
    u = best.vs_comparison.utility
    seeds = f"{best.label} vs it on {len(confirmation.seeds)} fresh seeds, paired"
    if entry is not None and entry.leakage_cap != "keeps the cap":
        broken = (
            "breaks the cap"
            if entry.leakage_cap == "breaks the cap"
            else "may break the cap (its interval straddles it)"
        )
        return (
            f"{named} {broken} on the fresh seeds while {best.label} keeps it (accuracy {points(u, '')} vs it; "
            f"{seeds}): {best.label} is the setting to use"
        )
    if u.above_zero:
        return f"tuning gained {points(u)} of accuracy over {named}, both keeping the cap ({seeds})"
    return (
        f"tuning is no more accurate than {named}, which keeps the cap too (accuracy {points(u)}; {seeds}): {use} "
        "is the setting to use"
    )


def setting_key(defense: str, settings: Mapping[str, Any], seed: int) -> str:
    """One evaluation's identity: the setting's (:meth:`wemem.defenses.Setting.key`) on one seed."""
    return f"{Setting.recorded(defense, settings).key()}|{seed}"


def known_results(confirmation: Confirmation | None) -> dict[str, SeedResult]:
    """Per-seed results of an earlier confirmation, by (setting, seed): a new one reruns only what is missing."""
    return {
        setting_key(entry.defense, entry.settings, seed): result
        for entry in (confirmation.candidates if confirmation is not None else ())
        for seed, result in entry.per_seed
    }


def confirm_with(
    candidates_: list[Candidate],
    seeds: list[int],
    evaluate: Evaluate,
    delta: float | None,
    known: dict[str, SeedResult] | None = None,
    record: Callable[[str, SeedResult], None] | None = None,
    cap: LeakageCap | None = None,
) -> Confirmation:
    """Evaluate every candidate on every seed not already ``known`` (one batch, so an evaluator can run them
    all in parallel); ``record(key, result)`` is told each result as it arrives."""
    known = dict(known or {})
    key = lambda c, s: setting_key(c.defense, c.settings, s)  # noqa: E731
    jobs = [(c, s) for s in seeds for c in candidates_ if key(c, s) not in known]
    for i, result in evaluate(jobs) if jobs else []:
        known[key(*jobs[i])] = result
        if record is not None:
            record(key(*jobs[i]), result)
    results = {(c.label, s): known[key(c, s)] for s in seeds for c in candidates_}
    return summarize(candidates_, seeds, results, delta, cap)
