"""What a study stores, in one place: every user-attribute name wemem writes, and its reader and writer.

Study attributes: the validated definition, where it was launched (cache folder, data root), the undefended
reference, the assets' fingerprint, where the shared work ran, the confirmations (the latest, those of other
attack suites, and every finished confirmation run), and the audits of shipped model files. Trial attributes:
the setting (defense, settings) and the metrics the objective wrote (``objectives.TrialOutcome.user_attrs``), plus
the lifecycle's own (why a trial failed, which launcher ran it, whether it was a surplus ask, warm starts) and one
system attribute (the launcher process).

The study's ``schema_version`` names the shape of the rest. A study stored in an earlier shape is brought to
:data:`SCHEMA_VERSION` by :func:`migrate` before this code writes to it (launch, resume and confirm all write), and
read through the same step in memory until then (status, report and export write nothing), so every reader here
reads one shape. A study stored by a newer wemem-search is refused: its attributes may mean what this code cannot
read. Trial attributes are not migrated: Optuna refuses to change a finished trial, so :class:`TrialMetrics` reads
what a trial may lack (one that failed or was pruned lacks its metrics anyway).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

import optuna

from wemem.defenses import Setting
from wemem.errors import WememError
from wemem.plugins import check_record
from wemem.validity import Check

if TYPE_CHECKING:  # an annotation only: the storage layer needs no torch to read a study
    from wemem.config import ExperimentConfig, PruningConfig

from ..studyfile import StudyDefinition, parse_study

# ----------------------------------------------------------------------------------------- study attributes
DEFINITION_ATTR = "definition"  # the study file, validated, as JSON
CACHE_DIR_ATTR = "cache_dir"  # the cache folder the study was launched with
DATA_ROOT_ATTR = "data_root"  # the data root it was launched with (None: the study file's)
BASE_DIR_ATTR = "base_dir"  # the study file's folder: plug-ins are imported from it first, relative paths start there
REFERENCE_ATTR = "reference"  # the undefended iteratively pruned reference: utility, privacy, per-attack metrics
ASSETS_FINGERPRINT_ATTR = "assets_fingerprint"  # split, pretrained models, mem-scores and reference
SHARED_WORK_JOBS_ATTR = "shared_work_jobs"  # where the shared work's jobs ran
OWN_CODE_ATTR = "own_code"  # plug-in references and checkpoint with the SHA-256 of each, as the study ran them
ENCODING_ATTR = "table_encoding"  # how a csv:/parquet: table became features (wemem.data.custom.fit_encoding)
ENVIRONMENT_ATTR = "environment"  # what the latest launcher ran with: Python, packages, device (wemem.environment)
CONFIRMATION_ATTR = "confirmation"  # the latest confirmation (what status, export and report read)
RUNS_ATTR = "confirmation_runs"  # + ":<suite>": every finished confirmation run, by setting and seed
VALIDITY_ATTR = "validity"  # the validity checks (wemem.validity), by name: the latest launcher's outcome of each
# + ":<UTC time>:<sha256 prefix>:<random>": one `wemem audit` of a shipped file, under a key of its own, so that two
# audits at the same moment each write one row and neither rewrites the other's. Added without a schema version
# step: an older wemem-search ignores an attribute it does not know, and a study stored before has no audits.
ARTIFACT_AUDIT_ATTR = "artifact_audit"
SCHEMA_VERSION_ATTR = "schema_version"  # the shape of everything else the study stores (absent: 1)
SCHEMA_VERSION = 2  # the shape this code writes and reads

# ----------------------------------------------------------------------------------------- trial attributes
DEFENSE_ATTR, SETTINGS_ATTR = "defense", "settings"  # the setting a trial evaluated
SPARSITY_ATTR, STEPS_ATTR = "sparsity", "pruning_steps"  # the pruning it evaluated at (absent: the study file's)
FAIL_REASON = "fail_reason"  # why a trial failed, in words
LAUNCHER_ATTR = "launcher"  # the launcher that ran the trial
SURPLUS_ATTR = "surplus"  # asked at the same moment as another launcher reached the budget: given back
WARM_START_ATTR = "warm_start"  # "reference" on the paper's enqueued settings
PROCESS_ATTR = "wemem:process"  # system attribute: the launcher process running the trial
# attributes that describe one run of a trial, not its setting: a retried copy starts without them
RUN_ATTRS = (LAUNCHER_ATTR, FAIL_REASON, SURPLUS_ATTR)
ROC = "roc"  # per-attack ROC curve points: kept with trials, left out of study-level summaries and exports


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


class NotAWememStudy(WememError):
    """A study in the storage that wemem did not create (a plain Optuna study)."""


class NewerSchema(WememError):
    """A study stored by a newer wemem-search, in a shape this code does not know."""


# ----------------------------------------------------------------------------------------- schema version
def schema_version(attrs: Mapping[str, object]) -> int:
    value = attrs.get(SCHEMA_VERSION_ATTR, 1)
    return value if isinstance(value, int) else 1


def check_schema(name: str, attrs: Mapping[str, object]) -> None:
    """Refuse (NewerSchema) a study stored in a shape newer than this code's: reading it could misread it, and
    writing it could leave attributes of two shapes."""
    version = schema_version(attrs)
    if version > SCHEMA_VERSION:
        raise NewerSchema(
            f"study {name!r} is stored in schema version {version}, newer than version "
            f"{SCHEMA_VERSION} that this wemem-search reads; upgrade wemem-search "
            "(`pip install --upgrade wemem-search`) to open it. Nothing was written"
        )


def _judged_by_study(definition: StudyDefinition) -> dict[str, object]:
    """What version 2 records of a confirmation's judges, for one judged by the study's own attacks (the only
    judges a version-1 confirmation had). Frozen here: a migration means what its version meant."""
    among = definition.objective.privacy_attacks
    return {
        "attacks": sorted(definition.attacks.names),
        **({"privacy_attacks": sorted(among)} if among else {}),
        "study_suite": True,
    }


def _is_confirmation(key: str) -> bool:
    return key == CONFIRMATION_ATTR or key.startswith(CONFIRMATION_ATTR + ":")


def migration(attrs: Mapping[str, Any]) -> dict[str, object]:
    """The attributes to write to bring a study stored as ``attrs`` to :data:`SCHEMA_VERSION`, the version
    last (none when it is there). From version 1: each confirmation names its judges."""
    if schema_version(attrs) >= SCHEMA_VERSION or DEFINITION_ATTR not in attrs:  # the latter: not wemem's
        return {}
    judges = _judged_by_study(parse_study(attrs[DEFINITION_ATTR], "(stored definition)"))
    confirmations = {
        key: {**value, **judges}
        for key, value in attrs.items()
        if _is_confirmation(key) and isinstance(value, dict) and "attacks" not in value
    }
    return {**confirmations, SCHEMA_VERSION_ATTR: SCHEMA_VERSION}


def migrate(study: optuna.Study) -> bool:
    """Rewrite what an earlier version stored into today's shape, once; whether anything was written. Every
    writer below runs it first, so no study holds two shapes. The version is written last: a migration
    interrupted half-way runs again."""
    attrs = study.user_attrs
    check_schema(study.study_name, attrs)
    changes = migration(attrs)
    for key, value in changes.items():
        study.set_user_attr(key, value)
    return bool(changes)


def _attrs(study: optuna.Study) -> Mapping[str, Any]:
    """The study's attributes in today's shape: an unmigrated study's through the migration, in memory."""
    attrs = study.user_attrs
    return {**attrs, **migration(attrs)}


