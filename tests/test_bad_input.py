"""Bad input never gets through: each case exits 2 with one message naming the problem and the fix, prints no
secret, and leaves the storage byte-for-byte as it was (nothing is created before everything is validated)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import tomli_w
from helpers import finished_rmr_study
from optuna.distributions import FloatDistribution

from search.cli import main
from search.storage import open_storage
from search.studyfile import parse_study

SECRET = "s3cr3t-pw-917"
BASE_STUDY = {
    "study": {"name": "base", "n_trials": 2, "sampler": "random"},
    "data": {"shadows": 2},
    "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1},
    "pruning": {"sparsity": 0.6, "steps": 1},
    "memscore": {"models": 2},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
}


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A storage holding one finished study, an export of it, and the inputs the cases break."""
    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    storage = finished_rmr_study(url, BASE_STUDY, str(tmp_path / "cache"))
    assert main(["export", "base", "--storage", url, "--out", str(tmp_path / "best.toml")]) == 0
    storage.engine.dispose()
    return tmp_path


def dump(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump())


def study_file(place: Path, name: str = "bad", file_name: str | None = None, **sections: dict) -> str:
    data = {key: dict(value) for key, value in BASE_STUDY.items()}
    data["study"] = dict(data["study"], name=name)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = place / (file_name or f"{name}.toml")
    path.write_text(tomli_w.dumps(data))
    return str(path)


def space(place: Path, **rmr_or_swmr: dict) -> str:
    defense, values = next(iter(rmr_or_swmr.items()))
    return study_file(place, search={"defenses": [defense], "enqueue_reference": False, "space": {defense: values}})


def npz(place: Path, **arrays: np.ndarray) -> str:
    path = place / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def launch_npz(place: Path, **arrays: np.ndarray) -> list[str]:
    return ["launch", study_file(place, data={"dataset": npz(place, **arrays)})]


def export_with(place: Path, change: Callable[[dict], None]) -> list[str]:
    import tomllib

    document = tomllib.loads((place / "best.toml").read_text())
    change(document)
    (place / "tampered.toml").write_text(tomli_w.dumps(document))
    return ["apply", str(place / "tampered.toml"), "--out", str(place / "applied")]


def other_export(place: Path) -> str:
    """best.toml with another setting: a second export to warm-start from."""
    import tomllib

    document = tomllib.loads((place / "best.toml").read_text())
    document["best"]["settings"]["lambda_mem"] = 0.05
    (place / "other.toml").write_text(tomli_w.dumps(document))
    return "other.toml"


def write(place: Path, name: str, content: bytes) -> str:
    (place / name).write_bytes(content)
    return str(place / name)


PG_SECRET_URL = f"postgresql+psycopg://wemem:{SECRET}@127.0.0.1:1/none"
X = np.random.default_rng(0).normal(size=(200, 4))
Y = np.arange(200) % 3

