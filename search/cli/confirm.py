"""``wemem confirm``: re-evaluate a study's best settings and the undefended reference on fresh seeds."""

from __future__ import annotations

import argparse

from .common import Command, echo, options_from


def _confirm(args: argparse.Namespace) -> int:
    from wemem.attacks import ATTACKS, parse_attack_names

    from ..confirm import confirm
    from ..results.text import confirmed_lines
    from ..study import open_study

    attacks = None if args.attacks is None else parse_attack_names(args.attacks, ATTACKS.names())
    opened = open_study(args.name, options_from(args))
    try:
        summary = confirm(opened, args.top, args.seeds, echo, attacks)
    except KeyboardInterrupt as interrupt:  # main prints this instead of its `wemem resume` advice
        interrupt.advice = (f"finished evaluations are stored. Run the same `wemem confirm {args.name}` again: it "
                            "reuses them.")
        raise
    print("\n".join(confirmed_lines(summary)))
    return 0


def _confirm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name")
    p.add_argument("--top", type=int, default=1, help="how many of the best distinct settings to confirm (default 1)")
    p.add_argument("--seeds", type=int, default=3,
                   help="fresh seeds, each a full replication: split, pretraining, mem-scores, pruning, targets "
                        "(default 3; >= 2)")
    p.add_argument("--attacks", default=None, metavar="NAMES",
                   help="judge with these attacks (comma-separated, or all) instead of the study's own; the "
                        "leakage is then the largest over them. Search with a cheap suite, confirm with all ten")


CONFIRM = Command("confirm", "re-evaluate the best settings and the undefended reference on fresh seeds: means, 95% "
                             "intervals, and the paired defended-minus-reference difference", _confirm_args, _confirm)
