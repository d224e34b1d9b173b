"""Your own model and data: plug-ins by import path and by entry point, tables, torchvision models, a victim
trained outside the tool (checkpoint), export and apply with plug-ins, the Python API and the shipped example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from search.cli import main
from wemem.data import DataOptions, load_dataset, make_study_split
from wemem.data.custom import encode_table, fit_encoding

ROOT = Path(__file__).resolve().parents[1]

MODEL_MODULE = """
from torch import nn


class Net(nn.Module):
    unprunable = ("out",)

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(int(__import__("math").prod(input_shape)), 24),
                                    nn.ReLU())
        self.out = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.out(self.hidden(x))
"""

LOADER_MODULE = """
import numpy as np
import torch

RNG = np.random.default_rng(3)
X = RNG.normal(size=(240, 5)).astype("float32")
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int64") + (X[:, 2] > 1).astype("int64")


def pool(data_root, seed):
    return X, Y


def parts(data_root, seed):
    return {"train": (X[:180], Y[:180]), "test": (torch.as_tensor(X[180:]), torch.as_tensor(Y[180:]))}


class Samples(torch.utils.data.Dataset):
    def __len__(self):
        return len(Y)

    def __getitem__(self, i):
        return torch.as_tensor(X[i]), int(Y[i])


def dataset(data_root, seed):
    return Samples()


def marked(data_root, seed):
    return {"x": X, "y": Y, "members": np.arange(len(Y)) % 2 == 0}
"""

TINY_RUN = [
    "--serial",
    "--seed",
    "7",
    "--shadows",
    "2",
    "--pretrain-epochs",
    "3",
    "--finetune-epochs",
    "2",
    "--patience",
    "1",
    "--memscore-models",
    "2",
    "--steps",
    "1",
    "--attacks",
    "conf,entr",
]


def table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(size=rows) * 10 + 3,
            "weight": rng.normal(size=rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
        }
    )
    frame["kind"] = np.where(frame["weight"] + (frame["colour"] == "red") > 0.4, "yes", "no")
    return frame


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder: a model module, a loader module and a table; the working directory."""
    (tmp_path / "mymodel.py").write_text(MODEL_MODULE)
    (tmp_path / "myloader.py").write_text(LOADER_MODULE)
    table().to_csv(tmp_path / "data.csv", index=False)
    monkeypatch.chdir(tmp_path)
    for name in ("mymodel", "myloader"):  # another test's module of the same name is not this folder's
        sys.modules.pop(name, None)
    return tmp_path


def run(folder: Path, *arguments: str) -> dict:
    assert (
        main(["run", *arguments, *TINY_RUN, "--out", str(folder / "result"), "--cache-dir", str(folder / "cache")]) == 0
    )
    return json.loads((folder / "result.json").read_text())


# -------------------------------------------------------------------------------------------- by hand


def test_a_table_encodes_numbers_standardized_and_text_one_hot_in_column_order():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "c": ["b", "a", "b"], "label": [5, 3, 5]})
    encoding = fit_encoding(frame, "label")
    assert encoding["classes"] == [3, 5]
    assert encoding["columns"][0] == {
        "column": "a",
        "kind": "numeric",
        "mean": 2.0,
        "std": pytest.approx((2 / 3) ** 0.5),
    }
    assert encoding["columns"][1] == {"column": "c", "kind": "categorical", "categories": ["a", "b"]}
    x, y = encode_table(frame, encoding)
    s = (2 / 3) ** 0.5
    np.testing.assert_allclose(x, [[-1 / s, 0, 1], [0, 1, 0], [1 / s, 0, 1]], rtol=1e-6)
    assert y.tolist() == [1, 0, 1]
    with pytest.raises(Exception, match=r"categories \['z'\]"):
        encode_table(pd.DataFrame({"a": [1.0], "c": ["z"], "label": [3]}), encoding)


def test_csv_and_parquet_give_the_same_pools(folder: Path):
    table().to_parquet(folder / "data.parquet")
    options = DataOptions(label="kind")
    csv = load_dataset("csv:data.csv", None, 7, options)
    parquet = load_dataset("parquet:data.parquet", None, 7, options)
    assert torch.equal(csv.x, parquet.x) and torch.equal(csv.y, parquet.y)
    assert csv.input_shape == (5,) and csv.num_classes == 2  # size, weight, 3 colours
    assert csv.encoding["classes"] == ["no", "yes"]


@pytest.mark.parametrize("loader, n_train", [("pool", 192), ("parts", 180), ("dataset", 192)])
def test_a_loader_returns_a_pool_explicit_parts_or_a_dataset(folder: Path, loader: str, n_train: int):
    pools = load_dataset(f"myloader:{loader}", None, 7, DataOptions(base_dir=str(folder)))
    assert len(pools.y) == 240 and pools.n_train == n_train and pools.num_classes == 3


