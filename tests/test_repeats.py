"""``[search] repeats`` and ``target_draws``: one evaluation's standard error (by hand), and a trial scored as
the mean over R fine-tunings, each attacked on D target draws, with every repeat stored."""

from __future__ import annotations

import math

import numpy as np
import pytest

import objectives._trial as trial_module
from objectives import ObjectiveConfig, TrialSpec, evaluate_trial, reference
from objectives._trial import privacy_standard_error
from search.studyfile import parse_study
from wemem.defenses import Setting
from wemem.pipeline import attack_targets

RSW = Setting("rsw", {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022})


def test_standard_error_by_hand():
    # two fine-tunings with means 0.55 and 0.65: sd 0.0707107, over sqrt(2) = 0.05
    se, kind = privacy_standard_error([[0.5, 0.6], [0.6, 0.7]], 600)
    assert se == pytest.approx(0.05) and kind == "sd of 2 fine-tunings / sqrt(R)"
    # one fine-tuning, three draws 0.5, 0.6, 0.7: sd 0.1, over sqrt(3)
    se, kind = privacy_standard_error([[0.5, 0.6, 0.7]], 600)
    assert se == pytest.approx(0.1 / math.sqrt(3)) and kind.startswith("sd of 3 target draws")
    # scored once at P = 0.6 on 600 targets: sqrt(0.6 * 0.4 / 600) = 0.02
    se, kind = privacy_standard_error([[0.6]], 600)
    assert se == pytest.approx(0.02) and kind == "binomial bound over 600 targets"


def spec_of(tiny_config, tiny_pruning, cache_dir, repeats: int, draws: int) -> TrialSpec:
    return TrialSpec(
        tiny_config,
        tiny_pruning,
        ("conf", "hconf"),
        ObjectiveConfig(),
        str(cache_dir),
        repeats=repeats,
        target_draws=draws,
    )


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


def test_repeats_fine_tune_r_times_and_store_the_mean(tiny_config, tiny_pruning, tiny_assets, cache_dir, counted):
    one = spec_of(tiny_config, tiny_pruning, cache_dir, 1, 1)
    three = spec_of(tiny_config, tiny_pruning, cache_dir, 3, 1)
    base = reference(one, tiny_assets)
    counted.clear()
    single = evaluate_trial(one, RSW, base, tiny_assets).user_attrs()
    attrs = evaluate_trial(three, RSW, base, tiny_assets).user_attrs()
    assert counted == [(0, 1), (0, 1), (1, 1), (2, 1)]  # one evaluation, then the setting evaluated 3 times
    privacy = [r["privacy"] for r in attrs["repeats"]]
    utility = [r["utility"] for r in attrs["repeats"]]
    assert [r["fine_tuning"] for r in attrs["repeats"]] == [0, 1, 2]
    assert attrs["privacy"] == pytest.approx(np.mean(privacy)) and attrs["utility"] == pytest.approx(np.mean(utility))
    assert attrs["privacy_se"] == pytest.approx(np.std(privacy, ddof=1) / math.sqrt(3))
    # fine-tuning 0 is the study's own evaluation; the others fine-tune with other seeds
    assert privacy[0] == single["privacy"] and utility[0] == single["utility"]
    assert len(set(utility)) > 1 or len(set(privacy)) > 1
    n = len(attack_targets(tiny_assets, 0).indices)
    assert single["privacy_se"] == pytest.approx(math.sqrt(single["privacy"] * (1 - single["privacy"]) / n))


