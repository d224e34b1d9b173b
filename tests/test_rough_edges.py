"""Rough edges: no training batch of one row (BatchNorm), [data] exclude for table columns, the warning for a
feature named like a membership mark, and the status of a study with no completed trial."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_study
import torch
from torch import nn

from search.cli import main
from search.results._text import summary_lines
from search.study import open_study
from search.studyfile import parse_study
from wemem.config import ExperimentConfig
from wemem.data import DataOptions, MembershipColumnWarning, Pools, load_dataset
from wemem.defenses import make_defense
from wemem.defenses.base import DefenseContext
from wemem.errors import WememError
from wemem.training import TrainConfig, make_adam, minibatches, train_round

# ------------------------------------------------------------------------------ batches of one row


@pytest.mark.parametrize(
    "n, batch_size", [(2, 128), (129, 128), (257, 128), (128, 128), (300, 128), (7, 3), (10, 3), (1, 128), (5, 1)]
)
def test_minibatches_keep_every_index_once_and_never_leave_one_row_alone(n: int, batch_size: int):
    indices = torch.arange(100, 100 + n)
    batches = minibatches(indices, batch_size, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == indices.tolist()
    if n >= 2 and batch_size >= 2:
        assert min(len(b) for b in batches) >= 2
    assert all(len(b) <= batch_size + 1 for b in batches)


def test_minibatches_of_other_sizes_are_the_plain_split():
    generator, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    indices = torch.arange(300)
    expected = torch.split(indices[torch.randperm(300, generator=again)], 128)
    assert [b.tolist() for b in minibatches(indices, 128, generator)] == [b.tolist() for b in expected]


class BatchNormNet(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.parametrize("rows", [129, 257])
def test_a_batchnorm_model_trains_on_a_set_one_row_past_a_whole_batch(rows: int):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows + 40, 6, generator=generator)
    pools = Pools("bn", x, (x[:, 0] > 0).long(), rows, 2)
    config = TrainConfig(batch_size=128)
    model = BatchNormNet(6, 2)
    defense = make_defense("none")
    defense.bind(DefenseContext(pools, torch.arange(rows), torch.arange(rows, rows + 40), None, config, 0))
    result = train_round(
        model,
        make_adam(model, config),
        pools,
        torch.arange(rows, rows + 40),
        defense,
        None,
        max_epochs=2,
        patience=1,
        generator=generator,
    )
    assert result.epochs == 2


# --------------------------------------------------------------------------------- [data] exclude


def table(rows: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    size = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "size": size,
            "weight": rng.normal(size=rows),
            "train": rng.random(rows) < 0.5,
            "kind": np.where(size > 0, "big", "small"),
        }
    )


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    table().to_csv(path, index=False)
    return path


def features(pools: Pools) -> list[str]:
    return [spec["column"] for spec in pools.encoding["columns"]]


def quietly(dataset: str, options: DataOptions) -> Pools:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MembershipColumnWarning)
        return load_dataset(dataset, None, 7, options)


def test_excluded_columns_are_not_features(csv: Path):
    pools = load_dataset(f"csv:{csv}", None, 7, DataOptions(label="kind", exclude=("train", "weight")))
    assert features(pools) == ["size"] and pools.x.shape[1] == 1


@pytest.mark.parametrize(
    "exclude, named",
    [
        (("colour",), "'colour', which the table lacks"),
        (("kind",), "'kind', the label column"),
        (("size", "weight", "train"), "leaves no feature column"),
    ],
)
def test_a_bad_exclusion_is_refused_with_the_column_and_the_fix(csv: Path, exclude: tuple[str, ...], named: str):
    with pytest.raises(WememError, match="exclude") as error:
        quietly(f"csv:{csv}", DataOptions(label="kind", exclude=exclude))
    assert named in str(error.value)


def test_exclude_on_data_without_columns_is_refused():
    with pytest.raises(WememError, match=r"not a table.*remove it"):
        load_dataset("digits", None, 7, DataOptions(exclude=("pixel",)))
    with pytest.raises(WememError, match=r"data.exclude|not a table"):
        parse_study({"study": {"name": "x"}, "data": {"dataset": "digits", "exclude": ["pixel"]}})


def test_exclude_is_in_the_cache_key_only_when_given():
    plain = ExperimentConfig(dataset="csv:/t.csv", label="kind")
    assert plain.key() == "ce917a21bdb08b1e"  # the key before exclude existed: earlier caches stay valid
    assert ExperimentConfig(dataset="csv:/t.csv", label="kind", exclude=("train",)).key() != plain.key()


def test_exclude_travels_from_the_study_file_to_the_experiment_and_through_an_export(csv: Path, tmp_path: Path):
    from search.confirm import ConfirmationStatus
    from search.results._apply import definition_from_export
    from search.results._export import ExportDocument, ExportedTrial, write_export
    from wemem.defenses import UNDEFENDED, Setting

    definition = parse_study(
        {"study": {"name": "x"}, "data": {"dataset": f"csv:{csv}", "label": "kind", "exclude": ["train"]}}
    )
    assert definition.experiment().exclude == ("train",)
    assert features(definition.experiment().load_pools()) == ["size", "weight"]
    # the sections an export writes, through TOML and back
    trial = ExportedTrial(
        0, Setting(UNDEFENDED, {}), (0.5,), True, {"test_accuracy": 0.9, "privacy": 0.5, "attacks": {}}
    )
    write_export(
        ExportDocument("x", definition, {}, {}, None, (trial,), False, ConfirmationStatus("not confirmed")),
        tmp_path / "x.toml",
    )
    document = tomllib.loads((tmp_path / "x.toml").read_text())
    assert definition_from_export(document, "x.toml").experiment().exclude == ("train",)
    bare = parse_study({"study": {"name": "x"}, "data": {"dataset": f"csv:{csv}", "label": "kind"}})
    assert "exclude" not in bare.data.model_dump(exclude_none=True)  # exports without it keep their fingerprint


def test_wemem_run_takes_exclude():
    from search.cli import build_parser
    from search.cli._science import experiment_from_args

    args = build_parser().parse_args(
        ["run", "--dataset", "csv:rows.csv", "--label", "kind", "--exclude", "train", "weight"]
    )
    assert experiment_from_args(args).exclude == ("train", "weight")
    assert experiment_from_args(build_parser().parse_args(["run"])).exclude == ()


# -------------------------------------------------------------------- a feature named like membership


def test_a_true_false_feature_named_train_is_warned_about(csv: Path):
    with pytest.warns(
        MembershipColumnWarning,
        match=r"'train'.*member_column = \"train\".*exclude = \[\"train\"\]"
        r".*--exclude train",
    ):
        load_dataset(f"csv:{csv}", None, 7, DataOptions(label="kind"))


@pytest.mark.parametrize(
    "options",
    [
        DataOptions(label="kind", exclude=("train",)),
        DataOptions(label="kind", member_column="train", needs_members=True),
    ],
)
def test_no_warning_once_the_column_is_excluded_or_the_member_column(csv: Path, options: DataOptions):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MembershipColumnWarning)
        load_dataset(f"csv:{csv}", None, 7, options)


@pytest.mark.parametrize(
    "name, values, warned",
    [
        ("Is_Member", [0, 1], True),
        ("SPLIT", [1, 1], True),
        ("seen", ["a", "b"], False),
        ("trained", [True, False], False),
        ("used_in_training", [0.0, 1.0], True),
    ],
)
def test_which_columns_look_like_membership(name: str, values: list, warned: bool):
    from wemem.data.custom import membership_like_columns

    frame = pd.DataFrame({name: values * 3})
    assert membership_like_columns(frame, [name]) == ([name] if warned else [])


# ----------------------------------------------------------------------- status with no completed trial


def test_status_of_a_study_whose_launch_failed_says_trials_wait_and_how_to_resume(tmp_path: Path):
    options = report_study.build(tmp_path, name="waiting", trials=0, failed=0, confirmed=False, reference=True)
    opened = open_study("waiting", options)
    opened.study.enqueue_trial({"rsw.direction": "l2h", "rsw.width_fraction": 0.2})
    opened.study.enqueue_trial({"rsw.direction": "h2l", "rsw.width_fraction": 0.2})
    lines = summary_lines(opened)
    text = "\n".join(lines)
    # among the first lines, which `wemem status` lists per study
    assert "2 WAITING" in lines[0] and lines[1] == "  no trial has completed yet; 2 trial(s) waiting to run"
    assert "undefended pruned model" in text
    assert f"resume: wemem resume waiting --storage {options.storage}" in text
    assert "best trial" not in text and "biased low" not in text and "export" not in text


def test_status_of_a_study_with_no_trial(tmp_path: Path, capsys: pytest.CaptureFixture):
    options = report_study.build(tmp_path, name="empty", trials=0, failed=0, confirmed=False, reference=False)
    lines = summary_lines(open_study("empty", options))
    assert lines[0] == "study 'empty': no trials" and lines[1] == "  no trial has completed yet"
    assert not any("best trial" in line or "biased low" in line or "confirm" in line for line in lines)
    assert main(["status", "empty", "--storage", options.storage]) == 0
    assert "no trial has completed yet" in capsys.readouterr().out
