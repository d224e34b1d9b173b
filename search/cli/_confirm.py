"""``wemem confirm``: re-evaluate a study's best settings and the undefended reference on fresh seeds."""

from __future__ import annotations

import argparse

from .. import api
from ..exceptions import InterruptedStudyError
from ._common import Command, echo, places
from ._science import parse_settings


def _confirm(args: argparse.Namespace) -> int:
    compare = None if args.compare is None else (args.compare[0], parse_settings(args.compare[1:]))
    try:
        api.confirm(
            args.name,
            top=args.top,
            seeds=args.seeds,
            attacks=args.attacks,
            compare=compare,
            **places(args),
            ray_address=args.ray_address,
            mlflow=args.mlflow,
            echo=echo,
        )
    except KeyboardInterrupt as interrupt:  # main prints this advice instead of its `wemem resume` one
        raise InterruptedStudyError(
            f"finished evaluations are stored. Run the same `wemem confirm {args.name}` again: it reuses them."
        ) from interrupt
    return 0


def _confirm_args(p: argparse.ArgumentParser) -> None:
    from ..confirm._candidates import MAX_CONFIRM_SEEDS

    p.add_argument("name", help="study name")
    p.add_argument("--top", type=int, default=1, help="how many of the best distinct settings to confirm (default 1)")
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="fresh seeds, each a full replication: split, pretraining, mem-scores, pruning, targets "
        f"(default 3; 2 to {MAX_CONFIRM_SEEDS})",
    )
    p.add_argument(
        "--attacks",
        default=None,
        metavar="NAMES",
        help="judge with these attacks (comma-separated, or all) instead of the study's own; the "
        "leakage is then the largest over them. Search with a cheap suite, confirm with all ten",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="DEFENSE [KEY=VALUE ...]",
        help="judge tuning against this setting (e.g. --compare rsw order=l2h width_fraction=0.3 "
        "stride_fraction=0.03) instead of the best of the paper's defaults the study enqueued; "
        "it is evaluated on the same seeds, and the tuned-minus-it difference is paired by seed",
    )
    p.add_argument(
        "--mlflow",
        metavar="URI",
        default=None,
        help="log the confirmation to the study's run at this MLflow tracking URI (over MLFLOW_TRACKING_URI; "
        "see docs/tracking.md)",
    )


CONFIRM = Command(
    "confirm",
    "95% intervals on fresh seeds for the best settings, the paper's default and the "
    "undefended reference, with paired differences: did tuning beat the default?",
    _confirm_args,
    _confirm,
)
