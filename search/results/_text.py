"""Every line printed about a study: its summary (launch, resume, status), its trials table and one trial in
detail (status), the confirmed figures and their closing sentence (confirm, status), and the stage timings
(``wemem status NAME --trial N``, ``wemem run``, ``wemem report``).

The timings are recorded by :func:`wemem.pipeline.experiment_timings` and, for the study's shared work, by
:func:`objectives._trial.shared_seconds`; every figure is wall seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from wemem.attacks import ATTACKS, runnable_attacks
from wemem.metrics import METRIC_FPRS, tpr_resolution, unresolvable_text
from wemem.uncertainty import INTERVAL_METRICS

from ..confirm import Confirmation, ConfirmedSetting, Interval, export_section, judged_by_others
from ..confirm._confirmation import DEFAULT, NAMED
from ..confirm._statistics import points, verdict
from ..storage._records import TrialMetrics, fail_reason, stored_pruning, stored_reference, stored_validity
from ..storage._urls import redact
from ..study import RACING_ATTR, OpenStudy, best_trials
from ..studyfile import StudyDefinition

# ------------------------------------------------------------------------------------------------- a study


def summary_lines(opened: OpenStudy) -> list[str]:
    study, definition, options = opened.study, opened.definition, opened.options
    ref = stored_reference(study)
    counts = {state: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    lines = [
        f"study {definition.name!r}: " + (", ".join(f"{n} {k.name}" for k, n in counts.items() if n) or "no trials")
    ]
    storage_flag = f" --storage {redact(options.storage_url)}" if options.storage else ""
    program = invoked_as()
    completed = counts[TrialState.COMPLETE] > 0
    if not completed:  # second: `wemem status` lists the first lines of each study
        waiting = counts[TrialState.WAITING]
        lines.append("  no trial has completed yet" + (f"; {waiting} trial(s) waiting to run" if waiting else ""))
    if ref:
        lines.append(
            f"  undefended pruned model: test accuracy {ref['utility']:.4f}, strongest attack "
            f"{ref['strongest_attack']} at {ref['privacy']:.4f}"
        )
    lines += cap_lines(definition)
    lines += validity_lines(study)
    if not completed:  # no best trial to confirm, export or report; resume runs what waits (a failed launch's queue)
        return lines + [
            f"  stored in {redact(options.storage_url)}",
            f"  resume: {program} resume {definition.name}{storage_flag}",
        ]
    for trial in best_trials(study):
        m = TrialMetrics.of(trial)
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in m.settings.items())
        lines.append(f"  best trial #{trial.number}: defense {m.defense} ({settings}){sparsity_note(trial)}")
        lines.append(
            f"    test accuracy {m.utility:.4f}, strongest attack {m.strongest_attack} at {m.privacy:.4f}"
            + ("" if m.feasible is not False else f" ({broken_constraint(definition)})")
        )
    lines += stored_confirmation_lines(study)
    lines.append(f"  stored in {redact(options.storage_url)}")
    lines.append(f"  confirm: {program} confirm {definition.name}{storage_flag} --attacks {judges_for(definition)}")
    lines.append(f"  resume: {program} resume {definition.name}{storage_flag} --n-trials 2")
    lines.append(f"  export: {program} export {definition.name}{storage_flag} --out best.toml")
    lines.append(f"  report: {program} report {definition.name}{storage_flag} --out report")
    return lines


def cap_lines(definition: StudyDefinition) -> list[str]:
    """A leakage_cap study's question, with its cap and margin; nothing for the other modes."""
    o = definition.objective
    if o.max_leakage is None:
        return []
    return [
        (
            f"  objective: the most accurate setting whose leakage ({o.privacy_metric}) + {o.leakage_se_multiple:g} "
            f"standard errors stays at or below the cap {o.max_leakage:g}"
        )
    ]


def broken_constraint(definition: StudyDefinition) -> str:
    """What an infeasible best trial (every trial infeasible: the least infeasible is shown) broke."""
    o = definition.objective
    return "violates the accuracy constraint" if o.max_leakage is None else f"breaks the leakage cap {o.max_leakage:g}"


def validity_lines(study: optuna.Study) -> list[str]:
    """The study's validity checks (wemem.validity), one line each: what each measured and whether it holds."""
    checks = stored_validity(study)
    return ["  validity:"] + [f"    {check.line()}" for check in checks] if checks else []


