"""Export the best setting (or the Pareto set) of a study as TOML or JSON."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NotRequired, TypedDict

import optuna
import tomli_w

from wemem.defenses import Setting
from wemem.errors import WememError
from wemem.files import write_atomically

from ..confirm import ConfirmationStatus, export_section
from ..confirm._confirmation import PRIVACY, ConfirmationSectionJSON
from ..storage._records import (
    PruningRecord,
    TrialMetrics,
    reference_of,
    stored_own_code,
    stored_pruning,
    trial_setting,
    without_roc,
)
from ..study import OpenStudy, best_trials
from ..studyfile import StudyDefinition


class TrialMetricsJSON(TypedDict):
    """A trial's own evaluation as an export states it (None: not measured; dropped from the file)."""

    test_accuracy: float
    privacy: float
    # one evaluation's standard error; with [search] repeats the figures are means over the repeats, and the model
    # `apply` rebuilds is fine-tuning 0's (the study's own seeds)
    privacy_se: float | None
    repeats: int | None
    strongest_attack: str | None
    defense_seconds: float | None
    attacks: dict[str, dict[str, object]]


class TrialRecordJSON(TypedDict):
    """One exported trial: ``[best]`` or an entry of ``[[pareto]]``."""

    trial_number: int
    defense: str
    settings: Mapping[str, object]
    values: list[float]
    feasible: bool
    metrics: TrialMetricsJSON
    pruning: NotRequired[PruningRecord]  # the pruning it evaluated at (absent: the study's [pruning])


@dataclass(frozen=True)
class ExportedTrial:
    """A best trial as an export states it: its setting, objective values, feasibility and own evaluation."""

    number: int
    setting: Setting
    values: tuple[float, ...]
    feasible: bool
    metrics: TrialMetricsJSON
    pruning: PruningRecord | None = None

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> ExportedTrial:
        m = TrialMetrics.of(trial)  # a best trial is COMPLETE: every metric is there
        repeats = len(trial.user_attrs["repeats"]) if "repeats" in trial.user_attrs else None
        return cls(
            trial.number,
            trial_setting(trial),
            tuple(trial.values),
            m.feasible is not False,
            {
                "test_accuracy": m.utility,
                PRIVACY: m.privacy,
                "privacy_se": m.privacy_se,
                "repeats": repeats,
                "strongest_attack": m.strongest_attack,
                "defense_seconds": m.defense_seconds,
                "attacks": without_roc(m.attacks),
            },
            stored_pruning(trial),
        )

    def to_json(self) -> TrialRecordJSON:
        record: TrialRecordJSON = {
            "trial_number": self.number,
            "defense": self.setting.defense,
            "settings": self.setting.settings,
            "values": list(self.values),
            "feasible": self.feasible,
            "metrics": self.metrics,
        }
        if self.pruning is not None:
            record["pruning"] = self.pruning
        return record


def trial_record(trial: optuna.trial.FrozenTrial) -> TrialRecordJSON:
    return ExportedTrial.of(trial).to_json()


# The sections that define the experiment an export's metrics come from. The data root is not one: it names a
# folder on the exporting machine, where the same data may live elsewhere.
DEFINITION_SECTIONS = ("dataset", "model", "seed", "training", "pruning", "memscore", "attacks", "objective")
# present only in exports of studies with their own code or table (so older exports keep their fingerprint)
OWN_SECTIONS = ("own_code", "encoding")
DEFINITION_KEY: Final = "definition_sha256"


def objective_json(definition: StudyDefinition) -> dict[str, object]:
    """The [objective] section an export writes; reading it back gives the same objective. The keys the schema
    marks written-when-set (the leakage cap, the floor's reference, the sparsity objective) are left out where
    they keep their defaults, except that a cap study always states its cap and margin."""
    objective = definition.objective
    stated = {"max_leakage", "leakage_se_multiple"} if objective.mode == "leakage_cap" else set()  # the cap's own
    fields = type(objective).model_fields
    return objective.model_dump(
        exclude={
            key
            for key in type(objective).written_when_set()
            if key not in stated and getattr(objective, key) == fields[key].default
        }
    )


