"""``wemem confirm``: re-evaluate a study's best settings and the undefended reference on fresh seeds."""

from __future__ import annotations

import argparse

from .cli import command, echo, options_from, with_handler


def _confirm(args: argparse.Namespace) -> int:
    from .confirm import confirm, summary_lines
    from .study import open_study

    study, definition = open_study(args.name, options_from(args))
    summary = confirm(study, definition, options_from(args), args.top, args.seeds, echo)
    print("\n".join(summary_lines(summary)))
    return 0


@command("confirm", "re-evaluate the best settings and the undefended reference on fresh seeds: means, 95% "
                    "intervals, and the paired defended-minus-reference difference")
@with_handler(_confirm)
def _confirm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--top", type=int, default=1, help="how many of the best distinct settings to confirm (default 1)")
    p.add_argument("--seeds", type=int, default=3,
                   help="fresh seeds, each a full replication: split, pretraining, mem-scores, pruning, targets "
                        "(default 3; >= 2)")