def judges_for(definition: StudyDefinition) -> str:
    """``all`` when every attack can judge this study, else the comma-separated ones that can (e.g. LiRA
    needs two shadows): the confirm hint must be a command that runs."""
    runnable = runnable_attacks(definition.data.shadows)
    return "all" if runnable == ATTACKS.names() else ",".join(runnable)


def stored_confirmation_lines(study: optuna.Study) -> list[str]:
    """The stored confirmation's closing sentence (the number to quote), or why there is none to show."""
    section = export_section(study, [t.number for t in best_trials(study)])
    if section.confirmation is None:
        return ["  not confirmed: the best trial's own evaluation above is biased low by the selection"]
    return [f"  {line}" for line in headline(section.confirmation)] + ([f"  ({section.note})"] if section.note else [])


def invoked_as() -> str:
    """How the user ran us (e.g. ``.venv/bin/wemem`` from ``make demo``), so printed commands work as shown."""
    program = sys.argv[0] if sys.argv else ""
    return program if Path(program).name == "wemem" else "wemem"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sparsity_note(trial: optuna.trial.FrozenTrial) -> str:
    """`` at sparsity S`` for a trial that stored its pruning (its study searches it); empty otherwise (every
    trial is at the study file's sparsity)."""
    pruning = stored_pruning(trial)
    return "" if pruning is None else f" at sparsity {pruning['sparsity']:g}"


def trial_table_lines(opened: OpenStudy, health: dict[int, str | None]) -> list[str]:
    """One line per trial (``wemem status NAME``), with why a trial failed or why its launcher looks dead."""
    study, lines = opened.study, []
    for trial in study.get_trials(deepcopy=False):
        m = TrialMetrics.of(trial)
        values = ", ".join(f"{v:.4f}" for v in trial.values) if trial.state == TrialState.COMPLETE else "-"
        note = (
            f"  ({fail_reason(trial)})"
            if trial.state == TrialState.FAIL
            else f"  ({health[trial.number]}: `wemem resume {study.study_name}` fails it and re-runs its setting)"
            if health.get(trial.number)
            else ""
        )
        defense = "" if m.defense is None else m.defense
        lines.append(
            f"  #{trial.number:<4} {trial.state.name:<9} {defense:<6} value {values:<16} "
            f"acc {m.utility:.4f} attack {m.privacy:.4f}{sparsity_note(trial)}{note}"
        )
    return lines


