"""``wemem audit``: the study's attack suite against a shipped model file's own outputs, beside the figure the
study recorded for the file's setting, stored with the study.

The attacker is the study's: the same targets (the victim's balanced set, draw 0), the same shadows (pruned with
the file's setting, adaptive as the study is, from the study's cached assets: the jobs ``apply`` runs for them),
the same attacks. Only the victim's outputs are replaced, by the file's (:mod:`wemem.deployed`). The record names
the file by the SHA-256 of its bytes, so a file that differs from the one the study produced (other weights,
another sparsity) is audited as what it is, and its difference from the recorded figure is shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import optuna
import pandas as pd

from objectives import ObjectiveConfig, leakage
from wemem.artifact import ArtifactMeta
from wemem.assets import Echo, StudyAssets, prepare_assets
from wemem.attacks import needs_sensitivity
from wemem.defenses import DEFENSES, UNDEFENDED, Setting
from wemem.deployed import DeployedArtifact, deployed_victim, open_artifact
from wemem.metrics import METRIC_FPRS, tpr_resolution
from wemem.parallel import MapFn
from wemem.pipeline import PrunedModel, PruningJob, prune_job, run_attack_stage

from ..confirm import Confirmation
from ..confirm._confirmation import IntervalJSON
from ..exceptions import BadInputError
from ..storage._records import (
    TrialMetrics,
    check_stored_code,
    store_artifact_audit,
    stored_artifact_audits,
    stored_confirmation,
    trial_setting,
    without_roc,
)
from ..study import OpenStudy
from ..studyfile._exports import read_export
from ._apply import select_record
from ._text import INTERVAL_NOTE, METRIC_LABELS, metric_text

DRAW = 0  # the study's own targets: the draw every recorded figure's intervals are measured on


class LeakageJSON(TypedDict):
    """The leakage of one evaluation: the strongest attack's metric and its 95% bootstrap interval."""

    metric: str
    attack: str
    value: float
    low: float
    high: float


class RecordedJSON(TypedDict):
    """The figure the study recorded for the audited setting: its trial's own evaluation (one evaluation on the
    study's seed), and the confirmed means with their intervals over fresh seeds when ``wemem confirm`` ran."""

    trial: int
    test_accuracy: float
    leakage: LeakageJSON  # on the study's targets (draw 0), the audit's own: like is compared with like
    scored: float  # the leakage the study scored the trial by (a mean over its repeats and target draws, if any)
    attacks: dict[str, dict[str, Any]]
    confirmed: dict[str, IntervalJSON] | None


class DifferenceJSON(TypedDict):
    """The audited file minus the recorded evaluation (sparsity: minus the study's target sparsity)."""

    leakage: float
    test_accuracy: float
    sparsity: float | None
    leakage_within_recorded_interval: bool | None  # None: the recorded figure has no interval


class AuditRecord(TypedDict):
    """One audit as stored in the study (``search.storage._records.store_artifact_audit``) and returned by
    ``search.api.audit``."""

    time: str
    file: str
    sha256: str
    kind: str
    sparsity: float | None
    layer_sparsity: dict[str, float]
    claimed_sparsity: float | None
    study_sparsity: float
    defense: str
    settings: dict[str, Any]
    setting_key: str
    setting_from: str
    test_accuracy: float
    leakage: LeakageJSON
    attacks: dict[str, dict[str, Any]]
    recorded: RecordedJSON | None
    difference: DifferenceJSON | None
    notes: list[str]


@dataclass(frozen=True)
class AuditedSetting:
    """The setting a file is audited under, the study's trial that evaluated it (None: none named) and where
    both came from, in words."""

    setting: Setting
    trial: int | None
    source: str


def setting_of(
    meta: ArtifactMeta | None, study: str, path: Path, export_file: str | Path | None, trial: int | None
) -> AuditedSetting:
    """The file's setting: its metadata's, else the export that names it; a file of another study is refused."""
    if meta is not None and meta.study is not None and meta.study != study:
        raise BadInputError(
            f"{path} was produced by study {meta.study!r}, not {study!r}: audit it with --study {meta.study} "
            "(a file is audited against the study that produced it)"
        )
    if meta is not None and meta.setting is not None:
        return AuditedSetting(meta.setting, meta.trial, "the file's metadata")
    if export_file is None:
        raise BadInputError(
            f"{path} carries no defense setting in its metadata (not written by `wemem apply`): name its setting "
            f"with --export best.toml [--trial N], the export of study {study!r} whose setting the file was "
            "trained with"
        )
    document = read_export(export_file)
    if document.get("study") != study:
        raise BadInputError(f"export file {export_file} is of study {document.get('study')!r}, not {study!r}")
    chosen = select_record(document, trial, str(export_file))
    return AuditedSetting(chosen.setting, chosen.number, f"export file {export_file}")


