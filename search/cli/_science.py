"""``wemem run`` (one experiment, no search) and ``wemem memscore`` (compute, import, export mem-scores).

``wemem run`` is the paper's per-experiment workflow: prune the victim and its shadows with one defense setting,
attack, and print and save the full metrics table. ``--compare`` puts the undefended original (dense
pretrained), one-shot pruned and iteratively pruned models side by side: the paper's first finding is that
iterative pruning leaks more than both.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from wemem.attacks import ATTACKS
from wemem.config import ExperimentConfig, PruningConfig
from wemem.data import DATASETS
from wemem.models import MODELS
from wemem.training import TrainConfig

from .. import api
from .._runs import Execution, Experiment
from ..exceptions import BadInputError
from ._common import Command, add_override_flag, cpu_share, echo, overrides, positive_number, seed_number

# ------------------------------------------------------------------------------------ shared options


def add_experiment_options(p: argparse.ArgumentParser) -> None:
    """What the setting-independent work depends on (and so the cache key): data, model, seed, training."""
    config, train = ExperimentConfig(), TrainConfig()  # the defaults are theirs, written once
    g = p.add_argument_group("experiment")
    g.add_argument(
        "--dataset",
        default=config.dataset,
        help=f"one of {', '.join(DATASETS.names())} (prefixed ones + PATH), or a loader plug-in "
        "module:loader imported from the working directory first",
    )
    g.add_argument(
        "--model",
        default=config.model,
        help=f"one of {', '.join(MODELS.names())}, torchvision:NAME, or a factory plug-in module:factory "
        "imported from the working directory first",
    )
    g.add_argument("--label", default=None, help="label column of a csv: or parquet: table (default: label)")
    g.add_argument(
        "--member-column",
        default=None,
        help="column of a table marking the rows a --checkpoint model trained on (true/false)",
    )
    g.add_argument(
        "--exclude",
        nargs="+",
        default=(),
        metavar="COLUMN",
        help="columns of a csv: or parquet: table left out of the features",
    )
    g.add_argument(
        "--checkpoint", default=None, help="the victim's trained weights (a state_dict file): replaces its pretraining"
    )
    g.add_argument("--seed", type=seed_number, default=config.seed)
    g.add_argument("--shadows", type=int, default=config.shadows, help="shadow models of the adaptive attacker")
    g.add_argument("--pretrain-epochs", type=int, default=train.pretrain_epochs)
    g.add_argument("--finetune-epochs", type=int, default=train.finetune_epochs, help="per pruning round")
    g.add_argument(
        "--patience",
        type=int,
        default=train.patience,
        help="early stopping: stop after PATIENCE + 1 epochs without a better dev accuracy",
    )
    g.add_argument("--batch-size", type=int, default=train.batch_size)
    g.add_argument("--lr", type=float, default=train.lr)
    g.add_argument(
        "--memscore-models",
        type=int,
        default=config.memscore_models,
        help="even: models are trained in complementary pairs",
    )


def add_execution_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--serial", action="store_true", help="run every model in this process instead of as Ray tasks")
    g.add_argument("--cpus-per-model", type=cpu_share, default=1.0, help="CPUs of each Ray task (one model)")
    g.add_argument(
        "--gpus-per-model",
        type=positive_number,
        default=None,
        help="GPU share of each Ray task (one model); default: 1/(shadows+1) of a GPU when the Ray "
        "cluster has GPUs, else 0",
    )


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """The experiment of ``wemem run``/``memscore`` as given (checked by the API)."""
    return Experiment(
        dataset=args.dataset,
        model=args.model,
        label=args.label,
        member_column=args.member_column,
        exclude=tuple(args.exclude),
        checkpoint=args.checkpoint,
        seed=args.seed,
        shadows=args.shadows,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        memscore_models=args.memscore_models,
    )


def execution_from_args(args: argparse.Namespace) -> Execution:
    return Execution(serial=args.serial, cpus_per_model=args.cpus_per_model, gpus_per_model=args.gpus_per_model)


def parse_settings(items: list[str]) -> Mapping[str, object]:
    """Defense settings as ``KEY=VALUE`` words (values read as JSON where they parse, else as text) or as one
    JSON object: ``order=h2l width_fraction=0.25`` or ``'{"order": "h2l", "width_fraction": 0.25}'``."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            settings = json.loads(items[0])
        except json.JSONDecodeError as error:
            raise BadInputError(f"--settings is not a valid JSON object: {error}") from None
        if not isinstance(settings, dict):
            raise BadInputError("--settings JSON must be an object such as '{\"lambda_mem\": 0.1}'")
        return settings
    pairs = [item.partition("=") for item in items]
    for item, (key, sep, _) in zip(items, pairs):
        if not (sep and key.strip()):
            raise BadInputError(
                f"setting {item!r} is not KEY=VALUE; write e.g. width_fraction=0.25 or pass one JSON object"
            )
    return {key.strip(): _json_or_text(raw) for key, _, raw in pairs}


