"""Confirmation of a study's best settings on fresh seeds (``wemem confirm NAME``).

A study reports the winner's own evaluation, which is the minimum of many noisy evaluations and so biased
low (winner's curse). Confirmation re-evaluates the best K settings and the undefended reference on N seeds the
search never saw and reports means, 95% t-intervals over seeds, and the defended-minus-reference differences
paired by seed.

What a fresh seed changes: everything the study seed drives -- the T/E split (datasets without an official test
split), the victim/shadow split and so the members and non-members, the pretraining of the victim and shadows,
the mem-scores, the fine-tuning of every pruning round and the attack's target sampling. Each confirmation seed
is an independent replication of the whole experiment (what ``wemem run --seed S`` does), not a re-run of the
fine-tuning alone: the winner was selected on one particular draw of members and targets, and with a few hundred
targets a side that draw is the largest part of the noise, so keeping it would keep most of the bias. The
study's pretrained models and mem-scores are therefore not reused (the seed enters both); each seed computes its
own once and caches it like a study would (see docs/confirmation.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import optuna
from scipy import stats

from objectives import TrialSpec
from wemem.attacks import check_attack_requirements
from wemem.errors import WememError, require
from wemem.faults import failpoint

from .config import StudyDefinition
from .study import Echo, Options, completed, resolve_cache_dir

CONFIRMATION_ATTR = "confirmation"
RUNS_ATTR = "confirmation_runs"  # every finished confirmation run, kept as it arrives (see confirm_study)
LEVEL = 0.95
REFERENCE = "reference"


@dataclass(frozen=True)
class Candidate:
    """A setting to confirm: a study trial's defense and settings, or the undefended reference."""

    label: str  # "trial 21" or "reference"
    defense: str
    settings: dict[str, Any]
    trial_number: int | None = None
    reported: dict[str, float] | None = None  # the study's own (selected) evaluation

    @property
    def is_reference(self) -> bool:
        return self.trial_number is None


@dataclass(frozen=True)
class SeedResult:
    utility: float
    privacy: float
    strongest_attack: str


# A confirmation's evaluator: (candidate, seed) jobs -> (job index, result) pairs as each finishes (the Ray one
# runs them in parallel), so that every finished evaluation is stored before the next one ends.
Evaluate = Callable[[list[tuple[Candidate, int]]], Iterable[tuple[int, SeedResult]]]


# --------------------------------------------------------------------------------------------- selection


def confirmation_seeds(study_seed: int, n: int) -> list[int]:
    """N reproducible seeds the search never used, far from the study seed and from small hand-picked ones."""
    from wemem.config import MAX_SEED

    require(n >= 2, f"--seeds must be >= 2 to give an interval (got {n})")
    return [(study_seed + 1000 * (i + 1)) % (MAX_SEED + 1) for i in range(n)]  # wraps only near the largest seed


