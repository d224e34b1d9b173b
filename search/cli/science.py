"""``wemem run`` (one experiment, no search) and ``wemem memscore`` (compute, import, export mem-scores).

``wemem run`` is the paper's per-experiment workflow: prune the victim and its shadows with one defense setting,
attack, and print and save the full metrics table. ``--compare`` puts the undefended original (dense
pretrained), one-shot pruned and iteratively pruned models side by side: the paper's first finding is that
iterative pruning leaks more than both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from wemem.assets import memscore_path
from wemem.attacks import ATTACKS, check_attack_requirements, parse_attack_names
from wemem.config import ExperimentConfig, PruningConfig
from wemem.data import DATASETS, check_dataset_name, resolve_dataset_path
from wemem.defenses import make_defense
from wemem.errors import WememError, require
from wemem.metrics import METRIC_FPRS, tpr_resolution, unresolvable_text
from wemem.files import (check_output_file, check_output_folder, check_writable_folder, create_folder, csv_text,
                         write_into, wrote)
from wemem.models import MODELS, check_model_name
from wemem.parallel import MapFn, serial_map
from wemem.pipeline import ExperimentResult
from wemem.training import TrainConfig

from ..results.text import INTERVAL_NOTE, timing_lines
from .common import Command, add_override_flag, cpu_share, echo, options_from, positive_number, seed_number

METRICS = ["balanced_accuracy", "auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr"]


# ------------------------------------------------------------------------------------ shared options


def add_experiment_options(p: argparse.ArgumentParser) -> None:
    """What the setting-independent work depends on (and so the cache key): data, model, seed, training."""
    config, train = ExperimentConfig(), TrainConfig()  # the defaults are theirs, written once
    g = p.add_argument_group("experiment")
    g.add_argument("--dataset", default=config.dataset,
                   help=f"one of {', '.join(DATASETS.names())} (prefixed ones + PATH), or a loader plug-in "
                        "module:loader imported from the working directory first")
    g.add_argument("--model", default=config.model,
                   help=f"one of {', '.join(MODELS.names())}, torchvision:NAME, or a factory plug-in module:factory "
                        "imported from the working directory first")
    g.add_argument("--label", default=None, help="label column of a csv: or parquet: table (default: label)")
    g.add_argument("--member-column", default=None,
                   help="column of a table marking the rows a --checkpoint model trained on (true/false)")
    g.add_argument("--exclude", nargs="+", default=(), metavar="COLUMN",
                   help="columns of a csv: or parquet: table left out of the features")
    g.add_argument("--checkpoint", default=None,
                   help="the victim's trained weights (a state_dict file): replaces its pretraining")
    g.add_argument("--seed", type=seed_number, default=config.seed)
    g.add_argument("--shadows", type=int, default=config.shadows, help="shadow models of the adaptive attacker")
    g.add_argument("--pretrain-epochs", type=int, default=train.pretrain_epochs)
    g.add_argument("--finetune-epochs", type=int, default=train.finetune_epochs, help="per pruning round")
    g.add_argument("--patience", type=int, default=train.patience,
                   help="early stopping: stop after PATIENCE + 1 epochs without a better dev accuracy")
    g.add_argument("--batch-size", type=int, default=train.batch_size)
    g.add_argument("--lr", type=float, default=train.lr)
    g.add_argument("--memscore-models", type=int, default=config.memscore_models, help="even: models are trained in complementary pairs")


def add_execution_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--serial", action="store_true", help="run every model in this process instead of as Ray tasks")
    g.add_argument("--cpus-per-model", type=cpu_share, default=1.0, help="CPUs of each Ray task (one model)")
    g.add_argument("--gpus-per-model", type=positive_number, default=None,
                   help="GPU share of each Ray task (one model); default: 1/(shadows+1) of a GPU when the Ray "
                        "cluster has GPUs, else 0")


def experiment_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment of ``wemem run``/``memscore``: plug-ins and relative paths start in the working directory."""
    check_model_name(args.model)  # unknown names fail before Ray starts or anything trains
    check_dataset_name(args.dataset)
    base = str(Path.cwd())
    try:
        train = TrainConfig(lr=args.lr, batch_size=args.batch_size, pretrain_epochs=args.pretrain_epochs,
                            finetune_epochs=args.finetune_epochs, patience=args.patience)
        return ExperimentConfig(dataset=resolve_dataset_path(args.dataset, base), model=args.model, seed=args.seed,
                                shadows=args.shadows, data_root=args.data_root, train=train,
                                memscore_models=args.memscore_models, label=args.label,
                                member_column=args.member_column, exclude=tuple(args.exclude),
                                checkpoint=str(Path(base, args.checkpoint)) if args.checkpoint else None,
                                base_dir=base)
    except ValueError as error:
        raise WememError(f"invalid option: {error}") from None