def leakage_of(attacks: Mapping[str, Mapping[str, Any]], metric: str, among: list[str] | None) -> LeakageJSON:
    """The strongest attack's ``metric`` with its stored interval (nan bounds: stored without one)."""
    value, attack = leakage(attacks, metric, among)
    low, high = attacks[attack].get("intervals", {}).get(metric, (math.nan, math.nan))
    return LeakageJSON(metric=metric, attack=attack, value=value, low=low, high=high)


def confirmed_of(study: optuna.Study, trial: int) -> dict[str, IntervalJSON] | None:
    """The trial's confirmed means and intervals over fresh seeds, when the stored confirmation covers it."""
    stored = stored_confirmation(study)
    entry = None if stored is None else Confirmation.from_json(stored).entry(trial)
    if entry is None:
        return None
    return {"test_accuracy": entry.utility.to_json(), "privacy": entry.privacy.to_json()}


def judged_among(objective: ObjectiveConfig) -> list[str] | None:
    """The attacks the study's leakage is the strongest of (None: every attack of its suite)."""
    return list(objective.privacy_attacks) if objective.privacy_attacks else None


def recorded_figure(opened: OpenStudy, audited: AuditedSetting) -> RecordedJSON | None:
    """The study's evaluation of the audited setting (None: no finished trial named), its trial checked to have
    run that very setting."""
    if audited.trial is None:
        return None
    study = opened.study
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    trial = trials.get(audited.trial)
    if trial is None:
        raise BadInputError(
            f"{audited.source} names trial #{audited.trial}, which is not a finished trial of study "
            f"{study.study_name!r} (see `wemem status {study.study_name}`)"
        )
    if trial_setting(trial).key() != audited.setting.key():
        raise BadInputError(
            f"{audited.source} says trial #{audited.trial} ran {audited.setting.key()}, but the study's trial "
            f"#{audited.trial} ran {trial_setting(trial).key()}: the file did not come from this study's trial"
        )
    metrics, objective = TrialMetrics.of(trial), opened.spec.objective
    shown = (
        leakage_of(metrics.attacks, objective.privacy_metric, judged_among(objective))
        if metrics.attacks
        else LeakageJSON(
            metric=objective.privacy_metric,
            attack=metrics.strongest_attack or "-",
            value=metrics.privacy,
            low=math.nan,
            high=math.nan,
        )
    )
    return RecordedJSON(
        trial=trial.number,
        test_accuracy=metrics.utility,
        leakage=shown,
        scored=metrics.privacy,
        attacks=metrics.attacks,
        confirmed=confirmed_of(study, trial.number),
    )


def serving_notes(setting: Setting) -> list[str]:
    """What the file cannot carry of the setting: a defense's output transform runs at serving time, outside it."""
    defense = DEFENSES.get(setting.defense)
    base = DEFENSES.get(UNDEFENDED)
    if defense.output_log_probs is base.output_log_probs:
        return []
    return [
        (
            f"the {setting.defense} defense transforms the outputs at serving time; a file carries only the network, "
            "so it is audited without that transform (the recorded figure includes it)"
        )
    ]


def shadows_of(
    opened: OpenStudy, audited: AuditedSetting, assets: StudyAssets, map_fn: MapFn, sensitivity: bool
) -> list[PrunedModel]:
    """The attacker's K shadows pruned with the setting (undefended for a non-adaptive study), as ``apply``'s
    evaluation prunes them: same jobs, same seeds, so the same shadows."""
    spec = opened.spec
    setting = audited.setting if spec.adaptive else Setting(UNDEFENDED)
    job = PruningJob(1, setting, spec.pruning, sensitivity=sensitivity, draws=(DRAW,))
    return map_fn(prune_job, [(assets, replace(job, model_index=k)) for k in range(1, assets.config.shadows + 1)])


def difference_of(
    test_accuracy: float, found: LeakageJSON, sparsity: float | None, target: float, recorded: RecordedJSON | None
) -> DifferenceJSON | None:
    if recorded is None:
        return None
    shown = recorded["leakage"]
    return DifferenceJSON(
        leakage=found["value"] - shown["value"],
        test_accuracy=test_accuracy - recorded["test_accuracy"],
        sparsity=None if sparsity is None else sparsity - target,
        leakage_within_recorded_interval=None
        if math.isnan(shown["low"])
        else bool(shown["low"] <= found["value"] <= shown["high"]),
    )


