"""Validity checks: a checkpoint read on other features, a reference without measurable leakage, a leakage metric
the targets cannot resolve, shadows that do not mimic the victim -- each measured, stored, shown and refused or
warned about, and overridable only by name."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binomtest

from search.cli import main
from wemem.uncertainty import clopper_pearson
from wemem.validity import (
    Check,
    apply_overrides,
    chance_level,
    checkpoint_check,
    mimicry_check,
    reference_check,
    resolution_check,
)

# --------------------------------------------------------------------------------------------- by hand


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (48, 100), (297, 600)])
def test_clopper_pearson_equals_scipys_exact_interval(k: int, n: int):
    low, high = clopper_pearson(k, n)
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)


def test_a_checkpoint_that_learned_its_members_passes():
    members = np.r_[np.ones(90, bool), np.zeros(10, bool)]  # 0.90 on members
    others = np.r_[np.ones(70, bool), np.zeros(30, bool)]  # 0.70 elsewhere
    labels = np.r_[np.zeros(60, int), np.ones(40, int)]  # majority rate 0.60
    check = checkpoint_check(members, others, labels)
    assert check.status == "pass"
    assert check.figures["member_accuracy"] == 0.9 and check.figures["majority_rate"] == 0.6
    # the exact interval of 90/100 starts at 0.8238, above 0.60
    assert check.figures["member_accuracy_low"] == pytest.approx(0.8238, abs=1e-4)


def test_a_checkpoint_at_chance_on_its_members_is_refused_naming_the_encoding():
    members = np.r_[np.ones(48, bool), np.zeros(52, bool)]  # 0.48: what a model reading other features scores
    others = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    labels = np.r_[np.zeros(55, int), np.ones(45, int)]
    check = checkpoint_check(members, others, labels, "the checkpoint victim.pt")
    assert check.status == "fail"
    assert "not clearly above the majority-class rate" in check.message
    assert "encoding" in check.message and "loader plug-in" in check.message
    assert "--override-check checkpoint" in check.message


def test_members_clearly_below_the_non_members_are_refused():
    # 0.80 vs 0.95 on 200 each: the difference is 0.15, two standard errors are 2*sqrt(.16/200+.0475/200) = 0.064
    members = np.r_[np.ones(160, bool), np.zeros(40, bool)]
    others = np.r_[np.ones(190, bool), np.zeros(10, bool)]
    check = checkpoint_check(members, others, np.r_[np.zeros(100, int), np.ones(100, int)])
    assert check.status == "fail" and "members score below the non-members" in check.message
    # within the noise (0.80 vs 0.82): not refused for it
    close = np.r_[np.ones(164, bool), np.zeros(36, bool)]
    assert checkpoint_check(members, close, np.r_[np.zeros(100, int), np.ones(100, int)]).status == "pass"


def test_chance_levels():
    assert chance_level("balanced_accuracy") == chance_level("auc") == 0.5
    assert chance_level("tpr_at_1%_fpr") == pytest.approx(0.01)
    assert chance_level("tpr_at_0.1%_fpr") == pytest.approx(0.001)


def test_the_reference_warns_when_its_strongest_attacks_interval_reaches_chance():
    attacks = {
        "conf": {"balanced_accuracy": 0.53, "intervals": {"balanced_accuracy": [0.49, 0.57]}},
        "entr": {"balanced_accuracy": 0.51, "intervals": {"balanced_accuracy": [0.47, 0.55]}},
    }
    check = reference_check(attacks, "balanced_accuracy", 0.99, 0.96)
    assert check.status == "warn" and check.figures["strongest_attack"] == "conf"
    assert "shows no measurable leakage" in check.message and "No defense can show a gain here" in check.message
    assert check.figures["generalization_gap"] == pytest.approx(0.03)
    attacks["conf"]["intervals"]["balanced_accuracy"] = [0.52, 0.60]
    assert reference_check(attacks, "balanced_accuracy", 0.99, 0.96).status == "pass"


def test_a_reference_stored_without_intervals_uses_its_standard_error():
    check = reference_check({"conf": {"balanced_accuracy": 0.56}}, "balanced_accuracy", None, 0.9, privacy_se=0.02)
    assert check.figures["low"] == pytest.approx(0.56 - 1.96 * 0.02)  # 0.5208: above chance
    assert check.status == "pass" and check.figures["generalization_gap"] is None
    assert "normal" in check.figures["interval"]


def test_a_tpr_metric_needs_enough_non_members():
    refused = resolution_check("tpr_at_0.1%_fpr", 600)  # 0.6 of a false positive; 8 are needed
    assert refused.status == "fail"
    assert "not resolvable with 600 non-member targets (needs 8000)" in refused.message
    assert resolution_check("tpr_at_1%_fpr", 800).status == "pass"  # 8 false positives allowed
    assert resolution_check("tpr_at_1%_fpr", 799).status == "fail"
    assert resolution_check("balanced_accuracy", 10).status == "pass"


def test_shadows_that_do_not_mimic_the_victim_are_flagged():
    assert mimicry_check(1000, 0.90, [900, 1100], [0.88, 0.91]).status == "pass"
    small = mimicry_check(1000, 0.90, [600, 1000], [0.88, 0.91])  # 0.6 < 1/1.5
    assert small.status == "warn" and "factor 1.5" in small.message
    weaker = mimicry_check(1000, 0.90, [1000, 1000], [0.80, 0.83])
    assert weaker.status == "warn" and "5 points" in weaker.message


def test_only_named_failed_checks_are_overridden_and_they_say_so():
    checks = [Check("checkpoint", "fail", "bad"), Check("resolution", "fail", "coarse"), Check("mimicry", "warn", "x")]
    marked = apply_overrides(checks, ("checkpoint", "mimicry"))
    assert [c.status for c in marked] == ["overridden", "fail", "warn"]
    assert "overridden by the user" in marked[0].message
    assert Check.from_dict(json.loads(json.dumps(marked[0].to_dict()))) == marked[0]


# ------------------------------------------------------------------------ a checkpoint on other features

MODEL_MODULE = """
from torch import nn