def parallel_map(args: argparse.Namespace) -> MapFn:
    if args.serial:
        return serial_map
    from ..execution import cluster
    from ..execution.jobs import RayMap

    cluster.init_ray(args.ray_address)
    gpus = args.gpus_per_model
    if gpus is None:  # like a study's trial: the K+1 models of a run share one GPU
        import ray

        gpus = 1.0 / (getattr(args, "shadows", 5) + 1) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    share = RayMap(num_cpus=args.cpus_per_model, num_gpus=gpus)
    cluster.check_cluster_fits([{"CPU": share.num_cpus, **({"GPU": share.num_gpus} if share.num_gpus else {})}],
                       f"each model job (--cpus-per-model {share.num_cpus:g}, --gpus-per-model {share.num_gpus:g})",
                       "Lower --cpus-per-model / --gpus-per-model, or pass --serial")
    return share


def cache_dir_of(args: argparse.Namespace) -> str:
    from ..study import resolve_cache_dir

    return resolve_cache_dir(options_from(args))


def parse_settings(items: list[str]) -> dict[str, Any]:
    """Defense settings as ``KEY=VALUE`` words (values read as JSON where they parse, else as text) or as one
    JSON object: ``order=h2l width_fraction=0.25`` or ``'{"order": "h2l", "width_fraction": 0.25}'``."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            settings = json.loads(items[0])
        except json.JSONDecodeError as error:
            raise WememError(f"--settings is not a valid JSON object: {error}") from None
        require(isinstance(settings, dict), "--settings JSON must be an object such as '{\"lambda_mem\": 0.1}'")
        return settings
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        require(bool(sep and key.strip()), f"setting {item!r} is not KEY=VALUE; write e.g. width_fraction=0.25 "
                                           f"or pass one JSON object")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw  # plain words such as order=h2l
    return settings


# -------------------------------------------------------------------------------------------- wemem run


@dataclass(frozen=True)
class Run:
    """One row of the comparison: a label, the defense and its settings, and how the models are pruned."""

    label: str
    defense: str
    settings: dict[str, Any]
    pruning: PruningConfig | None  # None: the dense pretrained original


def planned_runs(defense: str, settings: dict[str, Any], pruning: PruningConfig, compare: bool) -> list[Run]:
    """The single requested run, or the undefended original / one-shot / iterative rows (plus the defended
    iterative row when a defense is given) for ``--compare``."""
    iterative = replace(pruning, one_shot=False)
    defended = [Run(f"iterative+{defense}", defense, settings, iterative)] if defense != "none" else []
    if compare:
        return [Run("original", "none", {}, None),
                Run("one-shot", "none", {}, replace(pruning, one_shot=True)),
                Run("iterative", "none", {}, iterative)] + defended
    label = "one-shot" if pruning.one_shot else "iterative"
    return [Run(label if defense == "none" else f"{label}+{defense}", defense, settings, pruning)]


def metrics_table(runs: list[Run], results: list[ExperimentResult]) -> pd.DataFrame:
    """The full metrics table, one row per (run, attack): accuracies, defense time, the attack's metrics, their
    95% intervals (``METRIC_low``, ``METRIC_high``), the epsilon lower bound and the victim's target counts."""
    rows = []
    for run, result in zip(runs, results):
        for attack, metrics in result.attacks.items():
            bound = metrics["epsilon_lower_bound"]
            rows.append({
                "run": run.label, "defense": run.defense,
                "sparsity": 0.0 if run.pruning is None else run.pruning.sparsity,
                "accuracy_before": result.pretrained_accuracy, "accuracy_after": result.utility,
                "defense_seconds": result.defense_seconds, "attack": attack,
                **{metric: metrics[metric] for metric in METRICS},
                **{f"{metric}_{end}": value for metric in METRICS
                   for end, value in zip(("low", "high"), metrics["intervals"][metric])},
                "epsilon_lower_bound": bound["value"], "epsilon_delta": bound["delta"],
                "epsilon_confidence": bound["confidence"],
                "member_targets": metrics["targets"]["members"],
                "non_member_targets": metrics["targets"]["non_members"],
            })
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
    notes = [f"{INTERVAL_NOTE}; epsilon_lb: empirical lower bound on epsilon at the attack's threshold (delta "
             f"{bound['epsilon_delta']:g}, {bound['epsilon_confidence']:.0%} confidence)", *resolution_notes(table)]
    number = "{:.4f}".format
    return "\n".join([models.to_string(float_format=number), "", attacks.to_string(), *notes])


