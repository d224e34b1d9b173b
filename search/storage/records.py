"""What a study stores, in one place: every user-attribute name wemem writes, and its reader and writer.

Study attributes: the validated definition, where it was launched (cache folder, data root), the undefended
reference, the assets' fingerprint, where the shared work ran, and the confirmations (the latest, those of other
attack suites, and every finished confirmation run). Trial attributes: the setting (defense, settings) and the
metrics the objective wrote (``objectives.TrialOutcome.user_attrs``), plus the lifecycle's own (why a trial
failed, which launcher ran it, whether it was a surplus ask, warm starts) and one system attribute (the launcher
process). Keys and values are those of earlier versions: existing studies read as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from wemem.errors import WememError
from wemem.plugins import check_record
from wemem.validity import Check

if TYPE_CHECKING:  # an annotation only: the storage layer needs no torch to read a study
    from wemem.config import ExperimentConfig

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

# ----------------------------------------------------------------------------------------- trial attributes
DEFENSE_ATTR, SETTINGS_ATTR = "defense", "settings"  # the setting a trial evaluated
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


def store_definition(study: optuna.Study, definition: StudyDefinition) -> None:
    study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json"))


def has_definition(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return DEFINITION_ATTR in storage.get_study_user_attrs(storage.get_study_id_from_name(name))
def stored_definition(name: str, storage: optuna.storages.BaseStorage) -> StudyDefinition:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        known = study_names(storage)
        raise WememError(f"no study named {name!r} in this storage; known studies: {', '.join(known) or 'none'}. "
                         "Launch it with `wemem launch STUDY.toml` or pass the right --storage") from None
    attrs = storage.get_study_user_attrs(study_id)
    if DEFINITION_ATTR not in attrs:
        raise NotAWememStudy(f"study {name!r} was not created by wemem (it has no stored definition); open it with "
                             "Optuna itself, e.g. optuna-dashboard on this storage")
    definition = parse_study(attrs[DEFINITION_ATTR], f"(stored definition of study {name!r})")
    # a study copied under another name (optuna.copy_study) keeps the original's definition: it is this study
    return definition.with_name(name)




def store_launch_place(study: optuna.Study, cache_dir: str, data_root: str | None, base_dir: str | None = None) -> None:
    study.set_user_attr(CACHE_DIR_ATTR, cache_dir)
    study.set_user_attr(DATA_ROOT_ATTR, data_root)
    if base_dir is not None:
        study.set_user_attr(BASE_DIR_ATTR, base_dir)


def stored_base_dir(study: optuna.Study) -> str | None:
    value = study.user_attrs.get(BASE_DIR_ATTR)
    return value if isinstance(value, str) else None


def stored_cache_dir(study: optuna.Study) -> str | None:
    value = study.user_attrs.get(CACHE_DIR_ATTR)
    return value if isinstance(value, str) else None


def stored_data_root(study: optuna.Study) -> str | None:
    return study.user_attrs.get(DATA_ROOT_ATTR)


def without_roc(attacks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-attack metrics without their ROC points (the one place that strips them)."""
    return {name: {k: v for k, v in metrics.items() if k != ROC} for name, metrics in attacks.items()}


def store_reference(study: optuna.Study, utility: float, privacy: float, strongest_attack: str,
                    attacks: dict[str, dict[str, Any]]) -> None:
    study.set_user_attr(REFERENCE_ATTR, {"utility": utility, "privacy": privacy, "strongest_attack": strongest_attack,
                                         "attacks": without_roc(attacks)})


def store_validity(study: optuna.Study, checks: list[Check]) -> None:
    """Record checks with the study, each replacing the stored check of its name (a later launcher re-measures)."""
    stored = dict(study.user_attrs.get(VALIDITY_ATTR) or {})
    stored.update({check.name: to_json(check.to_dict()) for check in checks})
    study.set_user_attr(VALIDITY_ATTR, stored)


def stored_validity(study: optuna.Study) -> list[Check]:
    """The study's validity checks in the order they are run (none for a study launched before they existed)."""
    stored = study.user_attrs.get(VALIDITY_ATTR) or {}
    order = ("checkpoint", "resolution", "reference", "mimicry")
    names = sorted(stored, key=lambda name: order.index(name) if name in order else len(order))
    return [Check.from_dict(stored[name]) for name in names]


