"""The study verbs: ``launch``, ``resume``, ``status`` and ``delete``."""

from __future__ import annotations

import argparse

from .. import api
from ..exceptions import BadInputError
from ._common import Command, add_override_flag, add_resource_flags, echo, overrides, places, positive_int, resources


def _launch(args: argparse.Namespace) -> int:
    result = api.launch(
        args.study_file,
        **places(args),
        ray_address=args.ray_address,
        resources=resources(args),
        override_checks=overrides(args),
        allow_foreign_tables=args.allow_foreign_tables,
        mlflow=args.mlflow,
        echo=echo,
    )
    echo(result.summary())
    result.refuse_all_failed()
    return 0


def _launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", help="path of the study file, e.g. studies/quickstart.toml")
    p.add_argument(
        "--allow-foreign-tables",
        action="store_true",
        help="launch into a SQLite storage that also holds tables that are not Optuna's (another "
        "program's database): refused without this flag, leaving the file as it was",
    )
    add_resource_flags(p)
    add_override_flag(p)
    _add_mlflow_flag(p)


def _add_mlflow_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mlflow",
        metavar="URI",
        default=None,
        help="log each finished trial to this MLflow tracking URI (over the study file's [tracking] and "
        "MLFLOW_TRACKING_URI; see docs/tracking.md)",
    )


LAUNCH = Command(
    "launch", "create (or continue) a study from a TOML study file and run its trials", _launch_args, _launch
)


def _resume(args: argparse.Namespace) -> int:
    result = api.resume(
        args.name,
        n_trials=args.n_trials,
        **places(args),
        ray_address=args.ray_address,
        resources=resources(args),
        override_checks=overrides(args),
        mlflow=args.mlflow,
        echo=echo,
    )
    echo(result.summary())
    result.refuse_all_failed()
    return 0


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument(
        "--n-trials", type=positive_int, default=None, help="add this many trials (default: finish the budget)"
    )
    add_resource_flags(p)
    add_override_flag(p)
    _add_mlflow_flag(p)


RESUME = Command(
    "resume",
    "continue a stored study: fail stale trials, re-queue them, run the remaining budget",
    _resume_args,
    _resume,
)


def _status(args: argparse.Namespace) -> int:
    if args.name is None and args.trial is not None:
        raise BadInputError("--trial needs the study name: wemem status NAME --trial N")
    if args.name is None:
        shown: api.StudyListing | api.StudyStatus | api.TrialStatus = api.studies(**places(args))
    elif args.trial is not None:
        shown = api.trial_status(args.name, args.trial, **places(args))
    else:
        shown = api.status(args.name, **places(args))
    for line in shown.lines():
        echo(line)
    return 0


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="study name (omit to list every study)")
    p.add_argument("--trial", type=int, default=None, help="show one trial in detail, with its stage timings")


STATUS = Command("status", "list studies, or show one study's trials and best setting", _status_args, _status)


def _delete(args: argparse.Namespace) -> int:
    echo(
        api.delete(args.name, yes=args.yes, force=args.force, storage=args.storage, stale_after=args.stale_after).line()
    )
    return 0


def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p.add_argument(
        "--force",
        action="store_true",
        help="delete even while a launcher runs the study (its RUNNING trials have fresh heartbeats)",
    )


DELETE = Command("delete", "delete a stored study and all its trials (asks for --yes)", _delete_args, _delete)