RESULT_SUFFIXES = (".json", ".csv")


def result_files(prefix: str | Path) -> list[Path]:
    return [Path(f"{prefix}{suffix}") for suffix in RESULT_SUFFIXES]


def check_result_files(prefix: str | Path) -> None:
    """Refuse an --out whose files could not be written, before the run: missing folders of the prefix are
    created at the end (so their nearest existing one must be writable), like report and apply create theirs.
    OUT.json and OUT.csv are names wemem makes from OUT: a link there is refused, as in report's folder."""
    check_output_folder(Path(prefix).parent, [path.name for path in result_files(prefix)])


def result_documents(config: ExperimentConfig, runs: list[Run], results: list[ExperimentResult],
                     table: pd.DataFrame) -> list[str]:
    """The contents of OUT.json and OUT.csv."""
    document = {"experiment": config.to_dict(),
                "runs": [{"label": run.label, "pruning": None if run.pruning is None else asdict(run.pruning),
                          **result.to_dict()} for run, result in zip(runs, results)]}
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
    return wrote(*[(path, write_into(folder, path.name, text))
                   for path, text in zip(result_files(prefix), documents)])


def _run(args: argparse.Namespace) -> int:
    from wemem.assets import check_inputs, input_checks, prepare_assets
    from wemem.pipeline import run_experiment
    from wemem.validity import apply_overrides, require_valid

    check_result_files(args.out)  # first: the results of minutes of work need a place
    config = experiment_from_args(args)
    settings = parse_settings(args.settings)
    make_defense(args.defense, settings)  # bad settings fail before any training
    attacks = parse_attack_names(args.attacks, ATTACKS.names())
    check_attack_requirements(attacks, config.shadows)  # every requirement is checked before any work starts
    try:
        pruning = PruningConfig(args.sparsity, args.steps, args.one_shot)
    except ValueError as error:
        raise WememError(f"invalid option: {error}") from None
    runs = planned_runs(args.defense, settings, pruning, args.compare)
    cache_dir = cache_dir_of(args)
    pools = check_inputs(config, cache_dir)  # data, model and cache folder: before Ray starts or anything trains
    checks = apply_overrides(input_checks(config, pools, "balanced_accuracy"), args.override_check or ())
    require_valid(checks, "the run")
    for check in checks:
        echo(f"validity {check.line()}")
    map_fn = parallel_map(args)

    assets = prepare_assets(config, cache_dir, map_fn, log=echo)
    results = []
    for run in runs:
        echo(f"running {run.label} ...")
        results.append(run_experiment(assets, run.defense, run.settings, run.pruning, attacks, map_fn,
                                      adaptive=not args.non_adaptive))
    table = metrics_table(runs, results)
    echo(format_tables(table))
    for run, result in zip(runs, results):
        echo("\n".join([f"\n{run.label}", *timing_lines(result.timings)]))
    echo(save_results(Path(args.out), result_documents(config, runs, results, table)))
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    add_experiment_options(p)
    g = p.add_argument_group("pruning and defense")
    pruning = PruningConfig()
    g.add_argument("--sparsity", type=float, default=pruning.sparsity, help="target sparsity of every prunable layer")
    g.add_argument("--steps", type=int, default=pruning.steps, help="pruning steps P (P + 1 fine-tuning rounds)")
    g.add_argument("--one-shot", action="store_true", help="prune to the target in a single round")
    g.add_argument("--compare", action="store_true",
                   help="undefended original, one-shot and iterative pruning side by side (and the defended "
                        "iterative run when --defense is given)")
    g.add_argument("--defense", default="none", help="defense applied in every fine-tuning round")
    g.add_argument("--settings", nargs="*", default=[], metavar="KEY=VALUE",
                   help="defense settings as KEY=VALUE words or one JSON object")
    g.add_argument("--attacks", default=None, help=f"comma-separated, or all (the default): {','.join(ATTACKS.names())}")
    g.add_argument("--non-adaptive", action="store_true", help="shadows pruned undefended instead of adaptively")
    p.add_argument("--out", default="wemem-run",
                   help="writes OUT.json and OUT.csv (default wemem-run), replacing existing ones; missing folders "
                        "of OUT are created (checked before the run: the nearest existing one must be writable)")
    add_execution_options(p)
    add_override_flag(p)


RUN = Command("run", "one experiment without a search: prune with a defense setting, attack, print and save the metrics",
              _run_args, _run)


# --------------------------------------------------------------------------------------- wemem memscore


def memscore_config(args: argparse.Namespace) -> ExperimentConfig:
    """The study file's experiment when ``--study`` is given (so the scores land in that study's cache)."""
    if args.study is None:
        return experiment_from_args(args)
    from ..studyfile import load_study_file

    return load_study_file(args.study).experiment(args.data_root)