def test_marked_members_become_exactly_the_victims_training_set_and_nobody_elses(folder: Path):
    pools = load_dataset("myloader:marked", None, 7, DataOptions(needs_members=True, base_dir=str(folder)))
    split = make_study_split(pools, seed=7, shadows=3)
    members = set(pools.members.tolist())
    assert len(members) == 120 and set(split.victim.train.tolist()) == members
    for shadow in split.shadows:
        for part in (shadow.train, shadow.dev, shadow.test):
            assert not members & set(part.tolist())
    assert not members & set(split.population.tolist())
    assert not members & set(split.victim.test.tolist()) and not members & set(split.victim.dev.tolist())
    # the samples are the marked ones: the pools keep the loader's rows in order, members first
    from wemem.plugins import parse_reference, resolve

    x, _ = resolve(parse_reference("myloader:pool", "dataset"), "dataset", folder)(None, 7)  # the folder's module
    np.testing.assert_array_equal(pools.x[:120].numpy(), x[::2])


# ------------------------------------------------------------------------------------ end to end, each kind


def test_wemem_run_from_a_folder_holding_a_csv_and_a_model_module(folder: Path):
    result = run(folder, "--dataset", "csv:data.csv", "--label", "kind", "--model", "mymodel:Net")
    assert result["experiment"]["model"] == "mymodel:Net" and result["experiment"]["label"] == "kind"
    assert result["experiment"]["dataset"] == f"csv:{folder / 'data.csv'}"  # relative to the working directory
    assert 0 <= result["runs"][0]["utility"] <= 1 and set(result["runs"][0]["attacks"]) == {"conf", "entr"}
    assert not (folder / "__pycache__").exists()  # importing the user's module wrote nothing beside it


def test_a_tables_label_column_is_label_unless_named(folder: Path):
    table().rename(columns={"kind": "label"}).to_csv(folder / "data.csv", index=False)
    result = run(folder, "--dataset", "csv:data.csv", "--model", "mymodel:Net")  # the very command
    assert result["experiment"]["label"] is None and result["runs"][0]["utility"] > 0


def test_wemem_run_on_a_parquet_table(folder: Path):
    table().to_parquet(folder / "data.parquet")
    run(folder, "--dataset", "parquet:data.parquet", "--label", "kind", "--model", "columnfc")


def test_wemem_run_on_a_loader_returning_a_dataset(folder: Path):
    run(folder, "--dataset", "myloader:dataset", "--model", "mymodel:Net")


def test_wemem_run_on_a_torchvision_model_at_small_input_size(folder: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 8, 8)).astype("float32")
    np.savez(folder / "images.npz", x=x, y=(x[:, 0].mean((1, 2)) > 0).astype(int))
    run(folder, "--dataset", "npz:images.npz", "--model", "torchvision:resnet18")