# (id, argv builder, expected words in the message); the storage is --storage PLACE/wemem.db unless the case
# gives its own --storage
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    # 10: secrets never printed
    ("url-no-scheme", lambda p: ["status", "--storage", f"u:{SECRET}@host/db"], ["not a URL"]),
    ("url-no-scheme-resume", lambda p: ["resume", "base", "--storage", f"u:{SECRET}@host/db"], ["not a URL"]),
    ("url-password", lambda p: ["status", "--storage", PG_SECRET_URL], ["cannot open storage"]),
    (
        "url-query-password",
        lambda p: ["status", "--storage", f"postgresql+psycopg://wemem@127.0.0.1:1/none?password={SECRET}"],
        ["cannot open storage"],
    ),
    (
        "url-password-export",
        lambda p: ["export", "base", "--out", str(p / "x.toml"), "--storage", PG_SECRET_URL],
        ["cannot open storage"],
    ),
    ("url-password-launch", lambda p: ["launch", study_file(p), "--storage", PG_SECRET_URL], ["cannot open storage"]),
    # 11: fixed values, infinities and requirements checked before any work
    ("space-width-zero", lambda p: ["launch", space(p, swmr={"width_fraction": 0})], ["width_fraction", "outside"]),
    ("space-order-sideways", lambda p: ["launch", space(p, swmr={"order": "sideways"})], ["sideways", "h2l"]),
    ("space-risky-1.5", lambda p: ["launch", space(p, rmr={"risky_fraction": 1.5})], ["risky_fraction", "outside"]),
    (
        "space-stride-over-width",
        lambda p: ["launch", space(p, swmr={"stride_fraction": 0.15, "width_fraction": 0.1})],
        ["stride_fraction", "below"],
    ),
    ("space-not-a-number", lambda p: ["launch", space(p, rmr={"lambda_mem": "abc"})], ["lambda_mem", "not a finite"]),
    ("space-inf-range", lambda p: ["launch", space(p, rmr={"lambda_mem": [0.01, float("inf")]})], ["lambda_mem"]),
    ("training-lr-inf", lambda p: ["launch", study_file(p, training={"lr": float("inf")})], ["lr", "finite"]),
    (
        "lira-one-shadow",
        lambda p: ["launch", study_file(p, data={"shadows": 1}, attacks={"names": ["lira"]})],
        ["lira", "at least 2 shadow"],
    ),
    (
        "run-settings-infinity",
        lambda p: ["run", "--defense", "rmr", "--settings", "lambda_mem=Infinity", "risky_fraction=0.2", "--serial"],
        ["lambda_mem", "finite"],
    ),
    ("run-lr-inf", lambda p: ["run", "--lr", "inf", "--serial"], ["lr", "finite"]),
    (
        "run-lira-one-shadow",
        lambda p: ["run", "--shadows", "1", "--attacks", "lira", "--serial"],
        ["lira", "at least 2 shadow"],
    ),
    # 7 and 12: data problems stop a launch before a study is created
    ("npz-nan", lambda p: launch_npz(p, x=np.where(X > 2, np.nan, X), y=Y), ["NaN"]),
    ("npz-one-class", lambda p: launch_npz(p, x=X, y=np.zeros(200, dtype=int)), ["single class"]),
    ("npz-three-samples", lambda p: launch_npz(p, x=X[:3], y=Y[:3]), ["too few"]),
    ("npz-object", lambda p: launch_npz(p, x=np.array([{"a": 1}] * 200, dtype=object), y=Y), ["objects"]),
    ("npz-strings", lambda p: launch_npz(p, x=np.array([["a", "b"]] * 200), y=Y), ["x must be numbers"]),
    ("npz-empty", lambda p: launch_npz(p, x=np.zeros((0, 4)), y=np.zeros(0)), ["too few"]),
    (
        "npz-text-file",
        lambda p: ["launch", study_file(p, data={"dataset": "npz:" + write(p, "t.npz", b"1,2\n3,4\n")})],
        ["not an .npz archive", "numpy.savez"],
    ),
    (
        "missing-dataset-file",
        lambda p: ["launch", study_file(p, data={"dataset": "location"}), "--data-root", str(p)],
        ["data_complete.npz"],
    ),
    ("run-npz-nan", lambda p: ["run", "--dataset", npz(p, x=np.where(X > 2, np.nan, X), y=Y), "--serial"], ["NaN"]),
    # 8: a conflicting definition names the differing key
    (
        "definition-conflict",
        lambda p: ["launch", study_file(p, name="base", training={"lr": 0.01})],
        ["training.lr", "stored 0.001", "wemem delete base --yes"],
    ),
    # 14: apply checks its file before starting Ray
    (
        "apply-pickle-model-pt",
        lambda p: ["apply", write(p, "model.pt", b"\x80\x04\x95" + os.urandom(64)), "--out", str(p / "o")],
        ["not an export file"],
    ),
    ("apply-missing-defense", lambda p: export_with(p, lambda d: d["best"].pop("defense")), ["best.defense"]),
    ("apply-best-oops", lambda p: export_with(p, lambda d: d.update(best="oops")), ["[best] must be a table"]),
    ("apply-unknown-defense", lambda p: export_with(p, lambda d: d["best"].update(defense="magic")), ["magic"]),
    (
        "apply-bad-settings",
        lambda p: export_with(p, lambda d: d["best"]["settings"].update(risky_fraction=5)),
        ["risky_fraction", "invalid"],
    ),
    (
        "apply-binary-toml",
        lambda p: ["apply", write(p, "b.toml", os.urandom(64) + b"\xff"), "--out", str(p / "o")],
        ["not text"],
    ),
    # 15: storage and command-line problems
    (
        "read-only-sqlite",
        lambda p: [
            "launch",
            study_file(p, name="new"),
            "--storage",
            f"sqlite:///file:{p / 'wemem.db'}?mode=ro&uri=true",
        ],
        ["read-only"],
    ),
    ("binary-study-file", lambda p: ["launch", write(p, "s.toml", b"\x00\x01\xfe\xff" * 8)], ["not text"]),
    (
        "export-missing-folder",
        lambda p: ["export", "base", "--out", str(p / "nowhere" / "best.toml")],
        ["does not exist", "mkdir"],
    ),
    ("resume-negative-trials", lambda p: ["resume", "base", "--n-trials", "-1"], ["--n-trials", "at least 1"]),
    ("resume-negative-gpus", lambda p: ["resume", "base", "--gpus-per-trial", "-1"], ["--gpus-per-trial"]),
    ("stale-after-zero", lambda p: ["resume", "base", "--stale-after", "0"], ["--stale-after"]),
    ("status-no-storage", lambda p: ["status", "--storage", f"sqlite:///{p / 'none.db'}"], ["no storage at"]),
    (
        "export-no-storage",
        lambda p: ["export", "base", "--out", str(p / "x.toml"), "--storage", f"sqlite:///{p / 'none.db'}"],
        ["no storage at"],
    ),
    ("delete-without-yes", lambda p: ["delete", "base"], ["--yes"]),
    (
        "confirm-unknown-attack",
        lambda p: ["confirm", "base", "--attacks", "conf,magic"],
        ["unknown attack 'magic'", "samia"],
    ),
    ("confirm-no-attack", lambda p: ["confirm", "base", "--attacks", " , "], ["no attack named", "all"]),
    # [search] warm_start: every source read and checked before anything is stored
    (
        "warm-start-missing-export",
        lambda p: ["launch", study_file(p, search={"warm_start": ["nope.toml"]})],
        ["warm_start nope.toml", "does not exist"],
    ),
    (
        "warm-start-not-an-export-name",
        lambda p: ["launch", study_file(p, search={"warm_start": ["best.txt"]})],
        ["neither an export file", "study:NAME"],
    ),
    (
        "warm-start-unknown-study",
        lambda p: ["launch", study_file(p, search={"warm_start": ["study:ghost"]})],
        ["no study named 'ghost'", "base"],
    ),
    (
        "warm-start-bad-study-name",
        lambda p: ["launch", study_file(p, search={"warm_start": ["study:a b"]})],
        ["after 'study:'"],
    ),
    (
        "warm-start-defense-not-searched",
        lambda p: ["launch", study_file(p, search={"defenses": ["rsw"], "warm_start": ["best.toml"]})],
        ["uses defense 'rmr'", "does not search"],
    ),
    (
        "warm-start-outside-space",
        lambda p: [
            "launch",
            study_file(p, search={"warm_start": ["study:base"], "space": {"rmr": {"risky_fraction": [0.3, 0.5]}}}),
        ],
        ["study:base#0", "risky_fraction = 0.2", "widen [search.space.rmr]"],
    ),
    (
        "warm-start-too-many",
        lambda p: [
            "launch",
            study_file(p, study={"n_trials": 1}, search={"warm_start": ["best.toml", other_export(p)]}),
        ],
        ["enqueues 2 settings", "n_trials = 1"],
    ),
    (
        "warm-start-top-zero",
        lambda p: ["launch", study_file(p, search={"warm_start": ["study:base"], "warm_start_top": 0})],
        ["warm_start_top", "greater than or equal to 1"],
    ),
    (
        "warm-start-no-setting",
        lambda p: ["launch", study_file(p, search={"warm_start": [write(p, "plain.toml", b'study = "x"\n')]})],
        ["has no [best] setting"],
    ),
    (
        "repeats-zero",
        lambda p: ["launch", study_file(p, search={"repeats": 0})],
        ["search.repeats", "greater than or equal to 1"],
    ),
    (
        "repeats-too-many",
        lambda p: ["launch", study_file(p, search={"repeats": 17})],
        ["search.repeats", "less than or equal to 16"],
    ),
    (
        "target-draws-zero",
        lambda p: ["launch", study_file(p, search={"target_draws": 0})],
        ["search.target_draws", "greater than or equal to 1"],
    ),
    (
        "repeats-not-a-count",
        lambda p: ["launch", study_file(p, search={"repeats": 2.5})],
        ["search.repeats", "integer"],
    ),
    (
        "warm-start-twice",
        lambda p: ["launch", study_file(p, search={"warm_start": ["best.toml", "best.toml"]})],
        ["lists a source twice"],
    ),
    (
        "confirm-compare-unknown-defense",
        lambda p: ["confirm", "base", "--compare", "shield"],
        ["unknown defense 'shield'", "rsw"],
    ),
    (
        "confirm-compare-bad-setting",
        lambda p: ["confirm", "base", "--compare", "rsw", "width_fraction=2"],
        ["width_fraction"],
    ),
    (
        "confirm-compare-not-key-value",
        lambda p: ["confirm", "base", "--compare", "rmr", "lambda_mem"],
        ["not KEY=VALUE"],
    ),
    ("unknown-study", lambda p: ["status", "ghost"], ["no study named 'ghost'", "base"]),
]


