"""Export the best setting (or the Pareto set) of a study as TOML or JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna
import tomli_w

from wemem.errors import WememError
from wemem.files import write_atomically

from ..confirm import export_section
from ..storage.records import TrialMetrics, reference_of, stored_own_code, without_roc
from ..study import OpenStudy, best_trials


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    m = TrialMetrics.of(trial)  # a best trial is COMPLETE: every metric is there
    return {
        "trial_number": trial.number,
        "defense": m.defense,
        "settings": m.settings,
        "values": list(trial.values),
        "feasible": m.feasible is not False,
        "metrics": {
            "test_accuracy": m.utility,
            "privacy": m.privacy,
            # one evaluation's standard error; with [search] repeats the figures are means over the repeats, and
            # the model `apply` rebuilds is fine-tuning 0's (the study's own seeds)
            "privacy_se": m.privacy_se,
            "repeats": len(trial.user_attrs["repeats"]) if "repeats" in trial.user_attrs else None,
            "strongest_attack": m.strongest_attack,
            "defense_seconds": m.defense_seconds,
            "attacks": without_roc(m.attacks),
        },
    }


# The sections that define the experiment an export's metrics come from. The data root is not one: it names a
# folder on the exporting machine, where the same data may live elsewhere.
DEFINITION_SECTIONS = ("dataset", "model", "seed", "training", "pruning", "memscore", "attacks", "objective")
# present only in exports of studies with their own code or table (so older exports keep their fingerprint)
OWN_SECTIONS = ("own_code", "encoding")
DEFINITION_KEY = "definition_sha256"


def definition_fingerprint(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the defining sections, as read back from TOML or JSON (so an unedited
    export recomputes its stored value, and an edited one does not)."""
    sections = {key: document.get(key) for key in DEFINITION_SECTIONS}
    sections.update({key: document[key] for key in OWN_SECTIONS if key in document})
    if isinstance(sections["dataset"], dict):
        sections["dataset"] = {k: v for k, v in sections["dataset"].items() if k != "data_root"}
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def export_document(opened: OpenStudy) -> dict[str, Any]:
    study, definition = opened.study, opened.definition
    best = best_trials(study)
    if not best:
        raise WememError(f"study {study.study_name!r} has no completed trial to export; run or resume it first")
    document: dict[str, Any] = {
        "study": study.study_name,
        "objective": definition.objective.model_dump(),
        "dataset": definition.data.model_dump(exclude_none=True),
        "model": definition.model.name,
        "seed": definition.study.seed,
        "pruning": definition.pruning.model_dump(),
        "training": definition.training.model_dump(),
        "memscore": definition.memscore.model_dump(),
        "attacks": definition.attacks.model_dump(),
        "reference": {k: v for k, v in reference_of(study).items() if k != "attacks"},
    }
    own_code, encoding = stored_own_code(study)
    if own_code:  # the plug-ins and checkpoint the study ran with, by hash: apply refuses other sources
        document["own_code"] = own_code
    if encoding is not None:  # apply encodes a table exactly so
        document["encoding"] = encoding
    if len(study.directions) > 1:
        document["pareto"] = [trial_record(t) for t in best]
    else:
        document["best"] = trial_record(best[0])
    document["confirmation"] = export_section(study, [t.number for t in best]).to_json()
    document = _without_none(document)
    document[DEFINITION_KEY] = definition_fingerprint(document)
    return document


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None entries (NaN metrics stay as nan)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def write_export(document: dict[str, Any], path: str | Path) -> bool:
    """Write the export atomically as TOML or JSON (by its suffix); returns whether a file was replaced."""
    path = Path(path)
    if path.suffix == ".json":
        return write_atomically(path, json.dumps(document, indent=2))
    if path.suffix == ".toml":
        return write_atomically(path, tomli_w.dumps(document))
    raise WememError(f"export file {path} must end in .toml or .json")
