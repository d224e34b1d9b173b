"""Bad input never gets through: each case exits 2 with one message naming the problem and the fix, prints no
secret, and leaves the storage byte-for-byte as it was (nothing is created before everything is validated)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pytest
import tomli_w
from optuna.distributions import FloatDistribution

from search.cli import main
from search.config import parse_study
from search.storage import create_or_load_study, open_storage

SECRET = "s3cr3t-pw-917"
BASE_STUDY = {"study": {"name": "base", "n_trials": 2, "sampler": "random"}, "data": {"shadows": 2},
              "training": {"pretrain_epochs": 2, "finetune_epochs": 2, "patience": 1},
              "pruning": {"sparsity": 0.6, "steps": 1}, "memscore": {"models": 2},
              "search": {"defenses": ["rmr"], "enqueue_reference": False}}


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A storage holding one finished study, an export of it, and the inputs the cases break."""
    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    storage = open_storage(url)
    study, _ = create_or_load_study(parse_study(BASE_STUDY), storage, {"cache_dir": str(tmp_path / "cache")})
    study.set_user_attr("reference", {"utility": 0.9, "privacy": 0.6, "strongest_attack": "conf"})
    for value in (0.55, 0.57):
        study.add_trial(optuna.trial.create_trial(
            params={"rmr.lambda_mem": 0.1, "rmr.risky_fraction": 0.2}, value=value,
            distributions={"rmr.lambda_mem": FloatDistribution(1e-3, 1, log=True),
                           "rmr.risky_fraction": FloatDistribution(0.01, 0.5)},
            user_attrs={"defense": "rmr", "settings": {"lambda_mem": 0.1, "risky_fraction": 0.2}, "utility": 0.9,
                        "privacy": value, "strongest_attack": "conf", "feasible": True, "attacks": {}}))
    assert main(["export", "base", "--storage", url, "--out", str(tmp_path / "best.toml")]) == 0
    storage.engine.dispose()
    return tmp_path


def dump(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump())


