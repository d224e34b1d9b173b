"""Objective modes, leakage selection, search spaces and study-file validation (no training)."""

from __future__ import annotations

import re

import optuna
import pytest

from objectives import ObjectiveConfig, leakage, score
from search.results._report import pareto_front
from search.storage import redact
from search.studyfile import REFERENCE_SETTINGS, parse_study, reference_params, suggest_setting
from search.studyfile._spaces import derive_window, setting_params
from wemem.defenses import make_defense
from wemem.defenses.wemem import STRIDE
from wemem.errors import WememError

ATTACKS = {
    "conf": {"balanced_accuracy": 0.61, "auc": 0.70},
    "hconf": {"balanced_accuracy": 0.64, "auc": 0.66},
    "entr": {"balanced_accuracy": float("nan"), "auc": 0.9},
}


def test_leakage_takes_the_strongest_attack_of_the_chosen_metric():
    assert leakage(ATTACKS) == (0.64, "hconf")
    assert leakage(ATTACKS, "auc") == (0.9, "entr")
    assert leakage(ATTACKS, "auc", among=["conf", "hconf"]) == (0.70, "conf")
    with pytest.raises(ValueError, match="unknown privacy metric 'precision'"):
        leakage(ATTACKS, "precision")


def test_study_can_restrict_leakage_to_some_attacks():
    from objectives._trial import TrialSpec, spec_leakage
    from wemem.config import ExperimentConfig, PruningConfig

    spec = TrialSpec(
        ExperimentConfig(),
        PruningConfig(),
        ("conf", "hconf"),
        ObjectiveConfig(privacy_metric="auc", privacy_attacks=("hconf",)),
    )
    assert spec_leakage(spec, ATTACKS) == (0.66, "hconf")


def test_constrained_objective_penalizes_accuracy_loss():
    config = ObjectiveConfig("constrained", delta=0.02)
    feasible = score(privacy=0.55, utility=0.90, base_utility=0.91, config=config)
    assert feasible.values == [0.55] and feasible.constraint == pytest.approx(-0.01) and feasible.feasible
    infeasible = score(privacy=0.50, utility=0.85, base_utility=0.91, config=config)
    # floor is 0.89: violation 0.04, value 1 + 0.04 is worse than any feasible leakage
    assert infeasible.constraint == pytest.approx(0.04) and not infeasible.feasible
    assert infeasible.values[0] == pytest.approx(1.04)


def test_weighted_and_pareto_objectives():
    weighted = score(0.6, 0.9, 0.95, ObjectiveConfig("weighted", weight=0.5))
    assert weighted.values == [pytest.approx(0.6 - 0.45)] and weighted.constraint is None
    pareto = score(0.6, 0.9, 0.95, ObjectiveConfig("pareto"))
    assert pareto.values == [0.6, 0.9] and ObjectiveConfig("pareto").directions == ["minimize", "maximize"]


def test_pareto_front_by_hand():
    points = [[0.60, 0.90], [0.55, 0.85], [0.58, 0.80], [0.70, 0.95], [0.60, 0.88]]
    # (0.58, 0.80) is dominated by (0.55, 0.85); (0.60, 0.88) by (0.60, 0.90)
    import numpy as np

    assert pareto_front(np.array(points)).tolist() == [1, 0, 3]


SEARCHABLE = ["swmr", "rsw", "rmr", "ppb", "advreg", "dpsgd", "relaxloss", "hamp"]


@pytest.mark.parametrize(
    "sampler",
    [
        optuna.samplers.RandomSampler(seed=0),
        optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=True, group=True),
    ],
)
def test_spaces_sample_valid_settings_in_a_fixed_box(sampler):
    """Every sampled setting is valid for its defense, and each parameter has one distribution in every trial:
    no bound depends on another sample (a stride sampled first would move the width's low end with it)."""
    study = optuna.create_study(sampler=sampler)
    distributions: dict[str, set] = {}
    for _i in range(120):
        trial = study.ask()
        setting = suggest_setting(trial, SEARCHABLE)
        defense, settings = setting.defense, setting.settings
        make_defense(defense, settings)  # validates: stride < width, every value in its defense's range
        if "stride_fraction" in settings:
            assert 0.005 <= settings["stride_fraction"] < settings["width_fraction"] - 0.005
            assert "stride_ratio" not in settings
        study.tell(trial, float(sum(v for v in settings.values() if isinstance(v, float))) % 1)
    for trial in study.trials:
        for name, distribution in trial.distributions.items():
            distributions.setdefault(name, set()).add(repr(distribution))
    assert all(len(found) == 1 for found in distributions.values()), distributions
    assert "LogUniform" in next(iter(distributions["rsw.width_fraction"])) or "log=True" in next(
        iter(distributions["rsw.width_fraction"])
    )


