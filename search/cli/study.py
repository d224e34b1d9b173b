"""The study verbs: ``launch``, ``resume``, ``status`` and ``delete``."""

from __future__ import annotations

import argparse
import datetime

from wemem.errors import WememError

from .common import Command, add_override_flag, add_resource_flags, echo, options_from, positive_int


def _launch(args: argparse.Namespace) -> int:
    from ..execution.launcher import launch
    from ..results.text import summary_lines
    from ..studyfile import load_study_file

    definition = load_study_file(args.study_file)
    args.name = definition.name  # for the resume hint if interrupted
    started = datetime.datetime.now()
    opened = launch(definition, options_from(args), echo)
    echo("\n".join(summary_lines(opened)))
    refuse_all_failed(opened.study, started)
    return 0


def refuse_all_failed(study, started: datetime.datetime) -> None:
    """A launcher whose every trial failed has found nothing: exit non-zero, naming a reason, so scripts and
    schedulers notice (the trials and their reasons are stored)."""
    from optuna.trial import TrialState

    from ..storage.records import SURPLUS_ATTR, fail_reason

    # Optuna stamps trials with the launcher machine's local time, as datetime.now() does
    ran = [t for t in study.get_trials(deepcopy=False)
           if t.datetime_start is not None and t.datetime_start >= started and not t.user_attrs.get(SURPLUS_ATTR)]
    if ran and all(t.state == TrialState.FAIL for t in ran):
        raise WememError(f"every one of the {len(ran)} trial(s) this launcher ran failed, e.g. trial "
                         f"#{ran[0].number}: {fail_reason(ran[0])}. Fix the cause, then `wemem resume "
                         f"{study.study_name}` (`wemem status {study.study_name}` lists each reason)")


def _launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", help="path of the study file, e.g. studies/quickstart.toml")
    p.add_argument("--allow-foreign-tables", action="store_true",
                   help="launch into a SQLite storage that also holds tables that are not Optuna's (another "
                        "program's database): refused without this flag, leaving the file as it was")
    add_resource_flags(p)
    add_override_flag(p)


LAUNCH = Command("launch", "create (or continue) a study from a TOML study file and run its trials",
                 _launch_args, _launch)


def _resume(args: argparse.Namespace) -> int:
    from ..execution.launcher import resume
    from ..results.text import summary_lines

    started = datetime.datetime.now()
    opened = resume(args.name, options_from(args), args.n_trials, echo)
    echo("\n".join(summary_lines(opened)))
    refuse_all_failed(opened.study, started)
    return 0


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--n-trials", type=positive_int, default=None,
                   help="add this many trials (default: finish the budget)")
    add_resource_flags(p)
    add_override_flag(p)


RESUME = Command("resume", "continue a stored study: fail stale trials, re-queue them, run the remaining budget",
                 _resume_args, _resume)


def _status(args: argparse.Namespace) -> int:
    from ..results.text import summary_lines, trial_detail_lines, trial_table_lines
    from ..storage.heartbeat import running_trial_health
    from ..storage.records import NotAWememStudy, study_names
    from ..storage.urls import redact
    from ..study import OpenStudy, Place, load_study

    options = options_from(args)
    if args.name is None and args.trial is not None:
        raise WememError("--trial needs the study name: wemem status NAME --trial N")
    storage = options.open_storage(must_exist=True)

    def opened(name: str) -> OpenStudy:
        study, definition = load_study(name, storage)
        return OpenStudy(study, definition, storage, Place.of(options, study))

    if args.name is None:
        names = study_names(storage)
        echo(f"studies in {redact(options.storage_url)}: {', '.join(names) if names else 'none'}")
        for name in names:
            try:
                one = opened(name)
            except NotAWememStudy:  # a plain Optuna study sharing the storage: listed, never an abort
                echo(f"study {name!r}: not a wemem study (no stored definition); "
                     f"{len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))} trial(s)")
                continue
            echo("\n".join(summary_lines(one)[:3]))
        return 0
    one = opened(args.name)
    if args.trial is not None:
        trials = {trial.number: trial for trial in one.study.get_trials(deepcopy=False)}
        if args.trial not in trials:
            raise WememError(f"study {args.name!r} has no trial #{args.trial}; its trials are numbered 0.."
                             f"{max(trials, default=-1)} (see `wemem status {args.name}`)")
        echo("\n".join(trial_detail_lines(one.study, trials[args.trial])))
        return 0
    echo("\n".join(summary_lines(one)))
    for line in trial_table_lines(one, running_trial_health(one.study, storage)):
        echo(line)
    return 0


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="study name (omit to list every study)")
    p.add_argument("--trial", type=int, default=None, help="show one trial in detail, with its stage timings")


STATUS = Command("status", "list studies, or show one study's trials and best setting", _status_args, _status)


def _delete(args: argparse.Namespace) -> int:
    import optuna

    from ..storage.heartbeat import running_trial_health
    from ..storage.records import stored_definition
    from ..storage.urls import redact

    options = options_from(args)
    storage = options.open_storage(must_exist=True)
    stored_definition(args.name, storage)  # names the known studies when it does not exist
    if not args.yes:
        raise WememError(f"deleting study {args.name!r} removes all its trials from {redact(options.storage_url)} "
                         f"for good; run `wemem delete {args.name} --yes` to confirm (export it first if you need it)")
    study = optuna.load_study(study_name=args.name, storage=storage)
    live = [number for number, dead in running_trial_health(study, storage).items() if dead is None]
    if live and not args.force:
        raise WememError(f"study {args.name!r} is being run: trial(s) {live} are RUNNING with fresh heartbeats, so a "
                         "launcher is alive and would fail on the deleted study. Stop it first (Ctrl-C or kill -TERM "
                         f"lets it re-queue its trials), or pass --force to delete it anyway")
    optuna.delete_study(study_name=args.name, storage=storage)
    echo(f"deleted study {args.name!r} from {redact(options.storage_url)}")
    return 0


def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p.add_argument("--force", action="store_true",
                   help="delete even while a launcher runs the study (its RUNNING trials have fresh heartbeats)")


DELETE = Command("delete", "delete a stored study and all its trials (asks for --yes)", _delete_args, _delete)
