"""``wemem apply``: rebuild the defended pruned model of an exported setting, re-evaluate it, and write it as
the deployable artifact (:mod:`wemem.artifact`) with its model card."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Literal, NotRequired, TypedDict, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from objectives import Reference, TrialOutcome, TrialSpec, evaluate_trial, reference
from wemem.artifact import (
    CARD_JSON,
    CARD_MD,
    ArtifactMeta,
    CardFigure,
    CardInputs,
    Estimate,
    check_onnx,
    fold_masks,
    measured_sparsity,
    model_card,
    onnx_bytes,
    safetensors_bytes,
    sparse_bytes,
)
from wemem.assets import Echo, StudyAssets, input_checks, prepare_assets
from wemem.config import ExperimentConfig, PruningConfig
from wemem.data.custom import check_encoding
from wemem.defenses import DEFENSES, Defense, Setting, make_defense
from wemem.errors import WememError, validation_problems
from wemem.files import check_output_folder, create_folder, write_into, wrote
from wemem.parallel import MapFn, serial_map
from wemem.pipeline import PrunedModel
from wemem.plugins import check_record, code_lines, file_sha256
from wemem.uncertainty import clopper_pearson
from wemem.validity import Check

from ..confirm import LEVEL, REFERENCE, Interval
from ..confirm._confirmation import PRIVACY, IntervalJSON
from ..confirm._statistics import points
from ..storage._records import without_roc
from ..studyfile import StudyDefinition, parse_study, registered
from ..studyfile._exports import read_export
from ._export import DEFINITION_KEY, DEFINITION_SECTIONS, definition_fingerprint

OWN_CODE_FIX = (
    "run apply in the folder holding the plug-in's files as the study ran them (plug-ins are read from "
    "the working directory only), or re-run the study with the new ones and export it again"
)
ALLOW_CODE = "--allow-code (allow_code=True in search.api.apply)"


def exported_code(
    own: Mapping[str, object], definition: StudyDefinition, source: str, base: str
) -> dict[str, tuple[str, dict[str, str]]]:
    """``{kind: (reference, files)}`` of every plug-in the export names, each of its files here equal to what the
    export's [own_code] records: read, nothing imported."""
    experiment = definition.experiment(base_dir=base)
    return {
        kind: (plugin, check_record(own.get(kind), plugin, kind, base, f"export file {source}", OWN_CODE_FIX))
        for kind, plugin in experiment.plugin_references().items()
    }


def allowed_code(code: dict[str, tuple[str, dict[str, str]]], source: str, allow_code: bool) -> tuple[str, ...]:
    """The lines naming the code apply is about to run. A received export's plug-ins are a program: they run only
    when the user, having read them, says so on the command line; else the refusal lists them."""
    if not code:
        return ()
    lines = code_lines(code)
    if not allow_code:
        raise WememError(
            "\n".join(
                [
                    f"export file {source} names code of its own that apply would run:",
                    *lines,
                    f"read those files, then run apply again with {ALLOW_CODE} to run them",
                ]
            )
        )
    return (f"export file {source} runs this code ({ALLOW_CODE} given):", *lines)


def check_own_code(
    document: Mapping[str, object],
    definition: StudyDefinition,
    source: str,
    base_dir: str | None = None,
    allow_code: bool = False,
) -> tuple[str | None, tuple[str, ...]]:
    """Every plug-in the export names must be recorded in its [own_code] with the SHA-256 of each of its files, and
    its files here (in the working directory, the only place plug-ins are read from) must be exactly those: checked
    by reading them, before any is imported; then they run only with ``allow_code``. Returns the checkpoint's file
    here (its name, in the working directory) when the study started from one, and the lines naming the code."""
    base = str(Path(base_dir or ".").resolve())
    own = document.get("own_code", {})
    if not isinstance(own, dict):
        raise WememError(f"export file {source}: [own_code] must be a table; re-export it with `wemem export`")
    code = allowed_code(exported_code(own, definition, source, base), source, allow_code)
    checkpoint = own.get("checkpoint")
    if checkpoint is None:
        return None, code
    if not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("path"), str)
        and isinstance(checkpoint.get("sha256"), str)
    ):
        raise WememError(f"export file {source}: [own_code.checkpoint] must hold path and sha256; re-export it")
    here = Path(base) / Path(checkpoint["path"]).name  # never a path of the exporting machine
    if not here.is_file() or file_sha256(here) != checkpoint["sha256"]:
        state = "is not in the working directory" if not here.is_file() else "has other bytes than the study's"
        raise WememError(
            f"export file {source} was made from the trained victim {Path(checkpoint['path']).name}, "
            f"which {state} ({here}); copy the checkpoint the study ran with there"
        )
    return str(here), code