def definition_fingerprint(document: Mapping[str, object]) -> str:
    """SHA-256 of the canonical JSON of the defining sections, as read back from TOML or JSON (so an unedited
    export recomputes its stored value, and an edited one does not)."""
    sections = {key: document.get(key) for key in DEFINITION_SECTIONS}
    sections.update({key: document[key] for key in OWN_SECTIONS if key in document})
    dataset = sections["dataset"]
    if isinstance(dataset, dict):
        sections["dataset"] = {k: v for k, v in dataset.items() if k != "data_root"}
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class DefinitionJSON(TypedDict):
    """The study, its definition's sections and its undefended reference."""

    study: str
    objective: Mapping[str, object]
    dataset: Mapping[str, object]
    model: str
    seed: int
    pruning: Mapping[str, object]
    training: Mapping[str, object]
    memscore: Mapping[str, object]
    attacks: Mapping[str, object]
    reference: Mapping[str, object]


class OwnJSON(TypedDict, total=False):
    own_code: Mapping[str, object]  # the plug-ins and checkpoint the study ran with, by hash
    encoding: Mapping[str, object]  # how the study encoded its table


class TrialsJSON(TypedDict, total=False):
    pareto: list[TrialRecordJSON]
    best: TrialRecordJSON


class ExportJSON(DefinitionJSON, OwnJSON, TrialsJSON):
    """An export file's tables, written in this order (None entries dropped: TOML has no null)."""

    confirmation: ConfirmationSectionJSON
    definition_sha256: NotRequired[str]


@dataclass(frozen=True)
class ExportDocument:
    """What ``wemem export`` writes of a study: its definition, its undefended reference, the plug-ins and table
    encoding it ran with, its best trial (``pareto``: its Pareto set) and the state of its confirmation. JSON only
    in :meth:`to_json`, which the file is written from."""

    study: str
    definition: StudyDefinition
    reference: Mapping[str, object]
    own_code: Mapping[str, object]
    encoding: Mapping[str, object] | None
    trials: tuple[ExportedTrial, ...]  # the best trial, or the Pareto set
    pareto: bool
    confirmation: ConfirmationStatus

    def definition_json(self) -> DefinitionJSON:
        d = self.definition
        return {
            "study": self.study,
            "objective": objective_json(d),
            "dataset": d.data.model_dump(exclude_none=True),
            "model": d.model.name,
            "seed": d.study.seed,
            "pruning": d.pruning.model_dump(),
            "training": d.training.model_dump(),
            "memscore": d.memscore.model_dump(),
            "attacks": d.attacks.model_dump(),
            "reference": self.reference,
        }

    def own_json(self) -> OwnJSON:
        own: OwnJSON = {}
        if self.own_code:  # apply refuses plug-ins and a checkpoint other than these
            own["own_code"] = self.own_code
        if self.encoding is not None:  # apply encodes a table exactly so
            own["encoding"] = self.encoding
        return own

    def trials_json(self) -> TrialsJSON:
        records = [trial.to_json() for trial in self.trials]
        return {"pareto": records} if self.pareto else {"best": records[0]}

    def to_json(self) -> ExportJSON:
        document: ExportJSON = _without_none(
            {
                **self.definition_json(),
                **self.own_json(),
                **self.trials_json(),
                "confirmation": self.confirmation.to_json(),
            }
        )
        document[DEFINITION_KEY] = definition_fingerprint(document)
        return document


def export_document(opened: OpenStudy) -> ExportDocument:
    study, definition = opened.study, opened.definition
    best = best_trials(study)
    if not best:
        raise WememError(f"study {study.study_name!r} has no completed trial to export; run or resume it first")
    own_code, encoding = stored_own_code(study)
    reference = {k: v for k, v in reference_of(study).items() if k != "attacks"}
    return ExportDocument(
        study.study_name,
        definition,
        reference,
        own_code,
        encoding,
        tuple(ExportedTrial.of(t) for t in best),
        len(study.directions) > 1,
        export_section(study, [t.number for t in best]),
    )


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None entries (NaN metrics stay as nan)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def write_export(document: ExportDocument, path: str | Path) -> bool:
    """Write the export atomically as TOML or JSON (by its suffix); returns whether a file was replaced."""
    path = Path(path)
    if path.suffix == ".json":
        return write_atomically(path, json.dumps(document.to_json(), indent=2))
    if path.suffix == ".toml":
        return write_atomically(path, tomli_w.dumps(document.to_json()))
    raise WememError(f"export file {path} must end in .toml or .json")
