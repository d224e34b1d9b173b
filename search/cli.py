"""The ``wemem`` command line: one entry point, one sub-command per study operation.

Every sub-command is a function ``(args) -> int`` registered with ``@command``; user errors (WememError)
print one clear message and exit 2 without touching what is already stored.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import warnings
from typing import Callable

from wemem.errors import WememError

from .storage import GRACE_PERIOD_S, MIN_GRACE_PERIOD_S, redact, scrub, storage_error, storage_url

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Handler, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable]:
    """Register ``configure(parser)``; the decorated function's ``handler`` attribute runs the command."""
    def decorator(configure: Callable[[argparse.ArgumentParser], None]) -> Callable:
        _COMMANDS[name] = (configure.handler, configure, help)  # type: ignore[attr-defined]
        return configure
    return decorator


def with_handler(handler: Handler) -> Callable[[Callable], Callable]:
    def attach(configure: Callable) -> Callable:
        configure.handler = handler
        return configure
    return attach


RESOURCE_FLAGS = ("cpus_per_trial", "gpus_per_trial", "max_concurrent_trials")


def options_from(args: argparse.Namespace):
    from .study import Options

    resources = {k: getattr(args, k) for k in RESOURCE_FLAGS if getattr(args, k, None) is not None}
    return Options(storage=args.storage, cache_dir=args.cache_dir, data_root=args.data_root,
                   ray_address=getattr(args, "ray_address", None), stale_after=args.stale_after,
                   resources=resources or None)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def seed_number(text: str) -> int:
    from wemem.config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}] (got {value})")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text})")
    return value


def cpu_share(text: str) -> float:
    value = positive_number(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0: every job needs a share of a CPU")
    return value


def grace_period(text: str) -> int:
    value = positive_int(text)
    if value < MIN_GRACE_PERIOD_S:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_GRACE_PERIOD_S} s (twice the heartbeat interval), or live launchers that miss "
            f"one heartbeat would be swept (got {value})")
    return value


def add_resource_flags(p: argparse.ArgumentParser) -> None:
    """[resources] overrides for this launcher only (they are not part of the study's identity)."""
    g = p.add_argument_group("resources of this launcher (default: the study file's [resources])")
    g.add_argument("--cpus-per-trial", type=cpu_share, default=None)
    g.add_argument("--gpus-per-trial", type=positive_number, default=None)
    g.add_argument("--max-concurrent-trials", type=positive_int, default=None)


def echo(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------- commands


def _launch(args: argparse.Namespace) -> int:
    from .config import load_study_file
    from .study import launch, summary_lines

    definition = load_study_file(args.study_file)
    args.name = definition.name  # for the resume hint if interrupted
    options = options_from(args)
    started = datetime.datetime.now()
    study = launch(definition, options, echo)
    print("\n".join(summary_lines(study, definition, options)))
    refuse_all_failed(study, started)
    return 0


def refuse_all_failed(study, started: datetime.datetime) -> None:
    """A launcher whose every trial failed has found nothing: exit non-zero, naming a reason, so scripts and
    schedulers notice (the trials and their reasons are stored)."""
    from optuna.trial import TrialState

    from .lifecycle import fail_reason

    # Optuna stamps trials with the launcher machine's local time, as datetime.now() does
    ran = [t for t in study.get_trials(deepcopy=False)
           if t.datetime_start is not None and t.datetime_start >= started and not t.user_attrs.get("surplus")]
    if ran and all(t.state == TrialState.FAIL for t in ran):
        raise WememError(f"every one of the {len(ran)} trial(s) this launcher ran failed, e.g. trial "
                         f"#{ran[0].number}: {fail_reason(ran[0])}. Fix the cause, then `wemem resume "
                         f"{study.study_name}` (`wemem status {study.study_name}` lists each reason)")


@command("launch", "create (or continue) a study from a TOML study file and run its trials")
@with_handler(_launch)
def _launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", help="path of the study file, e.g. studies/quickstart.toml")
    add_resource_flags(p)


def _resume(args: argparse.Namespace) -> int:
    from .study import resume, summary_lines

    options = options_from(args)
    started = datetime.datetime.now()
    study, definition = resume(args.name, options, args.n_trials, echo)
    print("\n".join(summary_lines(study, definition, options)))
    refuse_all_failed(study, started)
    return 0


@command("resume", "continue a stored study: fail stale trials, re-queue them, run the remaining budget")
@with_handler(_resume)
def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--n-trials", type=positive_int, default=None,
                   help="add this many trials (default: finish the budget)")
    add_resource_flags(p)