def definition_from_export(document: Mapping[str, object], source: str) -> StudyDefinition:
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


REQUIRED_METRICS = ("test_accuracy", PRIVACY)  # an exported trial's own evaluation: apply prints both
OPTIONAL_METRICS = ("privacy_se", "repeats", "defense_seconds")  # numbers, or absent/null for older exports


def is_number(value: object) -> bool:
    """An int or a float (nan included: TOML and JSON exports keep a metric that was nan), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def not_numbers(metrics: Mapping[str, object]) -> list[str]:
    """The stored metrics that should be numbers and are not, each as ``key = value``."""
    return [
        f"{key} = {metrics[key]!r:.40}"
        for key in REQUIRED_METRICS + OPTIONAL_METRICS
        if key in metrics and not is_number(metrics[key]) and not (key in OPTIONAL_METRICS and metrics[key] is None)
    ]


class ExportedPruning(BaseModel):
    """The pruning an exported trial evaluated at (a study that searched it stores it with each trial)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    sparsity: float = Field(ge=0, lt=1)
    steps: int = Field(ge=1)


class ExportedSetting(BaseModel):
    """One exported trial: what apply needs of it, checked before any work."""

    model_config = ConfigDict(extra="allow")
    trial_number: int
    defense: str
    settings: Mapping[str, object]
    metrics: Mapping[str, object]
    pruning: ExportedPruning | None = None

    @field_validator("defense")
    @classmethod
    def _known_defense(cls, value: str) -> str:
        return registered(DEFENSES, value)

    @field_validator("metrics")
    @classmethod
    def _stored_metrics(cls, value: Mapping[str, object]) -> Mapping[str, object]:
        missing = set(REQUIRED_METRICS) - set(value)
        if missing:
            raise ValueError(f"lacks {sorted(missing)}")
        wrong = not_numbers(value)  # apply prints them after minutes of work: refused before any work
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: not a number; `wemem export` writes numbers there")
        return value


def damaged(source: str, where: str, error: ValidationError) -> WememError:
    """The error of an export section that fails its check, naming each bad key."""
    problems = "; ".join(validation_problems(error, [where]))
    return WememError(f"export file {source} is damaged ({problems}); re-export it with `wemem export`")


@dataclasses.dataclass(frozen=True)
class ChosenTrial:
    """The exported trial apply rebuilds: its number, its setting as the export states it, and the study's own
    evaluation of it (the export's metrics, checked to be numbers where apply prints them)."""

    number: int
    setting: Setting
    metrics: Mapping[str, object]
    pruning: ExportedPruning | None = None  # None: the study's [pruning]


def _setting(record: object, source: str, where: str) -> ChosenTrial:
    if not isinstance(record, dict):
        raise WememError(
            f"export file {source}: [{where}] must be a table with trial_number, defense, settings and "
            f"metrics (found {type(record).__name__} {record!r:.40}); re-export it with `wemem export`"
        )
    try:
        checked = ExportedSetting.model_validate(record)
    except ValidationError as error:
        raise damaged(source, where, error) from None
    # the stored values, not pydantic's coercions of them: apply writes back what the export says
    return ChosenTrial(
        record["trial_number"],
        Setting.recorded(record["defense"], record["settings"]),
        record["metrics"],
        checked.pruning,
    )


def select_record(document: Mapping[str, object], index: int | None, source: str) -> ChosenTrial:
    if "best" in document:
        return _setting(document["best"], source, "best")
    front = document.get("pareto", [])
    if not isinstance(front, list) or not front:
        raise WememError(f"export file {source} holds neither a best trial nor a Pareto set")
    front = [_setting(record, source, f"pareto.{i}") for i, record in enumerate(front)]
    if index is None:
        if len(front) == 1:
            return front[0]
        numbers = ", ".join(str(r.number) for r in front)
        raise WememError(
            f"export file {source} holds a Pareto set of {len(front)} trials ({numbers}); "
            "choose one with --trial NUMBER"
        )
    for record in front:
        if record.number == index:
            return record
    raise WememError(f"trial {index} is not in the Pareto set of {source}")