def installed_plugin(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny installed distribution: its dist-info (with entry points) and module on sys.path."""
    from wemem.data import DATASETS
    from wemem.models import MODELS

    (folder / "tinyplug_mod.py").write_text(MODEL_MODULE + LOADER_MODULE)
    info = folder / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[wemem.models]\ntinynet = tinyplug_mod:Net\n\n[wemem.datasets]\ntinydata = tinyplug_mod:pool\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    for registry in (MODELS, DATASETS):  # read the entry points again; forget what this test registers
        monkeypatch.setattr(registry, "_entry_points", None)
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "plugin_names", set())


def test_an_installed_packages_entry_points_are_listed_and_run(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    installed_plugin(folder, monkeypatch)
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "tinynet" in help_text and "tinydata" in help_text
    assert main(["run", "--model", "nosuchnet", "--serial"]) == 2
    assert "tinynet" in capsys.readouterr().err  # the error lists installed names with the built-in ones
    run(folder, "--dataset", "tinydata", "--model", "tinynet")


# --------------------------------------------------------------------------- a victim trained elsewhere


def train_outside(folder: Path) -> Path:
    """What a user does before wemem: encode the table, train the model on the member rows, save the state_dict."""
    sys.path.insert(0, str(folder))
    try:
        from mymodel import Net
    finally:
        sys.path.remove(str(folder))
    frame = table(rows=400, seed=1)
    frame["train"] = np.arange(len(frame)) % 2 == 0
    frame.to_csv(folder / "marked.csv", index=False)
    x, y = encode_table(frame, fit_encoding(frame, "kind", exclude=("train",)))
    members = frame["train"].to_numpy()
    torch.manual_seed(0)
    model = Net((x.shape[1],), 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.as_tensor(x[members])), torch.as_tensor(y[members])).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "victim.pt")
    return folder / "victim.pt"


CHECKPOINT_STUDY = {
    "study": {"name": "own", "n_trials": 1, "seed": 7, "sampler": "random"},
    "data": {"dataset": "csv:marked.csv", "label": "kind", "member_column": "train", "shadows": 2},
    "model": {"name": "mymodel:Net", "checkpoint": "victim.pt"},
    "training": {"pretrain_epochs": 3, "finetune_epochs": 2, "patience": 1},
    "pruning": {"sparsity": 0.5, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
    "attacks": {"names": ["conf", "entr"]},
}


def test_a_victim_from_a_checkpoint_is_not_pretrained_and_its_members_stay_its_own(
    folder: Path, monkeypatch: pytest.MonkeyPatch
):
    import wemem.assets
    from search.studyfile import parse_study
    from wemem.assets import prepare_assets

    checkpoint = train_outside(folder)
    experiment = parse_study(CHECKPOINT_STUDY).from_folder(folder).experiment()
    trained = []
    real = wemem.assets.pretrain_job
    monkeypatch.setattr(wemem.assets, "pretrain_job", lambda *a: trained.append(a[3]) or real(*a))
    assets = prepare_assets(experiment, folder / "cache")
    assert trained == [1, 2]  # the two shadows; never the victim (index 0)
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(assets.pretrained["victim"][k], saved[k]) for k in saved)
    frame = pd.read_csv(folder / "marked.csv")
    members = set(assets.pools.members.tolist())
    assert len(members) == int(frame["train"].sum()) == 200
    assert set(assets.split.victim.train.tolist()) == members
    others = (
        [s.train for s in assets.split.shadows]
        + [s.dev for s in assets.split.shadows]
        + [s.test for s in assets.split.shadows]
        + [assets.split.population, assets.split.victim.test]
    )
    assert all(not members & set(part.tolist()) for part in others)


def test_a_study_from_a_checkpoint_exports_its_own_code_and_apply_checks_it(
    ray_session, folder: Path, capsys: pytest.CaptureFixture
):
    import tomli_w

    train_outside(folder)
    (folder / "own.toml").write_text(tomli_w.dumps(CHECKPOINT_STUDY))
    storage = f"sqlite:///{folder / 'own.db'}"
    places = ["--storage", storage, "--cache-dir", str(folder / "cache")]
    assert main(["launch", str(folder / "own.toml"), *places]) == 0
    assert main(["export", "own", "--out", str(folder / "best.toml"), *places]) == 0
    import tomllib

    exported = tomllib.loads((folder / "best.toml").read_text())
    assert set(exported["own_code"]) == {"model", "checkpoint"}
    assert exported["own_code"]["model"]["reference"] == "mymodel:Net"
    assert exported["encoding"]["classes"] == ["no", "yes"]
    assert main(["report", "own", "--out", str(folder / "report"), *places]) == 0  # the audit names them too
    audited = json.loads((folder / "report" / "report.json").read_text())["reproducibility"]["own_code"]
    assert audited == exported["own_code"]
    assert exported["own_code"]["model"]["sha256"] in (folder / "report" / "report.html").read_text()
    capsys.readouterr()
    # apply in the folder that holds the module, the checkpoint and the table: rebuilt and re-evaluated
    assert main(["apply", str(folder / "best.toml"), "--out", str(folder / "applied"), *places[2:]]) == 2
    assert "--allow-code" in capsys.readouterr().err  # the export's code runs only when the user says so
    assert (
        main(["apply", str(folder / "best.toml"), "--out", str(folder / "applied"), *places[2:], "--allow-code"]) == 0
    )
    assert json.loads((folder / "applied" / "evaluation.json").read_text())["defense"] == "rmr"
    # the module's source changed since the study ran: refused before it is imported
    (folder / "mymodel.py").write_text(MODEL_MODULE.replace("24", "32"))
    assert main(["apply", str(folder / "best.toml"), "--out", str(folder / "again")]) == 2
    assert "has changed since the study ran" in capsys.readouterr().err
    (folder / "mymodel.py").unlink()
    assert main(["apply", str(folder / "best.toml"), "--out", str(folder / "again")]) == 2
    assert "which is missing here" in capsys.readouterr().err
    assert not (folder / "again").exists()


# ------------------------------------------------------------------------------- the API and the example


def test_the_python_api_launches_reads_and_exports_quietly(ray_session, folder: Path, capsys: pytest.CaptureFixture):
    from search import api

    definition = dict(
        CHECKPOINT_STUDY,
        data={"dataset": "csv:data.csv", "label": "kind", "shadows": 2},
        model={"name": "mymodel:Net"},
        study={"name": "api", "n_trials": 2, "sampler": "random"},
    )
    storage = f"sqlite:///{folder / 'api.db'}"
    study = api.launch(definition, storage=storage, cache_dir=str(folder / "cache"))
    assert capsys.readouterr().out == ""  # nothing printed unless asked
    assert list(study.trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert study.best[0]["defense"] == "rmr" and study.reference["utility"] > 0
    again = api.results("api", storage=storage)
    assert len(again.trials) == 2 and "api" in again.summary()
    more = api.resume("api", n_trials=1, storage=storage, cache_dir=str(folder / "cache"))
    assert len(more.trials) == 3
    assert api.export("api", folder / "best.json", storage=storage).is_file()


def test_the_shipped_example_runs_end_to_end(tmp_path: Path):
    """examples/own_model: its model module, CSV, study file and API script, as a user runs them."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "own_model" / "run.py"),
            "--storage",
            f"sqlite:///{tmp_path / 'own.db'}",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "best.toml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "confirmed on 2 fresh seeds" in done.stdout and (tmp_path / "best.toml").is_file()
