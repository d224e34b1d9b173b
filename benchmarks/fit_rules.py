"""Which early-stopping rule should the neural attacks fit with? Record each fit's held-out curve once, replay rules.

Prunes the victim and shadows of one SWMR trial once (as attack_seeds.py does). For each neural attack and attack
seed 0..N-1 it trains the classifier exactly as wemem.attacks.nn.fit_membership_classifier does (same held-out
split, batch order, initialization and dropout), but for a fixed number of epochs without stopping, and records
after every run of batches that ends a check of any rule asked for: the held-out loss and AUC, and the victim
metrics of the classifier at that point (threshold fitted on the held-out shadow scores, as the attack does).
Evaluations draw no random numbers, so the recorded fit is the fit every rule would run, up to where that rule
stops; each rule is then replayed exactly on the record (the kept point is the best check the rule saw). A rule
whose checks fall where the record has none is refused: record again with it among --rules.

Prints JSON: per attack and rule, the mean and standard deviation over seeds of balanced accuracy, AUC and TPR at
1% FPR of the kept classifier, the epochs trained before stopping, and how many fits reached --epochs without
stopping (their epochs are then a lower bound), and each metric's paired difference from the first rule's on the
same fits (mean and standard error). A rule is checks_per_epoch:patience:min_improvement[:criterion], the criterion
being the held-out "loss" (the default) or the held-out "auc"; 1:1000:0 keeps the lowest held-out loss of the
whole record.
Examples:
    .venv/bin/python benchmarks/fit_rules.py --dataset location --attacks samia --epochs 10 --records loc.json
    .venv/bin/python benchmarks/fit_rules.py --records loc.json --attacks samia --rules 1:1000:0 2:1:0:auc
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_seeds import NEURAL, pruned_trial_inputs

import wemem.attacks.nn as neural
from wemem.attacks import ATTACKS, AttackInputs, parse_attack_names
from wemem.attacks.samia import Samia
from wemem.metrics import attack_metrics, best_threshold


def parse_rule(text: str) -> neural.FitConfig:
    """checks_per_epoch:patience:min_improvement[:criterion] as the FitConfig it names (criterion "loss" if left
    out)."""
    checks, patience, bar, *criterion = text.split(":")
    return neural.FitConfig(
        checks_per_epoch=int(checks),
        patience=int(patience),
        min_improvement=float(bar),
        criterion=criterion[0] if criterion else "loss",
    )


def rule_name(rule: neural.FitConfig) -> str:
    return f"{rule.checks_per_epoch}:{rule.patience}:{rule.min_improvement:g}:{rule.criterion}"


def check_ends(batches_per_epoch: int, batch_size: int, checks: int) -> list[int]:
    """Batch counts within an epoch after which a rule with ``checks`` checks an epoch evaluates."""
    runs = neural.check_runs(torch.arange(batches_per_epoch * batch_size), batch_size, checks)
    return [int(end) for end in np.cumsum([len(run) // batch_size for run in runs])]


def record(attack_name: str, inputs: AttackInputs, seed: int, epochs: int, rules: list[neural.FitConfig]) -> dict:
    """One fit of ``epochs`` epochs; at every check end of any rule: (epoch, batches, held-out loss and AUC,
    victim metrics)."""
    config = neural.FitConfig()
    attack = ATTACKS.get(attack_name)()
    shadow, victim = inputs.shadow_observations(), inputs.victim_observations()
    features, victim_features = attack.features(shadow), attack.features(victim)
    points, train_seconds = [], 0.0
    with neural.fitting(lambda: attack.build(features.shape[1:]), features, shadow.is_member, seed, config) as fit:
        held_out_members = shadow.is_member[fit.held_out.cpu().numpy()]
        batches = -(-len(fit.train) // config.batch_size)
        ends = sorted({end for rule in rules for end in check_ends(batches, config.batch_size, rule.checks_per_epoch)})
        for epoch in range(epochs):
            order, done = fit.epoch_order(), 0
            for end in ends:
                start = time.perf_counter()
                fit.train_on(order[done * config.batch_size : end * config.batch_size], config.batch_size)
                train_seconds += time.perf_counter() - start
                done = end
                logits = fit.held_out_logits()
                threshold, _ = best_threshold(neural.logit_margin(logits), held_out_members)
                metrics = attack_metrics(
                    neural.membership_log_odds(fit.model, victim_features), victim.is_member, threshold
                )
                held_out_y = fit.y[fit.held_out]
                points.append(
                    {
                        "epoch": epoch,
                        "batches": end,
                        "loss": -neural.held_out_quality("loss", logits, held_out_y),
                        "held_out_auc": neural.held_out_quality("auc", logits, held_out_y),
                        **metrics,
                    }
                )
    return {"points": points, "batches_per_epoch": batches, "train_seconds_per_epoch": train_seconds / epochs}


NO_WEIGHTS = nn.Module()  # the replaying stopper keeps the recorded point as its "scores", no weights


def replay(fit: dict, rule: neural.FitConfig, batch_size: int) -> tuple[dict, float, bool]:
    """The rule on a recorded fit, through the attacks' own HeldOutEarlyStopping: the kept point's metrics, the
    epochs trained, and whether it stopped."""
    ends = set(check_ends(fit["batches_per_epoch"], batch_size, rule.checks_per_epoch))
    missing = ends - {point["batches"] for point in fit["points"]}
    if missing:  # replaying on a subset of the rule's checks would silently misreport it
        raise SystemExit(
            f"rule {rule_name(rule)} checks after batches {sorted(missing)} of an epoch, which the "
            f"record lacks; record the fits again with this rule among --rules"
        )
    stopper, trained = neural.HeldOutEarlyStopping(rule), 0.0
    for point in (p for p in fit["points"] if p["batches"] in ends):
        trained = point["epoch"] + point["batches"] / fit["batches_per_epoch"]
        quality = -point["loss"] if rule.criterion == "loss" else point["held_out_auc"]
        if stopper.update(quality, NO_WEIGHTS, point):
            return stopper.best_scores, trained, True
    return stopper.best_scores, trained, False


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 4), "sd": round(statistics.stdev(values), 4)}


METRICS = ("balanced_accuracy", "auc", "tpr_at_1%_fpr")


def paired_difference(kept: list[dict], reference: list[dict], metric: str) -> dict[str, float]:
    """Mean over seeds of this rule's metric minus the first rule's on the same fit, and its standard error."""
    differences = [a[metric] - b[metric] for a, b in zip(kept, reference)]
    return {
        "mean": round(statistics.mean(differences), 4),
        "se": round(statistics.stdev(differences) / len(differences) ** 0.5, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".wemem-bench-cache")
    parser.add_argument("--dataset", choices=["digits", "location"], default="digits")
    parser.add_argument("--attacks", default=None, help=f"comma-separated (default {','.join(NEURAL)})")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="epochs recorded per fit")
    parser.add_argument(
        "--records",
        type=Path,
        help="a JSON file of recorded fits: replayed when it exists (the "
        "other options must match the recording), else written after recording",
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        type=parse_rule,
        default=[
            parse_rule("1:1000:0"),
            neural.NeuralAttack.fit_config,
            Samia.fit_config,
            parse_rule("1:2:1e-4"),
            parse_rule("1:5:1e-4"),
        ],
        help="checks_per_epoch:patience:min_improvement[:criterion] (default: the best held-out "
        "loss of the record as the reference, the MLP attacks' rule, SAMIA's, and the two "
        "loss rules before them)",
    )
    args = parser.parse_args()
    batch_size = neural.FitConfig().batch_size
    records = json.loads(args.records.read_text()) if args.records and args.records.exists() else {}
    inputs = None if records else pruned_trial_inputs(args.dataset, args.cache_dir)
    results = {}
    for name in parse_attack_names(args.attacks, NEURAL):
        if name not in records:
            records[name] = [record(name, inputs, seed, args.epochs, args.rules) for seed in range(args.seeds)]
        fits = records[name]
        per_rule, first = {}, None
        for rule in args.rules:
            replays = [replay(fit, rule, batch_size) for fit in fits]
            kept = [point for point, _, _ in replays]
            first = first or kept
            per_rule[rule_name(rule)] = {
                **{metric: mean_sd([point[metric] for point in kept]) for metric in METRICS},
                "epochs": mean_sd([trained for _, trained, _ in replays]),
                "never_stopped": sum(not stopped for _, _, stopped in replays),
                # the same fits under two rules: paired differences are far less noisy than the two means
                "minus_first_rule": {metric: paired_difference(kept, first, metric) for metric in METRICS},
            }
        seconds = statistics.mean(fit["train_seconds_per_epoch"] for fit in fits)
        results[name] = {"train_seconds_per_epoch": round(seconds, 3), "rules": per_rule}
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    if args.records and not args.records.exists():
        args.records.write_text(json.dumps(records))
    print(
        json.dumps(
            {
                "benchmark": "fit_rules",
                "dataset": args.dataset,
                "seeds": args.seeds,
                "epochs_recorded": args.epochs,
                "attacks": results,
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
