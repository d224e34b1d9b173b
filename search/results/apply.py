"""``wemem apply``: rebuild the defended pruned model of an exported setting, save it, re-evaluate it."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from objectives import evaluate_trial, reference
from wemem.assets import Echo, prepare_assets
from wemem.defenses import DEFENSES, make_defense
from wemem.errors import WememError
from wemem.files import check_output_folder, create_folder, write_atomically, wrote
from wemem.parallel import MapFn, serial_map

from wemem.data.custom import check_encoding
from wemem.plugins import file_sha256, reference_source_hash

from ..storage.records import without_roc
from ..studyfile import StudyDefinition, parse_study, registered
from ..studyfile.exports import read_export
from .export import DEFINITION_KEY, DEFINITION_SECTIONS, definition_fingerprint


OWN_CODE_FIX = ("run apply in the folder holding the module the study ran with (plug-ins are imported from the "
                "working directory first, then sys.path), or re-run the study with the new one and export it again")


def check_own_code(document: dict[str, Any], definition: StudyDefinition, source: str,
                   base_dir: str | None = None) -> str | None:
    """Every plug-in the export names must be recorded in its [own_code] with the SHA-256 of its source, and the
    module found here (the working directory, then sys.path) must have exactly that source: checked by reading
    the files, before any of them is imported. Returns the checkpoint's file here (its name, in the working
    directory) when the study started from one."""
    base = str(Path(base_dir or ".").resolve())
    own = document.get("own_code", {})
    if not isinstance(own, dict):
        raise WememError(f"export file {source}: [own_code] must be a table; re-export it with `wemem export`")
    experiment = definition.experiment(base_dir=base)
    for kind, plugin in experiment.plugin_references().items():
        entry = own.get(kind)
        if not (isinstance(entry, dict) and entry.get("reference") == plugin and isinstance(entry.get("sha256"), str)):
            raise WememError(f"export file {source} names the {kind} plug-in {plugin!r} without its source hash in "
                             f"[own_code.{kind}]; refused, nothing imported: re-export it with `wemem export`")
        try:
            found = reference_source_hash(plugin, kind, base)
        except WememError as error:
            raise WememError(f"export file {source} was made with the {kind} plug-in {plugin!r}, which is missing "
                             f"here ({error}); {OWN_CODE_FIX}") from None
        if found != entry["sha256"]:
            raise WememError(f"the {kind} plug-in {plugin!r} has changed since the study ran: export file {source} "
                             f"records source sha256 {entry['sha256'][:12]}..., the module here has {found[:12]}... "
                             f"(refused, not imported); {OWN_CODE_FIX}")
    checkpoint = own.get("checkpoint")
    if checkpoint is None:
        return None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("path"), str)
            and isinstance(checkpoint.get("sha256"), str)):
        raise WememError(f"export file {source}: [own_code.checkpoint] must hold path and sha256; re-export it")
    here = Path(base) / Path(checkpoint["path"]).name  # never a path of the exporting machine
    if not here.is_file() or file_sha256(here) != checkpoint["sha256"]:
        state = "is not in the working directory" if not here.is_file() else "has other bytes than the study's"
        raise WememError(f"export file {source} was made from the trained victim {Path(checkpoint['path']).name}, "
                         f"which {state} ({here}); copy the checkpoint the study ran with there")
    return str(here)


def definition_from_export(document: dict[str, Any], source: str) -> StudyDefinition:
    """The study definition an export was made from (every section an export stores), without its data root:
    that names a folder of the machine it came from, and a received file must not choose what is read (or
    cached) here; the data root is only ``--data-root``."""
    try:
        dataset = document["dataset"]
        data = {
            "study": {"name": document["study"], "seed": document["seed"]},
            "data": {k: v for k, v in dataset.items() if k != "data_root"} if isinstance(dataset, dict) else dataset,
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
        return registered(DEFENSES, value)

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


def edited_warning(document: dict[str, Any], source: str) -> str | None:
    """A warning when the defining sections no longer match the fingerprint `wemem export` stored (none for
    exports written before it stored one)."""
    stored = document.get(DEFINITION_KEY)
    if stored is None or stored == definition_fingerprint(document):
        return None
    return (f"warning: export file {source} was edited after `wemem export` wrote it (its "
            f"{', '.join(DEFINITION_SECTIONS)} no longer match its {DEFINITION_KEY}): the stored metrics come from "
            "another experiment and are not comparable to this re-evaluation")


def load_export(path: str | Path, trial: int | None = None,
                warn: Echo | None = None) -> tuple[dict[str, Any], StudyDefinition]:
    """The exported setting and the study definition it came from; every problem is a WememError. ``warn``
    receives the warning of an edited export."""
    record, definition, _document, _checkpoint = read_checked_export(path, trial, warn)
    return record, definition


def read_checked_export(path: str | Path, trial: int | None = None, warn: Echo | None = None
                        ) -> tuple[dict[str, Any], StudyDefinition, dict[str, Any], str | None]:
    """:func:`load_export` with the export itself and the checkpoint file here (None: the study pretrained its
    victim): one read of the file and one check of the plug-ins' sources for ``apply``."""
    document = read_export(path)
    record = select_record(document, trial, str(path))
    definition = definition_from_export(document, str(path))
    try:
        make_defense(record["defense"], record["settings"])
    except (TypeError, ValueError) as error:
        raise WememError(f"export file {path}: the {record['defense']} settings {record['settings']} are invalid "
                         f"({error}); re-export it with `wemem export`") from None
    checkpoint = check_own_code(document, definition, str(path))  # plug-ins and checkpoint: before any import
    if "encoding" in document:
        check_encoding(document["encoding"], f"export file {path}")
    warning = edited_warning(document, str(path))
    if warn is not None and warning is not None:
        warn(warning)
    return record, definition, document, checkpoint


