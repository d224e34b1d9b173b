"""Export the best setting (or the Pareto set) of a study as TOML or JSON."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import optuna
import tomli_w

from wemem.errors import WememError

from .config import StudyDefinition
from .confirm import export_section
from .study import best_trials, reference_of


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    a = trial.user_attrs
    return {
        "trial_number": trial.number,
        "defense": a["defense"],
        "settings": a["settings"],
        "values": list(trial.values),
        "feasible": a.get("feasible", True),
        "metrics": {
            "test_accuracy": a["utility"],
            "privacy": a["privacy"],
            "strongest_attack": a["strongest_attack"],
            "defense_seconds": a.get("defense_seconds"),
            "attacks": {name: {k: v for k, v in m.items() if k != "roc"} for name, m in a["attacks"].items()},
        },
    }


def export_document(study: optuna.Study, definition: StudyDefinition) -> dict[str, Any]:
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
    if len(study.directions) > 1:
        document["pareto"] = [trial_record(t) for t in best]
    else:
        document["best"] = trial_record(best[0])
    document["confirmation"] = export_section(study, [t.number for t in best])
    return _without_none(document)


def _without_none(value: Any) -> Any:
    """TOML has no null: drop None entries (NaN metrics stay as nan)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def write_export(document: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(document, indent=2))
    elif path.suffix == ".toml":
        path.write_text(tomli_w.dumps(document))
    else:
        raise WememError(f"export file {path} must end in .toml or .json")
    return path


def read_export(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise WememError(f"{path} is not an export file: `wemem export` writes .toml or .json files "
                         "(model.pt is the output of apply, not its input)")
    if not path.is_file():
        raise WememError(f"export file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise WememError(f"export file {path} is not text (binary data); pass a file written by `wemem export`") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise WememError(f"export file {path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(document, dict):
        raise WememError(f"export file {path} does not hold a table of keys; pass a file written by `wemem export`")
    return document