class Net(nn.Module):
    unprunable = ("out",)

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(int(__import__("math").prod(input_shape)), 32),
                                    nn.ReLU())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.out(self.hidden(x))
"""

# the user's own preprocessing: other column order, min-max scaling, one-hot in another order -- same width as
# the tool's encoding (2 numbers + 3 colours), different meaning
FEATURES_MODULE = """
from pathlib import Path

import numpy as np
import pandas as pd

COLOURS = ["red", "blue", "green"]


def features(frame):
    colours = np.stack([(frame["colour"] == c).to_numpy(float) for c in COLOURS], axis=1)
    numbers = frame[["weight", "size"]].to_numpy(float)
    numbers = (numbers - numbers.min(0)) / (numbers.max(0) - numbers.min(0))
    return np.concatenate([colours, numbers], axis=1).astype("float32")


def load(data_root, seed):
    frame = pd.read_csv(Path(__file__).with_name("marked.csv"))
    y = (frame["kind"] == "yes").to_numpy().astype("int64")
    return {"x": features(frame), "y": y, "members": frame["train"].to_numpy()}
"""


def marked_table(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(size=rows) * 10 + 3,
            "weight": rng.normal(size=rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
        }
    )
    frame["kind"] = np.where(frame["weight"] + 2 * (frame["colour"] == "red") > 0.8, "yes", "no")
    frame["train"] = np.arange(rows) % 2 == 0
    return frame


@pytest.fixture
def own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user who trained a victim on their own encoding of a table, outside the tool."""
    (tmp_path / "mymodel.py").write_text(MODEL_MODULE)
    (tmp_path / "userfeatures.py").write_text(FEATURES_MODULE)
    frame = marked_table()
    frame.to_csv(tmp_path / "marked.csv", index=False)
    monkeypatch.chdir(tmp_path)
    for name in ("mymodel", "userfeatures"):
        sys.modules.pop(name, None)
    sys.path.insert(0, str(tmp_path))
    try:
        import mymodel
        import userfeatures
    finally:
        sys.path.remove(str(tmp_path))
    x = torch.as_tensor(userfeatures.features(frame))
    y = torch.as_tensor((frame["kind"] == "yes").to_numpy().astype("int64"))
    members = torch.as_tensor(frame["train"].to_numpy())
    torch.manual_seed(0)
    model = mymodel.Net((x.shape[1],), 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[members]), y[members]).backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "victim.pt")
    for name in ("mymodel", "userfeatures"):
        sys.modules.pop(name, None)
    return tmp_path