def edited_warning(document: Mapping[str, object], source: str) -> str | None:
    """A warning when the defining sections no longer match the fingerprint `wemem export` stored (none for
    exports written before it stored one)."""
    stored = document.get(DEFINITION_KEY)
    if stored is None or stored == definition_fingerprint(document):
        return None
    return (
        f"warning: export file {source} was edited after `wemem export` wrote it (its "
        f"{', '.join(DEFINITION_SECTIONS)} no longer match its {DEFINITION_KEY}): the stored metrics come from "
        "another experiment and are not comparable to this re-evaluation"
    )


class ExportedInterval(BaseModel):
    """A confirmed mean and its interval over seeds (nan bounds: too few seeds), as an export holds it."""

    mean: float
    low: float
    high: float

    def to_json(self) -> IntervalJSON:
        return {"mean": self.mean, "low": self.low, "high": self.high}


class FiguresJSON(TypedDict):
    """Test accuracy and leakage, each a mean and its interval (or a paired difference of two)."""

    test_accuracy: IntervalJSON
    privacy: IntervalJSON


def figures(utility: ExportedInterval, privacy: ExportedInterval) -> FiguresJSON:
    return {"test_accuracy": utility.to_json(), PRIVACY: privacy.to_json()}


class ConfirmedEntry(BaseModel):
    """One setting of an exported [confirmation]: what apply quotes of it."""

    model_config = ConfigDict(extra="allow")
    label: str
    defense: str
    trial_number: int | None = None
    utility: ExportedInterval
    privacy: ExportedInterval
    utility_difference: ExportedInterval | None = None
    privacy_difference: ExportedInterval | None = None
    accuracy_constraint: str | None = None


class ConfirmationSection(BaseModel):
    """An export's [confirmation]: the confirmed figures (``confirmed``, or ``stale`` when a trial became best
    after them) or ``not confirmed`` with its note."""

    model_config = ConfigDict(extra="allow")
    status: Literal["confirmed", "stale", "not confirmed"]
    note: str | None = None
    seeds: list[int] = []
    level: float = LEVEL
    attacks: list[str] | None = None
    privacy_attacks: list[str] | None = None
    candidates: list[ConfirmedEntry] = []
    verdict: str | None = None

    @model_validator(mode="after")
    def _figures_when_confirmed(self) -> ConfirmationSection:
        if self.status != "not confirmed" and not (self.seeds and self.candidates):
            raise ValueError(f"status {self.status!r} without seeds and candidates")
        return self


def confirmation_section(document: Mapping[str, object], source: str) -> ConfirmationSection | None:
    """The export's [confirmation], checked (None: an export written before exports carried one)."""
    if "confirmation" not in document:
        return None
    try:
        return ConfirmationSection.model_validate(document["confirmation"])
    except ValidationError as error:
        raise damaged(source, "confirmation", error) from None


class JudgedJSON(TypedDict):
    """What the confirmed figures are, and the seeds and attacks that measured them."""

    what: str
    status: str
    seeds: list[int]
    judges: list[str]
    leakage_over: NotRequired[list[str]]


class ConstraintJSON(TypedDict, total=False):
    accuracy_constraint: str


class VersusJSON(FiguresJSON, ConstraintJSON):
    what: str


class ComparedJSON(TypedDict, total=False):
    """What a confirmation may add to the figures: the paired differences from the undefended model, its own
    figures, the verdict and a note."""

    vs_undefended: VersusJSON
    undefended: FiguresJSON
    verdict: str
    note: str


class ConfirmedJSON(JudgedJSON, FiguresJSON, ComparedJSON):
    """evaluation.json's ``confirmed`` block."""


@dataclasses.dataclass(frozen=True)
class ConfirmedFigures:
    """The ``confirmed`` block of evaluation.json for the applied setting (None: there is none, ``note`` says
    why and how to get it)."""

    block: ConfirmedJSON | None
    note: str | None = None


