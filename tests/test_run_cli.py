"""`wemem run` and `wemem memscore`, end to end on digits through the real command line (in-process)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search._runs import planned_runs
from search.cli import main
from search.cli._science import parse_settings
from wemem.config import PruningConfig
from wemem.defenses import Setting
from wemem.errors import WememError

# the options of conftest's tiny_config, so `wemem run` finds the session's cached assets
TINY = [
    "--dataset",
    "digits",
    "--model",
    "columnfc",
    "--seed",
    "7",
    "--shadows",
    "2",
    "--pretrain-epochs",
    "6",
    "--finetune-epochs",
    "3",
    "--patience",
    "2",
    "--memscore-models",
    "2",
]


def test_settings_as_key_value_words_or_one_json_object() -> None:
    assert parse_settings(["order=h2l", "width_fraction=0.25", "lambda_mem=1e-1"]) == {
        "order": "h2l",
        "width_fraction": 0.25,
        "lambda_mem": 0.1,
    }
    assert parse_settings(['{"order": "l2h", "stride": 50}']) == {"order": "l2h", "stride": 50}
    assert parse_settings([]) == {}
    with pytest.raises(WememError, match="KEY=VALUE"):
        parse_settings(["lambda_mem"])
    with pytest.raises(WememError, match="JSON"):
        parse_settings(['{"order": h2l}'])


def test_compare_plans_original_one_shot_iterative_and_the_defended_run() -> None:
    pruning = PruningConfig(0.5, 3)
    runs = planned_runs(Setting("rmr", {"lambda_mem": 0.1, "risky_fraction": 0.2}), pruning, compare=True)
    assert [(r.label, r.defense, r.pruning) for r in runs] == [
        ("original", "none", None),
        ("one-shot", "none", PruningConfig(0.5, 3, one_shot=True)),
        ("iterative", "none", PruningConfig(0.5, 3)),
        ("iterative+rmr", "rmr", PruningConfig(0.5, 3)),
    ]
    single = planned_runs(Setting("none"), PruningConfig(0.5, 3, one_shot=True), compare=False)
    assert [(r.label, r.pruning.one_shot) for r in single] == [("one-shot", True)]


def test_run_compare_end_to_end(tiny_assets, cache_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results" / "compare.v1"
    code = main(
        [
            "run",
            *TINY,
            "--compare",
            "--steps",
            "2",
            "--attacks",
            "conf,hconf,lira",
            "--serial",
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "cache hit: pretrained victim and shadows" in printed and "tpr_at_1%_fpr" in printed

    table = pd.read_csv(f"{out}.csv")
    assert list(table["run"].unique()) == ["original", "one-shot", "iterative"]
    assert len(table) == 3 * 3 and set(table["attack"]) == {"conf", "hconf", "lira"}
    assert table["balanced_accuracy"].between(0, 1).all() and table["auc"].between(0, 1).all()
    pretrained = tiny_assets.pretrained_accuracy["victim"]
    assert np.allclose(table["accuracy_before"], pretrained)
    original = table[table["run"] == "original"]
    assert np.allclose(original["accuracy_after"], pretrained) and (original["defense_seconds"] < 1).all()

    runs = {run["label"]: run for run in json.loads(Path(f"{out}.json").read_text())["runs"]}
    assert runs["original"]["victim_rounds"] == [] and set(runs["original"]["victim_layer_sparsity"].values()) == {0}
    assert [r["sparsity"] for r in runs["one-shot"]["victim_rounds"]] == [0.6]
    assert [r["sparsity"] for r in runs["iterative"]["victim_rounds"]] == pytest.approx([0, 1 - 0.4**0.5, 0.6])
    for label in ("one-shot", "iterative"):
        assert runs[label]["victim_layer_sparsity"] == {
            "fc1.weight": math.floor(64 * 256 * 0.6) / (64 * 256),
            "fc2.weight": math.floor(256 * 128 * 0.6) / (256 * 128),
        }
    assert runs["iterative"]["attacks"]["conf"]["balanced_accuracy"] == pytest.approx(
        table.query("run == 'iterative' and attack == 'conf'")["balanced_accuracy"].item()
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--defense", "rmr", "--settings", "lambda_mem=-1"], "invalid settings for defense 'rmr'"),
        (["--attacks", "conf,oracle"], "unknown attack 'oracle'"),
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--sparsity", "1.5"], "sparsity must be in"),
    ],
)
def test_run_rejects_bad_options_before_training(tmp_path: Path, capsys, arguments: list[str], message: str) -> None:
    code = main(["run", *TINY, *arguments, "--serial", "--cache-dir", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing computed or cached


def read_scores(path: Path) -> np.ndarray:
    frame = pd.read_csv(path, index_col=0)
    assert list(frame.columns) == ["0"] and list(frame.index) == list(range(len(frame)))
    return frame["0"].to_numpy()


def test_memscore_compute_export_import_round_trip(tmp_path: Path, capsys) -> None:
    cache, computed = tmp_path / "cache", tmp_path / "computed.csv"
    common = [*TINY, "--cache-dir", str(cache)]
    assert main(["memscore", "compute", *common, "--serial", "--out", str(computed)]) == 0
    scores = read_scores(computed)
    assert len(scores) == 1438 and scores.min() == 0.0 and scores.max() == 1.0  # |T| of digits, min-max scaled

    assert main(["memscore", "export", *common, "--out", str(tmp_path / "exported.csv")]) == 0
    assert np.array_equal(read_scores(tmp_path / "exported.csv"), scores)

    replacement = pd.DataFrame({"0": np.linspace(0, 1, 1438)})
    replacement.to_csv(tmp_path / "replacement.csv")
    assert main(["memscore", "import", str(tmp_path / "replacement.csv"), *common]) == 2  # order unverifiable
    assert "--order" in capsys.readouterr().err
    assert main(["memscore", "import", str(tmp_path / "replacement.csv"), *common, "--order", "ours"]) == 0
    assert main(["memscore", "export", *common, "--out", str(tmp_path / "again.csv")]) == 0
    assert np.allclose(read_scores(tmp_path / "again.csv"), np.linspace(0, 1, 1438))
    assert main(["memscore", "import", str(tmp_path / "again.csv"), *common]) == 0  # our export: verified order
    assert "1438 mem-scores" in capsys.readouterr().out


@pytest.mark.parametrize(
    "scores, message",
    [
        (np.linspace(0, 1, 1437), "has 1437 scores but the training pool has 1438"),
        (np.r_[np.nan, np.linspace(0, 1, 1437)], "missing or non-numeric score at row 0"),
    ],
)
def test_memscore_import_rejects_wrong_length_and_nan(tmp_path: Path, capsys, scores: np.ndarray, message: str) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"0": scores}).to_csv(bad)
    assert main(["memscore", "import", str(bad), *TINY, "--cache-dir", str(tmp_path / "cache")]) == 2
    assert message in capsys.readouterr().err
    assert not any((tmp_path / "cache").rglob("memscores.csv"))


def test_memscore_export_without_cached_scores_says_how_to_compute(tmp_path: Path, capsys) -> None:
    assert main(["memscore", "export", *TINY, "--cache-dir", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2
    assert "wemem memscore compute" in capsys.readouterr().err


def test_memscore_compute_trains_the_models_as_ray_tasks(ray_session, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "serial.csv", tmp_path / "ray.csv"
    common = [*TINY, "--pretrain-epochs", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main(["memscore", "compute", *common, "--serial", "--out", str(serial)]) == 0
    assert main(["memscore", "compute", *common, "--out", str(parallel)]) == 0
    np.testing.assert_allclose(read_scores(parallel), read_scores(serial), atol=1e-4)
