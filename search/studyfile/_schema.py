"""Study files (TOML), validated with pydantic. Every error names the file, the key and the allowed values."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.json_schema import JsonDict

from objectives import CHEAP_ATTACKS, Mode, ObjectiveConfig, PrivacyMetric, TrialSpec
from wemem.attacks import ATTACKS, check_attack_requirements
from wemem.config import MAX_SEED, ExperimentConfig, PruningConfig
from wemem.data import check_dataset_name, check_exclude_applies, dataset_key, resolve_dataset_path
from wemem.defenses import DEFENSES
from wemem.errors import WememError, validation_problems
from wemem.models import check_model_name
from wemem.pipeline import fine_tuning_schedule
from wemem.registry import Registry
from wemem.training import TrainConfig

from ._spaces import (
    PRUNING,
    ParamOverride,
    searchable,
    searchable_defenses,
    trial_steps,
    validate_overrides,
    validate_pruning_search,
)

# Every default of an experiment is written once, in wemem's plain configs; the sections and the CLI flags read them.
_EXPERIMENT, _TRAIN, _PRUNING, _OBJECTIVE = ExperimentConfig(), TrainConfig(), PruningConfig(), ObjectiveConfig()


def registered(registry: Registry[Any], name: str) -> str:
    """The one "known registry name" check of the study file, as the ValueError pydantic reports per key."""
    return known(registry.check, name)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf/NaN settings are typos, never values


STUDY_SOURCE = "study:"  # a warm start from another study in the same storage

# The name becomes part of folder names (Ray Tune's results); file systems allow 255 bytes a name
MAX_NAME_LENGTH = 100


class StudySection(_Section):
    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="the study's name in the storage, which every other command (resume, confirm, export, report) "
        "takes; launching an existing name with the same definition continues that study",
    )
    n_trials: int = Field(
        default=20,
        ge=1,
        description="the trial budget, shared by every launcher of the study and counting the enqueued paper's "
        "defaults and warm starts; `wemem resume --n-trials N` adds more",
    )
    seed: int = Field(
        default=_EXPERIMENT.seed,
        ge=0,
        le=MAX_SEED,
        description="seeds the data split, the pretrained victim and shadows, the mem-scores, the attacks and the "
        "creating launcher's sampler; `wemem confirm` then replicates on fresh seeds",
    )
    sampler: Literal["tpe", "random", "gp", "nsgaii"] = Field(
        default="tpe",
        description="how Optuna proposes settings: multivariate TPE grouped by defense, random (the baseline), gp "
        "(a Gaussian process, for few expensive trials) or nsgaii (pareto studies only); model-based samplers "
        "start after a quarter of the budget (2 to 10 trials)",
    )


def known(check: Callable[[str], str], value: str) -> str:
    """``check``'s answer, its WememError as the ValueError pydantic reports per key."""
    try:
        return check(value)
    except WememError as error:
        raise ValueError(str(error)) from None


