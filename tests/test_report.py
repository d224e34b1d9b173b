"""``wemem report``'s audit: report.json holds the numbers, report.html shows them (rendered from the JSON as read
back), is self-contained and escapes what the study holds, and incomplete studies still get a report that says
what is missing. The rendering in a real browser is tested in test_report_browser.py."""

from __future__ import annotations

import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import report_study

from search.cli import main
from search.results._audit import next_commands
from search.results._html import render_html, verdict
from search.results._report import write_report
from search.study import open_study
from search.studyfile import parse_study

FIGURES = {
    "privacy_utility.png",
    "history.png",
    "importance.png",
    "attacks.png",
    "roc.png",
    "confirmation.png",
    "timings.png",
}


class Page(HTMLParser):
    """The page's text, element ids, and every URL an element would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.ids: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id":
                self.ids.append(value or "")
            if name in ("src", "href", "action", "data", "poster", "srcset"):
                self.urls.append(value or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(path: Path) -> Page:
    parsed = Page()
    parsed.feed(path.read_text())
    return parsed


def text_of(parsed: Page) -> str:
    return re.sub(r"\s+", " ", " ".join(parsed.text))


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about the document and the page, not the plots: matplotlib is most of a report's seconds."""
    import search.results._report

    monkeypatch.setattr(search.results._report, "report_figures", lambda opened, table: {})


def report(tmp_path: Path, name: str = "audit", **kwargs) -> tuple[dict, Page, Path]:
    options = report_study.build(tmp_path, name=name, **kwargs)
    out = tmp_path / f"report-{name}"
    write_report(open_study(name, options), out)
    return json.loads((out / "report.json").read_text()), page(out / "report.html"), out


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Page, Path]:
    """The report of the confirmed study, written once for the tests that only read it."""
    return report(tmp_path_factory.mktemp("audit"))


def test_report_json_holds_every_section_with_the_stored_numbers(audit):
    doc, _, out = audit
    assert doc["format"] == "wemem-report/1" and doc["missing"] == []
    study = doc["study"]
    assert (study["dataset"]["dataset"], study["model"], study["defenses"]) == ("digits", "columnfc", ["rsw"])
    assert study["pruning"] == {"sparsity": 0.6, "steps": 1, "one_shot": False}
    assert study["attacks"] == ["conf", "entr", "mentr", "hconf"]
    assert study["accuracy_floor"] == pytest.approx(0.82 - 0.02)  # reference 0.82, delta 0.02
    assert doc["counts"]["COMPLETE"] == 3 and doc["counts"]["FAIL"] == 1
    # the best feasible trial: #1 leaks least (0.55) but breaks the accuracy constraint
    assert [b["trial_number"] for b in doc["best"]] == [0]
    h = doc["headline"]
    assert h["status"] == "confirmed" and h["gain_confirmed"] and h["accuracy_constraint"] == "holds"
    # hand-computed: paired differences -0.05, -0.048, -0.0505 -> mean -0.0495
    assert h["privacy_difference"]["mean"] == pytest.approx(-0.0495)
    assert h["text"].startswith(
        "best setting (trial 0, rsw) vs the undefended pruned model on 3 fresh seeds: "
        "leakage -5.0 points [95% CI -5.4, -4.5]"
    )
    # tuned minus the paper's default, paired: -0.03, -0.031, -0.0295 -> a gain of 3.0 points
    assert h["verdict"].startswith("tuning gained 3.0 points of leakage [95% CI ") and "(trial 2, rsw)" in h["verdict"]
    assert h["comparison"]["role"] == "default"
    rows = {r["attack"]: r for r in doc["attack_table"]}
    assert list(rows) == ["conf", "entr", "mentr", "hconf"]
    assert rows["hconf"]["undefended"] == {
        "balanced_accuracy": 0.62,
        "auc": 0.67,
        "tpr_at_0.1%_fpr": 0.004,
        "tpr_at_1%_fpr": 0.05,
    }
    assert rows["conf"]["defended"]["balanced_accuracy"] == pytest.approx(0.53)  # trial 0: 0.56 - 0.03
    assert set(doc["roc"]) == {"conf", "entr", "mentr", "hconf"} and doc["roc"]["conf"]["fpr"][1] == 0.001
    assert [t["number"] for t in doc["trials"]] == [0, 1, 2, 3]
    assert doc["failed"] == [{"number": 3, "reason": "RuntimeError: out of memory"}]
    assert [r["seconds.total"] for r in doc["timings"]["per_trial"]] == [10.0, 12.0, 11.0]
    assert doc["timings"]["median_attack_seconds"]["conf"] == pytest.approx(11.0 * 0.3 / 4)
    assert set(doc["figures"]) == FIGURES and all((out / f).read_bytes()[:4] == b"\x89PNG" for f in FIGURES)
    repro = doc["reproducibility"]
    assert repro["assets_fingerprint"] == "f" * 64 and repro["seeds"] == {"study": 11, "confirmation": [101, 102, 103]}
    assert repro["study_environment"]["packages"]["optuna"] and repro["report_environment"]["device"]
    # the definition block is a study file that defines this very study
    stored = open_study("audit", report_study.Options(storage=f"sqlite:///{out.parent / 'wemem.db'}")).definition
    assert parse_study(tomllib.loads(repro["definition_toml"])) == stored