def confirmed_figures(
    section: ConfirmationSection | None, trial_number: int, definition: StudyDefinition
) -> ConfirmedFigures:
    """The confirmation's figures for one exported trial: its means and intervals over the fresh seeds, its
    paired differences from the undefended model, the seeds, the judges and the verdict."""
    study = definition.name
    rerun = f"run `wemem confirm {study}`, then `wemem export {study}` again and apply the new export"
    if section is None or section.status == "not confirmed":
        return ConfirmedFigures(None, f"not confirmed: {rerun}")
    entry = next((e for e in section.candidates if e.trial_number == trial_number), None)
    if entry is None:
        evaluated = [e.trial_number for e in section.candidates if e.trial_number is not None]
        return ConfirmedFigures(
            None,
            f"trial {trial_number} is not among the confirmed settings (trials {evaluated}): "
            f"{rerun} (--top K to cover it)",
        )
    undefended = next((e for e in section.candidates if e.label == REFERENCE), None)
    judged: JudgedJSON = {
        "what": f"means and {section.level:.0%} t-intervals over {len(section.seeds)} fresh seeds the search never "
        "saw, each a full replication: the figures to quote",
        "status": section.status,
        "seeds": section.seeds,
        "judges": section.attacks or list(definition.attacks.names),  # none recorded: the study's own
    }
    if section.privacy_attacks:
        judged["leakage_over"] = section.privacy_attacks
    compared: ComparedJSON = {}
    if entry.privacy_difference is not None and entry.utility_difference is not None:
        constraint: ConstraintJSON = {}
        if entry.accuracy_constraint:
            constraint["accuracy_constraint"] = entry.accuracy_constraint
        compared["vs_undefended"] = {
            "what": "this setting minus the undefended pruned model, paired by seed",
            **figures(entry.utility_difference, entry.privacy_difference),
            **constraint,
        }
    if undefended is not None:
        compared["undefended"] = figures(undefended.utility, undefended.privacy)
    if section.verdict is not None:
        compared["verdict"] = section.verdict
    if section.note is not None:
        compared["note"] = section.note
    return ConfirmedFigures({**judged, **figures(entry.utility, entry.privacy), **compared})


@dataclasses.dataclass(frozen=True)
class CheckedExport:
    """An export as apply uses it, every part checked before any work."""

    record: ChosenTrial
    definition: StudyDefinition
    encoding: Mapping[str, object] | None  # how the study encoded its table
    checkpoint: str | None  # the trained victim's file here (None: the study pretrained it)
    confirmed: ConfirmedFigures
    code: tuple[str, ...] = ()  # the lines naming the plug-in code apply runs (allowed by the user)


def load_export(
    path: str | Path, trial: int | None = None, warn: Echo | None = None, allow_code: bool = False
) -> tuple[ChosenTrial, StudyDefinition]:
    """The exported setting and the study definition it came from; every problem is a WememError. ``warn``
    receives the warning of an edited export; plug-in code it names is refused unless ``allow_code``."""
    exported = read_checked_export(path, trial, warn, allow_code)
    return exported.record, exported.definition


def read_checked_export(
    path: str | Path, trial: int | None = None, warn: Echo | None = None, allow_code: bool = False
) -> CheckedExport:
    """:func:`load_export` with the table's encoding, the checkpoint file here and the confirmed figures: one
    read of the file and one check of the plug-ins' sources for ``apply``."""
    document = read_export(path)
    record = select_record(document, trial, str(path))
    definition = definition_from_export(document, str(path))
    setting = record.setting
    try:
        make_defense(setting.defense, setting.settings)
    except (TypeError, ValueError) as error:
        raise WememError(
            f"export file {path}: the {setting.defense} settings {setting.settings} are invalid "
            f"({error}); re-export it with `wemem export`"
        ) from None
    # plug-ins and checkpoint: before any import
    checkpoint, code = check_own_code(document, definition, str(path), allow_code=allow_code)
    encoding = check_encoding(document["encoding"], f"export file {path}") if "encoding" in document else None
    confirmed = confirmed_figures(confirmation_section(document, str(path)), record.number, definition)
    warning = edited_warning(document, str(path))
    if warn is not None and warning is not None:
        warn(warning)
    return CheckedExport(record, definition, encoding, checkpoint, confirmed, code)


