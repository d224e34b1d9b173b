"""What every command shares: the ``Command`` record, argument types, the flags every command takes, this
launcher's resource flags, and the keywords of :mod:`search.api` they give."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypedDict

from wemem.config import MAX_SEED

from ..storage._urls import GRACE_PERIOD_S, MIN_GRACE_PERIOD_S
from ..study._place import LAUNCHER_RESOURCES


@dataclass(frozen=True)
class Command:
    """One sub-command: its name and help, ``configure(parser)`` adding its own arguments, ``run(args) -> exit
    code``. The table of commands is in :mod:`.main`."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# C0 and C1 control characters and DEL, but newline and tab: a stored string (a study's or defense's name, a
# failure reason) could otherwise retitle the terminal, clear it or overwrite what was printed. The tool's own
# lines need none of them: its progress is a plain line per finished trial (no carriage return, no bar).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every :data:`CONTROL` character written visibly as its escape, e.g. ESC as ``\\x1b``."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def echo(message: str, stream: TextIO | None = None) -> None:
    """Where the command line prints, to stdout or ``stream`` (stderr): every line made :func:`printable`."""
    print(printable(message), file=stream or sys.stdout, flush=True)


class Places(TypedDict):
    """The keywords of the :mod:`search.api` functions that read a stored study: where it lives."""

    storage: str | None
    cache_dir: str | None
    data_root: str | None
    stale_after: int


def places(args: argparse.Namespace) -> Places:
    return Places(
        storage=args.storage, cache_dir=args.cache_dir, data_root=args.data_root, stale_after=args.stale_after
    )


class ShippedWork(TypedDict):
    """The keywords of the :mod:`search.api` functions that evaluate a shipped setting (``apply``, ``audit``) as
    the command line calls them: where the cache and data are, and its work run as Ray tasks, echoed as it goes."""

    cache_dir: str | None
    data_root: str | None
    ray_address: str | None
    parallel: bool
    echo: Callable[[str], None]


def shipped_work(args: argparse.Namespace) -> ShippedWork:
    return ShippedWork(
        cache_dir=args.cache_dir, data_root=args.data_root, ray_address=args.ray_address, parallel=True, echo=echo
    )


def resources(args: argparse.Namespace) -> dict[str, float] | None:
    """The resource flags given (None: the study file's [resources])."""
    given = {key: getattr(args, key) for key in LAUNCHER_RESOURCES if getattr(args, key, None) is not None}
    return given or None


def overrides(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.override_check or ())


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def seed_number(text: str) -> int:
    value = whole_number(text)
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
            f"one heartbeat would be swept (got {value})"
        )
    return value


def add_resource_flags(p: argparse.ArgumentParser) -> None:
    """[resources] overrides for this launcher only (they are not part of the study's identity)."""
    g = p.add_argument_group("resources of this launcher (default: the study file's [resources])")
    g.add_argument("--cpus-per-trial", type=cpu_share, default=None)
    g.add_argument("--gpus-per-trial", type=positive_number, default=None)
    g.add_argument("--max-concurrent-trials", type=positive_int, default=None)


def add_override_flag(p: argparse.ArgumentParser) -> None:
    """Run although a validity check failed (the override is recorded with the study and shown in its report)."""
    from wemem.validity import OVERRIDABLE

    p.add_argument(
        "--override-check",
        action="append",
        choices=OVERRIDABLE,
        default=None,
        metavar="CHECK",
        help=f"run although this validity check failed ({', '.join(OVERRIDABLE)}; repeatable): the "
        "override is recorded and shown in the report",
    )


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """Where a study lives and runs: the flags of every command."""
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (env WEMEM_STORAGE; default sqlite:///wemem.db in this directory)",
    )
    p.add_argument("--cache-dir", default=None, help="cache of setting-independent work (default .wemem-cache)")
    p.add_argument("--data-root", default=None, help="folder holding dataset files")
    p.add_argument(
        "--ray-address",
        default=None,
        help="attach to a running Ray cluster: HOST:PORT, auto or ray://HOST:PORT (default: "
        "RAY_ADDRESS, else a private local Ray)",
    )
    p.add_argument(
        "--stale-after",
        type=grace_period,
        default=GRACE_PERIOD_S,
        metavar="SECONDS",
        help="a RUNNING trial without a heartbeat for this long (database time) is failed and its "
        f"setting re-queued (default {GRACE_PERIOD_S}, at least {MIN_GRACE_PERIOD_S})",
    )