def test_target_draws_attack_the_same_models_again(tiny_config, tiny_pruning, tiny_assets, cache_dir, counted):
    spec = spec_of(tiny_config, tiny_pruning, cache_dir, 2, 3)
    base = reference(spec, tiny_assets)
    assert base.privacy_se is not None
    counted.clear()
    attrs = evaluate_trial(spec, RSW, base, tiny_assets).user_attrs()
    assert counted == [(0, 3), (1, 3)]  # two fine-tunings, each attacked on three draws
    rows = attrs["repeats"]
    assert [(r["fine_tuning"], r["draw"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len({r["utility"] for r in rows if r["fine_tuning"] == 0}) == 1  # one pruned victim per fine-tuning
    assert attrs["privacy"] == pytest.approx(np.mean([r["privacy"] for r in rows]))
    means = [np.mean([r["privacy"] for r in rows if r["fine_tuning"] == k]) for k in (0, 1)]
    assert attrs["privacy_se"] == pytest.approx(np.std(means, ddof=1) / math.sqrt(2))
    # every fine-tuning has draws of its own (0-2, then 3-5), each balanced
    draws = [frozenset(attack_targets(tiny_assets, 0, d).indices) for d in range(6)]
    assert len(set(draws)) == 6 and len({len(d) for d in draws}) == 1


def test_the_study_file_sets_repeats():
    definition = parse_study({"study": {"name": "r"}, "search": {"repeats": 2, "target_draws": 8}})
    spec = definition.trial_spec("/tmp/cache")
    assert (spec.repeats, spec.target_draws) == (2, 8)
    assert parse_study({"study": {"name": "r"}}).trial_spec("/tmp/c").repeats == 1


@pytest.mark.e2e
def test_a_study_with_repeats_stores_them_with_each_trial(ray_session, tmp_path, capsys):
    """Launched through Ray like any study: the trial holds its R x D repeats and standard error, status
    prints it, and the reference is the mean over the same repeats."""
    from search.cli import main
    from search.execution._launcher import launch
    from search.study import Options

    options = Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(tmp_path / "cache"))
    definition = parse_study(
        {
            "study": {"name": "repeated", "n_trials": 1, "seed": 7},
            "data": {"dataset": "digits", "shadows": 1},
            "model": {"name": "columnfc"},
            "training": {"pretrain_epochs": 6, "finetune_epochs": 3, "patience": 2},
            "pruning": {"sparsity": 0.6, "steps": 1},
            "memscore": {"models": 2},
            "attacks": {"names": ["conf", "hconf"]},
            "search": {"defenses": ["rsw"], "repeats": 2, "target_draws": 2},
            "resources": {"cpus_per_trial": 2},
        }
    )
    study = launch(definition, options, lambda m: None).study
    trial = study.trials[0]
    rows = trial.user_attrs["repeats"]
    assert len(rows) == 4 and trial.user_attrs["privacy"] == pytest.approx(np.mean([r["privacy"] for r in rows]))
    means = [np.mean([r["privacy"] for r in rows if r["fine_tuning"] == k]) for k in (0, 1)]
    assert trial.user_attrs["privacy_se"] == pytest.approx(np.std(means, ddof=1) / math.sqrt(2))
    assert main(["status", "repeated", "--trial", "0", "--storage", options.storage]) == 0
    assert "leakage standard error" in capsys.readouterr().out


def test_confirmation_evaluates_each_fresh_seed_once(tmp_path, monkeypatch):
    """A study's repeats quiet its ranking on its one seed; confirm's replications are its seeds."""
    import optuna

    import search.confirm._run as run
    import search.execution._cluster as cluster
    from search.storage import open_storage
    from search.study import Options, create_or_load_study, open_study

    options = Options(storage=f"sqlite:///{tmp_path / 'study.db'}", cache_dir=str(tmp_path / "cache"))
    definition = parse_study(
        {"study": {"name": "quiet"}, "search": {"defenses": ["rsw"], "repeats": 2, "target_draws": 4}}
    )
    study, _ = create_or_load_study(definition, open_storage(options.storage), {})
    study.add_trial(
        optuna.trial.create_trial(
            value=0.52,
            user_attrs={
                "defense": "rsw",
                "settings": RSW.settings,
                "utility": 0.9,
                "privacy": 0.52,
                "strongest_attack": "conf",
                "feasible": True,
            },
        )
    )

    class Judged(Exception):
        pass

    def evaluator(spec, definition, echo):
        raise Judged(spec)

    monkeypatch.setattr(cluster, "init_ray", lambda address=None: None)
    monkeypatch.setattr(run, "ray_evaluator", evaluator)
    opened = open_study("quiet", options)
    assert (opened.spec.repeats, opened.spec.target_draws) == (2, 4)
    with pytest.raises(Judged) as judged:
        run.confirm(opened, echo=lambda m: None)
    spec = judged.value.args[0]
    assert (spec.repeats, spec.target_draws) == (1, 1) and spec.experiment == opened.spec.experiment