def stored_reference(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(REFERENCE_ATTR)


def reference_of(study: optuna.Study) -> dict[str, Any]:
    """The stored reference, or an error saying how to measure it."""
    ref = stored_reference(study)
    if ref is None:
        raise WememError(f"study {study.study_name!r} has no reference measurement yet; run `wemem resume {study.study_name}`")
    return ref


def stored_fingerprint(study: optuna.Study) -> str | None:
    return study.user_attrs.get(ASSETS_FINGERPRINT_ATTR)


def store_fingerprint(study: optuna.Study, fingerprint: str) -> None:
    study.set_user_attr(ASSETS_FINGERPRINT_ATTR, fingerprint)


def store_shared_work_jobs(study: optuna.Study, jobs: list[list[Any]]) -> None:
    study.set_user_attr(SHARED_WORK_JOBS_ATTR, jobs)


def store_environment(study: optuna.Study, environment: dict[str, Any]) -> None:
    study.set_user_attr(ENVIRONMENT_ATTR, environment)


def store_own_code(study: optuna.Study, own_code: dict[str, Any], encoding: dict[str, Any] | None) -> None:
    """What of the study lives outside it: the plug-ins' and checkpoint's hashes, and a table's encoding."""
    if own_code:
        study.set_user_attr(OWN_CODE_ATTR, own_code)
    if encoding is not None:
        study.set_user_attr(ENCODING_ATTR, encoding)


def stored_own_code(study: optuna.Study) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return study.user_attrs.get(OWN_CODE_ATTR) or {}, study.user_attrs.get(ENCODING_ATTR)


def check_stored_code(study: optuna.Study, experiment: ExperimentConfig) -> None:
    """A stored study's plug-ins run (``resume``, ``confirm``) only when every file of them is the one the study
    recorded: read, before anything is imported. A storage is received input like an export; its definition's
    references obey the same rule (wemem.plugins) before any file is read."""
    own = study.user_attrs.get(OWN_CODE_ATTR)
    where = f"the storage of study {study.study_name!r}"
    fix = ("put back the files the study ran with (`wemem report` lists them), or launch the study file again: "
           "`wemem launch FILE` continues the study and records the files it runs")
    for kind, reference in experiment.plugin_references().items():
        check_record(own.get(kind) if isinstance(own, dict) else None, reference, kind, experiment.base_dir, where,
                     fix)


def stored_environment(study: optuna.Study) -> dict[str, Any] | None:
    """What the latest launcher ran with, or None for a study launched before environments were recorded."""
    return study.user_attrs.get(ENVIRONMENT_ATTR)


def stored_confirmation(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(CONFIRMATION_ATTR)


def archived_confirmations(study: optuna.Study) -> list[dict[str, Any]]:
    """Confirmations by other attack suites that a later one replaced (``confirmation:<suite>``)."""
    return [v for k, v in study.user_attrs.items() if k.startswith(CONFIRMATION_ATTR + ":")]


def store_confirmation_record(study: optuna.Study, summary: dict[str, Any], archive_suite: str | None = None,
                              archived: dict[str, Any] | None = None) -> None:
    """Make ``summary`` the latest confirmation, first archiving ``archived`` under its suite."""
    if archive_suite is not None:
        study.set_user_attr(f"{CONFIRMATION_ATTR}:{archive_suite}", archived)
    study.set_user_attr(CONFIRMATION_ATTR, summary)


def confirmation_runs(study: optuna.Study, suite: str) -> dict[str, Any]:
    return dict(study.user_attrs.get(f"{RUNS_ATTR}:{suite}", {}))


def store_confirmation_runs(study: optuna.Study, suite: str, runs: dict[str, Any]) -> None:
    study.set_user_attr(f"{RUNS_ATTR}:{suite}", runs)


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
    privacy_se: float | None = None  # one evaluation's standard error of the leakage (None: stored before it was)
    privacy_se_kind: str | None = None

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> "TrialMetrics":
        a = trial.user_attrs
        return cls(defense=a.get(DEFENSE_ATTR), settings=a.get(SETTINGS_ATTR, {}), utility=a.get("utility", math.nan),
                   privacy=a.get("privacy", math.nan), strongest_attack=a.get("strongest_attack"),
                   feasible=a.get("feasible"), defense_seconds=a.get("defense_seconds"), attacks=a.get("attacks", {}),
                   timings=a.get("timings", {}), privacy_se=a.get("privacy_se"),
                   privacy_se_kind=a.get("privacy_se_kind"))


def has_setting(trial: optuna.trial.FrozenTrial) -> bool:
    return SETTINGS_ATTR in trial.user_attrs


def trial_setting(trial: optuna.trial.FrozenTrial) -> tuple[str, dict[str, Any]]:
    """The (defense, settings) a trial evaluated."""
    return trial.user_attrs[DEFENSE_ATTR], dict(trial.user_attrs[SETTINGS_ATTR])


def fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why a FAIL trial failed, for ``wemem status``."""
    if FAIL_REASON in trial.user_attrs:
        return str(trial.user_attrs[FAIL_REASON])
    return "its launcher died or lost the storage (no heartbeat within the grace period)"


def to_json(value: Any) -> Any:
    """Round-trip through JSON so user attributes hold plain types."""
    return json.loads(json.dumps(value, default=float))