OUTPUT_FILES = ("model.pt", "evaluation.json")


def check_apply_out(out_dir: str | Path) -> Path:
    """Refuse an --out that could not take the files of apply (a file, a device, an unwritable place)."""
    return check_output_folder(out_dir, OUTPUT_FILES)


def apply_export(path: str | Path, out_dir: str | Path, cache_dir: str, data_root: str | None = None,
                 trial: int | None = None, share_of: Callable[[StudyDefinition], MapFn] | None = None,
                 echo: Echo = print) -> dict[str, Any]:
    """Rebuild and re-evaluate an exported setting; ``share_of(definition)`` gives the parallel map (serial
    in-process without one)."""

    check_apply_out(out_dir)  # before minutes of work
    record, definition, document, checkpoint = read_checked_export(path, trial, warn=echo)
    spec = definition.trial_spec(cache_dir, data_root)
    own = {"checkpoint": checkpoint, "encoding": document.get("encoding")}
    spec = dataclasses.replace(spec, experiment=dataclasses.replace(spec.experiment, **own))
    map_fn = share_of(definition) if share_of is not None else serial_map
    assets = prepare_assets(spec.experiment, cache_dir, map_fn, log=echo)
    base = reference(spec, assets, map_fn, log=echo)
    outcome = evaluate_trial(spec, record["defense"], record["settings"], base, assets, map_fn,
                             keep_victim_state=True)
    victim = outcome.result.victim
    # tensors only (weights and masks): loadable with torch.load(weights_only=True), no pickled code
    model = io.BytesIO()
    torch.save({"weights": victim.state, "masks": victim.masks}, model)
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
        "attacks": without_roc(outcome.result.attacks),
    }
    out = create_folder(out_dir)
    contents = dict(zip(OUTPUT_FILES, (model.getvalue(), json.dumps(evaluation, indent=2))))
    written = [(out / name, write_atomically(out / name, content)) for name, content in contents.items()]
    echo(f"rebuilt {record['defense']} (trial #{record['trial_number']}): test accuracy {outcome.utility:.4f} "
         f"(stored {evaluation['stored_test_accuracy']:.4f}), strongest attack {outcome.strongest_attack} "
         f"{outcome.privacy:.4f} (stored {evaluation['stored_privacy']:.4f})")
    echo(wrote(*written))
    return evaluation
