"""The audit of a study as one JSON document (``report.json``): everything ``report.html`` shows, and nothing it
computes on its own. :func:`report_document` reads the stored study; :mod:`.html` only formats this document, so
a number in the HTML is the JSON's number.

A study without a completed trial, a reference or a confirmation still gets a document: ``missing`` says what is
absent and the command that fills it in, and the sections that need it are empty.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

import optuna
import pandas as pd
import tomli_w
from optuna.trial import TrialState

from wemem.environment import describe
from wemem.metrics import METRIC_FPRS, tpr_resolution, unresolvable_text

from ..confirm import ConfirmationStatus, export_section, judged_by_others, seed_variation
from ..confirm._confirmation import UTILITY, ComparisonJSON, ConfirmationSectionJSON, IntervalJSON
from ..storage._records import (
    ROC,
    ReferenceRecord,
    TrialMetrics,
    fail_reason,
    stored_artifact_audits,
    stored_environment,
    stored_fingerprint,
    stored_own_code,
    stored_reference,
    stored_validity,
)
from ..storage._urls import redact
from ..study import OpenStudy, best_trials
from ..studyfile import StudyDefinition
from ._artifact_audit import LeakageJSON, setting_text
from ._export import TrialRecordJSON, trial_record
from ._text import METRIC_LABELS, headline, judges_for

FORMAT = "wemem-report/1"
STAGES = ("seconds.total", "seconds.pruning_stage", "seconds.attack_stage")

Side = Literal["undefended", "defended"]  # the two models the attack table compares
SIDES: tuple[Side, ...] = ("undefended", "defended")


class StudyJSON(TypedDict):
    name: str
    dataset: Mapping[str, object]
    model: str
    pruning: Mapping[str, object]
    defenses: list[str]
    attacks: list[str]
    adaptive_attacks: bool
    objective: Mapping[str, object]
    objective_text: str
    directions: list[str]
    accuracy_floor: float | None
    constraint: str | None
    n_trials: int
    sampler: str
    seed: int


class HeadlineJSON(TypedDict):
    """The number to quote (``privacy_difference`` and the setting's fields: a confirmed best setting), or why
    there is none and the ``command`` that produces it."""

    status: str
    text: str
    seeds: NotRequired[list[int]]
    judges: NotRequired[str]
    label: NotRequired[str]
    defense: NotRequired[str]
    settings: NotRequired[Mapping[str, object]]
    trial_number: NotRequired[int | None]
    privacy_difference: NotRequired[IntervalJSON]
    utility_difference: NotRequired[IntervalJSON]
    gain_confirmed: NotRequired[bool]
    accuracy_constraint: NotRequired[str | None]
    max_leakage: NotRequired[float]  # a leakage_cap study's cap and whether the best setting's interval keeps it
    leakage_cap: NotRequired[str]
    verdict: NotRequired[str]
    comparison: NotRequired[ComparisonJSON | None]
    command: NotRequired[str]
    note: NotRequired[str | None]


class CheckJSON(TypedDict):
    """A stored validity check (:class:`wemem.validity.Check`)."""

    name: str
    status: str
    message: str
    figures: Mapping[str, object]


class AttackRowJSON(TypedDict):
    """One attack's metrics on both models; the per-side tables are keyed by :data:`SIDES`."""

    attack: str
    undefended: dict[str, float | None]  # metric: its value (None: not measured)
    defended: dict[str, float | None]
    intervals: dict[str, dict[str, list[float]]]  # metric: its 95% interval over the targets
    not_resolvable: dict[str, dict[str, str]]  # metric: the words that replace its number
    epsilon_lower_bound: dict[str, dict[str, float] | None]


class FailedJSON(TypedDict):
    number: int
    reason: str


class TimingsJSON(TypedDict):
    per_trial: list[dict[str, float]]
    median_attack_seconds: dict[str, float]
    median_model_seconds: dict[str, float]


class SeedsJSON(TypedDict):
    study: int
    confirmation: list[int]


class ReproducibilityJSON(TypedDict):
    study_environment: Mapping[str, object] | None
    report_environment: Mapping[str, object]
    seeds: SeedsJSON
    assets_fingerprint: str | None
    own_code: Mapping[str, object]
    definition_toml: str


class AuditedArtifactJSON(TypedDict):
    """A shipped file ``wemem audit`` attacked: the file by name and SHA-256, its leakage with its interval, and
    the recorded figure of its setting (None: no trial of the study named) with the difference."""

    time: str
    file: str
    sha256: str
    kind: str
    sparsity: float | None
    setting: str
    leakage: LeakageJSON
    recorded: LeakageJSON | None
    leakage_difference: float | None


class ReportJSON(TypedDict):
    """report.json (every NaN or infinity written as null)."""

    format: str
    generated_at: str
    study: StudyJSON
    counts: dict[str, int]
    missing: list[str]
    validity: list[CheckJSON]
    headline: HeadlineJSON
    reference: ReferenceRecord | None
    pareto: bool
    best: list[TrialRecordJSON]
    attack_table: list[AttackRowJSON]
    roc: dict[str, dict[str, list[float]]]
    confirmation: ConfirmationSectionJSON | None
    confirmation_varies: str
    trials: list[Mapping[str, object]]
    failed: list[FailedJSON]
    timings: TimingsJSON
    figures: list[str]
    reproducibility: ReproducibilityJSON
    artifact_audits: list[AuditedArtifactJSON]


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON has neither), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_document(opened: OpenStudy, table: pd.DataFrame, figures: list[str]) -> ReportJSON:
    """The audit of ``opened`` (``table``: :func:`.report.trials_table`; ``figures``: the PNG names written)."""
    study, definition = opened.study, opened.definition
    trials = study.get_trials(deepcopy=False)  # read once: counts, failures and what is missing come from it
    counts = Counter(t.state for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    best = best_trials(study)
    reference = stored_reference(study)
    confirmation = export_section(study, [t.number for t in best]) if best else None
    commands = next_commands(opened)
    document = {
        "format": FORMAT,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "study": study_block(definition, reference),
        "counts": {state.name: counts[state] for state in TrialState},
        "missing": missing(len(trials), len(failed), best, reference, confirmation, commands),
        "validity": [check.to_dict() for check in stored_validity(study)],
        "headline": headline_block(confirmation, best, commands),
        "reference": reference,
        "pareto": len(study.directions) > 1,
        "best": [trial_record(t) for t in best],
        "attack_table": attack_rows(reference, best[0] if best else None),
        "roc": roc_points(best[0]) if best else {},
        "confirmation": None if confirmation is None else confirmation.to_json(),
        "confirmation_varies": seed_variation(definition.model.checkpoint is not None),
        "trials": trial_rows(table),
        "failed": [FailedJSON(number=t.number, reason=fail_reason(t)) for t in failed],
        "timings": timing_block(table),
        "figures": figures,
        "reproducibility": reproducibility(study, definition, confirmation),
        "artifact_audits": audited_artifacts(study),
    }
    return plain(document)  # the ReportJSON these sections make, with its non-finite numbers as null


def audited_artifacts(study: optuna.Study) -> list[AuditedArtifactJSON]:
    """Every stored ``wemem audit`` of the study, oldest first."""
    return [
        AuditedArtifactJSON(
            time=audit["time"],
            file=audit["file"],
            sha256=audit["sha256"],
            kind=audit["kind"],
            sparsity=audit["sparsity"],
            setting=setting_text(audit),
            leakage=audit["leakage"],
            recorded=None if audit["recorded"] is None else audit["recorded"]["leakage"],
            leakage_difference=None if audit["difference"] is None else audit["difference"]["leakage"],
        )
        for audit in stored_artifact_audits(study)
    ]


def objective_text(definition: StudyDefinition) -> str:
    """The objective in words, with only the knobs its mode reads."""
    o = definition.objective
    leakage = f"leakage = the strongest attack's {o.privacy_metric}" + (
        f" over {', '.join(o.privacy_attacks)}" if o.privacy_attacks else ""
    )
    mode = {
        "constrained": f"minimize leakage subject to the accuracy constraint (delta {o.delta:g})",
        "weighted": f"minimize leakage + {o.weight:g} x accuracy drop",
        "pareto": "the Pareto front of (minimum leakage, maximum accuracy)",
        "leakage_cap": f"maximize test accuracy subject to leakage + {o.leakage_se_multiple:g} standard errors at "
        f"most {o.max_leakage} (the leakage cap)",
    }.get(o.mode, o.mode)
    return f"{o.mode}: {mode}; {leakage}"


def study_block(definition: StudyDefinition, reference: ReferenceRecord | None) -> StudyJSON:
    objective = definition.objective_config()
    delta = objective.constraint_delta
    floor = None if delta is None or reference is None else reference[UTILITY] - delta
    return {
        "name": definition.name,
        "dataset": definition.data.model_dump(exclude_none=True),
        "model": definition.model.name,
        "pruning": definition.pruning.model_dump(),
        "defenses": list(definition.search.defenses),
        "attacks": list(definition.attacks.names),
        "adaptive_attacks": definition.attacks.adaptive,
        "objective": definition.objective.model_dump(exclude_none=True),
        "objective_text": objective_text(definition),
        "directions": objective.directions,
        "accuracy_floor": floor,
        "constraint": cap_constraint(definition)
        if delta is None
        else (
            f"test accuracy at least the undefended pruned model's minus {delta:g}"
            + ("" if floor is None or reference is None else f" ({reference[UTILITY]:.4f} - {delta:g} = {floor:.4f})")
        ),
        "n_trials": definition.study.n_trials,
        "sampler": definition.study.sampler,
        "seed": definition.study.seed,
    }


def cap_constraint(definition: StudyDefinition) -> str | None:
    """A leakage_cap study's constraint in words (None: any other mode without an accuracy constraint)."""
    o = definition.objective
    if o.max_leakage is None:
        return None
    return (
        f"leakage + {o.leakage_se_multiple:g} x its standard error at most the cap {o.max_leakage:g} on each trial; "
        "the confirmation judges each setting's interval over fresh seeds against the cap"
    )


def next_commands(opened: OpenStudy) -> dict[str, str]:
    """The commands that fill in what a report lacks, as the user would type them (a password masked)."""
    name, url = opened.name, opened.options.storage
    storage = f" --storage {redact(url)}" if url else ""
    return {
        "resume": f"wemem resume {name}{storage}",  # runs the rest of the study's budget
        "confirm": f"wemem confirm {name}{storage} --attacks {judges_for(opened.definition)}",
    }


def missing(
    n_trials: int,
    failed: int,
    best: list[optuna.trial.FrozenTrial],
    reference: ReferenceRecord | None,
    confirmation: ConfirmationStatus | None,
    commands: dict[str, str],
) -> list[str]:
    """What the report cannot show yet, each with the command that provides it."""
    lacking = []
    if not n_trials:
        lacking.append(f"the study has no trial yet: run `{commands['resume']}`")
    elif not best:
        lacking.append(
            f"no completed trial ({failed} failed; their reasons are listed below): fix the cause and "
            f"run `{commands['resume']}`"
        )
    if reference is None:
        lacking.append(f"no undefended reference was measured: run `{commands['resume']}`")
    if best and (confirmation is None or confirmation.state != "confirmed"):
        lacking.append(
            "no fresh-seed confirmation of the best setting"
            if confirmation is None or confirmation.note is None or confirmation.confirmation is None
            else confirmation.note
        )
    return lacking


def headline_block(
    confirmation: ConfirmationStatus | None, best: list[optuna.trial.FrozenTrial], commands: dict[str, str]
) -> HeadlineJSON:
    """The number to quote: the confirmed difference from the undefended model with its interval, or why there
    is none (and the command that produces it)."""
    if not best or confirmation is None:
        return {
            "status": "no result",
            "text": "no completed trial: nothing to report yet",
            "command": commands["resume"],
        }
    confirmed = confirmation.confirmation
    if confirmed is None:
        return {
            "status": "not confirmed",
            "text": "not confirmed: the best trial's own evaluation is biased low by the selection, so this "
            "report has no number to quote yet",
            "command": commands["confirm"],
        }
    entry = confirmed.best
    sentence = headline(confirmed)
    block: HeadlineJSON = {
        "status": confirmation.state,
        "text": sentence[0] if sentence else "",
        "seeds": list(confirmed.seeds),
        "judges": judged_by_others(confirmed) or "judged by the study's attacks",
    }
    if entry is not None and entry.vs_reference is not None:
        block["label"], block["defense"], block["settings"] = entry.label, entry.defense, dict(entry.settings)
        block["trial_number"] = entry.trial_number
        block["privacy_difference"] = entry.vs_reference.privacy.to_json()
        block["utility_difference"] = entry.vs_reference.utility.to_json()
        block["gain_confirmed"] = entry.vs_reference.privacy.below_zero
        block["accuracy_constraint"] = entry.accuracy_constraint
    if confirmed.cap is not None:
        block["max_leakage"] = confirmed.cap.max_leakage
        # under a cap the best confirmed setting is one whose interval keeps it (None: no setting does)
        block["leakage_cap"] = "no confirmed setting keeps the cap" if entry is None else "keeps the cap"
    if len(sentence) > 1:  # did tuning beat the paper's default (or the named comparison)?
        block["verdict"] = sentence[1]
        block["comparison"] = None if confirmed.comparison is None else confirmed.comparison.to_json()
    if confirmation.state == "stale":
        block["command"] = commands["confirm"]
        block["note"] = confirmation.note
    return block


def attack_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {key: metrics.get(key) for key, _ in METRIC_LABELS}


def unresolved(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The TPRs at an FPR that the victim's non-member targets cannot resolve, each with the words that replace
    its number (its digits would be noise; see docs/validity.md)."""
    non_members = (metrics.get("targets") or {}).get("non_members")
    if non_members is None:
        return {}
    found = {}
    for key, fpr in METRIC_FPRS.items():
        resolution = tpr_resolution(fpr, non_members)
        if key in metrics and not resolution.resolvable:
            found[key] = unresolvable_text(non_members, resolution.needs)
    return found


def attack_rows(reference: ReferenceRecord | None, trial: optuna.trial.FrozenTrial | None) -> list[AttackRowJSON]:
    """Per attack: the undefended and the best defended model's balanced accuracy, AUC and TPR at low FPR, each
    metric's 95% interval over the targets, the TPRs the targets cannot resolve (in words), and the lower bound on
    epsilon of each model's attack decisions."""
    undefended = {} if reference is None else reference.get("attacks", {})
    defended = TrialMetrics.of(trial).attacks if trial is not None else {}
    names = list(dict.fromkeys([*undefended, *defended]))
    return [attack_row(name, undefended.get(name, {}), defended.get(name, {})) for name in names]


def attack_row(name: str, undefended: Mapping[str, Any], defended: Mapping[str, Any]) -> AttackRowJSON:
    sides = dict(zip(SIDES, (undefended, defended)))
    return {
        "attack": name,
        "undefended": attack_metrics(undefended),
        "defended": attack_metrics(defended),
        "intervals": {side: m.get("intervals", {}) for side, m in sides.items()},
        "not_resolvable": {side: unresolved(m) for side, m in sides.items()},
        "epsilon_lower_bound": {side: m.get("epsilon_lower_bound") for side, m in sides.items()},
    }


def roc_points(trial: optuna.trial.FrozenTrial) -> dict[str, dict[str, list[float]]]:
    return {
        name: {"fpr": m[ROC]["fpr"], "tpr": m[ROC]["tpr"]}
        for name, m in TrialMetrics.of(trial).attacks.items()
        if m.get(ROC)
    }


def trial_rows(table: pd.DataFrame) -> list[Mapping[str, object]]:
    return [] if table.empty else table.astype(object).where(table.notna(), None).to_dict("records")


def timing_block(table: pd.DataFrame) -> TimingsJSON:
    """Where the time went: each trial's stages, and each attack's and model's median over trials."""
    if table.empty or "seconds.total" not in table.columns:
        return {"per_trial": [], "median_attack_seconds": {}, "median_model_seconds": {}}
    timed = table.dropna(subset=["seconds.total"])

    def medians(prefix: str) -> dict[str, float]:
        columns = [c for c in timed.columns if c.startswith(prefix) and c.count(".") == 2]
        return {c.removeprefix(prefix): float(timed[c].median()) for c in columns}

    return {
        "per_trial": timed[["number", *STAGES]].to_dict("records"),
        "median_attack_seconds": medians("seconds.attack."),
        "median_model_seconds": medians("seconds.model."),
    }


def definition_toml(definition: StudyDefinition) -> str:
    """The study's stored definition as a study file (what `wemem launch` reads back)."""
    return tomli_w.dumps(definition.model_dump(mode="json", exclude_none=True))


def reproducibility(
    study: optuna.Study, definition: StudyDefinition, confirmation: ConfirmationStatus | None
) -> ReproducibilityJSON:
    return {
        "study_environment": stored_environment(study),  # what the latest launcher ran with (None: not recorded)
        "report_environment": describe(),
        "seeds": {
            "study": definition.study.seed,
            "confirmation": list(confirmation.confirmation.seeds)
            if confirmation is not None and confirmation.confirmation is not None
            else [],
        },
        "assets_fingerprint": stored_fingerprint(study),
        # the user's plug-ins and trained victim the study ran with, each with the SHA-256 of its source or file
        "own_code": stored_own_code(study)[0],
        "definition_toml": definition_toml(definition),
    }