def test_report_html_is_rendered_from_report_json_as_read_back(audit):
    doc, _, out = audit
    doc = json.loads(json.dumps(doc))  # a copy: the fixture is shared
    figures = {name: (out / name).read_bytes() for name in doc["figures"]}
    assert render_html(json.loads((out / "report.json").read_text()), figures) == (out / "report.html").read_text()
    # and a number changed in the JSON is the number the page shows: nothing is recomputed from the study
    doc["attack_table"][0]["undefended"]["auc"] = 0.123456
    assert "0.1235" in render_html(doc, figures) and "0.1235" not in (out / "report.html").read_text()


def test_report_html_shows_the_headline_tables_and_reproducibility(audit):
    doc, parsed, _ = audit
    text = text_of(parsed)
    assert doc["headline"]["text"] in text and "confirmed" in text and doc["headline"]["verdict"] in text
    assert "trial 2 (paper's default)" in text and "leakage minus the comparison" in text
    assert "undefended pruned model" in text and "best defended model (trial #0)" in text
    for heading in ("balanced accuracy", "AUC", "TPR at 0.1% FPR", "TPR at 1% FPR"):
        assert heading in text
    # one per-attack row: each model's four metrics, then its epsilon lower bound (none stored here: a dash)
    assert "hconf 0.6200 0.6700 0.0040 0.0500 \u2013 0.5600 0.6100 0.0040 0.0500 \u2013" in text
    assert "RuntimeError: out of memory" in text  # failed trials with their reasons
    assert "median seconds per trial" in text and "pruning stage" in text
    assert f"assets fingerprint {'f' * 64}" in text and "optuna 5" in text
    assert '[study]\nname = "audit"' in "".join(parsed.text)
    assert len(parsed.ids) == len(set(parsed.ids)), "element ids must be unique (the sort script finds its table)"
    assert {"headline", "attack-table", "trial-table", "failed-trials", "definition"} <= set(parsed.ids)


def test_report_html_is_self_contained(audit):
    doc, parsed, out = audit
    html = (out / "report.html").read_text()
    assert parsed.urls and all(url.startswith("data:image/png;base64,") for url in parsed.urls)
    assert len(parsed.urls) == len(doc["figures"])  # every plot embedded, none linked
    assert "link" not in parsed.tags and not re.search(r"@import|url\(", html)  # no outside style sheet or font
    assert not re.search(r"(?i)\b(https?|wss?|ftp):", html)
    assert "<script src" not in html
    assert "default-src 'none'" in html  # and the browser itself is told to fetch nothing


def test_strings_from_the_study_cannot_inject_markup(tmp_path: Path, no_plots):
    evil = '<script>alert("x")</script><img src="http://attacker.example/p.png">'
    _, parsed, out = report(tmp_path, fail_reason=evil)
    html = (out / "report.html").read_text()
    assert evil not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert parsed.tags.count("script") == 1 and parsed.tags.count("img") == 0  # no plots drawn here
    assert evil in text_of(parsed)  # shown as text, the reason a user must read


def test_a_study_without_confirmation_says_so_and_gives_the_command(tmp_path: Path):
    doc, parsed, _ = report(tmp_path, confirmed=False)
    assert doc["headline"]["status"] == "not confirmed"
    assert (
        doc["headline"]["command"] == f"wemem confirm audit --storage sqlite:///{tmp_path / 'wemem.db'} --attacks all"
    )
    assert doc["missing"] == ["no fresh-seed confirmation of the best setting"]
    text = text_of(parsed)
    assert "no number to quote yet" in text and doc["headline"]["command"] in text
    assert "confirmation.png" not in doc["figures"] and "privacy_utility.png" in doc["figures"]


