"""Issue 20's evidence: every attack's numbers before and after each change to how scores become metrics.

For each dataset and seed the undefended iteratively pruned victim and its 5 shadows are trained once per split
(so the comparisons of the scoring rules are paired on the very same model outputs), then:

- ``rules``: the first version's rules (kept below only to measure the change) against today's, on the same
  outputs -- threshold attacks' ROC metrics on the class-shifted score vs the raw feature, float32 probabilities
  vs log-space features, LiRA's Phi(z) and RMIA's score at a fixed 0.5 vs the label-free population threshold;
- ``lira_rule``: LiRA's balanced accuracy at the fixed 0.5, at the population threshold, at a threshold fitted on
  the shadows (each shadow in turn as the victim, the others as its OUT references), and at the best threshold
  computed with the victim's labels (what no attacker can do);
- ``rmia_a``: RMIA's AUC at the default a = 0.3, at the a fitted on the shadows the same way (ML Privacy Meter
  fits it from reference models), and at the best a of a grid computed with the victim's labels;
- ``split``: the split before (shadows' dev sets drawn from the whole evaluation pool, so about a third of them
  were the victim's non-member targets) and after (drawn outside the victim's test set), every attack with
  today's rules: not paired on outputs (the shadows are trained anew), paired by seed.

Prints JSON; ``--markdown FILE`` writes the tables of docs/attack_metrics.md.

    .venv/bin/python benchmarks/attack_calibration.py --datasets digits finefoods --seeds 1 2 3 4 5 \\
        --out calibration.json --markdown calibration.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from wemem import assets as assets_module  # noqa: E402
from wemem import data as data_module  # noqa: E402
from wemem.attacks import ATTACKS, run_attacks  # noqa: E402
from wemem.attacks.base import AttackInputs  # noqa: E402
from wemem.attacks.features import scaled_confidence  # noqa: E402
from wemem.attacks.lira import Lira, lira_scores  # noqa: E402
from wemem.attacks.rmia import Rmia, break_ties, dominance_fraction, reference_probability  # noqa: E402
from wemem.attacks.threshold import per_class_thresholds  # noqa: E402
from wemem.config import ExperimentConfig, PruningConfig  # noqa: E402
from wemem.defenses import UNDEFENDED, Setting  # noqa: E402
from wemem.metrics import attack_metrics, auc, balanced_accuracy, best_threshold  # noqa: E402
from wemem.pipeline import PruningJob, attack_inputs, prune_job  # noqa: E402

METRICS = ("balanced_accuracy", "auc", "tpr_at_1%_fpr")
CLOSED_FORM = ("conf", "entr", "mentr", "hconf", "lira", "rmia")
A_GRID = tuple(round(a, 1) for a in np.linspace(0.0, 1.0, 11))


# ----------------------------------------------------------------- the first version's rules (measured only)


def old_features(name: str, log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Conf/Hconf on p_y, Entr, Mentr as first written: on float32 probabilities, 1 - p computed directly."""
    rows = np.arange(len(labels))
    probs = np.exp(log_probs)
    if name in ("conf", "hconf"):
        return probs[rows, labels]
    if name == "entr":
        return np.sum(probs * log_probs, axis=1)
    log_one_minus = np.log(np.clip(1.0 - probs, 1e-30, None))
    others = probs * log_one_minus
    others[rows, labels] = 0.0
    return (1.0 - probs[rows, labels]) * log_probs[rows, labels] + others.sum(axis=1)


def old_threshold_attack(name: str, inputs: AttackInputs, shifted: bool) -> tuple[np.ndarray, object]:
    """On the first version's features: scores shifted by their class's threshold (classes without a useful cut
    pushed below everything), or the raw feature with each target's class threshold."""
    shadow, victim = inputs.shadow_observations(), inputs.victim_observations()
    shadow_scores = old_features(name, shadow.log_probs, shadow.labels)
    victim_scores = old_features(name, victim.log_probs, victim.labels)
    if name == "hconf":
        return victim_scores, best_threshold(shadow_scores, shadow.is_member)[0]
    thresholds = per_class_thresholds(shadow_scores, shadow.labels, shadow.is_member, victim.log_probs.shape[1])
    if not shifted:
        return victim_scores, thresholds[victim.labels]
    ceiling = max(shadow_scores.max(initial=0.0), victim_scores.max(initial=0.0)) + 1.0
    return victim_scores - np.where(np.isfinite(thresholds), thresholds, ceiling)[victim.labels], 0.0


