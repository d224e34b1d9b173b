"""``wemem apply``: rebuild the defended pruned model of an exported setting, save it, re-evaluate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from objectives import evaluate_trial, reference
from wemem.assets import prepare_assets
from wemem.defenses import DEFENSES, make_defense
from wemem.errors import WememError
from wemem.parallel import MapFn, serial_map

from .config import StudyDefinition, parse_study
from .export import read_export


def definition_from_export(document: dict[str, Any], source: str) -> StudyDefinition:
    """The study definition an export was made from (every section an export stores)."""
    try:
        data = {
            "study": {"name": document["study"], "seed": document["seed"]},
            "data": document["dataset"],
            "model": {"name": document["model"]},
            "training": document["training"],
            "pruning": document["pruning"],
            "memscore": document["memscore"],
            "objective": document["objective"],
            "attacks": document["attacks"],
        }
    except KeyError as missing:
        raise WememError(f"export file {source} lacks the key {missing}; re-export it with `wemem export`") from None
    return parse_study(data, source)


class ExportedSetting(BaseModel):
    """One exported trial: what apply needs of it, checked before any work."""

    model_config = ConfigDict(extra="allow")
    trial_number: int
    defense: str
    settings: dict[str, Any]
    metrics: dict[str, Any]

    @field_validator("defense")
    @classmethod
    def _known_defense(cls, value: str) -> str:
        if value not in DEFENSES:
            raise ValueError(f"unknown defense {value!r}; choose from {', '.join(DEFENSES.names())}")
        return value

    @field_validator("metrics")
    @classmethod
    def _stored_metrics(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = {"test_accuracy", "privacy"} - set(value)
        if missing:
            raise ValueError(f"lacks {sorted(missing)}")
        return value


def _setting(record: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise WememError(f"export file {source}: [{where}] must be a table with trial_number, defense, settings and "
                         f"metrics (found {type(record).__name__} {record!r:.40}); re-export it with `wemem export`")
    try:
        ExportedSetting.model_validate(record)
    except ValidationError as error:
        problems = "; ".join(f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in error.errors())
        raise WememError(f"export file {source} is damaged ({problems}); re-export it with `wemem export`") from None
    return record


def select_record(document: dict[str, Any], index: int | None, source: str) -> dict[str, Any]:
    if "best" in document:
        return _setting(document["best"], source, "best")
    front = document.get("pareto", [])
    if not isinstance(front, list) or not front:
        raise WememError(f"export file {source} holds neither a best trial nor a Pareto set")
    front = [_setting(record, source, f"pareto.{i}") for i, record in enumerate(front)]
    if index is None:
        if len(front) == 1:
            return front[0]
        numbers = ", ".join(str(r["trial_number"]) for r in front)
        raise WememError(f"export file {source} holds a Pareto set of {len(front)} trials ({numbers}); "
                         "choose one with --trial NUMBER")
    for record in front:
        if record["trial_number"] == index:
            return record
    raise WememError(f"trial {index} is not in the Pareto set of {source}")


def load_export(path: str | Path, trial: int | None = None) -> tuple[dict[str, Any], StudyDefinition]:
    """The exported setting and the study definition it came from; every problem is a WememError."""
    document = read_export(path)
    record = select_record(document, trial, str(path))
    definition = definition_from_export(document, str(path))
    try:
        make_defense(record["defense"], record["settings"])
    except (TypeError, ValueError) as error:
        raise WememError(f"export file {path}: the {record['defense']} settings {record['settings']} are invalid "
                         f"({error}); re-export it with `wemem export`") from None
    return record, definition


def apply_export(path: str | Path, out_dir: str | Path, cache_dir: str, data_root: str | None = None,
                 trial: int | None = None, share_of: Callable[[StudyDefinition], MapFn] | None = None,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Rebuild and re-evaluate an exported setting; ``share_of(definition)`` gives the parallel map (serial
    in-process without one)."""

    record, definition = load_export(path, trial)
    spec = definition.trial_spec(cache_dir, data_root)
    map_fn = share_of(definition) if share_of is not None else serial_map
    assets = prepare_assets(spec.experiment, cache_dir, map_fn, log=echo)
    base = reference(spec, assets, map_fn, log=echo)
    outcome = evaluate_trial(spec, record["defense"], record["settings"], base, assets, map_fn,
                             keep_victim_state=True)
    victim = outcome.result.victim
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # tensors only (weights and masks): loadable with torch.load(weights_only=True), no pickled code
    torch.save({"weights": victim.state, "masks": victim.masks}, out / "model.pt")
    evaluation = {
        "defense": record["defense"],
        "settings": record["settings"],
        "trial_number": record["trial_number"],
        "test_accuracy": outcome.utility,
        "privacy": outcome.privacy,
        "strongest_attack": outcome.strongest_attack,
        "stored_test_accuracy": record["metrics"]["test_accuracy"],
        "stored_privacy": record["metrics"]["privacy"],
        "layer_sparsity": victim.layer_sparsity,
        "attacks": {k: {m: v for m, v in a.items() if m != "roc"} for k, a in outcome.result.attacks.items()},
    }
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    echo(f"rebuilt {record['defense']} (trial #{record['trial_number']}): test accuracy {outcome.utility:.4f} "
         f"(stored {evaluation['stored_test_accuracy']:.4f}), strongest attack {outcome.strongest_attack} "
         f"{outcome.privacy:.4f} (stored {evaluation['stored_privacy']:.4f})")
    echo(f"wrote {out / 'model.pt'} and {out / 'evaluation.json'}")
    return evaluation
