"""``[search] repeats``: one evaluation's standard error (by hand), and a trial scored as the mean over R
repeats -- R fine-tunings, or R target draws on the same pruned models -- with every repeat stored."""

from __future__ import annotations

import math

import numpy as np
import pytest

import objectives.trial as trial_module
from objectives import ObjectiveConfig, TrialSpec, evaluate_trial, reference
from objectives.trial import privacy_standard_error
from search.studyfile import parse_study
from wemem.pipeline import attack_targets

RSW = {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022}


def test_standard_error_by_hand():
    # three repeats 0.5, 0.6, 0.7: sample sd 0.1, over sqrt(3)
    se, kind = privacy_standard_error([(0.9, 0.5), (0.9, 0.6), (0.9, 0.7)], 600)
    assert se == pytest.approx(0.1 / math.sqrt(3)) and kind == "sd of 3 repeats / sqrt(R)"
    # one evaluation at P = 0.6 on 600 targets: sqrt(0.6 * 0.4 / 600) = 0.02
    se, kind = privacy_standard_error([(0.9, 0.6)], 600)
    assert se == pytest.approx(0.02) and kind == "binomial bound over 600 targets"


def spec_of(tiny_config, tiny_pruning, cache_dir, repeats: int, over: str) -> TrialSpec:
    return TrialSpec(tiny_config, tiny_pruning, ("conf", "hconf"), ObjectiveConfig(), str(cache_dir),
                     repeats=repeats, repeat_over=over)


@pytest.fixture
def counted(monkeypatch):
    """Every run_experiment call a trial makes, as (repeat, draws)."""
    calls: list[tuple[int, int]] = []
    real = trial_module.run_experiment

    def counting(*args, repeat: int = 0, draws: int = 1, **kwargs):
        calls.append((repeat, draws))
        return real(*args, repeat=repeat, draws=draws, **kwargs)

    monkeypatch.setattr(trial_module, "run_experiment", counting)
    return calls


def test_repeats_over_training_fine_tune_r_times_and_store_the_mean(tiny_config, tiny_pruning, tiny_assets,
                                                                     cache_dir, counted):
    one = spec_of(tiny_config, tiny_pruning, cache_dir, 1, "training")
    three = spec_of(tiny_config, tiny_pruning, cache_dir, 3, "training")
    base = reference(one, tiny_assets)
    counted.clear()
    single = evaluate_trial(one, "rsw", RSW, base, tiny_assets).user_attrs()
    outcome = evaluate_trial(three, "rsw", RSW, base, tiny_assets)
    assert counted == [(0, 1), (0, 1), (1, 1), (2, 1)]  # one evaluation, then the setting evaluated 3 times
    attrs = outcome.user_attrs()
    privacy = [r["privacy"] for r in attrs["repeats"]]
    utility = [r["utility"] for r in attrs["repeats"]]
    assert len(privacy) == 3 and attrs["privacy"] == pytest.approx(np.mean(privacy))
    assert attrs["utility"] == pytest.approx(np.mean(utility))
    assert attrs["privacy_se"] == pytest.approx(np.std(privacy, ddof=1) / math.sqrt(3))
    # repeat 0 is the study's own evaluation; the others fine-tune with other seeds
    assert privacy[0] == single["privacy"] and utility[0] == single["utility"]
    assert len(set(utility)) > 1 or len(set(privacy)) > 1
    n = len(attack_targets(tiny_assets, 0).indices)
    assert single["privacy_se"] == pytest.approx(math.sqrt(single["privacy"] * (1 - single["privacy"]) / n))


def test_repeats_over_targets_attack_the_same_models_on_r_draws(tiny_config, tiny_pruning, tiny_assets, cache_dir,
                                                                 counted):
    spec = spec_of(tiny_config, tiny_pruning, cache_dir, 3, "targets")
    base = reference(spec, tiny_assets)
    assert base.privacy_se is not None
    counted.clear()
    attrs = evaluate_trial(spec, "rsw", RSW, base, tiny_assets).user_attrs()
    assert counted == [(0, 3)]  # pruned once, attacked on three draws
    assert len({r["utility"] for r in attrs["repeats"]}) == 1  # the same pruned victim
    privacy = [r["privacy"] for r in attrs["repeats"]]
    assert attrs["privacy"] == pytest.approx(np.mean(privacy)) and len(privacy) == 3
    draws = [set(attack_targets(tiny_assets, 0, d).indices) for d in range(3)]
    assert draws[0] != draws[1] and all(len(d) == len(draws[0]) for d in draws)  # balanced, redrawn


def test_the_study_file_sets_repeats():
    definition = parse_study({"study": {"name": "r"}, "search": {"repeats": 4, "repeat_over": "targets"}})
    spec = definition.trial_spec("/tmp/cache")
    assert (spec.repeats, spec.repeat_over) == (4, "targets")
    assert parse_study({"study": {"name": "r"}}).trial_spec("/tmp/c").repeats == 1