@pytest.mark.parametrize(
    "trials, failed, reference, words",
    [
        (0, 0, False, ["the study has no trial yet", "no undefended reference was measured"]),
        (0, 2, True, ["no completed trial (2 failed; their reasons are listed below)"]),
    ],
)
def test_a_study_without_completed_trials_still_gets_a_report(tmp_path: Path, capsys, trials, failed, reference, words):
    options = report_study.build(tmp_path, name="bare", trials=trials, failed=failed, reference=reference)
    out = tmp_path / "report"
    assert main(["report", "bare", "--storage", options.storage, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "report.json").read_text())
    assert doc["headline"]["status"] == "no result"
    assert doc["headline"]["command"] == f"wemem resume bare --storage {options.storage}"  # the rest of the budget
    text = text_of(page(out / "report.html"))
    for phrase in words:
        assert (
            any(phrase in m for m in doc["missing"])
            and phrase in text
            and f"not in the report yet: {phrase}" in printed
        )
    assert doc["best"] == [] and doc["figures"] == []
    # the undefended model's attacks are shown when its reference was measured; no defended column has a number
    assert len(doc["attack_table"]) == (4 if reference else 0)
    assert all(v is None for row in doc["attack_table"] for v in row["defended"].values())
    assert len(doc["failed"]) == failed and (failed == 0 or "RuntimeError: out of memory" in text)
    assert {p.name for p in out.iterdir()} == {"trials.csv", "trials.parquet", "report.json", "report.html"}


def test_a_pareto_study_report_shows_the_front(tmp_path: Path, no_plots):
    doc, parsed, _ = report(tmp_path, name="front", mode="pareto", confirmed=False)
    assert doc["pareto"] and doc["study"]["directions"] == ["minimize", "maximize"]
    assert doc["study"]["constraint"] is None and doc["study"]["accuracy_floor"] is None
    # (privacy, utility): (0.56, 0.80), (0.55, 0.70), (0.58, 0.81): none dominates another
    assert sorted(b["trial_number"] for b in doc["best"]) == [0, 1, 2]
    assert "front" in parsed.ids and "Pareto front" in text_of(parsed)


def test_missing_metrics_are_null_in_json_and_a_dash_in_html(tmp_path: Path, no_plots):
    options = report_study.build(tmp_path)
    study = open_study("audit", options).study
    study.set_user_attr("reference", dict(study.user_attrs["reference"], utility=float("nan")))
    out = tmp_path / "report"
    write_report(open_study("audit", options), out)
    text = (out / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["reference"]["utility"] is None  # strict JSON for machines
    assert "test accuracy \u2013, strongest attack hconf" in text_of(page(out / "report.html"))


def test_a_storage_password_never_reaches_the_report():
    """The report prints the commands that fill in what it lacks, with the storage they need: masked."""
    opened = SimpleNamespace(
        name="s",
        definition=parse_study(report_study.STUDY),
        options=SimpleNamespace(storage="postgresql+psycopg://u:hunter2@db/x?password=hunter2"),
    )
    commands = next_commands(opened)
    assert "hunter2" not in json.dumps(commands)
    assert commands["confirm"].startswith("wemem confirm s --storage postgresql+psycopg://u:***@db/x")


@pytest.mark.parametrize(
    "headline, kind, status",
    [
        (
            {"status": "confirmed", "gain_confirmed": True, "accuracy_constraint": "holds"},
            "confirmed",
            "confirmed gain",
        ),
        ({"status": "confirmed", "gain_confirmed": True, "accuracy_constraint": None}, "confirmed", "confirmed gain"),
        (
            {"status": "confirmed", "gain_confirmed": True, "accuracy_constraint": "violated"},
            "warn",
            "confirmed gain, but the accuracy constraint is violated",
        ),
        (
            {"status": "confirmed", "gain_confirmed": True, "accuracy_constraint": "uncertain"},
            "warn",
            "confirmed gain, but the accuracy constraint is uncertain",
        ),
        (
            {"status": "stale", "gain_confirmed": True, "accuracy_constraint": "holds"},
            "warn",
            "confirmed gain (stale: see below)",
        ),
        (
            {"status": "confirmed", "gain_confirmed": False, "accuracy_constraint": "holds"},
            "notgain",
            "no confirmed gain",
        ),
        ({"status": "not confirmed"}, "", "not confirmed"),
        ({"status": "no result"}, "", "no result"),
    ],
)
def test_the_headline_is_green_only_for_a_gain_within_the_constraint(headline, kind, status):
    assert verdict(headline) == (kind, status)