def _reported(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    return {"utility": trial.user_attrs["utility"], "privacy": trial.user_attrs["privacy"],
            "value": trial.values[0]}


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The K best distinct settings as the study ranks them.

    One objective: feasible trials by value (all trials by value if none is feasible). Two objectives: the Pareto
    set, least leaky first. Repeated settings (re-queued or duplicated proposals) count once.
    """
    require(k >= 1, f"--top must be >= 1 (got {k})")
    trials = [t for t in completed(study) if "settings" in t.user_attrs]
    if not trials:
        raise WememError(f"study {study.study_name!r} has no completed trial to confirm; run or resume it first")
    if len(study.directions) > 1:
        ranked = sorted(study.best_trials, key=lambda t: t.values[0])
    else:
        feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())] or trials
        ranked = sorted(feasible, key=lambda t: t.values[0])
    chosen, seen = [], set()
    for trial in ranked:
        key = (trial.user_attrs["defense"], repr(sorted(trial.user_attrs["settings"].items())))
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
    return chosen[:k]


def candidates(study: optuna.Study, k: int) -> list[Candidate]:
    """The undefended reference first, then the K best settings."""
    ref = study.user_attrs.get("reference")
    reference = Candidate(REFERENCE, "none", {}, None,
                          None if ref is None else {"utility": ref["utility"], "privacy": ref["privacy"]})
    return [reference] + [Candidate(f"trial {t.number}", t.user_attrs["defense"], dict(t.user_attrs["settings"]),
                                    t.number, _reported(t)) for t in top_trials(study, k)]


# ------------------------------------------------------------------------------------------- statistics


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
    """Per-candidate means and intervals, and each setting's difference from the reference paired by seed.

    A setting's accuracy constraint is judged on the paired difference: it holds when the interval of
    (U - U_ref) lies above -delta, and is "uncertain" when the interval straddles it.
    """
    ref = [results[(REFERENCE, s)] for s in seeds]
    entries = []
    for candidate in candidates_:
        rows = [results[(candidate.label, s)] for s in seeds]
        utility = [r.utility for r in rows]
        privacy = [r.privacy for r in rows]
        entry: dict[str, Any] = {
            "label": candidate.label, "defense": candidate.defense, "settings": candidate.settings,
            "per_seed": [{"seed": s, "utility": r.utility, "privacy": r.privacy, "strongest_attack": r.strongest_attack}
                         for s, r in zip(seeds, rows)],
            "utility": t_interval(utility), "privacy": t_interval(privacy),
        }
        if candidate.trial_number is not None:
            entry["trial_number"] = candidate.trial_number
        if candidate.reported is not None:
            entry["reported"] = candidate.reported
        if not candidate.is_reference:
            entry["privacy_difference"] = t_interval([p - r.privacy for p, r in zip(privacy, ref)])
            entry["utility_difference"] = t_interval([u - r.utility for u, r in zip(utility, ref)])
            if delta is not None:
                entry["accuracy_constraint"] = constraint_verdict(entry["utility_difference"], delta)
        entries.append(entry)
    return {"seeds": list(seeds), "level": LEVEL, "delta": delta, "candidates": entries}


def constraint_verdict(utility_difference: dict[str, float], delta: float) -> str:
    if utility_difference["low"] >= -delta:
        return "holds"
    if utility_difference["high"] < -delta:
        return "violated"
    return "uncertain"


def setting_key(defense: str, settings: dict[str, Any], seed: int) -> str:
    return f"{defense}|{sorted(settings.items())!r}|{seed}"


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


# ------------------------------------------------------------------------------------------ attack suite


def judged_by(spec: TrialSpec, attacks: Sequence[str] | None) -> TrialSpec:
    """The spec a confirmation evaluates with: the study's own (``attacks`` None), or one judged by ``attacks``,
    its leakage the maximum over all of them.

    Why a confirmation may judge with other attacks than the search did: a study evaluates dozens of settings
    and only ranks them, so it can afford to search with a cheap suite (on a CPU, without SAMIA, whose
    transformer is most of a trial's attack stage) and confirm the winner with all ten -- the multi-fidelity
    pattern of hyperparameter search: a cheap objective to select, the full one for the number a user quotes.
    """
    if attacks is None:
        return spec
    check_attack_requirements(list(attacks), spec.experiment.shadows)  # before anything runs or is stored
    return replace(spec, attacks=tuple(attacks), objective=replace(spec.objective, privacy_attacks=None))


def judge_sets(spec: TrialSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A spec's attacks and the ones its leakage is the maximum over, as sets (their order changes no number)."""
    return tuple(sorted(spec.attacks)), tuple(sorted(spec.objective.privacy_attacks or ()))


def suite_fields(spec: TrialSpec, study_spec: TrialSpec) -> dict[str, Any]:
    """What a stored confirmation records of its judges (and whether they are the study's own)."""
    attacks, among = judge_sets(spec)
    return {"attacks": list(attacks), **({"privacy_attacks": list(among)} if among else {}),
            "study_suite": judge_sets(spec) == judge_sets(study_spec)}


def suite_key(summary: dict[str, Any], study_spec: TrialSpec) -> str:
    """Which judges a stored confirmation used (one stored before suites were recorded used the study's)."""
    if "attacks" not in summary:
        summary = suite_fields(study_spec, study_spec)
    among = summary.get("privacy_attacks")
    return ",".join(sorted(summary["attacks"])) + (f"|leakage over {','.join(sorted(among))}" if among else "")


def stored_confirmations(study: optuna.Study, study_spec: TrialSpec) -> dict[str, dict[str, Any]]:
    """Every stored confirmation by its judges: the latest (``confirmation``, what export and report read) and
    those of other suites it replaced (``confirmation:<suite>``), so switching suites loses and reruns nothing."""
    attrs = study.user_attrs
    archived = [v for k, v in attrs.items() if k.startswith(CONFIRMATION_ATTR + ":")]
    latest = [attrs[CONFIRMATION_ATTR]] if CONFIRMATION_ATTR in attrs else []
    return {suite_key(summary, study_spec): summary for summary in archived + latest}


def confirm_study(study: optuna.Study, study_spec: TrialSpec, spec: TrialSpec, chosen: list[Candidate],
                  seeds: list[int], evaluate: Evaluate, delta: float | None, echo: Echo = print) -> dict[str, Any]:
    """Confirm ``chosen`` on ``seeds`` as judged by ``spec`` and store the result with the study.

    Every finished evaluation is stored at once (user attribute ``confirmation_runs:<suite>``, by setting and
    seed), so a confirmation killed after hours of CIFAR-sized runs loses only the runs in flight: the next
    one with the same judges reuses the rest, as it reuses earlier confirmations' per-seed results. (Each seed's
    pretraining, mem-scores and reference are also cached on disk, like a study's.)
    """
    fields = suite_fields(spec, study_spec)
    suite = suite_key(fields, study_spec)
    runs_attr = f"{RUNS_ATTR}:{suite}"
    runs = dict(study.user_attrs.get(runs_attr, {}))
    known = {**known_results(stored_confirmations(study, study_spec).get(suite)),
             **{key: SeedResult(**row) for key, row in runs.items()}}
    wanted = {setting_key(c.defense, c.settings, s) for c in chosen for s in seeds}
    if wanted & set(known):
        echo(f"reusing {len(wanted & set(known))} of {len(wanted)} evaluations stored by an earlier confirmation")

    def record(key: str, result: SeedResult) -> None:
        runs[key] = asdict(result)
        study.set_user_attr(runs_attr, runs)
        failpoint("confirm_run_stored")  # the fault tests kill the launcher here

    summary = confirm_with(chosen, seeds, evaluate, delta, known, record)
    summary.update(metric=study_spec.objective.privacy_metric, **fields)
    store_confirmation(study, summary, study_spec)
    return summary


def judged_by_others(summary: dict[str, Any]) -> str:
    """"judged by N attacks" when a confirmation's attacks are not the study's own (``--attacks``), else ""."""
    return "" if summary.get("study_suite", True) else f"judged by {len(summary['attacks'])} attacks"


def store_confirmation(study: optuna.Study, summary: dict[str, Any], study_spec: TrialSpec) -> None:
    """Make ``summary`` the study's confirmation, first archiving a latest one judged by other attacks."""
    previous = stored_confirmation(study)
    if previous is not None and suite_key(previous, study_spec) != suite_key(summary, study_spec):
        study.set_user_attr(f"{CONFIRMATION_ATTR}:{suite_key(previous, study_spec)}", previous)
    study.set_user_attr(CONFIRMATION_ATTR, summary)


# ---------------------------------------------------------------------------------------- running on Ray


def seed_spec(spec: TrialSpec, seed: int) -> TrialSpec:
    return replace(spec, experiment=replace(spec.experiment, seed=seed))


def evaluate_on_seed(spec: TrialSpec, candidate: Candidate, base: Any, assets: Any, share: Any) -> SeedResult:
    """One defended run on one seed, in a Ray task like a trial's coordinator: its K+1 models and its attacks
    are Ray jobs of their own with the trial's share; the seed's assets arrive through the object store."""
    from objectives import evaluate_trial

    from .raymap import receive

    outcome = evaluate_trial(spec, candidate.defense, candidate.settings, base, receive(assets), map_fn=share)
    return SeedResult(outcome.utility, outcome.privacy, outcome.strongest_attack)


def seed_work(spec: TrialSpec, share: Any, echo: Echo) -> tuple[Any, Any]:
    """A seed's shared work, in the launcher like a study's (its jobs on the trials' shares; cached per seed):
    the shipped assets and the seed's undefended reference."""
    from objectives import reference
    from wemem.assets import prepare_assets

    from .raymap import ship

    assets = prepare_assets(spec.experiment, spec.cache_dir, share)
    base = reference(spec, assets, share)
    echo(f"seed {spec.experiment.seed}: shared work ready (undefended pruned reference: accuracy "
         f"{base.utility:.4f}, strongest attack {base.strongest_attack} {base.privacy:.4f})")
    return ship(assets), base


def ray_evaluator(spec: TrialSpec, definition: StudyDefinition, echo: Echo) -> Evaluate:
    """Prepares each seed's shared work (and so its reference) in the launcher, then runs the defended runs as Ray
    tasks, at most ``max_concurrent_trials`` at a time."""
    import ray

    from .runner import HEAD_CPU, task_share

    share = task_share(definition)
    # an evaluation is deterministic given its seed, so one whose worker the node's memory monitor killed is
    # simply run again rather than losing the whole confirmation
    task = ray.remote(evaluate_on_seed).options(num_cpus=HEAD_CPU, max_retries=2,
                                                retry_exceptions=[ray.exceptions.OutOfMemoryError])
    limit = definition.resources.max_concurrent_trials

    def run(jobs: list[tuple[Candidate, int]]) -> Iterator[tuple[int, SeedResult]]:
        prepared = {seed: seed_work(seed_spec(spec, seed), share, echo) for seed in sorted({s for _, s in jobs})}
        done = 0
        for i, (candidate, seed) in enumerate(jobs):
            if candidate.is_reference:
                base = prepared[seed][1]
                done += 1
                yield i, SeedResult(base.utility, base.privacy, base.strongest_attack)
        queue = [i for i, (candidate, _) in enumerate(jobs) if not candidate.is_reference]
        running: dict[Any, int] = {}
        while queue or running:
            while queue and len(running) < limit:
                i = queue.pop(0)
                candidate, seed = jobs[i]
                shipped, base = prepared[seed]
                running[task.remote(seed_spec(spec, seed), candidate, base, shipped, share)] = i
            (ready,), _ = ray.wait(list(running), num_returns=1)
            i = running.pop(ready)
            result, done = ray.get(ready), done + 1
            candidate, seed = jobs[i]
            echo(f"[{done}/{len(jobs)}] {candidate.label} ({candidate.defense}) seed {seed}: "
                 f"accuracy {result.utility:.4f}, strongest attack {result.strongest_attack} {result.privacy:.4f}")
            yield i, result

    return run


def confirm(study: optuna.Study, definition: StudyDefinition, options: Options, top: int = 1, n_seeds: int = 3,
            echo: Echo = print, attacks: Sequence[str] | None = None) -> dict[str, Any]:
    """Confirm the study's best ``top`` settings on ``n_seeds`` fresh seeds and store the result with the study;
    judged by the study's attacks, or by ``attacks`` (see :func:`judged_by`)."""
    from .runner import init_ray

    chosen = candidates(study, top)
    seeds = confirmation_seeds(definition.study.seed, n_seeds)
    data_root = options.data_root if options.data_root is not None else study.user_attrs.get("data_root")
    study_spec = definition.trial_spec(resolve_cache_dir(options, study), data_root)
    # confirmation has no early stopping: every run goes to the end
    spec = replace(judged_by(study_spec, attacks), round_reports=False)
    echo(f"confirming {', '.join(c.label for c in chosen)} on fresh seeds {seeds} "
         f"({len(chosen) * len(seeds)} evaluations, each seed with its own split, pretraining and mem-scores; "
         f"judged by {', '.join(spec.attacks)})")
    init_ray(options.ray_address)
    delta = definition.objective.delta if definition.objective.mode == "constrained" else None
    return confirm_study(study, study_spec, spec, chosen, seeds, ray_evaluator(spec, definition, echo), delta, echo)


def stored_confirmation(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(CONFIRMATION_ATTR)


# ------------------------------------------------------------------------------------------------ output


def _interval(ci: dict[str, float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{ci['mean']:{sign}.4f} [{ci['low']:{sign}.4f}, {ci['high']:{sign}.4f}]"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The confirmed figures: means with 95% intervals over seeds, and paired differences from the reference."""
    n = len(summary["seeds"])
    lines = [f"confirmed on {n} fresh seeds {summary['seeds']} (mean [{summary['level']:.0%} t-interval over seeds]):"]
    if judged_by_others(summary):
        lines.append(f"  {judged_by_others(summary)} ({', '.join(summary['attacks'])}), not the study's own: its "
                     f"own evaluations below were judged by its attacks")
    for entry in summary["candidates"]:
        head = f"  {entry['label']}: " + (entry["defense"] if entry["label"] != REFERENCE else "undefended pruned")
        if entry.get("settings"):
            head += " (" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in entry["settings"].items()) + ")"
        lines.append(head)
        reported = entry.get("reported")
        was = "" if reported is None else f"   (study's own evaluation {reported['privacy']:.4f})"
        lines.append(f"    accuracy {_interval(entry['utility'])}, leakage {_interval(entry['privacy'])}{was}")
        if "privacy_difference" in entry:
            diff = entry["privacy_difference"]
            verdict = ("less leakage, interval excludes 0" if diff["high"] < 0 else
                       "more leakage, interval excludes 0" if diff["low"] > 0 else "interval includes 0: not confirmed")
            lines.append(f"    vs reference: leakage {_interval(diff, True)} ({verdict}), "
                         f"accuracy {_interval(entry['utility_difference'], True)}"
                         + (f" (constraint -{summary['delta']:g}: {entry['accuracy_constraint']})"
                            if "accuracy_constraint" in entry else ""))
    return lines + headline(summary)


def headline(summary: dict[str, Any]) -> list[str]:
    """One closing sentence on the best setting, in points: the confirmed difference and its interval."""
    best = next((e for e in summary["candidates"] if "privacy_difference" in e), None)
    if best is None:
        return []
    p, u = best["privacy_difference"], best["utility_difference"]
    pts = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    confirmed = "confirmed" if p["high"] < 0 else "NOT confirmed (the interval includes 0 or lies above it)"
    judges = f" {judged_by_others(summary)}" if judged_by_others(summary) else ""
    return [f"best setting ({best['label']}, {best['defense']}) vs the undefended pruned model on "
            f"{len(summary['seeds'])} fresh seeds{judges}: leakage {pts(p['mean'])} points [95% CI {pts(p['low'])}, "
            f"{pts(p['high'])}], accuracy {pts(u['mean'])} points [{pts(u['low'])}, {pts(u['high'])}]: "
            f"gain {confirmed}"]


def export_section(study: optuna.Study, best_numbers: list[int]) -> dict[str, Any]:
    """What ``wemem export`` carries: the confirmed figures, or a note that there are none (and how to get them)."""
    summary = stored_confirmation(study)
    if summary is None:
        return {"status": "not confirmed",
                "note": f"the figures above are the selected trial's own evaluation, biased low by the selection; "
                        f"run `wemem confirm {study.study_name}` for fresh-seed means and intervals"}
    confirmed = {e.get("trial_number") for e in summary["candidates"]}
    missing = [n for n in best_numbers if n not in confirmed]
    section = dict(summary, status="confirmed" if not missing else "stale")
    if missing:
        section["note"] = (f"trial(s) {missing} became best after this confirmation; "
                           f"run `wemem confirm {study.study_name}` again")
    return section