def study_experiment(experiment: ExperimentConfig, encoding: Mapping[str, object] | None) -> ExperimentConfig:
    """The experiment apply rebuilds on, under the study's cache key whenever its features are the study's.

    A study fits its table's encoding as it loads the table; its config carries no encoding, so its cache key
    (:meth:`~wemem.config.ExperimentConfig.key`) has none, while a config carrying one has it in its key. When
    this table still fits to the exported encoding, encoding it either way gives the study's very features, so
    apply runs the study's own config and reuses its split, pretrained models and mem-scores. Otherwise the table
    changed since the study: the exported encoding encodes it (the model expects those features, and it refuses
    unseen categories) under a key of its own, for the features are not those the study's cache was built on."""
    if encoding is None or experiment.load_pools().encoding == encoding:
        return experiment
    return dataclasses.replace(experiment, encoding=dict(encoding))


def apply_spec(exported: CheckedExport, cache_dir: str, data_root: str | None) -> TrialSpec:
    """What apply evaluates: the study's trial spec, with the trained victim found here, pruned as the chosen
    trial was (a study that searched the sparsity ships the sparsity it chose)."""
    spec = exported.definition.trial_spec(cache_dir, data_root)
    experiment = dataclasses.replace(spec.experiment, checkpoint=exported.checkpoint)
    pruning = trial_pruning(spec.pruning, exported.record)
    return dataclasses.replace(spec, experiment=study_experiment(experiment, exported.encoding), pruning=pruning)


def trial_pruning(study_pruning: PruningConfig, record: ChosenTrial) -> PruningConfig:
    """The pruning an exported trial evaluated at: the study's, with the sparsity and steps the trial searched."""
    chosen = record.pruning
    return study_pruning if chosen is None else dataclasses.replace(study_pruning, **chosen.model_dump())


SAFETENSORS, SPARSE, ONNX = "model.safetensors", "model.sparse.safetensors", "model.onnx"
OUTPUT_FILES = ("model.pt", "evaluation.json", SAFETENSORS, SPARSE, ONNX, CARD_MD, CARD_JSON)


def check_apply_out(out_dir: str | Path) -> Path:
    """Refuse an --out that could not take the files of apply (a file, a device, an unwritable place, a link
    planted where one goes)."""
    return check_output_folder(out_dir, OUTPUT_FILES)


REPRODUCED = "measured by this apply: the rebuilt model on the study's seed (its split, members and targets)"
SEARCH = (
    "the study's own single evaluation of this setting, selected as the best of many by the search: "
    "biased low (the luckiest evaluation wins); quote the confirmed figures"
)
SEARCH_METRICS = ("test_accuracy", PRIVACY, "strongest_attack", "privacy_se", "repeats")


def rebuilt_victim(outcome: TrialOutcome) -> PrunedModel:
    """The defended pruned victim apply rebuilt: evaluate_trial keeps it when asked, as apply asks."""
    if outcome.result.victim is None:
        raise RuntimeError("evaluate_trial kept no victim; apply passes keep_victim_state=True")
    return outcome.result.victim


class ReproducedJSON(TypedDict):
    what: str
    test_accuracy: float
    privacy: float
    strongest_attack: str
    attacks: dict[str, dict[str, object]]


class EvaluationJSON(TypedDict):
    """evaluation.json."""

    defense: str
    settings: Mapping[str, object]
    trial_number: int
    layer_sparsity: dict[str, float]
    reproduced: ReproducedJSON
    search: Mapping[str, object]  # the export's metrics of the trial, as it states them
    confirmed: ConfirmedJSON | None
    confirmed_note: NotRequired[str]