def test_window_stride_is_a_fraction_of_the_width_clipped_to_its_bounds():
    assert derive_window({"order": "l2h", "width_fraction": 0.22, "stride_ratio": 0.1}, STRIDE) == {
        "order": "l2h",
        "width_fraction": 0.22,
        "stride_fraction": 0.022,
    }
    assert derive_window({"width_fraction": 0.05, "stride_ratio": 0.02}, STRIDE)["stride_fraction"] == 0.005  # 0.001
    assert derive_window({"width_fraction": 0.8, "stride_ratio": 0.5}, STRIDE)["stride_fraction"] == 0.2  # 0.4
    fixed = derive_window({"width_fraction": 0.3}, STRIDE.__class__(**{**STRIDE.__dict__, "fixed": 0.05}))
    assert fixed == {"width_fraction": 0.3, "stride_fraction": 0.05}


def test_reference_settings_round_trip_through_the_space():
    """Enqueueing a defense's reference params makes the sampler return exactly the paper's setting."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for defense in REFERENCE_SETTINGS:
        assert all(k.startswith(defense + ".") or k == "defense" for k in reference_params(defense, True))
        study.enqueue_trial(reference_params(defense, True))
        trial = study.ask()
        sampled = suggest_setting(trial, list(REFERENCE_SETTINGS))
        settings = sampled.settings
        assert sampled.defense == defense
        fixed = {k: v for k, v in settings.items() if k not in REFERENCE_SETTINGS[defense]}
        assert {k: settings[k] for k in REFERENCE_SETTINGS[defense]} == REFERENCE_SETTINGS[defense]
        assert set(fixed) <= {"optimizer"}  # RMR's fixed optimizer is the only setting the paper's leave out
        study.tell(trial, 0.5)
    assert reference_params("rsw", False)["rsw.stride_ratio"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "settings, overrides, error",
    [
        (
            {"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.18},
            None,
            "stride_fraction / width_fraction = 0.6",
        ),
        ({"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.3}, None, "stride_fraction = 0.3 is not in"),
        ({"order": "up", "width_fraction": 0.3, "stride_fraction": 0.03}, None, "order = 'up' is not among"),
        ({"order": "l2h", "width_fraction": 0.9, "stride_fraction": 0.03}, None, "width_fraction = 0.9"),
        ({"order": "l2h", "width_fraction": 0.3}, None, "stride_fraction = None"),
        ({"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.03, "colour": 1}, None, "no setting colour"),
        ({"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.03}, {"rsw": {"order": "h2l"}}, "fixed at 'h2l'"),
        (
            {"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.03},
            {"rsw": {"width_fraction": [0.4, 0.6]}},
            "width_fraction = 0.3 is not in [0.4, 0.6]",
        ),
    ],
)
def test_settings_outside_the_space_are_refused(settings, overrides, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        setting_params("rsw", settings, False, overrides)


def test_space_overrides_narrow_and_fix():
    definition = parse_study(
        {
            "study": {"name": "s"},
            "search": {
                "defenses": ["swmr"],
                "space": {"swmr": {"order": "h2l", "width_fraction": [0.3, 0.4], "lambda_mem": [0.01, 0.1]}},
            },
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        settings = suggest_setting(trial, definition.search.defenses, definition.search.space).settings
        assert settings["order"] == "h2l" and 0.3 <= settings["width_fraction"] <= 0.4
        assert 0.01 <= settings["lambda_mem"] <= 0.1
        study.tell(trial, 0.5)


@pytest.mark.parametrize(
    "section, error",
    [
        ({"search": {"defenses": ["swmr"], "space": {"swmr": {"width_fraction": [0.0, 2.0]}}}}, "leaves the allowed"),
        ({"search": {"defenses": ["swmr"], "space": {"swmr": {"colour": 1}}}}, "unknown setting"),
        ({"pruning": {"sparsity": 1.5}}, "[pruning.sparsity]"),
        ({"memscore": {"models": 3}}, "must be even"),
        ({"objective": {"mode": "best"}}, "[objective.mode]"),
        ({"attacks": {"names": ["oracle"]}}, "unknown attack 'oracle'"),
        ({"model": {"name": "gpt"}}, "unknown model 'gpt'"),
        ({"trainig": {}}, "[trainig] unknown key"),
        ({"objective": {"privacy_attacks": ["entr"]}, "attacks": {"names": ["conf"]}}, "add them to attacks.names"),
    ],
)
def test_study_file_errors_name_the_key(section, error):
    with pytest.raises(WememError) as raised:
        parse_study({"study": {"name": "s"}, **section}, "bad.toml")
    assert error in str(raised.value) and "bad.toml" in str(raised.value)


def test_defense_settings_errors_are_clear():
    with pytest.raises(WememError, match="stride_fraction must be strictly below width_fraction"):
        make_defense("rsw", {"width_fraction": 0.1, "stride_fraction": 0.2})
    with pytest.raises(WememError, match="exactly one of tau"):
        make_defense("rmr", {"lambda_mem": 0.1})
    with pytest.raises(WememError, match="unknown defense 'shield'"):
        make_defense("shield")


def test_trial_resources_split_over_the_victim_and_shadows():
    from search.execution._cluster import HEAD_CPU, trial_bundles

    definition = parse_study(
        {"study": {"name": "s"}, "data": {"shadows": 5}, "resources": {"cpus_per_trial": 6, "gpus_per_trial": 1}}
    )
    head, *models = trial_bundles(definition)
    assert head == {"CPU": HEAD_CPU} and len(models) == 6
    assert all(b == {"CPU": pytest.approx((6 - HEAD_CPU) / 6), "GPU": pytest.approx(1 / 6)} for b in models)
    cpu_only = trial_bundles(parse_study({"study": {"name": "s"}, "data": {"shadows": 2}}))
    assert all("GPU" not in b for b in cpu_only) and len(cpu_only) == 4


def test_passwords_never_shown():
    assert (
        redact("postgresql+psycopg://alice:s3cret@db.example:5432/studies")
        == "postgresql+psycopg://alice:***@db.example:5432/studies"
    )
    assert redact("sqlite:///wemem.db") == "sqlite:///wemem.db"


def test_every_shipped_study_file_is_valid():
    from pathlib import Path

    from search.studyfile import load_study_file

    files = sorted((Path(__file__).parent.parent / "studies").glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        definition = load_study_file(path)
        assert definition.name == path.stem


def test_dependencies_point_one_way():
    """wemem imports neither Optuna nor Ray; objectives imports neither the search layer nor them."""
    import subprocess
    import sys

    code = (
        "import sys, wemem.pipeline, wemem.data.loaders, wemem.models.cnn, objectives; "
        "print(sorted(m for m in ('optuna', 'ray', 'search') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_study_keeps_the_scale_its_first_trials_used():
    """A study stored before width_fraction moved to a log scale resumes on its old scale: Optuna refuses one
    parameter name with two scales in a study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    old = study.ask(
        {
            "rsw.width_fraction": optuna.distributions.FloatDistribution(0.05, 0.8),
            "rsw.stride_fraction": optuna.distributions.FloatDistribution(0.005, 0.2),
        }
    )
    study.tell(old, 0.5)
    trial = study.ask()
    settings = suggest_setting(trial, ["rsw"]).settings
    assert trial.distributions["rsw.width_fraction"].log is False  # the stored scale
    assert trial.distributions["rsw.stride_ratio"].log is True  # a new parameter takes the new one
    make_defense("rsw", settings)
