"""``wemem confirm``: re-evaluate a study's best settings and the undefended reference on fresh seeds."""

from __future__ import annotations

import argparse

from .cli import command, echo, options_from, with_handler


def _confirm(args: argparse.Namespace) -> int:
    from wemem.attacks import ATTACKS, parse_attack_names

    from .confirm import confirm, summary_lines
    from .study import open_study

    attacks = None if args.attacks is None else parse_attack_names(args.attacks, ATTACKS.names())
    study, definition = open_study(args.name, options_from(args))
    try:
        summary = confirm(study, definition, options_from(args), args.top, args.seeds, echo, attacks)
    except KeyboardInterrupt as interrupt:  # main prints this instead of its `wemem resume` advice
        interrupt.advice = (f"finished evaluations are stored. Run the same `wemem confirm {args.name}` again: it "
                            "reuses them.")
        raise
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
    p.add_argument("--attacks", default=None, metavar="NAMES",
                   help="judge with these attacks (comma-separated, or all) instead of the study's own; the "
                        "leakage is then the largest over them. Search with a cheap suite, confirm with all ten")