def study_file(folder: Path, dataset: dict[str, str]) -> Path:
    import tomli_w

    study = {
        "study": {"name": "own", "n_trials": 1, "seed": 7, "sampler": "random"},
        "data": {**dataset, "shadows": 2},
        "model": {"name": "mymodel:Net", "checkpoint": "victim.pt"},
        "training": {"pretrain_epochs": 3, "finetune_epochs": 2, "patience": 1},
        "pruning": {"sparsity": 0.5, "steps": 1},
        "memscore": {"models": 2},
        "search": {"defenses": ["rmr"], "enqueue_reference": False},
        "attacks": {"names": ["conf", "entr"]},
    }
    path = folder / f"study-{len(list(folder.glob('study-*.toml')))}.toml"
    path.write_text(tomli_w.dumps(study))
    return path


def test_a_checkpoint_launched_on_another_encoding_is_refused_and_runs_with_its_own_loader(
    ray_session, own_folder: Path, capsys: pytest.CaptureFixture
):
    storage = f"sqlite:///{own_folder / 'own.db'}"
    places = ["--storage", storage, "--cache-dir", str(own_folder / "cache")]
    table = study_file(own_folder, {"dataset": "csv:marked.csv", "label": "kind", "member_column": "train"})
    assert main(["launch", str(table), *places]) == 2
    error = capsys.readouterr().err
    assert "validity checks" in error and "checkpoint: FAIL" in error and "feature encoding" in error
    assert not (own_folder / "own.db").exists() and not (own_folder / "cache").exists()  # nothing created

    loader = study_file(own_folder, {"dataset": "userfeatures:load"})
    assert main(["launch", str(loader), *places]) == 0
    out = capsys.readouterr().out
    assert "validity checkpoint: PASS" in out
    assert "validity reference:" in out and "validity mimicry:" in out
    assert main(["status", "own", *places]) == 0
    assert "checkpoint: PASS" in capsys.readouterr().out


def test_a_failed_check_overridden_by_name_is_recorded(own_folder: Path):
    from search.execution._launcher import validate_inputs
    from search.study import Options, Place
    from search.studyfile import load_study_file

    definition = load_study_file(
        study_file(own_folder, {"dataset": "csv:marked.csv", "label": "kind", "member_column": "train"})
    )
    place = Place.of(Options(cache_dir=str(own_folder / "cache"), overrides=("checkpoint",)), base_dir=str(own_folder))
    checks = validate_inputs(definition, place)
    assert [(c.name, c.status) for c in checks] == [("checkpoint", "overridden"), ("resolution", "pass")]
    member, other = checks[0].figures["member_accuracy"], checks[0].figures["non_member_accuracy"]
    assert not math.isnan(member) and member < 0.75 and other < 0.75  # read on the tool's features


# ------------------------------------------------------------------------------ a reference without leakage

TINY_DIGITS = {
    "study": {"name": "quiet", "n_trials": 1, "seed": 7, "sampler": "random"},
    "data": {"dataset": "digits", "shadows": 2},
    "model": {"name": "columnfc"},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1},
    "pruning": {"sparsity": 0.5, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["rsw"], "enqueue_reference": False},
    "attacks": {"names": ["conf", "entr"]},
    "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
}


def test_a_reference_without_measurable_leakage_is_reported_at_launch_before_the_search(ray_session, tmp_path: Path):
    from search import api

    lines: list[str] = []
    study = api.launch(
        TINY_DIGITS, storage=f"sqlite:///{tmp_path / 'quiet.db'}", cache_dir=str(tmp_path / "cache"), echo=lines.append
    )
    warned = next(i for i, line in enumerate(lines) if line.startswith("validity reference: WARN"))
    assert "shows no measurable leakage" in lines[warned] and "No defense can show a gain here" in lines[warned]
    assert warned < next(i for i, line in enumerate(lines) if line.startswith("running 1 trial"))  # before the search
    stored = {check["name"]: check for check in study.validity}
    assert set(stored) == {"resolution", "reference", "mimicry"}
    assert stored["reference"]["status"] == "warn"
    assert stored["reference"]["figures"]["low"] <= 0.5 < stored["reference"]["figures"]["high"]
    assert "validity:" in study.summary() and "reference: WARN" in study.summary()