def study_file(place: Path, name: str = "bad", **sections: dict) -> str:
    data = {key: dict(value) for key, value in BASE_STUDY.items()}
    data["study"] = dict(data["study"], name=name)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = place / f"{name}.toml"
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
    ("url-query-password", lambda p: ["status", "--storage",
                                      f"postgresql+psycopg://wemem@127.0.0.1:1/none?password={SECRET}"],
     ["cannot open storage"]),
    ("url-password-export", lambda p: ["export", "base", "--out", str(p / "x.toml"), "--storage", PG_SECRET_URL],
     ["cannot open storage"]),
    ("url-password-launch", lambda p: ["launch", study_file(p), "--storage", PG_SECRET_URL], ["cannot open storage"]),
    # 11: fixed values, infinities and requirements checked before any work
    ("space-width-zero", lambda p: ["launch", space(p, swmr={"width_fraction": 0})], ["width_fraction", "outside"]),
    ("space-order-sideways", lambda p: ["launch", space(p, swmr={"order": "sideways"})], ["sideways", "h2l"]),
    ("space-risky-1.5", lambda p: ["launch", space(p, rmr={"risky_fraction": 1.5})], ["risky_fraction", "outside"]),
    ("space-stride-over-width", lambda p: ["launch", space(p, swmr={"stride_fraction": 0.15, "width_fraction": 0.1})],
     ["stride_fraction", "below"]),
    ("space-not-a-number", lambda p: ["launch", space(p, rmr={"lambda_mem": "abc"})], ["lambda_mem", "not a finite"]),
    ("space-inf-range", lambda p: ["launch", space(p, rmr={"lambda_mem": [0.01, float("inf")]})], ["lambda_mem"]),
    ("training-lr-inf", lambda p: ["launch", study_file(p, training={"lr": float("inf")})], ["lr", "finite"]),
    ("lira-one-shadow", lambda p: ["launch", study_file(p, data={"shadows": 1}, attacks={"names": ["lira"]})],
     ["lira", "at least 2 shadow"]),
    ("run-settings-infinity", lambda p: ["run", "--defense", "rmr", "--settings", "lambda_mem=Infinity",
                                         "risky_fraction=0.2", "--serial"], ["lambda_mem", "finite"]),
    ("run-lr-inf", lambda p: ["run", "--lr", "inf", "--serial"], ["lr", "finite"]),
    ("run-lira-one-shadow", lambda p: ["run", "--shadows", "1", "--attacks", "lira", "--serial"],
     ["lira", "at least 2 shadow"]),
    # 7 and 12: data problems stop a launch before a study is created
    ("npz-nan", lambda p: launch_npz(p, x=np.where(X > 2, np.nan, X), y=Y), ["NaN"]),
    ("npz-one-class", lambda p: launch_npz(p, x=X, y=np.zeros(200, dtype=int)), ["single class"]),
    ("npz-three-samples", lambda p: launch_npz(p, x=X[:3], y=Y[:3]), ["too few"]),
    ("npz-object", lambda p: launch_npz(p, x=np.array([{"a": 1}] * 200, dtype=object), y=Y), ["objects"]),
    ("npz-strings", lambda p: launch_npz(p, x=np.array([["a", "b"]] * 200), y=Y), ["x must be numbers"]),
    ("npz-empty", lambda p: launch_npz(p, x=np.zeros((0, 4)), y=np.zeros(0)), ["too few"]),
    ("npz-text-file", lambda p: ["launch", study_file(p, data={"dataset": "npz:" + write(p, "t.npz", b"1,2\n3,4\n")})],
     ["not an .npz archive", "numpy.savez"]),
    ("missing-dataset-file", lambda p: ["launch", study_file(p, data={"dataset": "location"}), "--data-root", str(p)],
     ["data_complete.npz"]),
    ("run-npz-nan", lambda p: ["run", "--dataset", npz(p, x=np.where(X > 2, np.nan, X), y=Y), "--serial"], ["NaN"]),
    # 8: a conflicting definition names the differing key
    ("definition-conflict", lambda p: ["launch", study_file(p, name="base", training={"lr": 0.01})],
     ["training.lr", "stored 0.001", "wemem delete base --yes"]),
    # 14: apply checks its file before starting Ray
    ("apply-pickle-model-pt", lambda p: ["apply", write(p, "model.pt", b"\x80\x04\x95" + os.urandom(64)),
                                         "--out", str(p / "o")], ["not an export file"]),
    ("apply-missing-defense", lambda p: export_with(p, lambda d: d["best"].pop("defense")), ["best.defense"]),
    ("apply-best-oops", lambda p: export_with(p, lambda d: d.update(best="oops")), ["[best] must be a table"]),
    ("apply-unknown-defense", lambda p: export_with(p, lambda d: d["best"].update(defense="magic")), ["magic"]),
    ("apply-bad-settings", lambda p: export_with(p, lambda d: d["best"]["settings"].update(risky_fraction=5)),
     ["risky_fraction", "invalid"]),
    ("apply-binary-toml", lambda p: ["apply", write(p, "b.toml", os.urandom(64) + b"\xff"), "--out", str(p / "o")],
     ["not text"]),
    # 15: storage and command-line problems
    ("read-only-sqlite", lambda p: ["launch", study_file(p, name="new"), "--storage",
                                    f"sqlite:///file:{p / 'wemem.db'}?mode=ro&uri=true"], ["read-only"]),
    ("binary-study-file", lambda p: ["launch", write(p, "s.toml", b"\x00\x01\xfe\xff" * 8)], ["not text"]),
    ("export-missing-folder", lambda p: ["export", "base", "--out", str(p / "nowhere" / "best.toml")],
     ["does not exist", "mkdir"]),
    ("resume-negative-trials", lambda p: ["resume", "base", "--n-trials", "-1"], ["--n-trials", "at least 1"]),
    ("resume-negative-gpus", lambda p: ["resume", "base", "--gpus-per-trial", "-1"], ["--gpus-per-trial"]),
    ("stale-after-zero", lambda p: ["resume", "base", "--stale-after", "0"], ["--stale-after"]),
    ("status-no-storage", lambda p: ["status", "--storage", f"sqlite:///{p / 'none.db'}"], ["no storage at"]),
    ("export-no-storage", lambda p: ["export", "base", "--out", str(p / "x.toml"), "--storage",
                                     f"sqlite:///{p / 'none.db'}"], ["no storage at"]),
    ("delete-without-yes", lambda p: ["delete", "base"], ["--yes"]),
    ("confirm-unknown-attack", lambda p: ["confirm", "base", "--attacks", "conf,magic"],
     ["unknown attack 'magic'", "samia"]),
    ("confirm-no-attack", lambda p: ["confirm", "base", "--attacks", " , "], ["no attack named", "all"]),
    ("unknown-study", lambda p: ["status", "ghost"], ["no study named 'ghost'", "base"]),
]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return int(exit_info.code)


@pytest.mark.parametrize("argv_of, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_names_the_problem_and_changes_nothing(place: Path, argv_of, expected, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch):
    import search.runner

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(search.runner, "init_ray", no_ray)
    monkeypatch.setenv("WEMEM_STORAGE", f"sqlite:///{place / 'wemem.db'}")
    monkeypatch.chdir(place)
    before = dump(place / "wemem.db")
    files_before = sorted(p.name for p in place.iterdir())

    code = run_cli(argv_of(place))

    out, err = capsys.readouterr()
    assert code == 2, out + err
    message = (out + err).replace("\n", " ")
    for words in expected:
        assert words in message, message
    assert SECRET not in out + err
    assert "Traceback" not in err
    assert dump(place / "wemem.db") == before  # the storage is unchanged
    created = set(p.name for p in place.iterdir()) - set(files_before)
    assert not created & {"none.db", "wemem.db", "nowhere", "applied", "o"}


def test_every_secret_of_a_url_is_masked():
    from search.storage import redact, scrub

    for url in (f"u:{SECRET}@host/db", f"postgresql://u:{SECRET}@h/db",
                f"postgresql://u@h/db?password={SECRET}&sslmode=require",
                f"postgresql+psycopg://u:{SECRET}@h:5/db?sslpassword={SECRET}x"):
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
    from search.storage import definition_differences

    stored = parse_study(BASE_STUDY)
    gpu = parse_study(dict(BASE_STUDY, resources={"gpus_per_trial": 1, "cpus_per_trial": 4},
                           data={"shadows": 2, "data_root": "/elsewhere"}))
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
