"""One evaluation's noise, and what ``[search] repeats`` and ``target_draws`` remove per second (issue 23,
item 2).

A study ranks settings by one evaluation each, on the study's seed. Re-evaluating a setting with other
fine-tuning seeds and other target draws gives the spread a ranking has to see through. For each case this
evaluates the paper's RSW default M times, evaluation r fine-tuning every model with seed index r and attacking
it on four target draws of its own, as ``[search] repeats`` and ``target_draws`` do, and reports in points of
leakage the standard error of a trial scored with R fine-tunings of D draws each:

- measured: the standard deviation of the means of disjoint groups of R evaluations' first D draws (shown
  where there are at least 3 groups);
- modelled: ``sqrt(s_b^2 / R + s_w^2 / (R D))`` from the two variance components, ``s_w^2`` the mean variance of
  the four draws of one fine-tuning and ``s_b^2`` the variance of the first draws minus ``s_w^2``;

with the seconds a trial takes each way (R pruning stages, R D attack stages) and the binomial bound the tool
stores for a trial scored once. Target (issue 23): the standard error at least halved on finefoods at no more
than twice a trial's time.

Example (about a minute on 2 cores; shares bench_search's cache)::

    .venv/bin/python benchmarks/bench_noise.py --cases finefoods digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import CASES, case_definition  # noqa: E402

from objectives import reference  # noqa: E402
from objectives._trial import privacy_standard_error, spec_leakage  # noqa: E402
from search.studyfile import REFERENCE_SETTINGS  # noqa: E402
from wemem.assets import prepare_assets  # noqa: E402
from wemem.defenses import Setting  # noqa: E402
from wemem.pipeline import attack_targets, run_experiment  # noqa: E402

DRAWS = 4


COMBINATIONS = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (4, 1), (4, 4))  # (R fine-tunings, D draws)


def measure(case: str, out: Path, evaluations: int) -> dict:
    definition = case_definition(case)
    cache_dir = str(out / CASES[case].get("table", case) / "cache")
    spec = replace(definition.trial_spec(cache_dir), round_reports=False)
    assets = prepare_assets(spec.experiment, cache_dir)
    reference(spec, assets)
    setting = REFERENCE_SETTINGS["rsw"]
    leakage, accuracy, pruning_s, attack_s = [], [], [], []
    for r in range(evaluations):
        result = run_experiment(
            assets,
            Setting("rsw", setting),
            spec.pruning,
            list(spec.attacks),
            adaptive=spec.adaptive,
            repeat=r,
            draws=DRAWS,
        )
        leakage.append([spec_leakage(spec, a)[0] for a in [result.attacks, *result.more_draws]])
        accuracy.append(result.utility)
        pruning_s.append(result.timings["pruning_stage"])
        attack_s.append(result.timings["attack_stage"] / DRAWS)
        print(
            f"{case} [{r + 1}/{evaluations}] leakage {np.round(leakage[-1], 4).tolist()} accuracy {result.utility:.4f}",
            file=sys.stderr,
            flush=True,
        )
    x = np.asarray(leakage)  # [evaluation, draw]
    pts = lambda v: None if v is None else round(100 * float(v), 2)  # noqa: E731
    within = float(x.var(axis=1, ddof=1).mean())
    between = max(float(x[:, 0].var(ddof=1)) - within, 0.0)
    prune, attack = float(np.mean(pruning_s)), float(np.mean(attack_s))
    one = prune + attack

    def measured(r: int, d: int) -> float | None:
        groups = x[: len(x) // r * r, :d].reshape(-1, r * d).mean(axis=1)
        return groups.std(ddof=1) if len(groups) >= 3 else None

    n_targets = len(attack_targets(assets, 0).indices)
    return {
        "case": case,
        "evaluations": evaluations,
        "targets": n_targets,
        "setting": ["rsw", setting],
        "mean_leakage": round(float(x.mean()), 4),
        "accuracy_sd_points": pts(np.std(accuracy, ddof=1)),
        "binomial_bound_points": pts(privacy_standard_error([[float(x[:, 0].mean())]], n_targets)[0]),
        "sd_between_fine_tunings_points": pts(np.sqrt(between)),
        "sd_within_draws_points": pts(np.sqrt(within)),
        "se_points": {
            f"R{r}xD{d}": {
                "measured": pts(measured(r, d)),
                "modelled": pts(np.sqrt(between / r + within / (r * d))),
                "seconds": round(r * (prune + d * attack), 2),
                "time_vs_one": round(r * (prune + d * attack) / one, 2),
            }
            for r, d in COMBINATIONS
        },
        "seconds": {
            "trial": round(one, 2),
            "pruning_stage": round(prune, 2),
            "attack_stage_per_draw": round(attack, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["finefoods", "digits"], choices=["finefoods", "digits"])
    parser.add_argument("--evaluations", type=int, default=16)
    parser.add_argument("--out", default=".bench-search")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    start = time.perf_counter()
    results = [measure(case, Path(args.out), args.evaluations) for case in args.cases]
    print(json.dumps({"cases": results, "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
