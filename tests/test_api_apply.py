"""The Python API takes attacks as ``wemem confirm --attacks`` does and prints what the command prints; ``apply``
reuses the study's cache for a table; evaluation.json labels the reproduced, search and confirmed figures."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import tomli_w

from search import api
from search.cli import main
from search.confirm import REFERENCE, Candidate, Confirmation, Reported, SeedResult, Suite, confirm_with
from search.confirm._candidates import DEFAULT
from search.confirm._statistics import comparison_verdict
from search.results._apply import (
    ConfirmedFigures,
    apply_spec,
    evaluation_document,
    evaluation_lines,
    read_checked_export,
)
from search.results._text import confirmed_lines
from search.studyfile import parse_study
from wemem.attacks import ATTACKS
from wemem.errors import WememError

ROOT = Path(__file__).resolve().parents[1]
PENGUINS = ROOT / "examples" / "own_model" / "penguins.csv"

# ------------------------------------------------------------------------------- api.confirm's arguments


class Calls:
    """Stands in for opening a study and for the confirmation itself: records what they receive."""

    def __init__(self, summary: Confirmation) -> None:
        self.summary, self.opened, self.confirmed = summary, [], []

    def open_study(self, name: str, options: Any) -> str:
        self.opened.append(name)
        return f"opened {name}"

    def confirm(
        self, opened: Any, top: int, seeds: int, echo: Any, attacks: Any, compare: Any, mlflow: Any = None
    ) -> Confirmation:
        self.confirmed.append({"opened": opened, "top": top, "seeds": seeds, "attacks": attacks, "compare": compare})
        echo("[1/1] a per-seed line")
        return self.summary


def fake_summary() -> Confirmation:
    """A confirmation of a tuned trial and the paper's default against the reference on three seeds, as
    ``confirm_study`` returns it (verdict included)."""
    chosen = [
        Candidate(REFERENCE, "none", {}),
        Candidate("trial 3", "rsw", {"width_fraction": 0.3}, 3, Reported(0.9, 0.52, 0.5)),
        Candidate("trial 0", "rsw", {"width_fraction": 0.5}, 0, Reported(0.9, 0.56, 0.5), DEFAULT),
    ]
    leakage = {REFERENCE: 0.62, "trial 3": 0.55, "trial 0": 0.58}

    def evaluate(jobs: list[tuple[Candidate, int]]) -> Iterator[tuple[int, SeedResult]]:
        for i, (candidate, seed) in enumerate(jobs):
            yield i, SeedResult(0.9 - seed * 1e-6, leakage[candidate.label] + (seed % 7) * 1e-3, "conf")

    summary = dataclasses.replace(
        confirm_with(chosen, [1007, 2007, 3007], evaluate, delta=0.05),
        metric="balanced_accuracy",
        suite=Suite(("conf", "entr")),
    )
    return dataclasses.replace(summary, verdict=comparison_verdict(summary))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    import search.confirm

    recorded = Calls(fake_summary())
    monkeypatch.setattr(api, "open_study", recorded.open_study)
    monkeypatch.setattr(search.confirm, "confirm", recorded.confirm)
    return recorded


@pytest.mark.parametrize(
    "attacks, judges",
    [
        ("all", ATTACKS.names()),
        ("conf, lira", ["conf", "lira"]),
        (["conf"], ["conf"]),
        (("conf", "entr", "conf"), ["conf", "entr"]),
        (None, None),
    ],
)
def test_attacks_are_read_as_the_command_line_reads_them(calls: Calls, attacks: Any, judges: list[str] | None):
    api.confirm("tiny", attacks=attacks, top=2, seeds=4)
    assert calls.confirmed == [{"opened": "opened tiny", "top": 2, "seeds": 4, "attacks": judges, "compare": None}]


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"attacks": 3}, "attacks takes 'all', comma-separated names"),
        ({"attacks": [1, 2]}, "attacks takes"),
        ({"attacks": "nosuch"}, "nosuch"),
        ({"attacks": ""}, "no attack named"),
        ({"top": "2"}, "top takes a whole number >= 1 (got '2')"),
        ({"top": 0}, "top takes a whole number >= 1"),
        ({"seeds": 0}, "seeds takes a whole number >= 2 (got 0)"),
        ({"seeds": True}, "seeds takes a whole number >= 2 (got True)"),
        ({"seeds": 2.0}, "seeds takes a whole number"),
        ({"compare": "rsw"}, "compare takes a defense name and its settings"),
        ({"echo": "print"}, "echo takes a function"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_opened(calls: Calls, arguments: dict[str, Any], named: str):
    with pytest.raises(WememError, match=named.replace("(", r"\(").replace(")", r"\)")):
        api.confirm("tiny", **arguments)
    assert calls.opened == [] and calls.confirmed == []


def test_bad_arguments_of_resume_and_apply_are_refused_before_any_work(tmp_path: Path):
    with pytest.raises(WememError, match="n_trials takes a whole number >= 1"):
        api.resume("tiny", n_trials="3", storage=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(WememError, match="trial takes a whole number >= 0"):
        api.apply(tmp_path / "best.toml", tmp_path / "out", trial=True)
    assert list(tmp_path.iterdir()) == []


def test_the_closing_summary_is_printed_by_one_function_for_the_command_and_the_api(
    calls: Calls, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # the command's default storage is a file here (never opened: open_study is stood in)
    summary = calls.summary
    expected = confirmed_lines(summary)
    printed: list[str] = []
    api.echo_confirmation(summary, printed.append)
    assert printed == expected
    assert any(line.startswith("best setting (trial 3") and "gain" in line for line in printed)  # the headline
    assert printed[-1] == summary.verdict and "the paper's default" in summary.verdict

    lines: list[str] = []
    assert api.confirm("tiny", attacks="conf,entr", echo=lines.append) is summary
    assert lines == ["[1/1] a per-seed line", *expected]  # the progress, then what `wemem confirm` prints last
    assert api.confirm("tiny") is summary and capsys.readouterr().out == ""  # quiet unless asked

    import search.study

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search.study, "open_study", calls.open_study)
        assert main(["confirm", "tiny", "--attacks", "conf,entr"]) == 0
    assert capsys.readouterr().out.splitlines() == ["[1/1] a per-seed line", *expected]


# ------------------------------------------------------------------ apply's cache key for a csv: table

STUDY = {
    "study": {"name": "penguins", "n_trials": 1, "seed": 7, "sampler": "random"},
    "data": {"dataset": "csv:penguins.csv", "label": "species", "shadows": 2},
    "model": {"name": "columnfc"},
    "training": {"batch_size": 64, "pretrain_epochs": 2, "finetune_epochs": 1, "patience": 1},
    "pruning": {"sparsity": 0.5, "steps": 1},
    "memscore": {"models": 2},
    "attacks": {"names": ["conf", "entr"]},
    "search": {"defenses": ["rmr"], "enqueue_reference": False},
    "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder holding the study file and its table; the working directory (where apply runs)."""
    shutil.copy(PENGUINS, tmp_path / "penguins.csv")
    (tmp_path / "study.toml").write_text(tomli_w.dumps(STUDY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hand_export(folder: Path, encoding: dict[str, Any], **sections: Any) -> Path:
    """An export of the study as `wemem export` writes one (its defining sections, encoding and best trial)."""
    definition = parse_study(STUDY, "study.toml")
    document = {
        "study": definition.name,
        "seed": definition.study.seed,
        "model": definition.model.name,
        "dataset": definition.data.model_dump(exclude_none=True),
        "objective": definition.objective.model_dump(),
        "training": definition.training.model_dump(),
        "pruning": definition.pruning.model_dump(),
        "memscore": definition.memscore.model_dump(),
        "attacks": definition.attacks.model_dump(),
        "encoding": encoding,
        "best": {
            "trial_number": 3,
            "defense": "rsw",
            "settings": {"order": "l2h", "width_fraction": 0.3, "stride_fraction": 0.03},
            "metrics": {"test_accuracy": 0.9, "privacy": 0.52, "privacy_se": 0.02, "strongest_attack": "conf"},
        },
        **sections,
    }
    path = folder / "best.toml"
    path.write_text(tomli_w.dumps(without_none(document)))
    return path


def without_none(value: Any) -> Any:
    """TOML has no null: `wemem export` drops None entries."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def test_apply_keys_a_table_as_the_study_did(folder: Path):
    """Nothing is launched: the config a study's trials use and the one apply builds from its export."""
    definition = parse_study(STUDY, str(folder / "study.toml")).from_folder(folder)
    study_config = definition.trial_spec(str(folder / "cache"), None, str(folder)).experiment  # as OpenStudy.spec
    encoding = study_config.load_pools().encoding  # what the study stores (table_encoding) and exports
    exported = read_checked_export(hand_export(folder, encoding))
    assert exported.encoding == encoding  # read back from TOML exactly
    # why the keys differed: a config carrying the encoding has it in its key, the study's carries none
    assert dataclasses.replace(study_config, encoding=encoding).key() != study_config.key()
    applied = apply_spec(exported, str(folder / "cache"), None).experiment
    assert applied.key() == study_config.key()
    # and encoding the table with the stored encoding gives the very features the study's cache was built on
    with_stored = dataclasses.replace(study_config, encoding=exported.encoding).load_pools()
    assert (with_stored.x == applied.load_pools().x).all() and (with_stored.y == applied.load_pools().y).all()

    # a table changed since the study is encoded by the stored encoding, under a key of its own
    pd.read_csv(folder / "penguins.csv").iloc[:300].to_csv(folder / "penguins.csv", index=False)
    changed = apply_spec(read_checked_export(folder / "best.toml"), str(folder / "cache"), None).experiment
    assert changed.encoding == encoding and changed.key() != study_config.key()


# --------------------------------------------------------------------------- evaluation.json's blocks


def confirmation_section(summary: Confirmation | dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The [confirmation] `wemem export` writes of a stored confirmation (or of its JSON)."""
    stored = summary.to_json() if isinstance(summary, Confirmation) else summary
    return without_none(dict(stored, status="confirmed", **fields))


def fake_outcome() -> Any:
    victim = SimpleNamespace(layer_sparsity={"fc1.weight": 0.5})
    attacks = {"conf": {"balanced_accuracy": 0.55, "auc": 0.57}}
    return SimpleNamespace(
        utility=0.88, privacy=0.55, strongest_attack="conf", result=SimpleNamespace(victim=victim, attacks=attacks)
    )


def test_evaluation_holds_the_reproduced_search_and_confirmed_figures_each_labelled(folder: Path):
    summary = fake_summary()
    encoding = parse_study(STUDY, "study.toml").experiment().load_pools().encoding
    exported = read_checked_export(hand_export(folder, encoding, confirmation=confirmation_section(summary)))
    evaluation = evaluation_document(exported.record, fake_outcome(), exported.confirmed)
    assert set(evaluation) == {
        "defense",
        "settings",
        "trial_number",
        "layer_sparsity",
        "reproduced",
        "search",
        "confirmed",
    }
    assert evaluation["reproduced"]["test_accuracy"] == 0.88 and evaluation["reproduced"]["attacks"]["conf"]
    assert "this apply" in evaluation["reproduced"]["what"]
    assert evaluation["search"]["privacy"] == 0.52 and evaluation["search"]["privacy_se"] == 0.02
    assert "selected" in evaluation["search"]["what"] and "biased low" in evaluation["search"]["what"]
    confirmed = evaluation["confirmed"]
    entry = summary.entry(3)
    assert confirmed["test_accuracy"] == entry.utility.to_json() and confirmed["privacy"] == entry.privacy.to_json()
    assert confirmed["vs_undefended"]["privacy"] == entry.vs_reference.privacy.to_json()
    assert confirmed["seeds"] == [1007, 2007, 3007] and confirmed["judges"] == ["conf", "entr"]
    assert confirmed["verdict"] == summary.verdict and confirmed["status"] == "confirmed"
    assert "fresh seeds" in confirmed["what"]
    json.dumps(evaluation)  # what is written

    lines = evaluation_lines(evaluation)
    assert lines[1].startswith("  reproduced (this apply") and "0.8800" in lines[1]
    assert lines[2].startswith("  search (") and "biased low" in lines[2] and "0.5200" in lines[2]
    assert lines[3].startswith("  confirmed (mean [interval] over fresh seeds [1007, 2007, 3007], judged by conf")
    assert f"{entry.privacy.mean:.4f} [{entry.privacy.low:.4f}" in lines[3]
    assert lines[-1] == f"    {summary.verdict}"


def test_without_a_confirmation_the_confirmed_block_says_how_to_get_one(folder: Path):
    encoding = parse_study(STUDY, "study.toml").experiment().load_pools().encoding
    not_confirmed = {"status": "not confirmed", "note": "the figures above are the selected trial's own evaluation"}
    for sections in ({}, {"confirmation": not_confirmed}):  # an older export carries no section at all
        exported = read_checked_export(hand_export(folder, encoding, **sections))
        assert exported.confirmed == ConfirmedFigures(None, exported.confirmed.note)
        assert "run `wemem confirm penguins`, then `wemem export penguins` again" in exported.confirmed.note
        evaluation = evaluation_document(exported.record, fake_outcome(), exported.confirmed)
        assert evaluation["confirmed"] is None and evaluation["confirmed_note"] == exported.confirmed.note
        assert evaluation_lines(evaluation)[-1] == f"  confirmed: none ({exported.confirmed.note})"
    # a confirmation of other trials does not speak for this one
    summary = fake_summary()
    summary = dataclasses.replace(summary, candidates=tuple(c for c in summary.candidates if c.trial_number != 3))
    exported = read_checked_export(hand_export(folder, encoding, confirmation=confirmation_section(summary)))
    assert exported.confirmed.block is None and "trial 3 is not among the confirmed settings" in exported.confirmed.note


def test_a_damaged_confirmation_section_is_refused_before_any_work(folder: Path):
    encoding = parse_study(STUDY, "study.toml").experiment().load_pools().encoding
    summary = fake_summary().to_json()
    summary["candidates"][1]["privacy"] = {"mean": "low"}
    with pytest.raises(WememError, match=r"is damaged \(confirmation\.candidates\.1\.privacy"):
        read_checked_export(hand_export(folder, encoding, confirmation=confirmation_section(summary)))
    with pytest.raises(WememError, match=r"confirmation: .*without seeds and candidates"):
        read_checked_export(hand_export(folder, encoding, confirmation={"status": "confirmed"}))


# ------------------------------------------------------------------ a tiny study, then apply from its export


def test_apply_after_a_study_reuses_its_cache_and_labels_its_figures(ray_session, folder: Path):
    storage, cache = f"sqlite:///{folder / 'study.db'}", str(folder / "cache")
    study = api.launch(folder / "study.toml", storage=storage, cache_dir=cache)
    best = study.best[0]
    entries = sorted(Path(cache).glob("*/config.json"))  # one per cache key
    references = sorted(Path(cache).glob("*/reference-*.json"))
    path = api.export(study.name, folder / "best.toml", storage=storage)
    document = tomllib.loads(path.read_text())
    assert document["confirmation"]["status"] == "not confirmed"
    # as if `wemem confirm` had run: the export carries a confirmation of the best trial
    summary = fake_summary().to_json()
    summary["candidates"][1].update(trial_number=best["trial_number"], defense=best["defense"])
    document["confirmation"] = confirmation_section(summary)
    path.write_text(tomli_w.dumps(document))

    lines: list[str] = []
    evaluation = api.apply(path, folder / "applied", cache_dir=cache, echo=lines.append)
    for piece in ("split", "pretrained", "mem-scores"):
        assert any(line.startswith(f"cache hit: {piece}") for line in lines), lines
    assert not any(line.startswith(("computed", "pretrained victim")) for line in lines), lines
    assert sorted(Path(cache).glob("*/reference-*.json")) == references  # the undefended reference reused too
    assert sorted(Path(cache).glob("*/config.json")) == entries and len(entries) == 1  # the study's key, no other

    assert evaluation == json.loads((folder / "applied" / "evaluation.json").read_text())
    assert evaluation["search"]["privacy"] == pytest.approx(best["metrics"]["privacy"])
    assert 0 < evaluation["reproduced"]["test_accuracy"] <= 1
    assert evaluation["confirmed"]["seeds"] == summary["seeds"] and evaluation["confirmed"]["verdict"]
    printed = "\n".join(lines)
    assert "  reproduced (this apply" in printed and "  search (" in printed and "  confirmed (mean" in printed
    check_the_artifact(folder / "applied", evaluation, study.name, best["trial_number"])
    assert "model.sparse.safetensors" in printed and "bytes" in printed


def check_the_artifact(out: Path, evaluation: dict[str, Any], study: str, trial: int) -> None:
    """apply's deployable files: the folded weights (dense and compact) equal, ONNX answering as the weights do,
    the model card naming each file by its hash and the confirmed figures first."""
    import hashlib

    import numpy as np
    import torch

    from search.results._apply import OUTPUT_FILES
    from wemem.artifact import load_safetensors, load_sparse, onnx_outputs
    from wemem.models import build_model

    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    state, meta = load_safetensors(out / "model.safetensors")
    assert meta is not None and (meta.study, meta.trial, meta.model) == (study, trial, "columnfc")
    assert meta.setting is not None and meta.setting.settings == evaluation["settings"]
    sparse = load_sparse(out / "model.sparse.safetensors")
    assert all(torch.equal(sparse[k], state[k]) for k in state) and set(sparse) == set(state)
    masks = torch.load(out / "model.pt", weights_only=True)["masks"]
    assert all(torch.all(state[k][~m] == 0) for k, m in masks.items())
    model = build_model(meta.model, meta.input_shape, meta.num_classes)
    model.load_state_dict(state)
    rows = np.random.default_rng(0).normal(size=(5, *meta.input_shape)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(
            onnx_outputs(out / "model.onnx", rows), model.eval()(torch.from_numpy(rows)), atol=1e-4
        )
    card = json.loads((out / "model_card.json").read_text())
    written = [name for name in OUTPUT_FILES if not name.startswith("model_card")]
    assert card["files"] == {
        name: {"sha256": hashlib.sha256((out / name).read_bytes()).hexdigest(), "bytes": (out / name).stat().st_size}
        for name in written
    }
    assert [f["label"] for f in card["figures"]] == ["confirmed", "reproduced", "search"]
    assert card["figures"][0]["leakage"]["mean"] == evaluation["confirmed"]["privacy"]["mean"]
    assert {c["name"] for c in card["validity"]} >= {"resolution", "reference", "mimicry"}
    assert card["sparsity"]["overall"] == meta.sparsity == pytest.approx(STUDY["pruning"]["sparsity"], abs=0.01)


# ------------------------------------------------------------------ the export file, as `wemem export` writes it

# An export of a stored study (helpers.finished_rmr_study with test_bad_input's BASE_STUDY), byte for byte as
# exports have been written: files already sent to others must read the same, so the format does not move.
WRITTEN_EXPORT = """\
study = "base"
model = "columnfc"
seed = 7
definition_sha256 = "724d1631f292fc105cd13a7956a3798022cd919653d845e3870979d636152048"

[objective]
mode = "constrained"
delta = 0.02
weight = 1.0
privacy_metric = "balanced_accuracy"

[dataset]
dataset = "digits"
shadows = 2

[pruning]
sparsity = 0.6
steps = 1
one_shot = false

[training]
lr = 0.001
weight_decay = 0.0005
batch_size = 128
pretrain_epochs = 2
finetune_epochs = 2
patience = 1

[memscore]
models = 2

[attacks]
names = [
    "conf",
    "entr",
    "mentr",
    "hconf",
]
adaptive = true

[reference]
utility = 0.9
privacy = 0.6
strongest_attack = "conf"

[best]
trial_number = 0
defense = "rmr"
values = [
    0.55,
]
feasible = true

[best.settings]
lambda_mem = 0.1
risky_fraction = 0.2

[best.metrics]
test_accuracy = 0.9
privacy = 0.55
strongest_attack = "conf"

[best.metrics.attacks]

[confirmation]
status = "not confirmed"
note = "the figures above are the selected trial's own evaluation, biased low by the selection; \
run `wemem confirm base` for fresh-seed means and intervals"
"""


def test_an_export_is_written_byte_for_byte_as_before_and_reads_back_as_written(tmp_path: Path):
    from helpers import finished_rmr_study
    from test_bad_input import BASE_STUDY

    from search.results._export import export_document, write_export
    from search.study import Options, open_study
    from wemem.defenses import Setting

    url = f"sqlite:///{tmp_path / 'wemem.db'}"
    finished_rmr_study(url, BASE_STUDY, str(tmp_path / "cache")).engine.dispose()
    opened = open_study("base", Options(storage=url, cache_dir=str(tmp_path / "cache")))
    document = export_document(opened)
    for suffix in (".toml", ".json"):
        write_export(document, tmp_path / f"best{suffix}")
    assert (tmp_path / "best.toml").read_text() == WRITTEN_EXPORT
    assert json.loads((tmp_path / "best.json").read_text()) == tomllib.loads(WRITTEN_EXPORT) == document.to_json()
    (tmp_path / "sent.toml").write_text(WRITTEN_EXPORT)
    exported = read_checked_export(tmp_path / "sent.toml")
    assert exported.record.number == 0 and exported.record.setting == Setting(
        "rmr", {"lambda_mem": 0.1, "risky_fraction": 0.2}
    )
    assert exported.record.metrics == {"test_accuracy": 0.9, "privacy": 0.55, "strongest_attack": "conf", "attacks": {}}
    sections = ("data", "model", "training", "pruning", "memscore", "objective", "attacks")
    experiment = lambda d: [d.study.seed] + [getattr(d, section).model_dump() for section in sections]  # noqa: E731
    assert experiment(exported.definition) == experiment(opened.definition)