class DataSection(_Section):
    dataset: str = Field(
        default=_EXPERIMENT.dataset,
        description="the data: a registered name, prefix:PATH (npz:, imagefolder:, csv:, parquet:; a relative PATH "
        "is relative to the study file's folder) or a loader plug-in package.module:loader",
    )
    data_root: str | None = Field(
        default=None,
        description="the folder the named datasets other than digits and finefoods are read from; "
        "`--data-root DIR` overrides it",
    )
    shadows: int = Field(
        default=_EXPERIMENT.shadows,
        ge=1,
        description="K, the attacker's shadow models, trained and pruned like the victim, that the attacks are "
        "fitted on; more give steadier thresholds at K more models' time per trial (LiRA needs at least 2)",
    )
    label: str | None = Field(
        default=None, min_length=1, description="a table's label column (csv:, parquet:); default 'label'"
    )
    member_column: str | None = Field(
        default=None,
        min_length=1,
        description="a table's column of true/false (or 1/0) marking the rows a [model] checkpoint was trained on; "
        "required with a checkpoint",
    )
    # None rather than empty when unset, so that exports of studies without it keep their fingerprint
    exclude: tuple[str, ...] | None = Field(
        default=None, description="a table's columns left out of the features (identifiers, leaked targets)"
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        return known(check_dataset_name, value)

    @model_validator(mode="after")
    def _exclude_names_table_columns(self) -> DataSection:
        try:
            check_exclude_applies(self.dataset, self.exclude or ())
        except WememError as error:
            raise ValueError(str(error)) from None
        return self


class ModelSection(_Section):
    name: str = Field(
        default=_EXPERIMENT.model,
        description="the architecture of the victim and the shadows: a registered name, torchvision:NAME or a "
        "factory plug-in package.module:factory",
    )
    checkpoint: str | None = Field(
        default=None,
        min_length=1,
        description="your victim's trained weights (a state_dict file, relative to the study file's folder), used "
        "instead of pretraining it; the data must then mark the samples it trained on",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return known(check_model_name, value)


class TrainingSection(_Section):
    lr: float = Field(default=_TRAIN.lr, gt=0, description="Adam's learning rate, for pretraining and fine-tuning")
    weight_decay: float = Field(
        default=_TRAIN.weight_decay,
        ge=0,
        description="Adam's L2 weight decay on every step a defense does not override",
    )
    batch_size: int = Field(default=_TRAIN.batch_size, ge=1, description="samples per mini-batch")
    pretrain_epochs: int = Field(
        default=_TRAIN.pretrain_epochs,
        ge=1,
        description="at most this many epochs train each dense model (victim, shadows, mem-score models) before "
        "pruning; early stopping usually ends them sooner",
    )
    finetune_epochs: int = Field(
        default=_TRAIN.finetune_epochs,
        ge=1,
        description="at most this many epochs of defended fine-tuning in each pruning round",
    )
    patience: int = Field(
        default=_TRAIN.patience,
        ge=0,
        description="early stopping on the held-out accuracy: training stops after patience + 1 epochs without "
        "strict improvement and keeps the best epoch's weights",
    )


class PruningSection(_Section):
    sparsity: float = Field(
        default=_PRUNING.sparsity,
        ge=0,
        lt=1,
        description="the final fraction of each prunable layer's weights set to zero, by smallest magnitude",
    )
    steps: int = Field(
        default=_PRUNING.steps,
        ge=1,
        description="P, the pruning steps that reach the sparsity on a geometric schedule (1 - (1 - s)^(r/P) at "
        "round r), each followed by a fine-tuning round; a dense round comes first",
    )
    one_shot: bool = Field(
        default=_PRUNING.one_shot,
        description="prune to the final sparsity at once and fine-tune one round, instead of iteratively",
    )


class MemscoreSection(_Section):
    models: int = Field(
        default=_EXPERIMENT.memscore_models,
        ge=2,
        description="M, the models trained to estimate each sample's mem-score (how much a model memorizes it), "
        "which the defenses rank samples by; even, since each pair trains on complementary halves of the training set",
    )

    @field_validator("models")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (models are trained in complementary pairs)")
        return value


# marks a key added after exports existed: an export writes it only where a study sets it (see
# ObjectiveSection.written_when_set), so that an export of a study that does not use it keeps its bytes and fingerprint
WRITTEN_WHEN_SET: JsonDict = {"export": "written when set"}


class ObjectiveSection(_Section):
    mode: Mode = Field(
        default=_OBJECTIVE.mode,
        description="constrained: minimize the leakage P with test accuracy at most delta below the undefended "
        "model's; leakage_cap: maximize test accuracy with P's upper bound at most max_leakage; weighted: minimize "
        "P - weight * accuracy; pareto: both objectives, a front of trade-offs",
    )
    max_leakage: float | None = Field(
        default=None,
        json_schema_extra=WRITTEN_WHEN_SET,
        gt=0,
        le=1,
        description="leakage_cap's cap tau: a trial is feasible when its leakage plus leakage_se_multiple standard "
        "errors is at most tau (e.g. 0.55, a compliance cap on the strongest attack's balanced accuracy); "
        "required with mode 'leakage_cap', refused otherwise",
    )
    leakage_se_multiple: float = Field(
        default=_OBJECTIVE.leakage_se_multiple,
        json_schema_extra=WRITTEN_WHEN_SET,
        ge=0,
        le=10,
        description="leakage_cap's margin for noise: the multiple z of the trial's stored leakage standard error "
        "added before comparing with max_leakage (1.645: one-sided 95%)",
    )
    accuracy_reference: Literal["pruned", "dense"] = Field(
        default=_OBJECTIVE.accuracy_reference,
        json_schema_extra=WRITTEN_WHEN_SET,
        description="what a constrained study's accuracy floor is stated against: the undefended model pruned to "
        "the trial's sparsity (pruned: the cost of the defense alone) or the dense pretrained victim (dense: the "
        "cost of pruning and defense together, the question when sparsity is searched)",
    )
    sparsity_objective: bool = Field(
        default=_OBJECTIVE.sparsity_objective,
        json_schema_extra=WRITTEN_WHEN_SET,
        description="a pareto study whose search space holds the sparsity may maximize it as a third objective",
    )
    delta: float = Field(
        default=_OBJECTIVE.delta,
        ge=0,
        le=1,
        description="the accuracy drop (a fraction: 0.02 is 2 points) a constrained study allows below the "
        "undefended pruned model's accuracy",
    )
    weight: float = Field(
        default=_OBJECTIVE.weight,
        ge=0,
        description="how many units of leakage one unit of accuracy is worth in a weighted study",
    )
    privacy_metric: PrivacyMetric = Field(
        default=_OBJECTIVE.privacy_metric,
        description="the attack metric the leakage P is measured in; a TPR at a low FPR needs enough non-member "
        "targets to resolve it (the launch checks)",
    )
    privacy_attacks: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the attacks the leakage P is the maximum over (default: every attack of [attacks] names); "
        "each must be in attacks.names",
    )

    @model_validator(mode="after")
    def _mode_keys_agree(self) -> ObjectiveSection:
        if self.mode == "leakage_cap" and self.max_leakage is None:
            raise ValueError("mode 'leakage_cap' needs max_leakage, the cap on the leakage (e.g. max_leakage = 0.55)")
        if self.mode != "leakage_cap" and self.max_leakage is not None:
            raise ValueError(
                f"max_leakage is the cap of mode 'leakage_cap'; this study's mode is {self.mode!r}: set "
                "mode = 'leakage_cap' or remove max_leakage"
            )
        if self.sparsity_objective and self.mode != "pareto":
            raise ValueError("sparsity_objective is a third pareto objective: set mode = 'pareto' or remove it")
        return self

    @classmethod
    def written_when_set(cls) -> tuple[str, ...]:
        """The keys marked :data:`WRITTEN_WHEN_SET`, in declaration order."""
        return tuple(name for name, f in cls.model_fields.items() if f.json_schema_extra == WRITTEN_WHEN_SET)


class RacingInstances(NamedTuple):
    """How a racing trial's objective is reported: ``total`` instances, the first ``rounds`` of them judging the
    first fine-tuning's pruning rounds (``racing_rounds``); racing may stop it once ``judged_from`` are in."""

    total: int
    judged_from: int
    rounds: int


class SearchSection(_Section):
    defenses: list[str] = Field(
        default_factory=lambda: ["swmr"],
        min_length=1,
        description="the defenses searched; several make the defense itself a categorical choice of the sampler",
    )
    enqueue_reference: bool = Field(
        default=True,
        description="evaluate each searched defense's paper's default setting first, so that confirm can judge "
        "whether tuning beat it",
    )
    early_stopping: Literal["none", "median"] = Field(
        default="none",
        description="median: stop poor trials between pruning rounds (Optuna's median pruner on a per-round "
        "objective from the threshold attacks); worth it when trials are expensive (image models), not on digits",
    )
    early_stopping_startup_trials: int = Field(
        default=3, ge=0, description="trials that run to the end before the median pruner stops any"
    )
    early_stopping_warmup_rounds: int = Field(
        default=1, ge=0, description="pruning rounds of each trial the median pruner lets finish before judging it"
    )
    trial_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds after which a running trial's jobs are cancelled and it fails with that reason "
        "(unset: no limit)",
    )
    space: dict[str, dict[str, ParamOverride]] = Field(
        default_factory=dict,
        description="per defense, narrows its declared space: [low, high], a list of choices or a fixed value per "
        "setting (see search.space below); the key pruning searches the pruning with the defense: sparsity = "
        "[low, high] (on a grid of 0.05) and steps = [low, high], or a fixed value",
    )
    warm_start: list[str] = Field(
        default_factory=list,
        description="settings to evaluate first, after the paper's defaults: export files (`wemem export`'s .toml "
        "or .json, relative to the study file's folder) or study:NAME, a study in the same storage",
    )
    warm_start_top: int = Field(
        default=3, ge=1, description="how many of a study:NAME source's best distinct settings are enqueued"
    )
    # R times a trial's time against D times the attack stage only: docs/search.md measures what each removes
    # per second
    repeats: int = Field(
        default=1,
        ge=1,
        le=16,
        description="R: every score (trials, the reference, confirmation runs) is the mean over R fine-tunings of "
        "every model on other seeds; the trial stores its leakage's standard error either way",
    )
    target_draws: int = Field(
        default=1,
        ge=1,
        le=16,
        description="D: each model is attacked on D draws of its balanced member/non-member target set and the "
        "leakage averaged; costs D times the attack stage only",
    )
    racing: Literal["none", "wilcoxon", "halving"] = Field(
        default="none",
        description="stop a trial between its R x D evaluations once it is clearly worse: wilcoxon (a signed-rank "
        "test against the best trial on the same (fine-tuning, draw) instances) or halving (successive halving on "
        "the running mean); needs repeats x target_draws >= 2 and one objective",
    )
    racing_p_threshold: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="wilcoxon racing stops a trial when the one-sided p-value that it is worse than the best trial "
        "falls under this",
    )
    racing_min_instances: int | None = Field(
        default=None,
        ge=2,
        description="(fine-tuning, draw) instances a trial runs before racing may stop it (unset: one fine-tuning's "
        "target_draws, at least 2 and below repeats x target_draws)",
    )
    racing_reduction_factor: int = Field(
        default=2, ge=2, description="halving racing keeps 1 in this many trials at each rung"
    )
    racing_rounds: bool = Field(
        default=False,
        description="race inside the first fine-tuning too: after each pruning round the cheap threshold attacks "
        "judge the round's checkpoints on every target draw, and these (round, draw) values are the first "
        "instances, so a clearly worse trial stops before its first fine-tuning ends; needs racing and a fixed "
        "number of pruning steps",
    )

    def racing_instances(self, rounds: int) -> RacingInstances:
        """A racing trial's instances, given the pruning ``rounds`` of its first fine-tuning: ``rounds x
        target_draws`` round instances when ``racing_rounds``, then the (fine-tuning, draw) instances (repeats x
        target_draws). The draws of a round, and of a fine-tuning, are judged together, so by default racing
        first judges after one round's (else one fine-tuning's) draws."""
        round_instances = (rounds if self.racing_rounds else 0) * self.target_draws
        total = round_instances + self.repeats * self.target_draws
        chosen = self.racing_min_instances
        judged_from = chosen if chosen is not None else max(2, min(self.target_draws, total - 1))
        return RacingInstances(total, judged_from, round_instances)

    @field_validator("warm_start")
    @classmethod
    def _warm_start_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            if source.startswith(STUDY_SOURCE):
                name = source.removeprefix(STUDY_SOURCE)
                if not re.fullmatch(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME_LENGTH}}}", name):
                    raise ValueError(f"{source!r}: after 'study:' give a study name (letters, digits, _ . -)")
            elif Path(source).suffix not in (".toml", ".json"):
                raise ValueError(
                    f"{source!r} is neither an export file (.toml or .json, written by `wemem export`) "
                    f"nor 'study:NAME' (a study in the same storage)"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a source twice")
        return value

    @field_validator("defenses")
    @classmethod
    def _known_defenses(cls, value: list[str]) -> list[str]:
        for name in value:
            registered(DEFENSES, name)
            if not searchable(name):
                raise ValueError(
                    f"defense {name!r} has no search space; searchable: {', '.join(searchable_defenses())}"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a defense twice")
        return value


class AttacksSection(_Section):
    names: list[str] = Field(
        default_factory=lambda: list(CHEAP_ATTACKS),
        min_length=1,
        description="the attacks run on every trial (default: the four threshold attacks, fast); the leakage is "
        "the strongest one's",
    )
    adaptive: bool = Field(
        default=True,
        description="prune the shadows with the trial's defense, as an attacker who knows it would; false prunes "
        "them undefended (a weaker, non-adaptive attacker)",
    )

    @field_validator("names")
    @classmethod
    def _known_attacks(cls, value: list[str]) -> list[str]:
        for name in value:
            registered(ATTACKS, name)
        return value


class ResourcesSection(_Section):
    cpus_per_trial: float = Field(
        default=1.0,
        gt=0,
        description="CPUs Ray reserves for a trial, shared by its K + 1 model jobs (a scheduling share, not a limit)",
    )
    gpus_per_trial: float = Field(
        default=0.0,
        ge=0,
        description="GPUs Ray reserves for a trial, shared by its K + 1 model jobs; fractions let trials share a GPU",
    )
    max_concurrent_trials: int = Field(
        default=1, ge=1, description="trials (and confirmation evaluations) this launcher runs at a time"
    )
    bf16: bool = Field(
        default=_TRAIN.bf16, description="bf16 autocast of a CNN's forward pass and loss on CUDA (no effect on CPU)"
    )
    channels_last: bool = Field(
        default=_TRAIN.channels_last,
        description="channels_last (NHWC) CNN weights on CUDA, for the tensor-core convolutions (no effect on CPU)",
    )


class TrackingSection(_Section):
    mlflow: str | None = Field(
        default=None,
        min_length=1,
        description="MLflow tracking URI each finished trial is logged to as a run, e.g. sqlite:///mlflow.db or "
        "http://HOST:5000 (unset: MLFLOW_TRACKING_URI; `wemem launch --mlflow URI` overrides it). Needs the "
        'tracking extra: pip install "wemem-search[tracking]"',
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        description="MLflow experiment the study's runs go to (default: the study's name)",
    )


class StudyDefinition(_Section):
    study: StudySection = Field(description="the study's name, trial budget, seed and sampler")
    data: DataSection = Field(default_factory=DataSection, description="the dataset and the attacker's shadow models")
    model: ModelSection = Field(default_factory=ModelSection, description="the victim's architecture and weights")
    training: TrainingSection = Field(
        default_factory=TrainingSection,
        description="how every model is trained (Adam with early stopping); the defaults reproduce the paper",
    )
    pruning: PruningSection = Field(
        default_factory=PruningSection, description="the target sparsity and how the victim gets there"
    )
    memscore: MemscoreSection = Field(
        default_factory=MemscoreSection, description="the mem-scores the defenses rank the training samples by"
    )
    objective: ObjectiveSection = Field(
        default_factory=ObjectiveSection, description="what a trial's score is: leakage, accuracy and how they trade"
    )
    search: SearchSection = Field(
        default_factory=SearchSection,
        description="the defenses searched, their spaces, the settings tried first, early stopping and noise",
    )
    attacks: AttacksSection = Field(
        default_factory=AttacksSection, description="the membership-inference attacks that judge each trial"
    )
    resources: ResourcesSection = Field(
        default_factory=ResourcesSection, description="what each trial reserves on the Ray cluster, and CUDA speed-ups"
    )
    # where a launcher reports, not what the study is: never stored with the study (its URI may hold credentials)
    # nor compared with a stored definition, so a changed or removed [tracking] is the same study
    tracking: TrackingSection | None = Field(
        default=None,
        exclude=True,
        description="log each finished trial to MLflow; where a launcher reports, so never stored with the study "
        "nor part of its identity",
    )
    # the study file's folder: plug-ins are imported from it first, relative paths are relative to it; not part
    # of the study's identity (the same study may be launched from a copy elsewhere)
    _folder: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _table_has_label(self) -> StudyDefinition:
        if (
            self.model.checkpoint is not None
            and dataset_key(self.data.dataset) in ("csv:", "parquet:")
            and self.data.member_column is None
        ):
            raise ValueError(
                "model.checkpoint replaces the victim's pretraining, so the table must say which rows "
                "that model trained on: set data.member_column to a column of true/false (or 1/0)"
            )
        return self

    @model_validator(mode="after")
    def _space_overrides_valid(self) -> StudyDefinition:
        validate_overrides(self.search.space)
        validate_pruning_search(
            self.search.space, self.pruning.one_shot, self.objective.sparsity_objective, self.search.defenses
        )
        return self

    @model_validator(mode="after")
    def _nsgaii_for_pareto(self) -> StudyDefinition:
        if self.study.sampler == "nsgaii" and self.objective.mode != "pareto":
            raise ValueError(
                f"study.sampler 'nsgaii' is a multi-objective sampler: it needs objective.mode 'pareto' "
                f"(this study's is {self.objective.mode!r}); use 'tpe', 'gp' or 'random'"
            )
        return self

    @model_validator(mode="after")
    def _early_stopping_single_objective(self) -> StudyDefinition:
        if self.search.early_stopping != "none" and len(self.objective_config().directions) > 1:
            raise ValueError(
                "search.early_stopping needs one objective; Optuna cannot prune multi-objective "
                "trials. Use objective.mode 'constrained' or 'weighted', or early_stopping = 'none'"
            )
        return self

    @model_validator(mode="after")
    def _racing_has_instances(self) -> StudyDefinition:
        s = self.search
        if s.racing == "none":
            return self
        instances, min_instances, _ = self.racing_instances()
        if instances < 2:
            raise ValueError(
                f"search.racing {s.racing!r} stops a trial between its evaluations, but repeats x target_draws is "
                "1; set search.target_draws (or repeats) to 2 or more, or racing = 'none'"
            )
        if min_instances >= instances:
            counted = "(pruning rounds + repeats) x target_draws" if s.racing_rounds else "(repeats x target_draws)"
            raise ValueError(
                f"search.racing_min_instances is {min_instances} but a trial has {instances} instances "
                f"{counted} and racing never stops it after its last; set racing_min_instances "
                f"below {instances} or raise repeats or target_draws"
            )
        if len(self.objective_config().directions) > 1:
            raise ValueError(
                "search.racing needs one objective; Optuna cannot prune multi-objective trials. Use objective.mode "
                "'constrained', 'leakage_cap' or 'weighted', or racing = 'none'"
            )
        if s.early_stopping != "none":
            raise ValueError(
                "search.racing and search.early_stopping both stop trials through the study's one pruner; choose "
                "one: early_stopping = 'none' or racing = 'none'"
            )
        return self

    @model_validator(mode="after")
    def _racing_rounds_fixed(self) -> StudyDefinition:
        """Round instances are numbered round x target_draws + draw, the same in every trial (Wilcoxon pairs them
        by number), so every trial must prune in the same number of rounds."""
        s = self.search
        if not s.racing_rounds:
            return self
        if s.racing == "none":
            raise ValueError(
                "search.racing_rounds races on each pruning round, but search.racing is 'none'; set racing = "
                "'wilcoxon' or 'halving', or remove racing_rounds"
            )
        if trial_steps(s.space, self.pruning_config()) is None:
            raise ValueError(
                f"search.racing_rounds pairs the trials' pruning rounds, but search.space.{PRUNING}.steps searches "
                "their number; fix the steps (a number) or remove racing_rounds"
            )
        return self

    def racing_instances(self) -> RacingInstances:
        """The study's racing instances (see :meth:`SearchSection.racing_instances`)."""
        pruning = self.pruning_config()
        steps = trial_steps(self.search.space, pruning)
        rounds = len(fine_tuning_schedule(replace(pruning, steps=steps))) if steps is not None else 0
        return self.search.racing_instances(rounds)

    @model_validator(mode="after")
    def _privacy_attacks_run(self) -> StudyDefinition:
        missing = set(self.objective.privacy_attacks or ()) - set(self.attacks.names)
        if missing:
            raise ValueError(
                f"objective.privacy_attacks names {sorted(missing)}, which [attacks] names does not run; "
                "add them to attacks.names"
            )
        return self

    @model_validator(mode="after")
    def _attacks_can_run(self) -> StudyDefinition:
        try:
            check_attack_requirements(self.attacks.names, self.data.shadows)
        except WememError as error:
            raise ValueError(str(error)) from None
        return self

    @property
    def name(self) -> str:
        return self.study.name

    def with_name(self, name: str) -> StudyDefinition:
        """The same definition under another study name (a copied study is known by its own name)."""
        if name == self.name:
            return self
        return self.model_copy(update={"study": self.study.model_copy(update={"name": name})})

    @property
    def folder(self) -> str | None:
        """The folder of the study file this definition was read from (None: not read from a file)."""
        return self._folder

    def from_folder(self, folder: str | Path | None) -> StudyDefinition:
        copy = self.model_copy()
        copy._folder = str(Path(folder).resolve()) if folder is not None else None
        return copy

    def experiment(self, data_root: str | None = None, base_dir: str | None = None) -> ExperimentConfig:
        """The experiment; ``base_dir`` (default: the study file's folder, else the working directory) is where
        plug-ins are imported from first and what relative data and checkpoint paths are relative to."""
        t = self.training
        base = str(Path(base_dir or self.folder or ".").resolve())
        return ExperimentConfig(
            dataset=resolve_dataset_path(self.data.dataset, base),
            model=self.model.name,
            seed=self.study.seed,
            shadows=self.data.shadows,
            label=self.data.label,
            member_column=self.data.member_column,
            exclude=self.data.exclude or (),
            checkpoint=str(Path(base, self.model.checkpoint)) if self.model.checkpoint else None,
            base_dir=base,
            data_root=data_root if data_root is not None else self.data.data_root,
            train=TrainConfig(
                lr=t.lr,
                weight_decay=t.weight_decay,
                batch_size=t.batch_size,
                pretrain_epochs=t.pretrain_epochs,
                finetune_epochs=t.finetune_epochs,
                patience=t.patience,
                bf16=self.resources.bf16,
                channels_last=self.resources.channels_last,
            ),
            memscore_models=self.memscore.models,
        )

    def pruning_config(self) -> PruningConfig:
        return PruningConfig(self.pruning.sparsity, self.pruning.steps, self.pruning.one_shot)

    def objective_config(self) -> ObjectiveConfig:
        o = self.objective
        return ObjectiveConfig(
            o.mode,
            o.delta,
            o.weight,
            o.privacy_metric,
            tuple(o.privacy_attacks) if o.privacy_attacks else None,
            max_leakage=o.max_leakage,
            leakage_se_multiple=o.leakage_se_multiple,
            accuracy_reference=o.accuracy_reference,
            sparsity_objective=o.sparsity_objective,
        )

    def trial_spec(self, cache_dir: str, data_root: str | None = None, base_dir: str | None = None) -> TrialSpec:
        return TrialSpec(
            self.experiment(data_root, base_dir),
            self.pruning_config(),
            tuple(self.attacks.names),
            self.objective_config(),
            str(cache_dir),
            self.attacks.adaptive,
            round_reports=self.search.early_stopping != "none",
            repeats=self.search.repeats,
            target_draws=self.search.target_draws,
            instance_reports=self.search.racing != "none",
            round_racing=self.search.racing_rounds,
        )


# a study file's words for the problems whose pydantic message does not say what to do
_STUDY_FILE_MESSAGES = {
    "extra_forbidden": "unknown key (check the spelling; see studies/quickstart.toml for every key)",
    "missing": "required key is missing",
}


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem, at most ten of them and how many more (a forged file may hold 200,000)."""
    problems = validation_problems(error, whole="(top level)", form="[{key}] {message}", messages=_STUDY_FILE_MESSAGES)
    return "\n".join([f"invalid study file {source}:", *(f"  {problem}" for problem in problems)])


def parse_study(data: Mapping[str, object], source: str = "<study>") -> StudyDefinition:
    try:
        return StudyDefinition.model_validate(data)
    except ValidationError as error:
        raise WememError(format_validation_error(source, error)) from None


def load_study_file(path: str | Path) -> StudyDefinition:
    path = Path(path)
    if path.is_dir():
        raise WememError(
            f"study file {path} is a folder; pass the path of a TOML study file in it, such as studies/quickstart.toml"
        )
    if not path.is_file():
        raise WememError(
            f"study file {path} does not exist; pass the path of a TOML study file such as studies/quickstart.toml"
        )
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise WememError(
            f"study file {path} is not text (binary data); pass a TOML study file such as studies/quickstart.toml"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise WememError(f"study file {path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses once per level: a forged file nests beyond Python's stack
        raise WememError(
            f"study file {path} is nested too deep to read (tables or arrays thousands of levels "
            f"inside each other); a study file nests a few levels, as studies/quickstart.toml "
            f"does"
        ) from None
    return parse_study(data, str(path)).from_folder(path.parent)