@dataclass(frozen=True)
class CheckedArtifact:
    """An audit's inputs, every one checked: the file as the study's data queries it, its setting, and the
    recorded figure it is compared with."""

    artifact: DeployedArtifact
    audited: AuditedSetting
    recorded: RecordedJSON | None


def checked_artifact(
    opened: OpenStudy, path: str | Path, export_file: str | Path | None, trial: int | None
) -> CheckedArtifact:
    """Every input of an audit checked, nothing written (a bad one is a WememError)."""
    experiment = opened.spec.experiment
    check_stored_code(opened.study, experiment)  # the study's plug-ins, as it recorded them, or nothing runs
    artifact = open_artifact(path, experiment, experiment.load_pools())
    audited = setting_of(artifact.meta, opened.name, artifact.path, export_file, trial)
    audited.setting.make()  # an invalid setting fails before any training
    return CheckedArtifact(artifact, audited, recorded_figure(opened, audited))


def audit_artifact(opened: OpenStudy, checked: CheckedArtifact, map_fn: MapFn, echo: Echo) -> AuditRecord:
    """Run the audit of a :func:`checked_artifact` and store it with the study."""
    artifact, audited, recorded = checked.artifact, checked.audited, checked.recorded
    spec = opened.spec
    attacks = list(spec.attacks)
    sensitivity = needs_sensitivity(attacks)
    assets = prepare_assets(spec.experiment, spec.cache_dir, map_fn, log=echo)
    echo(f"pruning the attacker's {assets.config.shadows} shadow models with {setting_words(audited.setting)} ...")
    shadows = shadows_of(opened, audited, assets, map_fn, sensitivity)
    victim = deployed_victim(artifact, assets, sensitivity)
    echo(f"querying {artifact.path.name} and running the attacks {', '.join(attacks)} ...")
    (metrics,), _ = run_attack_stage(assets, victim, shadows, attacks, map_fn, (DRAW,))
    found = leakage_of(metrics, spec.objective.privacy_metric, judged_among(spec.objective))
    record = AuditRecord(
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        file=artifact.path.name,
        sha256=artifact.sha256,
        kind=artifact.kind,
        sparsity=artifact.sparsity,
        layer_sparsity=artifact.layer_sparsity,
        claimed_sparsity=None if artifact.meta is None else artifact.meta.sparsity,
        study_sparsity=spec.pruning.sparsity,
        defense=audited.setting.defense,
        settings=audited.setting.settings,
        setting_key=audited.setting.key(),
        setting_from=audited.source,
        test_accuracy=victim.test_accuracy,
        leakage=found,
        attacks=without_roc(metrics),
        recorded=recorded,
        difference=difference_of(victim.test_accuracy, found, artifact.sparsity, spec.pruning.sparsity, recorded),
        notes=serving_notes(audited.setting),
    )
    store_artifact_audit(opened.study, artifact.sha256, record)
    return record


# ------------------------------------------------------------------------------------------------ printed


def leakage_text(found: Mapping[str, Any]) -> str:
    interval = "no interval stored" if math.isnan(found["low"]) else f"[{found['low']:.4f}, {found['high']:.4f}]"
    return f"{found['value']:.4f} {interval}"


def setting_text(record: Mapping[str, Any]) -> str:
    return setting_words(Setting.recorded(record["defense"], record["settings"]))


def setting_words(setting: Setting) -> str:
    return f"{setting.defense} {json.dumps(setting.settings, sort_keys=True)}"


def interval_text(ci: IntervalJSON) -> str:
    return f"{ci['mean']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def _share(value: float | None) -> str:
    return "not measurable (the file names no tensor as the study's model does)" if value is None else f"{value:.6f}"


NOT_RESOLVABLE = "n/r"


def table_cell(metrics: Mapping[str, Any], key: str) -> str:
    """A metric with its interval, or :data:`NOT_RESOLVABLE` for a TPR the targets cannot resolve (a note under
    the table says why)."""
    non_members = metrics.get("targets", {}).get("non_members")
    if key in METRIC_FPRS and non_members is not None and not tpr_resolution(METRIC_FPRS[key], non_members).resolvable:
        return NOT_RESOLVABLE
    return metric_text(metrics, key)


