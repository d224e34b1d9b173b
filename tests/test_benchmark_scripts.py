"""The benchmark scripts are never timed by the suite (timings belong in benchmarks/, not in tests), but they must
keep importing: a script that imports a removed function is only found when someone needs its figure. The GPU
benchmark's epoch part also runs once at its CPU size, because a broken script would waste a lent GPU's minutes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(script: str, monkeypatch: pytest.MonkeyPatch):
    """Import a benchmark script as a module: its imports and definitions run, its main() does not."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their sibling helpers (synthetic.py)
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_imports_and_has_a_main(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(script, monkeypatch)
    assert script == "synthetic.py" or callable(getattr(module, "main", None))


def test_fit_rules_replays_a_rule_exactly_on_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    # fit_rules.py is the evidence behind FitConfig's rules, so its replay is checked on a record made by hand:
    # 4 batches an epoch, checked after every 2 batches (2 checks an epoch), 3 epochs
    fit_rules = load("fit_rules.py", monkeypatch)
    losses = [0.70, 0.66, 0.67, 0.665, 0.68, 0.60]
    aucs = [0.50, 0.55, 0.54, 0.56, 0.53, 0.52]
    points = [
        {"epoch": i // 2, "batches": 2 * (i % 2 + 1), "loss": loss, "held_out_auc": a, "auc": a + 0.1}
        for i, (loss, a) in enumerate(zip(losses, aucs))
    ]
    fit = {"points": points, "batches_per_epoch": 4}
    # loss, checked twice an epoch, patience 1: best 0.66 (check 2); checks 3 and 4 are stale -> stops at 2 epochs
    kept, epochs, stopped = fit_rules.replay(fit, fit_rules.parse_rule("2:1:0"), batch_size=10)
    assert (kept["loss"], epochs, stopped) == (0.66, 2.0, True)
    # the same on the AUC: 0.55 (check 2) then 0.56 (check 4) are new bests; checks 5 and 6 are stale -> stops
    kept, epochs, stopped = fit_rules.replay(fit, fit_rules.parse_rule("2:1:0:auc"), batch_size=10)
    assert (kept["held_out_auc"], epochs, stopped) == (0.56, 3.0, True)
    # once an epoch (after batch 4): losses 0.66, 0.665, 0.60; patience 1 waits out 0.665 and keeps 0.60
    kept, epochs, stopped = fit_rules.replay(fit, fit_rules.parse_rule("1:1:0"), batch_size=10)
    assert (kept["loss"], epochs, stopped) == (0.60, 3.0, False)
    # patience 0 stops at the stale 0.665
    kept, epochs, stopped = fit_rules.replay(fit, fit_rules.parse_rule("1:0:0"), batch_size=10)
    assert (kept["loss"], epochs, stopped) == (0.66, 2.0, True)
    # a bar of 0.05: 0.70 -> 0.66 is lower but no real improvement, so patience 0 stops there, keeping 0.66
    kept, epochs, stopped = fit_rules.replay(fit, fit_rules.parse_rule("2:0:0.05"), batch_size=10)
    assert (kept["loss"], epochs, stopped) == (0.66, 1.0, True)
    # four checks an epoch need points after batches 1 and 3, which this record lacks
    with pytest.raises(SystemExit, match="record lacks"):
        fit_rules.replay(fit, fit_rules.parse_rule("4:1:0"), batch_size=10)


def test_gpu_benchmark_epoch_part_runs_and_saves_its_report(tmp_path: Path) -> None:
    out = tmp_path / "report" / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--small", "--parts", "epoch", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    printed, saved = json.loads(done.stdout), json.loads(out.read_text())
    assert printed == saved and "trial" not in saved
    epoch = saved["epoch"]
    assert epoch["samples"] == 128 and epoch["engine_s"] > 0 and epoch["bare_s"] > 0
    assert epoch["engine_vs_bare_throughput"] == pytest.approx(epoch["bare_s"] / epoch["engine_s"], rel=0.01)


def test_bench_search_looks_up_the_nearest_grid_point_and_runs_the_products_sampler(monkeypatch) -> None:
    bench = load("bench_search.py", monkeypatch)
    # per parameter on a log scale: 0.3 is nearer 0.22 than 0.44 (log 0.3/0.22 = 0.31 < log 0.44/0.3 = 0.38)
    assert bench.nearest("rsw", {"rsw.order": "h2l", "rsw.width_fraction": 0.3, "rsw.stride_ratio": 0.14}) == {
        "order": "h2l",
        "width_fraction": 0.22,
        "stride_ratio": 0.1,
    }
    assert bench.settings_of("rsw", {"order": "l2h", "width_fraction": 0.22, "stride_ratio": 0.1}) == {
        "order": "l2h",
        "width_fraction": 0.22,
        "stride_fraction": 0.022,
    }
    assert bench.settings_of("rmr", {"risky_fraction": 0.2, "lambda_mem": 0.1})["optimizer"] == "single"

    class Table:  # a tabular objective by hand: leakage falls with the width, RMR leaks 0.6 everywhere
        def get(self, defense, settings, seed, repeats=(1, 1)):
            if defense == "none":
                return {"utility": 0.9, "privacy": 0.65, "seconds": 1.0}
            privacy = 0.6 if defense == "rmr" else 0.6 - 0.1 * settings["width_fraction"]
            return {"utility": 0.9, "privacy": privacy, "seconds": 2.0}

    definition = bench.case_definition("finefoods")
    run = bench.run_sampler(definition, Table(), "random", 8, 0)
    assert run["budget"] == 8 and run["seconds"] == 16.0  # eight looked-up trials of 2 s
    assert run["defense"] in ("rsw", "swmr") and run["own_leakage"] < 0.6
    assert set(bench.grid_points("rsw")[0]) == {"order", "width_fraction", "stride_ratio"}
    assert len(bench.grid_points("rsw")) == 40 and len(bench.grid_points("swmr")) == 72


def test_bench_scale_fits_the_growth_exponent_with_its_standard_error(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load("bench_scale.py", monkeypatch)
    sizes = [1_000, 4_000, 16_000]
    exact = bench.growth_exponent(sizes, [2e-6 * n**1.5 for n in sizes])  # a quadratic-ish stage: b = 1.5
    assert exact["exponent"] == pytest.approx(1.5) and exact["stderr"] == pytest.approx(0.0, abs=1e-9)
    assert exact["exponent_last_step"] == pytest.approx(1.5)
    noisy = bench.growth_exponent(sizes, [1.0, 4.4, 15.0])  # near-linear, off the line: an error bar
    assert 0.9 < noisy["exponent"] < 1.0 and noisy["stderr"] > 0.01


def test_bench_scale_small_run_prints_saves_and_draws_the_n_series(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_scale.py"), "--small", "--no-ray", "--series", "n"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    printed, saved = json.loads(done.stdout), json.loads((tmp_path / "scale.json").read_text())
    assert printed == saved and saved["ray"] is None and set(saved["series"]) == {"n"}
    runs = saved["series"]["n"]
    assert [run["n"] for run in runs] == [300, 600, 1200]
    stages = set(runs[0]["cpu_s"])
    assert {"pretrain", "memscores", "prune_victim", "prune_shadows", "attack_rmia", "attack_samia"} <= stages
    assert set(saved["exponents_in_n"]) == stages | {"trial", "peak_rss_above_imports"}
    assert all(run["peak_rss_mb"] > run["import_rss_mb"] > 0 for run in runs)
    assert (tmp_path / "scale_n.png").stat().st_size > 0