def evaluation_document(record: ChosenTrial, outcome: TrialOutcome, confirmed: ConfirmedFigures) -> EvaluationJSON:
    """evaluation.json: the rebuilt setting and its figures in labelled blocks, as they differ in what they
    say: ``reproduced`` (this apply), ``search`` (the study's selected evaluation) and ``confirmed``."""
    victim = rebuilt_victim(outcome)
    evaluation: EvaluationJSON = {
        "defense": record.setting.defense,
        "settings": record.setting.settings,
        "trial_number": record.number,
        "layer_sparsity": victim.layer_sparsity,
        "reproduced": {
            "what": REPRODUCED,
            "test_accuracy": outcome.utility,
            PRIVACY: outcome.privacy,
            "strongest_attack": outcome.strongest_attack,
            "attacks": without_roc(outcome.result.attacks),
        },
        "search": {"what": SEARCH, **{k: record.metrics[k] for k in SEARCH_METRICS if k in record.metrics}},
        "confirmed": confirmed.block,
    }
    if confirmed.note is not None:
        evaluation["confirmed_note"] = confirmed.note
    return evaluation


def _ci(ci: IntervalJSON) -> str:
    return f"{ci['mean']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"


def evaluation_lines(evaluation: EvaluationJSON) -> list[str]:
    """What apply prints: each block's figures under its name and what it is."""
    reproduced, search, confirmed = evaluation["reproduced"], evaluation["search"], evaluation["confirmed"]
    lines = [
        f"rebuilt {evaluation['defense']} (trial #{evaluation['trial_number']})",
        (
            f"  reproduced (this apply, the study's seed): test accuracy {reproduced['test_accuracy']:.4f}, "
            f"strongest attack {reproduced['strongest_attack']} {reproduced['privacy']:.4f}"
        ),
        (
            f"  search (the study's own evaluation, selected as the best of many: biased low): test accuracy "
            f"{search['test_accuracy']:.4f}, leakage {search[PRIVACY]:.4f}"
        ),
    ]
    if confirmed is None:
        return lines + [f"  confirmed: none ({evaluation['confirmed_note']})"]
    lines.append(
        f"  confirmed (mean [interval] over fresh seeds {confirmed['seeds']}, judged by "
        f"{', '.join(confirmed['judges'])}): test accuracy "
        f"{_ci(confirmed['test_accuracy'])}, leakage {_ci(confirmed[PRIVACY])}"
    )
    if "vs_undefended" in confirmed:
        versus = confirmed["vs_undefended"]
        lines.append(
            f"    vs the undefended pruned model: leakage {points(Interval(**versus[PRIVACY]))}, "
            f"accuracy {points(Interval(**versus['test_accuracy']), '')}"
        )
    return lines + [f"    {text}" for text in (confirmed.get("verdict"), confirmed.get("note")) if text is not None]


# ------------------------------------------------------------------------------- the deployable artifact


@dataclasses.dataclass(frozen=True)
class Rebuilt:
    """What apply rebuilt and measured: the spec, the study's assets, the reference, the trial's outcome."""

    spec: TrialSpec
    assets: StudyAssets
    base: Reference
    outcome: TrialOutcome