def resolution_note(record: AuditRecord) -> list[str]:
    """What n/r stands for, with the victim's targets (the recorded figure's targets too)."""
    non_members = next(iter(record["attacks"].values()), {}).get("targets", {}).get("non_members")
    if non_members is None:
        return []
    needs = {f"{fpr:.1%}": tpr_resolution(fpr, non_members) for fpr in METRIC_FPRS.values()}
    unresolved = [
        f"at {fpr} FPR it needs {resolution.needs}" for fpr, resolution in needs.items() if not resolution.resolvable
    ]
    if not unresolved:
        return []
    return [f"{NOT_RESOLVABLE}: a TPR the {non_members} non-member targets cannot resolve ({'; '.join(unresolved)})"]


def attack_table(record: AuditRecord) -> str:
    """The per-attack table: the file's metrics beside the recorded trial's, each with its 95% interval."""
    sources = {f"file {record['sha256'][:12]}": record["attacks"]}
    if record["recorded"] is not None:
        sources[f"trial #{record['recorded']['trial']}"] = record["recorded"]["attacks"]
    rows = [
        {
            "attack": name,
            "model": source,
            **{label: table_cell(attacks[name], key) for key, label in METRIC_LABELS if key in attacks[name]},
            "epsilon_lb": f"{attacks[name]['epsilon_lower_bound']['value']:.3f}"
            if "epsilon_lower_bound" in attacks[name]
            else "-",
        }
        for name in record["attacks"]
        for source, attacks in sources.items()
        if name in attacks
    ]
    return pd.DataFrame(rows).set_index(["attack", "model"]).to_string()


def audit_lines(record: AuditRecord) -> list[str]:
    """What ``wemem audit`` prints of an audit."""
    found, recorded, difference = record["leakage"], record["recorded"], record["difference"]
    lines = [
        f"audited {record['file']} ({record['kind']}, sha256 {record['sha256']})",
        f"  setting {setting_text(record)} (from {record['setting_from']})",
        f"  sparsity {_share(record['sparsity'])} over the prunable weights (the study prunes to "
        f"{record['study_sparsity']:.6f}"
        + ("" if record["claimed_sparsity"] is None else f"; the metadata says {record['claimed_sparsity']:.6f}")
        + ")",
        (
            f"  test accuracy {record['test_accuracy']:.4f}; leakage ({found['metric']}, strongest attack "
            f"{found['attack']}) {leakage_text(found)}"
        ),
    ]
    if recorded is None or difference is None:
        lines.append("  recorded: none (no trial of the study named for this setting)")
    else:
        within = {
            True: "within the recorded 95% interval",
            False: "OUTSIDE the recorded 95% interval",
            None: "the recorded figure has no interval",
        }[difference["leakage_within_recorded_interval"]]
        lines += [
            (
                f"  recorded (trial #{recorded['trial']}, the study's own evaluation on the same targets): test "
                f"accuracy {recorded['test_accuracy']:.4f}; leakage (strongest attack {recorded['leakage']['attack']}) "
                f"{leakage_text(recorded['leakage'])}"
                + (
                    ""
                    if recorded["scored"] == recorded["leakage"]["value"]
                    else f"; the study scored it {recorded['scored']:.4f} (its mean over repeats and target draws)"
                )
            ),
            f"  difference (file - recorded): leakage {difference['leakage']:+.4f} ({within}), "
            f"test accuracy {difference['test_accuracy']:+.4f}"
            + ("" if difference["sparsity"] is None else f", sparsity {difference['sparsity']:+.6f}"),
        ]
        if recorded["confirmed"] is not None:
            confirmed = recorded["confirmed"]
            lines.append(
                f"  confirmed (mean [95% interval] over fresh seeds): leakage {interval_text(confirmed['privacy'])}, "
                f"test accuracy {interval_text(confirmed['test_accuracy'])}"
            )
    return (
        lines
        + [f"  note: {note}" for note in record["notes"]]
        + [f"attacks ({INTERVAL_NOTE}):", attack_table(record), *resolution_note(record)]
    )


def audited_lines(study: optuna.Study) -> list[str]:
    """What ``wemem status`` shows of the study's audits of shipped files, one line each, oldest first (nothing
    when there are none)."""
    lines = [
        f"  {audit['file']} sha256 {audit['sha256'][:12]}: leakage {leakage_text(audit['leakage'])}"
        + (
            ", no recorded figure"
            if audit["recorded"] is None
            else f" vs recorded {leakage_text(audit['recorded']['leakage'])} (trial #{audit['recorded']['trial']})"
        )
        for audit in stored_artifact_audits(study)
    ]
    return ["audited artifacts (leakage [95% interval], see `wemem report`):", *lines] if lines else []
