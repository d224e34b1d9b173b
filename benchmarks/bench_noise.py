"""One evaluation's noise, and what ``[search] repeats`` removes per second (issue 23, item 2).

A study ranks settings by one evaluation each, on the study's seed. Re-evaluating a setting with other
fine-tuning seeds and other target draws gives the spread a ranking has to see through. For each case this
evaluates the paper's RSW default M times, evaluation r fine-tuning every model with seed index 4r and attacking
it on four target draws (4r .. 4r+3), and reports in points of leakage:

- ``se_one``: the standard deviation of a single evaluation (fine-tuning and target draw both fresh): the
  standard error of a trial scored once, "before";
- ``se_targets_R``: the standard deviation of the mean over R target draws of one fine-tuning ([search]
  repeat_over = "targets"), R = 2 and 4;
- ``se_training_R``: ``se_one / sqrt(R)`` for R fine-tunings (independent by construction; repeat_over =
  "training"), with the spread of the means of disjoint groups of R as a check;
- the binomial bound the tool stores for a trial scored once, and the seconds of a trial under each choice.

Example (a few minutes on 2 cores; shares bench_search's cache)::

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
from objectives.trial import privacy_standard_error, spec_leakage  # noqa: E402
from search.studyfile import REFERENCE_SETTINGS  # noqa: E402
from wemem.assets import prepare_assets  # noqa: E402
from wemem.pipeline import attack_targets, run_experiment  # noqa: E402

DRAWS = 4


def measure(case: str, out: Path, evaluations: int) -> dict:
    definition = case_definition(case)
    cache_dir = str(out / CASES[case].get("table", case) / "cache")
    spec = replace(definition.trial_spec(cache_dir), round_reports=False)
    assets = prepare_assets(spec.experiment, cache_dir)
    reference(spec, assets)
    setting = REFERENCE_SETTINGS["rsw"]
    leakage, accuracy, pruning_s, attack_s = [], [], [], []
    for r in range(evaluations):
        result = run_experiment(assets, "rsw", setting, spec.pruning, list(spec.attacks), adaptive=spec.adaptive,
                                repeat=DRAWS * r, draws=DRAWS)
        leakage.append([spec_leakage(spec, a)[0] for a in [result.attacks, *result.more_draws]])
        accuracy.append(result.utility)
        pruning_s.append(result.timings["pruning_stage"])
        attack_s.append(result.timings["attack_stage"] / DRAWS)
        print(f"{case} [{r + 1}/{evaluations}] leakage {np.round(leakage[-1], 4).tolist()} accuracy "
              f"{result.utility:.4f}", file=sys.stderr, flush=True)
    x = np.asarray(leakage)  # [evaluation, draw]
    pts = lambda v: round(100 * float(v), 2)  # noqa: E731
    se_one = x[:, 0].std(ddof=1)
    trial_s = float(np.mean(pruning_s) + np.mean(attack_s))
    groups = lambda k: x[: len(x) // k * k, 0].reshape(-1, k).mean(axis=1)  # noqa: E731
    n_targets = len(attack_targets(assets, 0).indices)
    return {
        "case": case, "evaluations": evaluations, "targets": n_targets, "setting": ["rsw", setting],
        "mean_leakage": round(float(x.mean()), 4), "accuracy_sd_points": pts(np.std(accuracy, ddof=1)),
        "se_one_points": pts(se_one),
        "binomial_bound_points": pts(privacy_standard_error([(0, float(x[:, 0].mean()))], n_targets)[0]),
        "within_fine_tuning_sd_points": pts(np.sqrt(x.var(axis=1, ddof=1).mean())),  # the target draws' share
        "se_targets_points": {str(k): pts(x[:, :k].mean(axis=1).std(ddof=1)) for k in (2, 4)},
        "se_training_points": {str(k): {"formula": pts(se_one / np.sqrt(k)),
                                        "groups": pts(groups(k).std(ddof=1)) if len(x) // k >= 2 else None}
                               for k in (2, 4)},
        "seconds": {"trial": round(trial_s, 2), "pruning_stage": round(float(np.mean(pruning_s)), 2),
                    "attack_stage_per_draw": round(float(np.mean(attack_s)), 2),
                    "targets_4": round(float(np.mean(pruning_s) + 4 * np.mean(attack_s)), 2),
                    "training_4": round(4 * trial_s, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["finefoods", "digits"], choices=["finefoods", "digits"])
    parser.add_argument("--evaluations", type=int, default=12)
    parser.add_argument("--out", default=".bench-search")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    start = time.perf_counter()
    results = [measure(case, Path(args.out), args.evaluations) for case in args.cases]
    print(json.dumps({"cases": results, "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