def old_rules(inputs: AttackInputs, shifted: bool) -> dict[str, dict[str, float]]:
    """The six closed-form attacks on the first version's features and LiRA/RMIA decisions at a fixed 0.5;
    the threshold attacks' ROC on the shifted score (``shifted``, the first version) or on the raw feature."""
    members = inputs.victim_targets.is_member
    results = {}
    for name in ("conf", "entr", "mentr", "hconf"):
        scores, threshold = old_threshold_attack(name, inputs, shifted)
        results[name] = attack_metrics(scores, members, threshold)
    z, _ = Lira().decision_scores(inputs)
    results["lira"] = attack_metrics(torch.special.ndtr(torch.as_tensor(z)).numpy(), members, 0.5)
    results["rmia"] = attack_metrics(Rmia().decision_scores(inputs)[0], members, 0.5)
    return results


# ------------------------------------------------------------------ calibration on the shadows (measured only)


def shadow_rows(inputs: AttackInputs, k: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Shadow k as a pseudo-victim: its targets, its outputs and the other shadows' (its references)."""
    targets = inputs.shadow_targets[k]
    references = [lp for j, lp in enumerate(inputs.shadow_log_probs) if j != k]
    return targets.indices, inputs.shadow_log_probs[k], references


def lira_shadow_threshold(inputs: AttackInputs) -> float:
    """LiRA's threshold fitted like the other attacks' on the shadows' balanced sets, each shadow scored against
    the others. Their members are IN for most of the others (all train on 90% of one pool), so the references
    are contaminated: what this rule would cost is what the benchmark measures."""
    scores, members = [], []
    for k in range(len(inputs.shadow_log_probs)):
        rows, own, references = shadow_rows(inputs, k)
        labels = inputs.labels[rows]
        scores.append(
            lira_scores(
                scaled_confidence(own[rows], labels),
                np.stack([scaled_confidence(lp[rows], labels) for lp in references]),
            )
        )
        members.append(inputs.shadow_targets[k].is_member)
    return best_threshold(np.concatenate(scores), np.concatenate(members))[0]


def rmia_auc(
    inputs: AttackInputs,
    a: float,
    own: np.ndarray,
    references: list[np.ndarray],
    rows: np.ndarray,
    is_member: np.ndarray,
) -> float:
    def ratios(indices: np.ndarray) -> np.ndarray:
        labels = inputs.labels[indices]
        p = np.exp(own[indices, labels])
        refs = np.stack([np.exp(lp[indices, labels]) for lp in references])
        return p / reference_probability(refs, a)

    target, population = ratios(rows), ratios(inputs.population)
    return auc(break_ties(dominance_fraction(target, population, 1.0), target, len(population)), is_member)


def rmia_fitted_a(inputs: AttackInputs) -> float:
    """The a maximizing the shadows' mean AUC, each shadow attacked with the others as references."""
    mean_auc = {
        a: np.mean(
            [
                rmia_auc(
                    inputs,
                    a,
                    *shadow_rows(inputs, k)[1:],
                    shadow_rows(inputs, k)[0],
                    inputs.shadow_targets[k].is_member,
                )
                for k in range(len(inputs.shadow_log_probs))
            ]
        )
        for a in A_GRID
    }
    return max(mean_auc, key=mean_auc.get)


def rule_comparisons(inputs: AttackInputs) -> dict[str, dict[str, float]]:
    members = inputs.victim_targets.is_member
    z, population_cut = Lira().decision_scores(inputs)
    lira = {
        "fixed_0.5": balanced_accuracy(z, members, 0.0),
        "population": balanced_accuracy(z, members, population_cut),
        "shadows": balanced_accuracy(z, members, lira_shadow_threshold(inputs)),
        "best_with_labels": best_threshold(z, members)[1],
    }
    rmia_scores, rmia_cut = Rmia().decision_scores(inputs)
    victim_auc = {
        a: rmia_auc(inputs, a, inputs.victim_log_probs, inputs.shadow_log_probs, inputs.victim_targets.indices, members)
        for a in A_GRID
    }
    fitted = rmia_fitted_a(inputs)
    rmia = {
        "fixed_0.5": balanced_accuracy(rmia_scores, members, 0.5),
        "population": balanced_accuracy(rmia_scores, members, rmia_cut),
        "best_with_labels": best_threshold(rmia_scores, members)[1],
        "auc_a0.3": victim_auc[0.3],
        "fitted_a": fitted,
        "auc_fitted_a": victim_auc[fitted],
        "best_a": max(victim_auc, key=victim_auc.get),
        "auc_best_a": max(victim_auc.values()),
        "auc_spread_over_a": max(victim_auc.values()) - min(victim_auc.values()),
    }
    return {"lira_rule": lira, "rmia_a": rmia}


# ------------------------------------------------------------------------------------- the synthetic signal


def synthetic_rules(seeds: int = 5) -> list[dict]:
    """LiRA's and RMIA's balanced accuracy at the fixed 0.5, at the population threshold and at the best threshold
    (with labels), on benchmarks/synthetic.py's known signal, by signal strength and population size."""
    from synthetic import membership_signal

    rows = []
    for population in (300, 600, 2000):
        for signal in (0.0, 0.5, 1.0, 2.0):
            for attack, fixed in ((Lira, 0.0), (Rmia, 0.5)):  # LiRA's score is z: Phi(z) >= 0.5 is z >= 0
                found = []
                for seed in range(seeds):
                    inputs = membership_signal(n_population=population, signal=signal, seed=seed)
                    members = inputs.victim_targets.is_member
                    scores, threshold = attack().decision_scores(inputs)
                    found.append(
                        (
                            balanced_accuracy(scores, members, fixed),
                            balanced_accuracy(scores, members, threshold),
                            best_threshold(scores, members)[1],
                        )
                    )
                fixed_ba, population_ba, best = np.array(found).T
                rows.append(
                    {
                        "attack": attack.name,
                        "population": population,
                        "signal": signal,
                        "fixed_0.5": fixed_ba.mean(),
                        "population_rule": population_ba.mean(),
                        "best_with_labels": best.mean(),
                        "worst_shortfall": (best - population_ba).max(),
                    }
                )
    return rows


def synthetic_table(rows: list[dict]) -> list[str]:
    head = ["attack", "population", "signal", "fixed_0.5", "population_rule", "best_with_labels", "worst_shortfall"]
    cells = [" | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in head) for r in rows]
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|", *(f"| {row} |" for row in cells)]


# ---------------------------------------------------------------------------------------------- the runs


def split_before(pools, seed: int = 7, shadows: int = 5, train_fraction: float = 0.9, dev_fraction: float = 0.34):
    """The split as version 2 made it: shadows' dev sets drawn from their whole evaluation pool."""
    real = data_module._model_split
    with mock.patch.object(data_module, "_model_split", lambda *args, not_for_dev=None, **kw: real(*args[:5], **kw)):
        return data_module.make_study_split(pools, seed, shadows, train_fraction, dev_fraction)


def undefended_outputs(config: ExperimentConfig, cache_dir: Path, before: bool) -> AttackInputs:
    if before:
        with mock.patch.object(assets_module, "make_study_split", split_before):
            assets = assets_module.prepare_assets(config, cache_dir)
    else:
        assets = assets_module.prepare_assets(config, cache_dir)
    pruning = PruningConfig()
    victim, *shadows = [
        prune_job(assets, PruningJob(i, Setting(UNDEFENDED), pruning, sensitivity=True))
        for i in range(config.shadows + 1)
    ]
    return attack_inputs(assets, victim, shadows)


def measure(dataset: str, seed: int, cache: Path) -> dict:
    config = ExperimentConfig(dataset=dataset, model="columnfc", seed=seed, shadows=5, memscore_models=2)
    row: dict = {"dataset": dataset, "seed": seed}
    for split in ("before", "after"):
        start = time.perf_counter()
        inputs = undefended_outputs(config, cache / split, before=split == "before")
        row[f"{split}_split"] = {
            name: {m: float(v) for m, v in metrics.items() if m in METRICS}
            for name, metrics in run_attacks(ATTACKS.names(), inputs).items()
        }
        if split == "after":
            for key, shifted in (("first_version", True), ("raw_roc", False)):
                row[key] = {
                    name: {m: float(v) for m, v in metrics.items() if m in METRICS}
                    for name, metrics in old_rules(inputs, shifted).items()
                }
            row.update(rule_comparisons(inputs))
        row[f"{split}_seconds"] = time.perf_counter() - start
    return row


# ---------------------------------------------------------------------------------------------- tables


def values(rows: list[dict], variant: str, attack: str, metric: str) -> np.ndarray:
    return np.array([r[variant][attack][metric] for r in rows])


def difference(a: np.ndarray, b: np.ndarray) -> str:
    d = b - a
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} ± {se:.3f}"


def table(rows: list[dict], variants: tuple[str, ...], attacks: tuple[str, ...]) -> list[str]:
    """Per attack and metric: each variant's mean over seeds, then each step's paired difference ± its standard
    error over seeds."""
    steps = list(itertools.pairwise(variants))
    head = ["attack", "metric", *variants, *(f"{b} - {a}" for a, b in steps)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for attack in attacks:
        for metric in METRICS:
            means = [f"{values(rows, v, attack, metric).mean():.3f}" for v in variants]
            diffs = [difference(values(rows, a, attack, metric), values(rows, b, attack, metric)) for a, b in steps]
            lines.append(f"| {attack} | {metric} | " + " | ".join(means + diffs) + " |")
    return lines


def markdown(rows: list[dict]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        seeds = ", ".join(str(r["seed"]) for r in mine)
        out += [
            f"### {dataset}: undefended iteratively pruned columnfc, seeds {seeds}",
            "",
            (
                "Scoring rules on the same model outputs (`first_version`; `raw_roc`: the threshold attacks' ROC "
                "on their raw feature; `after_split`: today's code, with log-space features and LiRA/RMIA's "
                "population threshold):"
            ),
            "",
        ]
        out += [*table(mine, ("first_version", "raw_roc", "after_split"), CLOSED_FORM), ""]
        out += [
            (
                "The split, every attack with today's rules (`before_split`: shadows' dev sets holding victim "
                "non-member targets; `after_split`: left out), paired by seed:"
            ),
            "",
        ]
        out += [*table(mine, ("before_split", "after_split"), tuple(ATTACKS.names())), ""]
        for key, title in (("lira_rule", "LiRA's balanced accuracy by decision rule"), ("rmia_a", "RMIA")):
            means = {k: np.mean([r[key][k] for r in mine]) for k in mine[0][key]}
            out.append(f"{title} (mean over seeds): " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
            out.append("")
        fitted = [r["rmia_a"]["auc_fitted_a"] - r["rmia_a"]["auc_a0.3"] for r in mine]
        out += [
            (
                f"RMIA's AUC at the shadow-fitted a minus at 0.3, per seed: {', '.join(f'{v:+.3f}' for v in fitted)} "
                f"(fitted a: {', '.join(str(r['rmia_a']['fitted_a']) for r in mine)})"
            ),
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "finefoods"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--cache-dir", default=str(ROOT / ".wemem-bench-cache" / "calibration"))
    parser.add_argument("--out", default=None, help="also write the JSON rows here (rewritten after each run)")
    parser.add_argument("--markdown", default=None, help="write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            rows.append(measure(dataset, seed, Path(args.cache_dir)))
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1))
    synthetic = synthetic_rules()
    print(json.dumps(synthetic), flush=True)
    if args.markdown:
        Path(args.markdown).write_text(
            markdown(rows) + "\n### The synthetic signal (benchmarks/synthetic.py, 5 seeds, "
            "2,000 targets)\n\n" + "\n".join(synthetic_table(synthetic)) + "\n"
        )


if __name__ == "__main__":
    main()