def _status(args: argparse.Namespace) -> int:
    from optuna.trial import TrialState

    from .lifecycle import fail_reason, running_trial_health
    from .storage import NotAWememStudy, load_study, study_names
    from .study import summary_lines

    options = options_from(args)
    if args.name is None and args.trial is not None:
        raise WememError("--trial needs the study name: wemem status NAME --trial N")
    storage = options.open_storage(must_exist=True)
    if args.name is None:
        names = study_names(storage)
        print(f"studies in {redact(options.storage_url)}: {', '.join(names) if names else 'none'}")
        for name in names:
            try:
                study, definition = load_study(name, storage)
            except NotAWememStudy:  # a plain Optuna study sharing the storage: listed, never an abort
                print(f"study {name!r}: not a wemem study (no stored definition); "
                      f"{len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))} trial(s)")
                continue
            print("\n".join(summary_lines(study, definition, options)[:3]))
        return 0
    study, definition = load_study(args.name, storage)
    if args.trial is not None:
        return _trial_status(study, args.trial)
    print("\n".join(summary_lines(study, definition, options)))
    health = running_trial_health(study, storage)
    for trial in study.get_trials(deepcopy=False):
        a = trial.user_attrs
        values = ", ".join(f"{v:.4f}" for v in trial.values) if trial.state == TrialState.COMPLETE else "-"
        note = (f"  ({fail_reason(trial)})" if trial.state == TrialState.FAIL else
                f"  ({health[trial.number]}: `wemem resume {study.study_name}` fails it and re-runs its setting)"
                if health.get(trial.number) else "")
        print(f"  #{trial.number:<4} {trial.state.name:<9} {str(a.get('defense', '')):<6} value {values:<16} "
              f"acc {a.get('utility', float('nan')):.4f} attack {a.get('privacy', float('nan')):.4f}{note}")
    return 0


def _trial_status(study, number: int) -> int:
    """One trial: state, values, setting, metrics and where its time went."""
    from .timings import timing_lines

    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise WememError(f"study {study.study_name!r} has no trial #{number}; its trials are numbered 0.."
                         f"{max(trials, default=-1)} (see `wemem status {study.study_name}`)")
    trial, a = trials[number], trials[number].user_attrs
    print(f"trial #{number} of {study.study_name}: {trial.state.name}, values {trial.values}")
    print(f"  defense {a.get('defense', '-')} {trial.params}")
    print(f"  test accuracy {a.get('utility', float('nan')):.4f}, strongest attack {a.get('strongest_attack', '-')} "
          f"at {a.get('privacy', float('nan')):.4f}")
    lines = timing_lines(a.get("timings", {}))
    print("\n".join(f"  {line}" for line in lines) if lines else "  no stage timings recorded for this trial")
    return 0


@command("status", "list studies, or show one study's trials and best setting")
@with_handler(_status)
def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="study name (omit to list every study)")
    p.add_argument("--trial", type=int, default=None, help="show one trial in detail, with its stage timings")


def _export(args: argparse.Namespace) -> int:
    from wemem.files import check_output_file, wrote

    from .export import export_document, write_export
    from .study import open_study

    check_output_file(args.out, (".toml", ".json"))  # before the storage is opened
    study, definition = open_study(args.name, options_from(args))
    print(wrote((args.out, write_export(export_document(study, definition), args.out))))
    return 0


@command("export", "write the best setting (or the Pareto set) with its metrics as TOML or JSON")
@with_handler(_export)
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output file ending in .toml or .json")


def _apply(args: argparse.Namespace) -> int:
    from wemem.files import check_writable_folder

    from .apply import apply_export, check_apply_out, load_export
    from .runner import init_ray, task_share
    from .study import resolve_cache_dir

    options = options_from(args)
    # a bad --out, --cache-dir or export file is refused before Ray starts and the minutes of work
    check_apply_out(args.out)
    cache_dir = resolve_cache_dir(options)
    check_writable_folder(cache_dir, "--cache-dir")
    load_export(args.export_file, args.trial)
    init_ray(options.ray_address)
    apply_export(args.export_file, args.out, cache_dir, options.data_root, args.trial, task_share, echo)
    return 0


@command("apply", "rebuild the defended pruned model of an export, save its weights and masks, re-evaluate it")
@with_handler(_apply)
def _apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_file", help="a file written by `wemem export`")
    p.add_argument("--out", required=True, help="output folder for model.pt and evaluation.json")
    p.add_argument("--trial", type=int, default=None, help="which trial of an exported Pareto set")


def _report(args: argparse.Namespace) -> int:
    from wemem.files import check_output_folder

    from .report import write_report
    from .study import open_study

    check_output_folder(args.out)  # before the storage is opened
    study, definition = open_study(args.name, options_from(args))
    write_report(study, definition, args.out, print)
    return 0


