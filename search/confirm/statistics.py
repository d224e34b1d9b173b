"""The statistics of a confirmation: means and t-intervals over seeds, the paired differences from the
reference, the accuracy-constraint verdict, and reusing per-seed results already known."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from wemem.defenses import Setting

from .candidates import REFERENCE, TUNED, Candidate, Evaluate, SeedResult

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """Mean and two-sided t-interval of the mean over seeds (the seeds are independent replications)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan}
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def summarize(candidates_: list[Candidate], seeds: list[int], results: dict[tuple[str, int], SeedResult],
              delta: float | None) -> dict[str, Any]:
    """Per-candidate means and intervals, and each setting's difference from the reference paired by seed; each
    tuned setting's difference from the comparison (the paper's default or a named setting) paired by seed too.

    A setting's accuracy constraint is judged on the paired difference: it holds when the interval of
    (U - U_ref) lies above -delta, and is "uncertain" when the interval straddles it.
    """
    paired = lambda a, b: t_interval([x - y for x, y in zip(a, b)])  # noqa: E731
    ref = [results[(REFERENCE, s)] for s in seeds]
    comparison = next((c for c in candidates_ if c.is_comparison), None)
    base = None if comparison is None else [results[(comparison.label, s)] for s in seeds]
    entries = []
    for candidate in candidates_:
        rows = [results[(candidate.label, s)] for s in seeds]
        utility = [r.utility for r in rows]
        privacy = [r.privacy for r in rows]
        entry: dict[str, Any] = {
            "label": candidate.label, "role": candidate.role, "defense": candidate.defense,
            "settings": candidate.settings,
            "per_seed": [{"seed": s, "utility": r.utility, "privacy": r.privacy, "strongest_attack": r.strongest_attack}
                         for s, r in zip(seeds, rows)],
            "utility": t_interval(utility), "privacy": t_interval(privacy),
        }
        if candidate.trial_number is not None:
            entry["trial_number"] = candidate.trial_number
        if candidate.reported is not None:
            entry["reported"] = candidate.reported
        if not candidate.is_reference:
            entry["privacy_difference"] = paired(privacy, [r.privacy for r in ref])
            entry["utility_difference"] = paired(utility, [r.utility for r in ref])
            if delta is not None:
                entry["accuracy_constraint"] = constraint_verdict(entry["utility_difference"], delta)
        if base is not None and candidate.role == TUNED:
            entry["vs_comparison"] = {"privacy": paired(privacy, [r.privacy for r in base]),
                                      "utility": paired(utility, [r.utility for r in base])}
        entries.append(entry)
    summary: dict[str, Any] = {"seeds": list(seeds), "level": LEVEL, "delta": delta, "candidates": entries}
    if comparison is not None:
        summary["comparison"] = {"label": comparison.label, "role": comparison.role, "defense": comparison.defense,
                                 "settings": comparison.settings}
    return summary


def constraint_verdict(utility_difference: dict[str, float], delta: float) -> str:
    if utility_difference["low"] >= -delta:
        return "holds"
    if utility_difference["high"] < -delta:
        return "violated"
    return "uncertain"


def points(ci: dict[str, float], label: str = "95% CI ") -> str:
    """A difference and its interval in points (x100): ``-1.6 points [95% CI -2.9, -0.3]``."""
    return f"{100 * ci['mean']:+.1f} points [{label}{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"


def comparison_verdict(summary: dict[str, Any]) -> str | None:
    """The answer to "did tuning beat the paper's default, and by how much?": the best tuned setting's leakage
    minus the comparison's, paired by seed. A gain is claimed only when the interval excludes 0; otherwise the
    comparison is the setting to use (it needs no search to reproduce). None: nothing to compare with."""
    comparison = summary.get("comparison")
    if comparison is None:
        return None
    default = comparison["role"] == "default"
    named = (f"the paper's default ({comparison['label']}, {comparison['defense']})" if default
             else f"the comparison setting ({comparison['defense']})")
    tuned = next((e for e in summary["candidates"] if "vs_comparison" in e), None)
    if tuned is None:
        return f"only {named} was evaluated: no tuned setting to compare with it"
    p, u = tuned["vs_comparison"]["privacy"], tuned["vs_comparison"]["utility"]
    seeds = f"{tuned['label']} vs it on {len(summary['seeds'])} fresh seeds, paired"
    if p["high"] < 0:
        gain = {"mean": -p["mean"], "low": -p["high"], "high": -p["low"]}
        return (f"tuning gained {100 * gain['mean']:.1f} points of leakage [95% CI {100 * gain['low']:.1f}, "
                f"{100 * gain['high']:.1f}] over {named} ({seeds}; accuracy {points(u, '')})")
    use = "the default" if default else "the comparison setting"
    return (f"tuning is no better than {named} (leakage {points(p)}, accuracy {points(u, '')}; {seeds}): "
            f"{use} is the setting to use")


def setting_key(defense: str, settings: Mapping[str, Any], seed: int) -> str:
    """One evaluation's identity: the setting's (:meth:`wemem.defenses.Setting.key`) on one seed."""
    return f"{Setting.recorded(defense, settings).key()}|{seed}"


def known_results(summary: dict[str, Any] | None) -> dict[str, SeedResult]:
    """Per-seed results of an earlier confirmation, by (setting, seed): a new one reruns only what is missing."""
    known = {}
    for entry in (summary or {}).get("candidates", []):
        for row in entry["per_seed"]:
            known[setting_key(entry["defense"], entry["settings"], row["seed"])] = SeedResult(
                row["utility"], row["privacy"], row["strongest_attack"])
    return known


def confirm_with(candidates_: list[Candidate], seeds: list[int], evaluate: Evaluate, delta: float | None,
                 known: dict[str, SeedResult] | None = None,
                 record: Callable[[str, SeedResult], None] | None = None) -> dict[str, Any]:
    """Evaluate every candidate on every seed not already ``known`` (one batch, so an evaluator can run them
    all in parallel); ``record(key, result)`` is told each result as it arrives."""
    known = dict(known or {})
    key = lambda c, s: setting_key(c.defense, c.settings, s)  # noqa: E731
    jobs = [(c, s) for s in seeds for c in candidates_ if key(c, s) not in known]
    for i, result in evaluate(jobs) if jobs else []:
        known[key(*jobs[i])] = result
        if record is not None:
            record(key(*jobs[i]), result)
    return summarize(candidates_, seeds, {(c.label, s): known[key(c, s)] for s in seeds for c in candidates_}, delta)