def describe(scores) -> str:
    q = [float(v) for v in scores.quantile(scores.new_tensor([0.5, 0.9, 0.99]))]
    return (f"{len(scores)} mem-scores, mean {float(scores.mean()):.4f}, "
            f"quantiles 50% {q[0]:.4f} / 90% {q[1]:.4f} / 99% {q[2]:.4f}")


def own_order(config: ExperimentConfig) -> str:
    """The T fingerprint our exports carry in their header, so an import can verify their row order."""
    from wemem.memscore import training_pool_fingerprint

    return training_pool_fingerprint(config.load_pools())


def write_scores_out(scores, out: Path, config: ExperimentConfig) -> str:
    """The --out copy of the scores, with our order header; missing folders are created, as for run's --out."""
    from wemem.memscore import write_memscores_csv

    create_folder(out.parent)
    return wrote((out, write_memscores_csv(scores, out, own_order(config))))


def _memscore_compute(args: argparse.Namespace, config: ExperimentConfig, cache_dir: str) -> None:
    from wemem.assets import check_inputs, save_memscores
    from wemem.memscore import compute_memscores

    pools = check_inputs(config, cache_dir)  # the data, the model against it, the cache: before Ray starts
    echo(f"training {config.memscore_models} models on complementary halves of {config.dataset}'s training pool")
    scores = compute_memscores(config, pools, parallel_map(args))
    target = save_memscores(scores, config, cache_dir)
    echo(f"{describe(scores)}; cached in {target}")
    if args.out:
        echo(write_scores_out(scores, Path(args.out), config))


def _memscore_import(args: argparse.Namespace, config: ExperimentConfig, cache_dir: str) -> None:
    from wemem.assets import import_memscores

    require(args.file is not None, "memscore import needs the CSV file: wemem memscore import FILE [options]")
    scores = import_memscores(config, cache_dir, args.file, args.order)
    echo(f"imported {describe(scores)} into {memscore_path(config, cache_dir)}")


def _memscore_export(args: argparse.Namespace, config: ExperimentConfig, cache_dir: str) -> None:
    from wemem.memscore import read_memscores_csv

    require(args.out is not None, "memscore export needs --out FILE")
    source = memscore_path(config, cache_dir)
    require(source.exists(), f"no cached mem-scores for {config.dataset}/{config.model} seed {config.seed} in "
                             f"{cache_dir}; run `wemem memscore compute` (with the same options) first")
    scores = read_memscores_csv(source)
    echo(f"exported {describe(scores)}: {write_scores_out(scores, Path(args.out), config)}")


MEMSCORE_ACTIONS = {"compute": _memscore_compute, "import": _memscore_import, "export": _memscore_export}


def _memscore(args: argparse.Namespace) -> int:
    if args.file is not None and args.action != "import":  # never ignored: `export FILE` would write elsewhere
        raise WememError(f"memscore {args.action} takes no FILE (got {args.file!r}): only import reads one; "
                         f"write the scores to a file with --out {args.file}")
    if args.out is not None and args.action != "import":
        check_output_file(args.out, create_parents=True)  # first: before models are trained or the cache is read
    cache_dir = cache_dir_of(args)
    if args.action != "export":  # compute and import install scores in the cache
        check_writable_folder(cache_dir, "--cache-dir")
    MEMSCORE_ACTIONS[args.action](args, memscore_config(args), cache_dir)
    return 0


def _memscore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=list(MEMSCORE_ACTIONS), help="compute, import FILE, or export --out FILE")
    p.add_argument("file", nargs="?", help="CSV to import (header ',0', then index,score rows)")
    p.add_argument("--out", default=None,
                   help="CSV to write (export; optional copy for compute), replacing an existing one; missing "
                        "folders are created, as for run's --out (checked first: the nearest existing one must be "
                        "writable)")
    p.add_argument("--order", choices=["auto", "ours", "reference"], default="auto",
                   help="import: the row order of a CSV without wemem's order header (our exports carry one and are "
                        "verified): 'reference' for the reference implementation's public CSV (CIFAR-10/100 only; "
                        "its order differs on the other datasets), 'ours' if the rows follow wemem's training pool "
                        "for this dataset and seed; 'auto' refuses such a file")
    p.add_argument("--study", default=None,
                   help="take dataset, model, seed and training from this study file instead of the options below")
    add_experiment_options(p)
    add_execution_options(p)


MEMSCORE = Command("memscore", "compute mem-scores (models trained in parallel), or import / export them as CSV",
                   _memscore_args, _memscore)