@command("report", "write the trials table (CSV, parquet) and PNG plots of a study")
@with_handler(_report)
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--out", required=True, help="output folder")


def _delete(args: argparse.Namespace) -> int:
    import optuna

    from .lifecycle import running_trial_health
    from .storage import stored_definition

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
    print(f"deleted study {args.name!r} from {redact(options.storage_url)}")
    return 0


@command("delete", "delete a stored study and all its trials (asks for --yes)")
@with_handler(_delete)
def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p.add_argument("--force", action="store_true",
                   help="delete even while a launcher runs the study (its RUNNING trials have fresh heartbeats)")


from . import cli_science  # noqa: E402,F401
from . import cli_confirm  # noqa: E402,F401


# --------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wemem", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, configure, help_text) in _COMMANDS.items():
        # argparse %-formats help strings (not descriptions): a literal "95%" must reach it as "95%%"
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        configure(p)
        p.add_argument("--storage", default=None,
                       help="Optuna storage URL (env WEMEM_STORAGE; default sqlite:///wemem.db in this directory)")
        p.add_argument("--cache-dir", default=None, help="cache of setting-independent work (default .wemem-cache)")
        p.add_argument("--data-root", default=None, help="folder holding dataset files")
        p.add_argument("--ray-address", default=None, help="attach to a running Ray cluster: HOST:PORT, auto or ray://HOST:PORT (default: "
                            "RAY_ADDRESS, else a private local Ray)")
        p.add_argument("--stale-after", type=grace_period, default=GRACE_PERIOD_S, metavar="SECONDS",
                       help="a RUNNING trial without a heartbeat for this long (database time) is failed and its "
                            f"setting re-queued (default {GRACE_PERIOD_S}, at least {MIN_GRACE_PERIOD_S})")
        p.set_defaults(handler=handler)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a batch scheduler, `kill`): the same clean stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    import signal

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module="optuna")
    args = build_parser().parse_args(argv)
    url = storage_url(args.storage)
    if threading_main():
        signal.signal(signal.SIGTERM, _terminate)
        # Ctrl-C must reach us as KeyboardInterrupt even when a shell started us with SIGINT ignored (a
        # non-interactive shell's `&` does): the launcher's clean stop depends on it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    ray_was_running = _ray_running()  # a caller's Ray (tests, notebooks) is theirs to stop
    try:
        return args.handler(args)
    except WememError as error:
        print(f"error: {scrub(str(error), url)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as interrupt:
        # what to do next: the interrupted command may say (``advice``), else a study is continued by resume
        advice = getattr(interrupt, "advice", None) or resume_advice(interrupt, getattr(args, "name", None) or "NAME")
        print(f"interrupted; {advice}", file=sys.stderr)
        return 130
    except Exception as error:
        if _is_storage_error(error):
            print(f"error: {storage_error(url, error)}", file=sys.stderr)
            return 2
        # a bug: show the traceback, but never a secret of the storage URL
        import traceback

        print(scrub("".join(traceback.format_exception(error)), url), file=sys.stderr)
        return 1
    finally:
        if not ray_was_running:
            _shutdown_ray()


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never imported just to ask: it takes seconds
    return ray is not None and ray.is_initialized()


def _shutdown_ray() -> None:
    """Stop the Ray this command started (or leave the cluster it joined) before the interpreter exits.

    Left to Ray's exit hook after an interrupt, its teardown raced the interpreter's and once crashed (exit 139).
    A second Ctrl-C or SIGTERM during this shutdown skips it and exits at once.
    """
    import os
    import signal

    if not _ray_running():
        return
    signals = (signal.SIGINT, signal.SIGTERM) if threading_main() else ()
    previous = {sig: signal.signal(sig, lambda *_: os._exit(130)) for sig in signals}
    try:
        sys.modules["ray"].shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resume_advice(interrupt: KeyboardInterrupt, name: str) -> str:
    requeued = getattr(interrupt, "requeued", [])
    detail = f" Running trial(s) {requeued} were failed and their settings re-queued." if requeued else ""
    return f"finished trials are stored.{detail} Continue with `wemem resume {name}`."


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _is_storage_error(error: BaseException) -> bool:
    import optuna
    import sqlalchemy

    return isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError,
                              optuna.exceptions.StorageInternalError))


if __name__ == "__main__":
    # run as `python -m search.cli`, this file is __main__, while cli_science and cli_confirm register their
    # sub-commands into the importable search.cli: its main knows every command, this module's copy would not
    from search.cli import main as package_main

    sys.exit(package_main())