def _json_or_text(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # plain words such as order=h2l


# -------------------------------------------------------------------------------------------- wemem run


def _run(args: argparse.Namespace) -> int:
    api.run(
        experiment_from_args(args),
        defense=args.defense,
        settings=parse_settings(args.settings),
        sparsity=args.sparsity,
        steps=args.steps,
        one_shot=args.one_shot,
        compare=args.compare,
        attacks=args.attacks,
        adaptive=not args.non_adaptive,
        out=args.out,
        execution=execution_from_args(args),
        override_checks=overrides(args),
        cache_dir=args.cache_dir,
        data_root=args.data_root,
        ray_address=args.ray_address,
        echo=echo,
    )
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    add_experiment_options(p)
    g = p.add_argument_group("pruning and defense")
    pruning = PruningConfig()
    g.add_argument("--sparsity", type=float, default=pruning.sparsity, help="target sparsity of every prunable layer")
    g.add_argument("--steps", type=int, default=pruning.steps, help="pruning steps P (P + 1 fine-tuning rounds)")
    g.add_argument("--one-shot", action="store_true", help="prune to the target in a single round")
    g.add_argument(
        "--compare",
        action="store_true",
        help="undefended original, one-shot and iterative pruning side by side (and the defended "
        "iterative run when --defense is given)",
    )
    g.add_argument("--defense", default="none", help="defense applied in every fine-tuning round")
    g.add_argument(
        "--settings",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="defense settings as KEY=VALUE words or one JSON object",
    )
    g.add_argument(
        "--attacks", default=None, help=f"comma-separated, or all (the default): {','.join(ATTACKS.names())}"
    )
    g.add_argument("--non-adaptive", action="store_true", help="shadows pruned undefended instead of adaptively")
    p.add_argument(
        "--out",
        default="wemem-run",
        help="writes OUT.json and OUT.csv (default wemem-run), replacing existing ones; missing folders "
        "of OUT are created (checked before the run: the nearest existing one must be writable)",
    )
    add_execution_options(p)
    add_override_flag(p)


RUN = Command(
    "run",
    "one experiment without a search: prune with a defense setting, attack, print and save the metrics",
    _run_args,
    _run,
)


# --------------------------------------------------------------------------------------- wemem memscore


def _memscore(args: argparse.Namespace) -> int:
    if args.file is not None and args.action != "import":  # never ignored: `export FILE` would write elsewhere
        raise BadInputError(
            f"memscore {args.action} takes no FILE (got {args.file!r}): only import reads one; "
            f"write the scores to a file with --out {args.file}"
        )
    experiment = experiment_from_args(args) if args.study is None else args.study
    if args.action == "compute":
        api.memscore_compute(
            experiment,
            out=args.out,
            execution=execution_from_args(args),
            cache_dir=args.cache_dir,
            data_root=args.data_root,
            ray_address=args.ray_address,
            echo=echo,
        )
    elif args.action == "import":
        if args.file is None:
            raise BadInputError("memscore import needs the CSV file: wemem memscore import FILE [options]")
        api.memscore_import(
            args.file, experiment, order=args.order, cache_dir=args.cache_dir, data_root=args.data_root, echo=echo
        )
    else:
        if args.out is None:
            raise BadInputError("memscore export needs --out FILE")
        api.memscore_export(args.out, experiment, cache_dir=args.cache_dir, data_root=args.data_root, echo=echo)
    return 0


MEMSCORE_ACTIONS = ["compute", "import", "export"]


def _memscore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=MEMSCORE_ACTIONS, help="compute, import FILE, or export --out FILE")
    p.add_argument("file", nargs="?", help="CSV to import (header ',0', then index,score rows)")
    p.add_argument(
        "--out",
        default=None,
        help="CSV to write (export; optional copy for compute), replacing an existing one; missing "
        "folders are created, as for run's --out (checked first: the nearest existing one must be "
        "writable)",
    )
    p.add_argument(
        "--order",
        choices=["auto", "ours", "reference"],
        default="auto",
        help="import: the row order of a CSV without wemem's order header (our exports carry one and are "
        "verified): 'reference' for the reference implementation's public CSV (CIFAR-10/100 only; "
        "its order differs on the other datasets), 'ours' if the rows follow wemem's training pool "
        "for this dataset and seed; 'auto' refuses such a file",
    )
    p.add_argument(
        "--study",
        default=None,
        help="take dataset, model, seed and training from this study file instead of the options below",
    )
    add_experiment_options(p)
    add_execution_options(p)


MEMSCORE = Command(
    "memscore",
    "compute mem-scores (models trained in parallel), or import / export them as CSV",
    _memscore_args,
    _memscore,
)