def _set(study: optuna.Study, key: str, value: object) -> None:
    migrate(study)
    study.set_user_attr(key, value)


def store_new_study(study: optuna.Study, definition: StudyDefinition) -> None:
    """What a study is created with: its schema version, then its definition (what concurrent launchers wait
    for, so they never see a definition without its version)."""
    study.set_user_attr(SCHEMA_VERSION_ATTR, SCHEMA_VERSION)
    study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json"))


def has_definition(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return DEFINITION_ATTR in storage.get_study_user_attrs(storage.get_study_id_from_name(name))


def stored_definition(name: str, storage: optuna.storages.BaseStorage) -> StudyDefinition:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        known = study_names(storage)
        raise WememError(
            f"no study named {name!r} in this storage; known studies: {', '.join(known) or 'none'}. "
            "Launch it with `wemem launch STUDY.toml` or pass the right --storage"
        ) from None
    attrs = storage.get_study_user_attrs(study_id)
    if DEFINITION_ATTR not in attrs:
        raise NotAWememStudy(
            f"study {name!r} was not created by wemem (it has no stored definition); open it with "
            "Optuna itself, e.g. optuna-dashboard on this storage"
        )
    check_schema(name, attrs)
    definition = parse_study(attrs[DEFINITION_ATTR], f"(stored definition of study {name!r})")
    # a study copied under another name (optuna.copy_study) keeps the original's definition: it is this study
    return definition.with_name(name)


def store_launch_place(study: optuna.Study, cache_dir: str, data_root: str | None, base_dir: str | None = None) -> None:
    _set(study, CACHE_DIR_ATTR, cache_dir)
    _set(study, DATA_ROOT_ATTR, data_root)
    if base_dir is not None:
        _set(study, BASE_DIR_ATTR, base_dir)


def stored_base_dir(study: optuna.Study) -> str | None:
    value = _attrs(study).get(BASE_DIR_ATTR)
    return value if isinstance(value, str) else None


def stored_cache_dir(study: optuna.Study) -> str | None:
    value = _attrs(study).get(CACHE_DIR_ATTR)
    return value if isinstance(value, str) else None


def stored_data_root(study: optuna.Study) -> str | None:
    value = _attrs(study).get(DATA_ROOT_ATTR)
    return value if isinstance(value, str) else None


def without_roc(attacks: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """Per-attack metrics without their ROC points (the one place that strips them)."""
    return {name: {k: v for k, v in metrics.items() if k != ROC} for name, metrics in attacks.items()}


def store_reference(
    study: optuna.Study,
    utility: float,
    privacy: float,
    strongest_attack: str,
    attacks: Mapping[str, Mapping[str, object]],
) -> None:
    _set(
        study,
        REFERENCE_ATTR,
        {"utility": utility, "privacy": privacy, "strongest_attack": strongest_attack, "attacks": without_roc(attacks)},
    )


def store_validity(study: optuna.Study, checks: list[Check]) -> None:
    """Record checks with the study, each replacing the stored check of its name (a later launcher re-measures)."""
    stored = dict(_attrs(study).get(VALIDITY_ATTR) or {})
    stored.update({check.name: to_json(check.to_dict()) for check in checks})
    _set(study, VALIDITY_ATTR, stored)


def stored_validity(study: optuna.Study) -> list[Check]:
    """The study's validity checks in the order they are run (none until a launcher has run them)."""
    stored = _attrs(study).get(VALIDITY_ATTR) or {}
    order = ("checkpoint", "resolution", "reference", "mimicry")
    names = sorted(stored, key=lambda name: order.index(name) if name in order else len(order))
    return [Check.from_dict(stored[name]) for name in names]


class ReferenceRecord(TypedDict):
    """The stored undefended reference (:func:`store_reference`): per-attack metrics without their ROC points."""

    utility: float
    privacy: float
    strongest_attack: str
    attacks: dict[str, dict[str, Any]]


def stored_reference(study: optuna.Study) -> ReferenceRecord | None:
    reference: ReferenceRecord | None = _attrs(study).get(REFERENCE_ATTR)
    return reference


def reference_of(study: optuna.Study) -> ReferenceRecord:
    """The stored reference, or an error saying how to measure it."""
    ref = stored_reference(study)
    if ref is None:
        raise WememError(
            f"study {study.study_name!r} has no reference measurement yet; run `wemem resume {study.study_name}`"
        )
    return ref


def stored_fingerprint(study: optuna.Study) -> str | None:
    value = _attrs(study).get(ASSETS_FINGERPRINT_ATTR)
    return value if isinstance(value, str) else None


def store_fingerprint(study: optuna.Study, fingerprint: str) -> None:
    _set(study, ASSETS_FINGERPRINT_ATTR, fingerprint)


def store_shared_work_jobs(study: optuna.Study, jobs: list[list[Any]]) -> None:
    _set(study, SHARED_WORK_JOBS_ATTR, jobs)


def store_environment(study: optuna.Study, environment: Mapping[str, object]) -> None:
    _set(study, ENVIRONMENT_ATTR, environment)


def store_own_code(
    study: optuna.Study,
    own_code: Mapping[str, object],
    encoding: Mapping[str, object] | None,
) -> None:
    """What of the study lives outside it: the plug-ins' and checkpoint's hashes, and a table's encoding."""
    if own_code:
        _set(study, OWN_CODE_ATTR, own_code)
    if encoding is not None:
        _set(study, ENCODING_ATTR, encoding)


def stored_own_code(study: optuna.Study) -> tuple[Mapping[str, object], Mapping[str, object] | None]:
    """The plug-ins' and checkpoint's hashes (none for a study of built-in parts) and a table's encoding."""
    attrs = _attrs(study)
    return attrs.get(OWN_CODE_ATTR) or {}, attrs.get(ENCODING_ATTR)


def check_stored_code(study: optuna.Study, experiment: ExperimentConfig) -> None:
    """A stored study's plug-ins run (``resume``, ``confirm``) only when every file of them is the one the study
    recorded: read, before anything is imported. A storage is received input like an export; its definition's
    references obey the same rule (wemem.plugins) before any file is read."""
    own = _attrs(study).get(OWN_CODE_ATTR)
    where = f"the storage of study {study.study_name!r}"
    fix = (
        "put back the files the study ran with (`wemem report` lists them), or launch the study file again: "
        "`wemem launch FILE` continues the study and records the files it runs"
    )
    for kind, reference in experiment.plugin_references().items():
        check_record(own.get(kind) if isinstance(own, dict) else None, reference, kind, experiment.base_dir, where, fix)


def stored_environment(study: optuna.Study) -> Mapping[str, object] | None:
    """What the latest launcher ran with, or None until a launcher has run the shared work."""
    value = _attrs(study).get(ENVIRONMENT_ATTR)
    return value if isinstance(value, dict) else None


def stored_confirmation(study: optuna.Study) -> dict[str, Any] | None:
    return _attrs(study).get(CONFIRMATION_ATTR)


def archived_confirmations(study: optuna.Study) -> list[dict[str, Any]]:
    """Confirmations by other attack suites that a later one replaced (``confirmation:<suite>``)."""
    return [v for k, v in _attrs(study).items() if _is_confirmation(k) and k != CONFIRMATION_ATTR]


def store_confirmation_record(
    study: optuna.Study,
    summary: Mapping[str, object],
    archive_suite: str | None = None,
    archived: Mapping[str, object] | None = None,
) -> None:
    """Make ``summary`` the latest confirmation, first archiving ``archived`` under its suite."""
    if archive_suite is not None:
        _set(study, f"{CONFIRMATION_ATTR}:{archive_suite}", archived)
    _set(study, CONFIRMATION_ATTR, summary)


def confirmation_runs(study: optuna.Study, suite: str) -> dict[str, Any]:
    return dict(_attrs(study).get(f"{RUNS_ATTR}:{suite}", {}))


def store_confirmation_runs(study: optuna.Study, suite: str, runs: Mapping[str, object]) -> None:
    _set(study, f"{RUNS_ATTR}:{suite}", runs)


def artifact_audit_key(sha256: str, now: datetime) -> str:
    """An audit's own key: its time first (to the microsecond, fixed width, so keys sort in time order), the
    file's hash prefix for a reader of the raw attributes, and a random part that no concurrent audit shares."""
    return f"{ARTIFACT_AUDIT_ATTR}:{now.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}:{sha256[:12]}:{uuid.uuid4().hex[:8]}"


def store_artifact_audit(study: optuna.Study, sha256: str, record: Mapping[str, object]) -> None:
    """Add one audit of a shipped file (a study attribute: no trial is touched)."""
    _set(study, artifact_audit_key(sha256, datetime.now(UTC)), to_json(record))


def stored_artifact_audits(study: optuna.Study) -> list[dict[str, Any]]:
    """Every stored audit of a shipped file, oldest first."""
    attrs = _attrs(study)
    return [attrs[key] for key in sorted(key for key in attrs if key.startswith(ARTIFACT_AUDIT_ATTR + ":"))]


@dataclass(frozen=True)
class TrialMetrics:
    """A trial's stored setting and metrics (what ``objectives.TrialOutcome.user_attrs`` wrote), read in one place.

    A trial that failed, was pruned or is running may lack them: numbers read as NaN, names as None, ``feasible``
    as None (readers say what a missing one means to them).
    """

    defense: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    utility: float = math.nan
    privacy: float = math.nan
    strongest_attack: str | None = None
    feasible: bool | None = None
    defense_seconds: float | None = None
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    privacy_se: float | None = None  # one evaluation's standard error of the leakage (None: not measured)
    privacy_se_kind: str | None = None

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> TrialMetrics:
        a = trial.user_attrs
        return cls(
            defense=a.get(DEFENSE_ATTR),
            settings=a.get(SETTINGS_ATTR, {}),
            utility=a.get("utility", math.nan),
            privacy=a.get("privacy", math.nan),
            strongest_attack=a.get("strongest_attack"),
            feasible=a.get("feasible"),
            defense_seconds=a.get("defense_seconds"),
            attacks=a.get("attacks", {}),
            timings=a.get("timings", {}),
            privacy_se=a.get("privacy_se"),
            privacy_se_kind=a.get("privacy_se_kind"),
        )


def store_setting(trial: optuna.Trial, setting: Setting) -> None:
    """Record the setting a trial evaluates, as it is asked (before it runs)."""
    trial.set_user_attr(DEFENSE_ATTR, setting.defense)
    trial.set_user_attr(SETTINGS_ATTR, setting.settings)


def store_pruning(trial: optuna.Trial, pruning: PruningConfig) -> None:
    """Record the pruning a trial of a study that searches it (``[search.space.pruning]``) evaluates at, as it is
    asked; a trial of any other study stores none: it is at the study file's ``[pruning]``."""
    trial.set_user_attr(SPARSITY_ATTR, pruning.sparsity)
    trial.set_user_attr(STEPS_ATTR, pruning.steps)


class PruningRecord(TypedDict):
    """The pruning a trial evaluated at, as exports state it."""

    sparsity: float
    steps: int


def stored_pruning(trial: optuna.trial.FrozenTrial) -> PruningRecord | None:
    """The pruning a trial stored (None: the study file's, as its study does not search the pruning)."""
    a = trial.user_attrs
    if SPARSITY_ATTR not in a:
        return None
    return {"sparsity": float(a[SPARSITY_ATTR]), "steps": int(a[STEPS_ATTR])}


def has_setting(trial: optuna.trial.FrozenTrial) -> bool:
    return SETTINGS_ATTR in trial.user_attrs


def trial_setting(trial: optuna.trial.FrozenTrial) -> Setting:
    """The setting a trial evaluated, as stored (validated when the trial ran)."""
    return Setting.recorded(trial.user_attrs[DEFENSE_ATTR], trial.user_attrs[SETTINGS_ATTR])


def fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why a FAIL trial failed, for ``wemem status``."""
    if FAIL_REASON in trial.user_attrs:
        return str(trial.user_attrs[FAIL_REASON])
    return "its launcher died or lost the storage (no heartbeat within the grace period)"


def to_json(value: Any) -> Any:
    """Round-trip through JSON so user attributes hold plain types."""
    return json.loads(json.dumps(value, default=float))