def empty_file(place: Path, name: str = "empty.db") -> str:
    (place / name).touch()
    return f"sqlite:///{place / name}"


def foreign_sqlite(place: Path) -> str:
    """Another program's SQLite database: wemem must neither read it as a storage nor add tables to it."""
    with sqlite3.connect(place / "other.db") as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    return f"sqlite:///{place / 'other.db'}"


def stays_empty(name: str) -> Callable[[Path], None]:
    def check(place: Path) -> None:
        assert (place / name).stat().st_size == 0  # no schema written into it

    return check


def foreign_untouched(place: Path) -> None:
    assert "CREATE TABLE notes" in dump(place / "other.db") and "studies" not in dump(place / "other.db")


def running_trial(place: Path) -> None:
    """A trial of 'base' that a live launcher runs: RUNNING, with a fresh heartbeat, from this process."""
    from search.storage import PROCESS_ATTR, process_identity

    storage = open_storage(f"sqlite:///{place / 'wemem.db'}")
    study = optuna.load_study(study_name="base", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    storage.set_trial_system_attr(trial._trial_id, PROCESS_ATTR, process_identity())
    storage.engine.dispose()


def plain_optuna_study(place: Path) -> None:
    storage = open_storage(f"sqlite:///{place / 'wemem.db'}")
    optuna.create_study(study_name="plain", storage=storage).add_trial(
        optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": FloatDistribution(0, 2)}, value=1.0)
    )
    storage.engine.dispose()


def with_setup(setup: Callable[[Path], None], argv: list[str]) -> Callable[[Path], list[str]]:
    return lambda p: (setup(p), argv)[1]


def hostile_cifar(place: Path) -> str:
    """A data root whose CIFAR-10 batches, unpickled naively, would create the file ``pwned`` (as a received
    export, study file or storage could name it)."""
    from test_bad_data import hostile_entries, write_cifar10_layout

    root = place / "received-data"
    write_cifar10_layout(root, hostile_entries(place / "pwned")["builtins.open"])
    return str(root)


def no_file(name: str) -> Callable[[Path], None]:
    def check(place: Path) -> None:
        assert not (place / name).exists()

    return check


# (id, argv builder, expected words, extra check of what was left behind) -- issue 18's adversarial trial
HARDENING: list[tuple[str, Callable[[Path], list[str]], list[str], Callable[[Path], None] | None]] = [
    # names and numbers
    (
        "study-name-300",
        lambda p: ["launch", study_file(p, name="a" * 300, file_name="long.toml")],
        ["study.name", "at most 100"],
        None,
    ),
    ("study-seed-negative", lambda p: ["launch", study_file(p, study={"seed": -1})], ["study.seed", "0"], None),
    ("study-seed-2-62", lambda p: ["launch", study_file(p, study={"seed": 2**62})], ["study.seed", "2147483647"], None),
    ("run-seed-negative", lambda p: ["run", "--seed", "-1", "--serial"], ["--seed", "[0, 2147483647]"], None),
    ("run-seed-huge", lambda p: ["run", "--seed", str(2**62), "--serial"], ["--seed", "[0, 2147483647]"], None),
    (
        "resume-cpus-zero",
        lambda p: ["resume", "base", "--cpus-per-trial", "0"],
        ["--cpus-per-trial", "more than 0"],
        None,
    ),
    ("run-cpus-per-model-zero", lambda p: ["run", "--cpus-per-model", "0"], ["--cpus-per-model", "more than 0"], None),
    (
        "space-stride-range-over-width",
        lambda p: ["launch", space(p, swmr={"stride_fraction": [0.15, 0.2], "width_fraction": [0.05, 0.16]})],
        ["stride_fraction (from 0.15)", "every sampled width", "at most 0.045"],
        None,
    ),
    (
        "space-fixed-stride-over-width-range",
        lambda p: ["launch", space(p, rsw={"stride_fraction": 0.1, "width_fraction": [0.05, 0.5]})],
        ["stride_fraction (fixed at 0.1)", "from 0.05", "at least 0.105"],
        None,
    ),
    (
        "space-stride-ratio-range",
        lambda p: ["launch", space(p, rsw={"stride_ratio": [0.1, 0.9]})],
        ["rsw.stride_ratio", "leaves the allowed [0.02, 0.5]"],
        None,
    ),
    ("space-advreg-k-fraction", lambda p: ["launch", space(p, advreg={"k": 2.5})], ["advreg.k", "whole numbers"], None),
    (
        "space-advreg-k-range-fraction",
        lambda p: ["launch", space(p, advreg={"k": [1.5, 4]})],
        ["advreg.k", "whole numbers"],
        None,
    ),
    # storage
    (
        "status-empty-file",
        lambda p: ["status", "--storage", empty_file(p)],
        ["no studies in storage"],
        stays_empty("empty.db"),
    ),
    (
        "export-empty-file",
        lambda p: ["export", "base", "--out", str(p / "x.toml"), "--storage", empty_file(p)],
        ["no studies in storage"],
        stays_empty("empty.db"),
    ),
    (
        "delete-empty-file",
        lambda p: ["delete", "base", "--yes", "--storage", empty_file(p)],
        ["no studies in storage"],
        stays_empty("empty.db"),
    ),
    (
        "report-empty-file",
        lambda p: ["report", "base", "--out", str(p / "rep"), "--storage", empty_file(p)],
        ["no studies in storage"],
        stays_empty("empty.db"),
    ),
    (
        "status-foreign-sqlite",
        lambda p: ["status", "--storage", foreign_sqlite(p)],
        ["no studies in storage"],
        foreign_untouched,
    ),
    ("storage-is-folder", lambda p: ["status", "--storage", f"sqlite:///{p}"], ["is a folder", "wemem.db"], None),
    (
        "launch-storage-is-folder",
        lambda p: ["launch", study_file(p, name="new"), "--storage", f"sqlite:///{p}"],
        ["is a folder"],
        None,
    ),
    (
        "launch-memory-storage",
        lambda p: ["launch", study_file(p, name="new"), "--storage", "sqlite:///:memory:"],
        ["in-memory", "sqlite:///wemem.db"],
        None,
    ),
    (
        "launch-sqlite-no-file",
        lambda p: ["launch", study_file(p, name="new"), "--storage", "sqlite://"],
        ["in-memory"],
        None,
    ),
    (
        "status-plain-optuna-study",
        with_setup(plain_optuna_study, ["status", "plain"]),
        ["not created by wemem", "optuna-dashboard"],
        None,
    ),
    (
        "delete-while-a-launcher-runs",
        with_setup(running_trial, ["delete", "base", "--yes"]),
        ["being run", "fresh heartbeats", "--force"],
        None,
    ),
    # inputs checked before anything is stored or started
    ("study-file-is-folder", lambda p: ["launch", str(p)], ["is a folder"], None),
    (
        "launch-model-does-not-fit",
        lambda p: ["launch", study_file(p, name="new", model={"name": "resnet18"})],
        ["resnet18", "columnfc"],
        None,
    ),
    ("run-model-does-not-fit", lambda p: ["run", "--model", "resnet18"], ["resnet18", "columnfc"], None),
    (
        "memscore-model-does-not-fit",
        lambda p: ["memscore", "compute", "--model", "resnet18", "--cache-dir", str(p / "cache")],
        ["resnet18", "columnfc"],
        None,
    ),
    (
        "launch-cache-in-proc",
        lambda p: ["launch", study_file(p, name="new"), "--cache-dir", "/proc/wemem-cache"],
        ["cache folder"],
        None,
    ),
    (
        "launch-cache-is-a-file",
        lambda p: ["launch", study_file(p, name="new"), "--cache-dir", str(p / "new.toml")],
        ["cache folder", "not a folder"],
        None,
    ),
    ("resume-cache-in-proc", lambda p: ["resume", "base", "--cache-dir", "/proc/wemem-cache"], ["cache folder"], None),
    (
        "launch-hostile-cifar-pickle",
        lambda p: [
            "launch",
            study_file(p, name="new", data={"dataset": "cifar10"}, model={"name": "resnet18"}),
            "--data-root",
            hostile_cifar(p),
        ],
        ["not a genuine CIFAR batch", "nothing was run"],
        no_file("pwned"),
    ),
    (
        "run-hostile-cifar-pickle",
        lambda p: ["run", "--dataset", "cifar10", "--model", "resnet18", "--serial", "--data-root", hostile_cifar(p)],
        ["not a genuine CIFAR batch"],
        no_file("pwned"),
    ),
]


# ------------------------------------------------------------------- your own model and data (issue 21)

NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(input_shape[0], num_classes)

    def forward(self, x):
        return self.fc(x)
"""
PLUGINS = (
    NET
    + """

class Wide(Net):
    def __init__(self, input_shape, num_classes):
        super().__init__(input_shape, num_classes)
        self.fc = nn.Linear(input_shape[0], 2 * num_classes)


class NoWeights(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        return x[:, : self.num_classes]


class Other(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.a = nn.Linear(input_shape[0], 7)
        self.b = nn.Linear(7, num_classes)

    def forward(self, x):
        return self.b(self.a(x))


def one_argument(input_shape):
    return Net(input_shape, 3)


import numpy as np

RNG = np.random.default_rng(0)


def labels_one_to_three(data_root, seed):
    return RNG.normal(size=(200, 4)), np.arange(200) % 3 + 1


def nan_features(data_root, seed):
    x = RNG.normal(size=(200, 4))
    x[3, 1] = np.nan
    return x, np.arange(200) % 3


def a_string(data_root, seed):
    return "data.csv"
"""
)


def plugins(place: Path) -> None:
    (place / "plugs.py").write_text(PLUGINS)
    (place / "broken.py").write_text("raise RuntimeError('this module cannot be imported')\n")


def table_file(place: Path, name: str = "t.csv", **columns: object) -> str:
    import pandas as pd

    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": Y, "train": np.arange(200) % 2 == 0})
    for column, values in columns.items():
        if values is None:
            frame = frame.drop(columns=column)
        else:
            frame[column] = values
    frame.to_csv(place / name, index=False)
    return f"csv:{place / name}"


def own(place: Path, data: dict | None = None, model: dict | None = None) -> list[str]:
    """Launch a study of the place's plug-ins / tables (written first, so they are part of what must stay)."""
    plugins(place)
    data = {"label": "label", **(data or {})}
    data.setdefault("dataset", None) or data.update(dataset=table_file(place))
    return [
        "launch",
        study_file(
            place,
            name="own",
            data={k: v for k, v in data.items() if v is not None},
            model={"name": "plugs:Net", **(model or {})},
        ),
    ]


def checkpoint(place: Path, state: object, name: str = "victim.pt") -> str:
    import torch

    torch.save(state, place / name)
    return name


def net_state(place: Path, kind: str) -> object:
    """A checkpoint of plugs:Net for the table's 2 features and 3 classes, of another model, or pickled."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("plugs_for_checkpoint", place / "plugs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if kind == "pickled":
        return torch.nn.Sequential(torch.nn.Linear(3, 3))  # a whole pickled model: refused unread
    if kind == "other":
        return module.Other((3,), 3).state_dict()
    return {"fc.weight": torch.zeros(3, 5), "fc.bias": torch.zeros(3)}  # Net's keys, shapes of 5 features


def with_checkpoint(place: Path, kind: str) -> list[str]:
    own(place, data={"member_column": "train"})  # writes the plug-ins and the table
    sys.modules.pop("plugs", None)
    argv_model = {"name": "plugs:Net", "checkpoint": checkpoint(place, net_state(place, kind))}
    return [
        "launch",
        study_file(
            place,
            name="own",
            data={"dataset": table_file(place), "label": "label", "member_column": "train"},
            model=argv_model,
        ),
    ]


OWN_CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    (
        "plugin-module-missing",
        lambda p: own(p, model={"name": "nosuchmodule:Net"}),
        ["cannot import module 'nosuchmodule'", "beside the study file"],
    ),
    ("plugin-attribute-missing", lambda p: own(p, model={"name": "plugs:Nope"}), ["has no attribute 'Nope'", "Net"]),
    (
        "plugin-import-fails",
        lambda p: own(p, model={"name": "broken:Net"}),
        ["importing module 'broken' failed", "cannot be imported"],
    ),
    ("plugin-standard-library", lambda p: own(p, model={"name": "os:system"}), ["standard library", "refused"]),
    (
        "plugin-a-dependency-numpy-load",
        lambda p: own(p, data={"dataset": "numpy:load", "label": None, "data_root": write(p, "evil.npy", b"x")}),
        ["'numpy'", "installed code, not a module file of", "refused without importing"],
    ),
    (
        "plugin-torchvision-by-import-path",
        lambda p: own(p, model={"name": "torchvision.models:resnet18"}),
        ["torchvision:NAME"],
    ),
    (
        "plugin-signature",
        lambda p: own(p, model={"name": "plugs:one_argument"}),
        ["cannot be called as factory(input_shape, num_classes)"],
    ),
    ("plugin-output-shape", lambda p: own(p, model={"name": "plugs:Wide"}), ["outputs of shape [2, 6]", "[2, 3]"]),
    ("plugin-no-prunable-weights", lambda p: own(p, model={"name": "plugs:NoWeights"}), ["no prunable weights"]),
    ("plugin-not-an-import-path", lambda p: own(p, model={"name": "plugs.Net"}), ["unknown model 'plugs.Net'"]),
    (
        "torchvision-unknown",
        lambda p: own(p, model={"name": "torchvision:resnet9000"}),
        ["not a torchvision classification model", "resnet18"],
    ),
    ("checkpoint-pickled-model", lambda p: with_checkpoint(p, "pickled"), ["weights_only=True", "state_dict()"]),
    ("checkpoint-other-keys", lambda p: with_checkpoint(p, "other"), ["does not fit model 'plugs:Net'", "missing"]),
    ("checkpoint-other-shapes", lambda p: with_checkpoint(p, "shapes"), ["shapes differ", "fc.weight"]),
    (
        "checkpoint-missing-file",
        lambda p: own(p, data={"member_column": "train"}, model={"checkpoint": "nope.pt"}),
        ["nope.pt does not exist", "state_dict"],
    ),
    ("checkpoint-without-member-column", lambda p: own(p, model={"checkpoint": "victim.pt"}), ["member_column"]),
    (
        "member-column-not-boolean",
        lambda p: [
            "launch",
            study_file(
                p,
                name="own",
                data={"dataset": table_file(p, train=np.arange(200) % 3), "label": "label", "member_column": "train"},
                model={"name": "columnfc", "checkpoint": checkpoint(p, {"x": __import__("torch").zeros(1)})},
            ),
        ],
        ["member column 'train'", "true/false"],
    ),
    (
        "loader-labels-not-0-to-C-1",
        lambda p: own(p, data={"dataset": "plugs:labels_one_to_three", "label": None}),
        ["labels must be the integers 0..C-1", "0..2"],
    ),
    ("loader-nan-features", lambda p: own(p, data={"dataset": "plugs:nan_features", "label": None}), ["NaN"]),
    (
        "loader-returns-a-string",
        lambda p: own(p, data={"dataset": "plugs:a_string", "label": None}),
        ["returned a str", "a loader returns"],
    ),
    (
        "table-without-label-key",
        lambda p: ["launch", study_file(p, name="own", data={"dataset": table_file(p, label=None, kind=Y)})],
        ["no label column 'label' (the default)", "[data] label", "kind"],
    ),
    ("table-label-column-missing", lambda p: own(p, data={"label": "species"}), ["no label column 'species'", "a, b"]),
    (
        "table-label-constant",
        lambda p: own(p, data={"dataset": table_file(p, label=np.zeros(200, int))}),
        ["is constant"],
    ),
    (
        "table-class-too-rare",
        lambda p: own(p, data={"dataset": table_file(p, label=np.r_[np.zeros(197, int), [1, 1, 1]])}),
        ["fewer than 10 samples"],
    ),
    (
        "table-nan-feature",
        lambda p: own(p, data={"dataset": table_file(p, a=np.r_[[np.nan], X[1:, 0]])}),
        ["column 'a' has 1 missing"],
    ),
    (
        "table-not-a-table",
        lambda p: own(p, data={"dataset": "csv:" + write(p, "bin.csv", b"\x00\xff\xfe" * 50)}),
        ["csv"],
    ),
    (
        "run-table-without-label",
        lambda p: ["run", "--dataset", table_file(p, label=None, kind=Y), "--serial"],
        ["no label column 'label'", "--label COLUMN"],
    ),
    (
        "sampler-unknown",
        lambda p: ["launch", study_file(p, name="own", study={"sampler": "cmaes"})],
        ["study.sampler", "'tpe', 'random', 'gp' or 'nsgaii'"],
    ),
    (
        "sampler-nsgaii-single-objective",
        lambda p: ["launch", study_file(p, name="own", study={"sampler": "nsgaii"})],
        ["nsgaii", "objective.mode 'pareto'"],
    ),
    (
        "run-plugin-model-missing",
        lambda p: ["run", "--model", "nosuchmodule:Net", "--serial"],
        ["cannot import module 'nosuchmodule'"],
    ),
]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return int(exit_info.code)


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with a file's bytes (None for folders and links): to show nothing changed."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(folder.rglob("*"))
    }


def assert_refused(place: Path, argv: list[str], expected: list[str], capsys: pytest.CaptureFixture) -> None:
    """The command exits 2 with one message holding every expected phrase, no traceback and no secret, and
    leaves the storage and every file under ``place`` as they were (nothing created, no probe or temporary)."""
    before, files_before = dump(place / "wemem.db"), tree(place)

    code = run_cli(argv)

    out, err = capsys.readouterr()
    assert code == 2, out + err
    message = (out + err).replace("\n", " ")
    for words in expected:
        assert words in message, message
    assert SECRET not in out + err
    assert "Traceback" not in err
    assert dump(place / "wemem.db") == before  # the storage is unchanged
    assert tree(place) == files_before


ALL_CASES = [(*case, None) for case in CASES] + HARDENING + [(*case, no_file(".wemem-cache")) for case in OWN_CASES]


@pytest.mark.parametrize("argv_of, expected, check", [c[1:] for c in ALL_CASES], ids=[c[0] for c in ALL_CASES])
def test_bad_input_exits_2_names_the_problem_and_changes_nothing(
    place: Path, argv_of, expected, check, capsys, monkeypatch: pytest.MonkeyPatch
):
    import search.cli._science
    import search.execution._cluster
    import search.execution._jobs
    import search.execution._launcher

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started before the input was checked")

    for module in (search.execution._cluster, search.execution._launcher):
        monkeypatch.setattr(module, "init_ray", no_ray)
    monkeypatch.setattr(search.execution._jobs, "RayMap", no_ray)
    monkeypatch.setenv("WEMEM_STORAGE", f"sqlite:///{place / 'wemem.db'}")
    monkeypatch.chdir(place)
    argv = argv_of(place)  # some cases first put a study or a file in place: part of what must stay
    assert_refused(place, argv, expected, capsys)
    if check is not None:
        check(place)


def test_every_secret_of_a_url_is_masked():
    from search.storage import redact, scrub

    for url in (
        f"u:{SECRET}@host/db",
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql://u@h/db?password={SECRET}&sslmode=require",
        f"postgresql+psycopg://u:{SECRET}@h:5/db?sslpassword={SECRET}x",
    ):
        assert SECRET not in redact(url)
        assert SECRET not in scrub(f"failed to connect with {url} and password={SECRET}", url)
    assert redact("sqlite:///wemem.db") == "sqlite:///wemem.db"
    assert "sslmode=require" in redact(f"postgresql://u@h/db?password={SECRET}&sslmode=require")


def test_delete_with_yes_removes_the_study(place: Path, capsys):
    url = f"sqlite:///{place / 'wemem.db'}"
    assert main(["delete", "base", "--yes", "--storage", url]) == 0
    assert "deleted study 'base'" in capsys.readouterr().out
    assert main(["status", "--storage", url]) == 0
    assert "none" in capsys.readouterr().out


def test_a_launcher_with_other_resources_joins_the_study(place: Path):
    from search.study import definition_differences

    stored = parse_study(BASE_STUDY)
    gpu = parse_study(
        dict(
            BASE_STUDY,
            resources={"gpus_per_trial": 1, "cpus_per_trial": 4},
            data={"shadows": 2, "data_root": "/elsewhere"},
        )
    )
    assert definition_differences(stored, gpu) == []
    other = parse_study(dict(BASE_STUDY, pruning={"sparsity": 0.7, "steps": 1}))
    assert definition_differences(stored, other) == ["pruning.sparsity: stored 0.6, file 0.7"]


def test_exported_json_of_status_is_unaffected(place: Path, capsys):
    """Read-only commands work on the storage they are given and create nothing."""
    url = f"sqlite:///{place / 'wemem.db'}"
    before = dump(place / "wemem.db")
    assert main(["status", "base", "--storage", url]) == 0
    assert main(["export", "base", "--storage", url, "--out", str(place / "again.json")]) == 0
    assert json.loads((place / "again.json").read_text())["best"]["trial_number"] == 0
    assert dump(place / "wemem.db") == before


def test_status_lists_a_plain_optuna_study_beside_ours(place: Path, capsys):
    plain_optuna_study(place)
    assert main(["status", "--storage", f"sqlite:///{place / 'wemem.db'}"]) == 0
    out = capsys.readouterr().out
    assert "study 'base': 2 COMPLETE" in out
    assert "study 'plain': not a wemem study (no stored definition); 1 trial(s)" in out


def test_a_copied_study_is_titled_and_hinted_by_its_own_name(place: Path, capsys):
    url = f"sqlite:///{place / 'wemem.db'}"
    optuna.copy_study(from_study_name="base", from_storage=url, to_storage=url, to_study_name="copy")
    assert main(["status", "copy", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "study 'copy': 2 COMPLETE" in out and "wemem resume copy" in out and "export copy" in out
    assert "'base'" not in out and " base " not in out


def test_status_says_when_a_running_trial_has_lost_its_launcher(place: Path, capsys):
    """A launcher SIGKILLed on this machine: its trial is still RUNNING, status says so and how to recover."""
    import subprocess
    import sys

    identity = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from search.storage import process_identity; print(json.dumps(process_identity()))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )  # a process that has exited since
    storage = open_storage(f"sqlite:///{place / 'wemem.db'}")
    study = optuna.load_study(study_name="base", storage=storage)
    from search.storage import PROCESS_ATTR

    dead, alive = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)
    storage.set_trial_system_attr(dead._trial_id, PROCESS_ATTR, identity)
    running_trial(place)  # and one a live launcher runs
    assert main(["status", "base", "--storage", f"sqlite:///{place / 'wemem.db'}"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("#")}
    assert "launcher on this machine has exited" in lines[f"#{dead.number}"]
    assert "wemem resume base" in lines[f"#{dead.number}"]
    assert "launcher" not in lines[f"#{alive.number}"]  # no heartbeat yet, no process recorded: no verdict
    assert "launcher" not in lines[f"#{alive.number + 1}"]  # alive: no hint


def test_delete_force_removes_a_study_a_launcher_still_runs(place: Path, capsys):
    running_trial(place)
    url = f"sqlite:///{place / 'wemem.db'}"
    assert main(["delete", "base", "--yes", "--force", "--storage", url]) == 0
    assert "deleted study 'base'" in capsys.readouterr().out


def test_the_confirm_hint_names_only_attacks_the_study_can_run():
    from search.results._text import judges_for

    assert judges_for(parse_study(BASE_STUDY)) == "all"  # 2 shadows: LiRA runs
    one_shadow = parse_study({**BASE_STUDY, "data": {"shadows": 1}})
    assert "lira" not in judges_for(one_shadow).split(",") and "conf" in judges_for(one_shadow).split(",")


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--cpus-per-trial", "1000", ["1000 CPU", "has 2 CPU", "ray start"]),
        ("--gpus-per-trial", "1", ["1 GPU", "0 GPU", "--gpus-per-trial"]),
    ],
)
def test_a_request_the_cluster_cannot_grant_exits_2_before_anything_runs(
    ray_session, place: Path, flag, value, words, capsys
):
    url = f"sqlite:///{place / 'wemem.db'}"
    before = dump(place / "wemem.db")
    assert main(["resume", "base", "--storage", url, flag, value, "--cache-dir", str(place / "cache")]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert all(w in err for w in words), err
    assert dump(place / "wemem.db") == before and not (place / "cache").exists()


def test_run_refuses_a_gpu_share_the_cluster_lacks(ray_session, capsys):
    assert main(["run", "--gpus-per-model", "1", "--shadows", "1", "--attacks", "conf"]) == 2
    assert "--gpus-per-model" in capsys.readouterr().err