def trial_detail_lines(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> list[str]:
    """One trial (``wemem status NAME --trial N``): state, values, setting, metrics and where its time went."""
    m = TrialMetrics.of(trial)
    lines = [
        f"trial #{trial.number} of {study.study_name}: {trial.state.name}, values {trial.values}",
        f"  defense {'-' if m.defense is None else m.defense} {trial.params}",
        f"  test accuracy {m.utility:.4f}, strongest attack {m.strongest_attack or '-'} at {m.privacy:.4f}"
        + ("" if m.privacy_se is None else f" (leakage standard error {m.privacy_se:.4f}: {m.privacy_se_kind})"),
    ]
    lines += racing_lines(trial)
    timings = timing_lines(m.timings)
    attacks = [f"    {line}" for line in attack_metric_lines(m.attacks)]
    attacks = ([f"  attacks ({INTERVAL_NOTE}):"] + attacks) if attacks else []
    return (
        lines
        + attacks
        + ([f"  {line}" for line in timings] if timings else ["  no stage timings recorded for this trial"])
    )


def racing_lines(trial: optuna.trial.FrozenTrial) -> list[str]:
    """Why racing stopped the trial (its stored evidence); nothing for a trial racing did not stop."""
    evidence = trial.user_attrs.get(RACING_ATTR)
    if not isinstance(evidence, dict):
        return []
    values = ", ".join(f"{v:.4f}" for v in evidence.get("values", []))
    against = (
        f"; one-sided Wilcoxon p = {evidence['p_value']:.3g} that it is worse than trial {evidence['best_trial']}"
        if "p_value" in evidence
        else ""
    )
    rounds = evidence.get("round_instances", 0)
    judged = f" (instances 0-{rounds - 1} judge the first fine-tuning's pruning rounds)" if rounds else ""
    ran = f"after instances {evidence.get('instances')}{judged}"
    return [f"  stopped by racing ({evidence.get('pruner')}) {ran}: {values}{against}"]


INTERVAL_NOTE = "value [95% stratified bootstrap interval over the targets]"
# (stored key, words): the per-attack metrics as printed and as the report's tables head them, in wemem's order
METRIC_LABELS = tuple(zip(INTERVAL_METRICS, ("balanced accuracy", "AUC", "TPR at 0.1% FPR", "TPR at 1% FPR")))


def metric_text(metrics: Mapping[str, Any], key: str) -> str:
    """One metric of an attack with its 95% interval, or for a TPR at an FPR its victim's target set cannot
    resolve, the words saying so instead of the number. Metrics without intervals print bare
    (a finished trial of schema version 1: Optuna never rewrites a finished trial)."""
    non_members = metrics.get("targets", {}).get("non_members")
    if key in METRIC_FPRS and non_members is not None:
        resolution = tpr_resolution(METRIC_FPRS[key], non_members)
        if not resolution.resolvable:
            return unresolvable_text(non_members, resolution.needs)
    interval = metrics.get("intervals", {}).get(key)
    return f"{metrics[key]:.4f}" + ("" if interval is None else f" [{interval[0]:.4f}, {interval[1]:.4f}]")


def epsilon_text(bound: dict[str, float]) -> str:
    return f"epsilon lower bound {bound['value']:.3f} (delta {bound['delta']:g}, {bound['confidence']:.0%} confidence)"


def attack_metric_lines(attacks: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per attack: each metric with its 95% stratified bootstrap interval over the targets (the target
    sampling's share of the noise only), unresolvable TPRs in words, and the epsilon lower bound."""
    lines = []
    for name, metrics in attacks.items():
        parts = [f"{label} {metric_text(metrics, key)}" for key, label in METRIC_LABELS if key in metrics]
        if "epsilon_lower_bound" in metrics:
            parts.append(epsilon_text(metrics["epsilon_lower_bound"]))
        lines.append(f"{name}: " + ", ".join(parts))
    return lines


# ------------------------------------------------------------------------------------------ a confirmation


def _interval(ci: Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{ci.mean:{sign}.4f} [{ci.low:{sign}.4f}, {ci.high:{sign}.4f}]"


ROLE_NOTES = {
    DEFAULT: "  [the paper's default: what tuning is judged against]",
    NAMED: "  [the comparison setting: what tuning is judged against]",
}


def confirmed_lines(confirmation: Confirmation) -> list[str]:
    """The confirmed figures: means with 95% intervals over seeds, and paired differences from the reference."""
    seeds = list(confirmation.seeds)
    lines = [f"confirmed on {len(seeds)} fresh seeds {seeds} (mean [{confirmation.level:.0%} t-interval over seeds]):"]
    if confirmation.suite is not None and judged_by_others(confirmation):
        lines.append(
            f"  {judged_by_others(confirmation)} ({', '.join(confirmation.suite.attacks)}), not the "
            f"study's own: its own evaluations below were judged by its attacks"
        )
    if confirmation.cap is not None:
        lines.append(
            f"  {confirmation.cap.text()}; here each setting's leakage interval over the seeds is judged against it"
        )
    for entry in confirmation.candidates:
        head = f"  {entry.label}: " + (entry.defense if not entry.is_reference else "undefended pruned")
        if entry.settings:
            head += (
                " ("
                + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.settings.items())
                + ")"
            )
        if entry.pruning is not None:
            head += f" at sparsity {entry.pruning['sparsity']:g}"
        lines.append(head + ROLE_NOTES.get(entry.role, ""))
        was = "" if entry.reported is None else f"   (study's own evaluation {entry.reported.privacy:.4f})"
        lines.append(
            f"    accuracy {_interval(entry.utility)}, leakage {_interval(entry.privacy)}{was}"
            + cap_note(confirmation, entry)
        )
        if entry.vs_reference is not None:
            diff = entry.vs_reference.privacy
            verdict = (
                "less leakage, interval excludes 0"
                if diff.below_zero
                else "more leakage, interval excludes 0"
                if diff.above_zero
                else "interval includes 0: not confirmed"
            )
            lines.append(
                f"    vs reference: leakage {_interval(diff, True)} ({verdict}), "
                f"accuracy {_interval(entry.vs_reference.utility, True)}"
                + (
                    f" (constraint -{confirmation.delta:g}: {entry.accuracy_constraint})"
                    if entry.accuracy_constraint is not None
                    else ""
                )
            )
        if entry.vs_comparison is not None and confirmation.comparison is not None:
            versus = entry.vs_comparison
            lines.append(
                f"    vs {confirmation.comparison.label}: leakage {_interval(versus.privacy, True)}, "
                f"accuracy {_interval(versus.utility, True)}"
            )
    return lines + headline(confirmation)


def cap_note(confirmation: Confirmation, entry: ConfirmedSetting) -> str:
    """``(cap 0.6: keeps the cap)`` after a setting's confirmed leakage in a leakage_cap study, else ""."""
    if confirmation.cap is None or entry.leakage_cap is None:
        return ""
    return f" (cap {confirmation.cap.max_leakage:g}: {entry.leakage_cap})"


def headline(confirmation: Confirmation) -> list[str]:
    """The closing sentences, in points: the best setting's confirmed difference from the undefended model and
    its interval, then (where the study has them) the leakage cap's answer and the tuned-minus-default verdict."""
    best = confirmation.best
    closing = verdict(confirmation)
    if best is None or best.vs_reference is None:
        return [closing] if confirmation.cap is not None and closing else []
    p, u = best.vs_reference.privacy, best.vs_reference.utility
    confirmed = "confirmed" if p.below_zero else "NOT confirmed (the interval includes 0 or lies above it)"
    judges = f" {judged_by_others(confirmation)}" if judged_by_others(confirmation) else ""
    default = ", the paper's default" if best.role == DEFAULT else ""
    if confirmation.cap is not None:
        default += f", the most accurate keeping the leakage cap {confirmation.cap.max_leakage:g}"
    lines = [
        (
            f"best setting ({best.label}{default}, {best.defense}) vs the undefended pruned model on "
            f"{len(confirmation.seeds)} fresh seeds{judges}: leakage {points(p)}, accuracy {points(u, '')}: "
            f"gain {confirmed}"
        )
    ]
    return lines + ([closing] if closing else [])


# ------------------------------------------------------------------------------------------------- timings


def _parts(parts: dict[str, float], skip: str = "total") -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in parts.items() if name != skip)


def _with_parts(name: str, parts: dict[str, float]) -> str:
    inner = _parts(parts)
    return f"{name} {parts['total']:.2f}" + (f" ({inner})" if inner else "")


def timing_lines(timings: Mapping[str, Any]) -> list[str]:
    """Human-readable lines; empty when nothing was recorded (a trial that did not finish, or a finished one of
    schema version 1: Optuna never rewrites a finished trial)."""
    if not timings or "total" not in timings:
        return []
    lines = [
        (
            f"timings (s): experiment {timings['total']:.2f} = pruning stage {timings['pruning_stage']:.2f}"
            f" + attack stage {timings['attack_stage']:.2f}"
        )
    ]
    if timings.get("shared"):
        lines.append(f"  shared work, once per study: {_parts(timings['shared'])}")
    models = timings.get("models", {})
    if models:
        lines.append("  models: " + "; ".join(_with_parts(name, parts) for name, parts in models.items()))
    attacks = timings.get("attacks", {})
    if attacks:
        lines.append("  attacks: " + "; ".join(_with_parts(name, parts) for name, parts in attacks.items()))
    return lines


def timing_columns(timings: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``seconds.*`` columns for the trials table."""
    if not timings or "total" not in timings:
        return {}
    columns = {f"seconds.{key}": timings[key] for key in ("total", "pruning_stage", "attack_stage")}
    columns.update({f"seconds.shared.{name}": value for name, value in timings.get("shared", {}).items()})
    for name, parts in timings.get("models", {}).items():
        columns[f"seconds.model.{name}"] = parts["total"]
    for name, parts in timings.get("attacks", {}).items():
        columns.update(
            {f"seconds.attack.{name}" + ("" if part == "total" else f".{part}"): value for part, value in parts.items()}
        )
    return columns