def shipped_model(rebuilt: Rebuilt, folded: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """The folded weights in the network the engine builds for them: the experiment's registered model (or
    plug-in) for the data's input shape and classes, in eval mode."""
    model = rebuilt.spec.experiment.new_model(rebuilt.assets.pools)
    model.load_state_dict(folded)
    return model.eval()


def artifact_meta(rebuilt: Rebuilt, exported: CheckedExport, folded: Mapping[str, torch.Tensor]) -> ArtifactMeta:
    experiment, pools, victim = rebuilt.spec.experiment, rebuilt.assets.pools, rebuilt_victim(rebuilt.outcome)
    return ArtifactMeta(
        model=experiment.model,
        dataset=experiment.dataset,
        input_shape=pools.input_shape,
        num_classes=pools.num_classes,
        sparsity=measured_sparsity(folded, victim.masks or {}),
        setting=exported.record.setting,
        study=exported.definition.name,
        trial=exported.record.number,
    )


def data_sizes(assets: StudyAssets) -> dict[str, object]:
    pools, victim = assets.pools, assets.split.victim
    return {
        "dataset": assets.config.dataset,
        "training pool rows": pools.n_train,
        "test pool rows": len(pools.y) - pools.n_train,
        "the model's training set (members)": len(victim.train),
        "its checkpoint-selection set": len(victim.dev),
        "its test set (non-members)": len(victim.test),
        "shadow models": len(assets.split.shadows),
    }


Z = float(NormalDist().inv_cdf(0.5 + LEVEL / 2))  # a normal interval's half-width in standard errors


def normal(mean: float, se: float | None) -> Estimate:
    return Estimate(mean) if se is None else Estimate(mean, mean - Z * se, mean + Z * se)


def bootstrap_bounds(attack: Mapping[str, object], metric: str) -> tuple[float, float]:
    """An attack's stored bootstrap interval of ``metric`` over the targets (nan: none stored)."""
    intervals = attack.get("intervals")
    bounds = intervals.get(metric) if isinstance(intervals, dict) else None
    return (float(bounds[0]), float(bounds[1])) if isinstance(bounds, list) else (math.nan, math.nan)


def judges(spec: TrialSpec) -> tuple[str, ...]:
    """The attacks whose strongest is the leakage."""
    return tuple(spec.objective.privacy_attacks or spec.attacks)


def reproduced_figure(rebuilt: Rebuilt) -> CardFigure:
    """This apply's measurement: test accuracy with its exact binomial interval over the test set; leakage with
    the normal interval of its standard error over the repeats, else the strongest attack's bootstrap one."""
    spec, outcome = rebuilt.spec, rebuilt.outcome
    tested = len(rebuilt.assets.split.victim.test)
    low, high = clopper_pearson(round(outcome.utility * tested), tested, LEVEL)
    metric = spec.objective.privacy_metric
    if outcome.repeats is not None:
        leakage, how = normal(outcome.privacy, outcome.repeats.privacy_se), "normal, over the repeats"
    else:
        bounds = bootstrap_bounds(outcome.result.attacks[outcome.strongest_attack], metric)
        leakage, how = Estimate(outcome.privacy, *bounds), "bootstrap over the targets"
    return CardFigure(
        "reproduced",
        REPRODUCED,
        metric,
        Estimate(outcome.utility, low, high),
        leakage,
        judges(spec),
        f"{LEVEL:.0%}: accuracy exact binomial over {tested} test rows; leakage {how}",
    )


def search_figure(search: Mapping[str, object], spec: TrialSpec) -> CardFigure:
    """The study's own evaluation, labelled biased low; its leakage's interval from its standard error."""
    # ExportedSetting checked these to be numbers (privacy_se: or absent, or null)
    accuracy, privacy, se = (cast(float | None, search.get(key)) for key in ("test_accuracy", PRIVACY, "privacy_se"))
    return CardFigure(
        "search",
        SEARCH,
        spec.objective.privacy_metric,
        Estimate(float(accuracy or math.nan)),
        normal(float(privacy or math.nan), se),
        judges(spec),
        f"{LEVEL:.0%} normal, from the search's standard error (none: a single evaluation)",
    )


def card_figures(evaluation: EvaluationJSON, rebuilt: Rebuilt) -> list[CardFigure]:
    """The confirmed figures when the export holds them, this apply's, and the search's (labelled biased low)."""
    figures = [reproduced_figure(rebuilt), search_figure(evaluation["search"], rebuilt.spec)]
    confirmed = evaluation["confirmed"]
    if confirmed is None:
        return figures
    return [
        CardFigure(
            "confirmed",
            f"{confirmed['what']}: the figures to quote",
            rebuilt.spec.objective.privacy_metric,
            Estimate(**confirmed["test_accuracy"]),
            Estimate(**confirmed[PRIVACY]),
            tuple(confirmed["judges"]),
            f"{LEVEL:.0%} over the fresh seeds {confirmed['seeds']}",
        ),
        *figures,
    ]


def card_notes(evaluation: EvaluationJSON, setting: Setting) -> list[str]:
    notes = [] if evaluation["confirmed"] is not None else [evaluation.get("confirmed_note", "not confirmed")]
    if DEFENSES.get(setting.defense).output_log_probs is not Defense.output_log_probs:
        notes.append(
            f"the {setting.defense} defense transforms the network's outputs at inference; the files hold the "
            "network only (its logits), so a deployment must apply that transform itself or lose its protection"
        )
    return notes


def study_validity(rebuilt: Rebuilt) -> list[Check]:
    """The study's validity checks, recomputed on the assets and reference apply rebuilt (the launcher records the
    same checks in the study; an export does not carry them)."""
    from ..execution._trainable import study_checks  # here: that module loads Ray Tune, which apply may not need

    metric, spec = rebuilt.spec.objective.privacy_metric, rebuilt.spec
    return input_checks(spec.experiment, rebuilt.assets.pools, metric) + study_checks(
        rebuilt.assets, rebuilt.base, metric
    )


def folded_victim(outcome: TrialOutcome) -> dict[str, torch.Tensor]:
    """The rebuilt victim's weights with its masks folded in: what ships."""
    victim = rebuilt_victim(outcome)
    if victim.state is None or victim.masks is None:
        raise RuntimeError("evaluate_trial kept no victim state; apply passes keep_victim_state=True")
    return fold_masks(victim.state, victim.masks)


def artifact_contents(rebuilt: Rebuilt, folded: Mapping[str, torch.Tensor], meta: ArtifactMeta) -> dict[str, bytes]:
    """The deployable files: the folded weights dense and compact, the ONNX graph; the graph checked against the
    rebuilt model by onnxruntime on the study's test set first, so a graph that differs stops apply before any
    file is written."""
    model = shipped_model(rebuilt, folded)
    graph = onnx_bytes(model, meta.input_shape, meta)
    pools = rebuilt.assets.pools
    check_onnx(model, graph, pools.x[rebuilt.assets.split.victim.test.to(pools.x.device)].cpu().numpy())
    return {SAFETENSORS: safetensors_bytes(folded, meta), SPARSE: sparse_bytes(folded, meta), ONNX: graph}


def size_line(contents: Mapping[str, bytes]) -> str:
    dense, compact = len(contents[SAFETENSORS]), len(contents[SPARSE])
    return f"folded weights: {SAFETENSORS} {dense:,} bytes, {SPARSE} {compact:,} bytes ({compact / dense:.0%})"


def apply_export(
    path: str | Path,
    out_dir: str | Path,
    cache_dir: str,
    data_root: str | None = None,
    trial: int | None = None,
    share_of: Callable[[StudyDefinition], MapFn] | None = None,
    echo: Echo = print,
    allow_code: bool = False,
) -> EvaluationJSON:
    """Rebuild and re-evaluate an exported setting, and write it as deployable files with a model card;
    ``share_of(definition)`` gives the parallel map (serial in-process without one). Plug-in code the export
    names runs only with ``allow_code``, named first."""

    check_apply_out(out_dir)  # before minutes of work
    exported = read_checked_export(path, trial, echo, allow_code)
    for line in exported.code:
        echo(line)
    record, spec = exported.record, apply_spec(exported, cache_dir, data_root)
    map_fn = share_of(exported.definition) if share_of is not None else serial_map
    assets = prepare_assets(spec.experiment, cache_dir, map_fn, log=echo)
    base = reference(spec, assets, map_fn, log=echo)
    outcome = evaluate_trial(spec, record.setting, base, assets, map_fn, keep_victim_state=True)
    rebuilt = Rebuilt(spec, assets, base, outcome)
    victim = rebuilt_victim(outcome)
    # tensors only (weights and masks): loadable with torch.load(weights_only=True), no pickled code
    model = io.BytesIO()
    torch.save({"weights": victim.state, "masks": victim.masks}, model)
    evaluation = evaluation_document(record, outcome, exported.confirmed)
    folded = folded_victim(outcome)
    meta = artifact_meta(rebuilt, exported, folded)
    shipped = artifact_contents(rebuilt, folded, meta)
    contents: dict[str, bytes] = {
        "model.pt": model.getvalue(),
        "evaluation.json": json.dumps(evaluation, indent=2).encode(),
        **shipped,
    }
    card = model_card(
        CardInputs(
            meta,
            victim.layer_sparsity,
            data_sizes(assets),
            card_figures(evaluation, rebuilt),
            study_validity(rebuilt),
            contents,
            card_notes(evaluation, record.setting),
        )
    )
    out = create_folder(out_dir)
    files: dict[str, bytes | str] = {**contents, **card}
    written = [(out / name, write_into(out, name, content)) for name, content in files.items()]
    for line in [*evaluation_lines(evaluation), size_line(shipped)]:
        echo(line)
    echo(wrote(*written))
    return evaluation