# ------------------------------------------------------------------------- the report's figures, resolved


def test_the_reports_attack_table_shows_intervals_and_words_for_unresolvable_tprs():
    from search.results._audit import attack_rows
    from search.results._html import attack_cells

    reference = {
        "attacks": {
            "conf": {
                "balanced_accuracy": 0.56,
                "auc": 0.58,
                "tpr_at_0.1%_fpr": 0.0067,
                "tpr_at_1%_fpr": 0.03,
                "intervals": {
                    "balanced_accuracy": [0.53, 0.59],
                    "auc": [0.55, 0.61],
                    "tpr_at_0.1%_fpr": [0.0, 0.02],
                    "tpr_at_1%_fpr": [0.01, 0.05],
                },
                "targets": {"members": 600, "non_members": 600},
                "epsilon_lower_bound": {"value": 0.084, "delta": 0.0, "confidence": 0.95},
            }
        }
    }
    (row,) = json.loads(json.dumps(attack_rows(reference, None)))  # as report.json holds it
    assert row["not_resolvable"]["undefended"] == {
        "tpr_at_0.1%_fpr": "not resolvable with 600 non-member targets (needs 8000)",
        "tpr_at_1%_fpr": "not resolvable with 600 non-member targets (needs 800)",
    }
    shown = [text for text, _ in attack_cells(row, "undefended")]
    assert shown == [
        "0.5600 [0.5300, 0.5900]",
        "0.5800 [0.5500, 0.6100]",
        "not resolvable with 600 non-member targets (needs 8000)",
        "not resolvable with 600 non-member targets (needs 800)",
        "0.084",
    ]
    # with 1,000 non-members the TPR at 1% FPR resolves (10 false positives >= 8) and is shown with its interval
    reference["attacks"]["conf"]["targets"]["non_members"] = 1000
    (row,) = attack_rows(reference, None)
    assert list(row["not_resolvable"]["undefended"]) == ["tpr_at_0.1%_fpr"]
    assert attack_cells(row, "undefended")[3][0] == "0.0300 [0.0100, 0.0500]"


def test_the_reports_headline_is_never_green_with_a_validity_warning():
    from search.results._html import headline_section, validity_section

    doc = {
        "headline": {
            "status": "confirmed",
            "text": "leakage -5.0 points [95% CI -5.4, -4.5]: gain confirmed",
            "gain_confirmed": True,
            "accuracy_constraint": "holds",
        },
        "validity": [
            Check("checkpoint", "pass", "fine").to_dict(),
            Check("reference", "warn", "the undefended pruned model shows no measurable leakage").to_dict(),
        ],
    }
    page = headline_section(doc)
    assert 'class="headline warn"' in page and "with validity warnings" in page
    assert "validity: reference (warning)" in page
    assert "shows no measurable leakage" in validity_section(doc)
    doc["validity"] = doc["validity"][:1]
    assert 'class="headline confirmed"' in headline_section(doc)
    assert "before they existed" in validity_section({"validity": []})  # a study launched before the checks


def test_the_api_and_the_cli_take_the_same_overrides(monkeypatch: pytest.MonkeyPatch):
    import search.execution._launcher as launcher
    from search import api
    from search.cli._main import build_parser
    from wemem.errors import WememError

    seen = []
    monkeypatch.setattr(
        launcher, "launch", lambda definition, options, echo, mlflow=None: seen.append(options.overrides)
    )
    monkeypatch.setattr(api, "StudyResult", lambda opened, started=None: opened)
    api.launch(TINY_DIGITS, override_checks=["checkpoint", "resolution"])
    assert seen == [("checkpoint", "resolution")]
    with pytest.raises(WememError, match=r"unknown check.*reference"):
        api.launch(
            TINY_DIGITS, override_checks=["reference"]
        )  # a warning is not overridden: there is nothing to run past
    with pytest.raises(WememError, match="list of check names"):
        api.launch(TINY_DIGITS, override_checks="checkpoint")
    args = build_parser().parse_args(
        ["launch", "s.toml", "--override-check", "checkpoint", "--override-check", "resolution"]
    )
    assert args.override_check == ["checkpoint", "resolution"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--override-check", "mimicry"])
