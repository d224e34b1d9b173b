"""The ``wemem`` command line: one entry point, one sub-command per study operation.

Every sub-command is a :class:`~.common.Command` in the explicit table below: it parses its arguments, calls its
:mod:`search.api` function and prints the result. User errors (WememError) print one clear message and exit 2
without touching what is already stored; Ctrl-C and SIGTERM exit 130, a bug 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from wemem.errors import WememError

from ..api import resume_advice
from ..storage._urls import scrub, storage_error, storage_url
from ._common import Command, add_common_flags, echo
from ._confirm import CONFIRM
from ._results import APPLY, AUDIT, EXPORT, REPORT
from ._science import MEMSCORE, RUN
from ._study import DELETE, LAUNCH, RESUME, STATUS

# The commands, in the order ``wemem --help`` lists them
COMMANDS: tuple[Command, ...] = (
    LAUNCH,
    RESUME,
    STATUS,
    EXPORT,
    APPLY,
    AUDIT,
    REPORT,
    DELETE,
    CONFIRM,
    RUN,
    MEMSCORE,
)


def registered_names() -> str:
    """Every name a study or ``wemem run`` can use, installed packages' entry points included."""
    from wemem.attacks import ATTACKS
    from wemem.data import DATASETS
    from wemem.defenses import DEFENSES
    from wemem.models import MODELS

    return "\n".join(
        [
            f"datasets: {', '.join(DATASETS.names())}, or a loader plug-in package.module:loader",
            f"models:   {', '.join(MODELS.names())}, torchvision:NAME, or a factory plug-in package.module:factory",
            f"defenses: {', '.join(DEFENSES.names())}",
            f"attacks:  {', '.join(ATTACKS.names())}",
            (
                "installed packages add their own through the entry point groups wemem.datasets, wemem.models, "
                "wemem.defenses and wemem.attacks"
            ),
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wemem",
        description=__doc__.splitlines()[0],
        epilog=registered_names(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        # argparse %-formats help strings (not descriptions): a literal "95%" must reach it as "95%%"
        p = sub.add_parser(command.name, help=command.help.replace("%", "%%"), description=command.help)
        command.configure(p)
        add_common_flags(p)
        p.set_defaults(handler=command.run)
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
        with warnings.catch_warnings():  # restores the caller's showwarning when an in-process call returns
            warnings.showwarning = _show_warning
            return args.handler(args)
    except KeyboardInterrupt as interrupt:  # before WememError: an InterruptedStudyError is both
        # what to do next: the interrupted command may say (``advice``), else a study is continued by resume
        advice = getattr(interrupt, "advice", None) or resume_advice(
            getattr(args, "name", None) or "NAME", getattr(interrupt, "requeued", [])
        )
        echo(f"interrupted; {advice}", sys.stderr)
        return 130
    except WememError as error:
        echo(f"error: {scrub(str(error), url)}", sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stderr.close()
        return 0
    except RecursionError:  # Python's parsers recurse per nesting level: a received file or attribute nested too deep
        echo(
            "error: an input of this command (a file, a --settings value or a stored attribute) is nested too "
            "deep to read; use a flat one",
            sys.stderr,
        )
        return 2
    except Exception as error:
        if _is_storage_error(error):
            echo(f"error: {storage_error(url, error)}", sys.stderr)
            return 2
        # a bug: show the traceback, but never a secret of the storage URL
        import traceback

        echo(scrub("".join(traceback.format_exception(error)), url), sys.stderr)
        return 1
    finally:
        if not ray_was_running:
            _shutdown_ray()


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Python's warnings (a table column named like a membership mark, a library's notice) print through
    :func:`echo` like every other line, so a received file's strings reach the terminal escaped."""
    echo(f"warning ({category.__name__}): {message}", sys.stderr)


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


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _is_storage_error(error: BaseException) -> bool:
    import optuna
    import sqlalchemy

    return isinstance(
        error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError)
    )
