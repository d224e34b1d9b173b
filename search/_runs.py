"""One experiment without a search (``wemem run``, :func:`search.api.run`) and the mem-scores of ``wemem memscore``:
the experiment as given, the planned rows of a comparison, their metrics table and its text, the result files.

``wemem run`` is the paper's per-experiment workflow: prune the victim and its shadows with one defense setting,
attack, and print and save the full metrics table. A comparison puts the undefended original (dense pretrained),
one-shot pruned and iteratively pruned models side by side: the paper's first finding is that iterative pruning
leaks more than both.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from wemem.config import ExperimentConfig, PruningConfig
from wemem.data import check_dataset_name, resolve_dataset_path
from wemem.defenses import UNDEFENDED, Setting
from wemem.errors import WememError
from wemem.files import check_output_folder, create_folder, csv_text, write_into, wrote
from wemem.metrics import METRIC_FPRS, tpr_resolution, unresolvable_text
from wemem.models import check_model_name
from wemem.parallel import MapFn, serial_map
from wemem.pipeline import ExperimentResult
from wemem.training import TrainConfig
from wemem.uncertainty import INTERVAL_METRICS

from .exceptions import BadInputError
from .results._text import INTERVAL_NOTE

METRICS = INTERVAL_METRICS  # the table's metric columns, each with its interval

_CONFIG, _TRAIN = ExperimentConfig(), TrainConfig()  # the defaults are theirs, written once


@dataclass(frozen=True)
class Experiment:
    """The experiment of ``wemem run`` and ``memscore`` as given (the command's experiment options): what the
    setting-independent work depends on, and so its cache key. Checked when :func:`experiment_config` reads it."""

    dataset: str = _CONFIG.dataset
    model: str = _CONFIG.model
    label: str | None = None
    member_column: str | None = None
    exclude: tuple[str, ...] = ()
    checkpoint: str | None = None
    seed: int = _CONFIG.seed
    shadows: int = _CONFIG.shadows
    pretrain_epochs: int = _TRAIN.pretrain_epochs
    finetune_epochs: int = _TRAIN.finetune_epochs
    patience: int = _TRAIN.patience
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    memscore_models: int = _CONFIG.memscore_models


@dataclass(frozen=True)
class Execution:
    """Where the models of a run train: in this process (``serial``), else as Ray tasks of this share each
    (``gpus_per_model`` None: 1/(shadows+1) of a GPU when the cluster has GPUs, else 0)."""

    serial: bool = False
    cpus_per_model: float = 1.0
    gpus_per_model: float | None = None


def experiment_config(experiment: Experiment, data_root: str | None) -> ExperimentConfig:
    """The experiment to run: plug-ins and relative paths start in the working directory; unknown names fail
    before Ray starts or anything trains."""
    check_model_name(experiment.model)
    check_dataset_name(experiment.dataset)
    base = str(Path.cwd())
    try:
        train = TrainConfig(
            lr=experiment.lr,
            batch_size=experiment.batch_size,
            pretrain_epochs=experiment.pretrain_epochs,
            finetune_epochs=experiment.finetune_epochs,
            patience=experiment.patience,
        )
        return ExperimentConfig(
            dataset=resolve_dataset_path(experiment.dataset, base),
            model=experiment.model,
            seed=experiment.seed,
            shadows=experiment.shadows,
            data_root=data_root,
            train=train,
            memscore_models=experiment.memscore_models,
            label=experiment.label,
            member_column=experiment.member_column,
            exclude=tuple(experiment.exclude),
            checkpoint=str(Path(base, experiment.checkpoint)) if experiment.checkpoint else None,
            base_dir=base,
        )
    except ValueError as error:
        raise BadInputError(f"invalid option: {error}") from None


def pruning_config(sparsity: float, steps: int, one_shot: bool) -> PruningConfig:
    try:
        return PruningConfig(sparsity, steps, one_shot)
    except ValueError as error:
        raise BadInputError(f"invalid option: {error}") from None


def parallel_map(execution: Execution, ray_address: str | None, shadows: int) -> MapFn:
    """This process, or Ray tasks (Ray started or joined here) of the share each model job takes."""
    if execution.serial:
        return serial_map
    from .execution import _cluster as cluster
    from .execution._jobs import RayMap

    cluster.init_ray(ray_address)
    gpus = execution.gpus_per_model
    if gpus is None:  # like a study's trial: the K+1 models of a run share one GPU
        import ray

        gpus = 1.0 / (shadows + 1) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    share = RayMap(num_cpus=execution.cpus_per_model, num_gpus=gpus)
    cluster.check_cluster_fits(
        [{"CPU": share.num_cpus, **({"GPU": share.num_gpus} if share.num_gpus else {})}],
        f"each model job (--cpus-per-model {share.num_cpus:g}, --gpus-per-model {share.num_gpus:g})",
        "Lower --cpus-per-model / --gpus-per-model, or pass --serial",
    )
    return share


# -------------------------------------------------------------------------------------------- wemem run


@dataclass(frozen=True)
class Run:
    """One row of the comparison: a label, the defense setting, and how the models are pruned."""

    label: str
    setting: Setting
    pruning: PruningConfig | None  # None: the dense pretrained original

    @property
    def defense(self) -> str:
        return self.setting.defense


def planned_runs(setting: Setting, pruning: PruningConfig, compare: bool) -> list[Run]:
    """The single requested run, or the undefended original / one-shot / iterative rows (plus the defended
    iterative row when a defense is given) for a comparison."""
    iterative = replace(pruning, one_shot=False)
    undefended = Setting(UNDEFENDED)
    defended = [Run(f"iterative+{setting.defense}", setting, iterative)] if setting.defense != UNDEFENDED else []
    if compare:
        return [
            Run("original", undefended, None),
            Run("one-shot", undefended, replace(pruning, one_shot=True)),
            Run("iterative", undefended, iterative),
        ] + defended
    label = "one-shot" if pruning.one_shot else "iterative"
    return [Run(label if setting.defense == UNDEFENDED else f"{label}+{setting.defense}", setting, pruning)]


def _part(metrics: Mapping[str, object], key: str) -> Mapping[str, Any]:
    """One JSON section of an attack's metrics (wemem.metrics.attack_uncertainty writes them as tables)."""
    part = metrics[key]
    if not isinstance(part, Mapping):
        raise TypeError(f"attack metric {key!r} is {type(part).__name__}, not a table")
    return part


def metrics_table(runs: list[Run], results: list[ExperimentResult]) -> pd.DataFrame:
    """The full metrics table, one row per (run, attack): accuracies, defense time, the attack's metrics, their
    95% intervals (``METRIC_low``, ``METRIC_high``), the epsilon lower bound and the victim's target counts."""
    rows = []
    for run, result in zip(runs, results):
        for attack, metrics in result.attacks.items():
            bound, intervals, targets = (_part(metrics, key) for key in ("epsilon_lower_bound", "intervals", "targets"))
            rows.append(
                {
                    "run": run.label,
                    "defense": run.defense,
                    "sparsity": 0.0 if run.pruning is None else run.pruning.sparsity,
                    "accuracy_before": result.pretrained_accuracy,
                    "accuracy_after": result.utility,
                    "defense_seconds": result.defense_seconds,
                    "attack": attack,
                    **{metric: metrics[metric] for metric in METRICS},
                    **{
                        f"{metric}_{end}": value
                        for metric in METRICS
                        for end, value in zip(("low", "high"), intervals[metric])
                    },
                    "epsilon_lower_bound": bound["value"],
                    "epsilon_delta": bound["delta"],
                    "epsilon_confidence": bound["confidence"],
                    "member_targets": targets["members"],
                    "non_member_targets": targets["non_members"],
                }
            )
    return pd.DataFrame(rows)


NOT_RESOLVABLE = "n/r"


def metric_cell(row: pd.Series, metric: str) -> str:
    """A metric with its interval, or :data:`NOT_RESOLVABLE` for a TPR the victim's targets cannot resolve."""
    fpr = METRIC_FPRS.get(metric)
    if fpr is not None and not tpr_resolution(fpr, row["non_member_targets"]).resolvable:
        return NOT_RESOLVABLE
    return f"{row[metric]:.4f} [{row[f'{metric}_low']:.4f}, {row[f'{metric}_high']:.4f}]"


def resolution_notes(table: pd.DataFrame) -> list[str]:
    notes = []
    for metric, fpr in METRIC_FPRS.items():
        for n in sorted(set(table["non_member_targets"])):
            resolution = tpr_resolution(fpr, n)
            if not resolution.resolvable:
                notes.append(f"{NOT_RESOLVABLE}: {metric} {unresolvable_text(n, resolution.needs)}")
    return notes


def format_tables(table: pd.DataFrame) -> str:
    """Plain-text views of the table: one line per run, then every attack with the runs side by side, each metric
    with its interval, TPRs the targets cannot resolve marked, and the epsilon lower bound."""
    run_columns = ["run", "defense", "sparsity", "accuracy_before", "accuracy_after", "defense_seconds"]
    models = table[run_columns].drop_duplicates("run").set_index("run")
    order = {label: i for i, label in enumerate(models.index)}
    ordered = table.assign(_order=table["run"].map(order)).sort_values(["attack", "_order"], kind="stable")
    cells = {metric: ordered.apply(metric_cell, axis=1, metric=metric) for metric in METRICS}
    attacks = ordered.assign(**cells, epsilon_lb=ordered["epsilon_lower_bound"].map("{:.3f}".format))
    attacks = attacks.set_index(["attack", "run"])[[*METRICS, "epsilon_lb"]]
    bound = table.iloc[0]
    notes = [
        (
            f"{INTERVAL_NOTE}; epsilon_lb: empirical lower bound on epsilon at the attack's threshold (delta "
            f"{bound['epsilon_delta']:g}, {bound['epsilon_confidence']:.0%} confidence)"
        ),
        *resolution_notes(table),
    ]
    number = "{:.4f}".format
    return "\n".join([models.to_string(float_format=number), "", attacks.to_string(), *notes])


RESULT_SUFFIXES = (".json", ".csv")


def result_files(prefix: str | Path) -> list[Path]:
    return [Path(f"{prefix}{suffix}") for suffix in RESULT_SUFFIXES]


def check_result_files(prefix: str | Path) -> None:
    """Refuse an ``out`` whose files could not be written, before the run: missing folders of the prefix are
    created at the end (so their nearest existing one must be writable), like report and apply create theirs.
    OUT.json and OUT.csv are names wemem makes from OUT: a link there is refused, as in report's folder."""
    check_output_folder(Path(prefix).parent, [path.name for path in result_files(prefix)])


def result_documents(
    config: ExperimentConfig, runs: list[Run], results: list[ExperimentResult], table: pd.DataFrame
) -> list[str]:
    """The contents of OUT.json and OUT.csv."""
    document = {
        "experiment": config.to_dict(),
        "runs": [
            {"label": run.label, "pruning": None if run.pruning is None else asdict(run.pruning), **result.to_dict()}
            for run, result in zip(runs, results)
        ],
    }
    return [json.dumps(document, indent=2, default=float), csv_text(table, index=False)]


def save_results(prefix: Path, documents: list[str]) -> str:
    """Write the results atomically; if that fails at the end of a run (a disk filled up meanwhile), save them
    in a fresh temporary folder instead, so minutes of work are never lost, and say where."""
    try:
        return _write_results(prefix, documents)
    except WememError as error:
        try:
            rescued = _write_results(Path(tempfile.mkdtemp(prefix="wemem-run-")) / prefix.name, documents)
        except (WememError, OSError):
            raise WememError(f"{error}; the tables printed above are the only copy of the results") from None
        raise WememError(f"{error}; the results are saved instead ({rescued})") from None


def _write_results(prefix: Path, documents: list[str]) -> str:
    folder = create_folder(prefix.parent)
    return wrote(*[(path, write_into(folder, path.name, text)) for path, text in zip(result_files(prefix), documents)])


# --------------------------------------------------------------------------------------- wemem memscore


def describe(scores: torch.Tensor) -> str:
    q = [float(v) for v in scores.quantile(scores.new_tensor([0.5, 0.9, 0.99]))]
    return (
        f"{len(scores)} mem-scores, mean {float(scores.mean()):.4f}, "
        f"quantiles 50% {q[0]:.4f} / 90% {q[1]:.4f} / 99% {q[2]:.4f}"
    )


def own_order(config: ExperimentConfig) -> str:
    """The T fingerprint our exports carry in their header, so an import can verify their row order."""
    from wemem.memscore import training_pool_fingerprint

    return training_pool_fingerprint(config.load_pools())


def write_scores_out(scores: torch.Tensor, out: Path, config: ExperimentConfig) -> str:
    """A copy of the scores with our order header; missing folders are created, as for run's ``out``."""
    from wemem.memscore import write_memscores_csv

    create_folder(out.parent)
    return wrote((out, write_memscores_csv(scores, out, own_order(config))))
