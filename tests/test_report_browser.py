"""report.html in a real browser: headless Chromium prints it to PDF and PNG, the rendered text holds the headline
and the per-attack table, the sort script works, and the page makes no network request (Chromium's own net log).

Skips where Chromium is absent, saying how to get it; ``.ci/run`` installs it and sets WEMEM_REQUIRE_BROWSER=1,
so in CI a missing browser fails instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
import report_study
from PIL import Image
from pypdf import PdfReader

from search.results._report import write_report
from search.study import open_study

CHROMIUM = os.environ.get("WEMEM_CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
# quiet Chromium: no first-run, sync, extensions or component updates (its own requests are told apart anyway)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-background-networking",
    "--disable-component-update",
    "--hide-scrollbars",
    "--no-pdf-header-footer",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("WEMEM_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "WEMEM_REQUIRE_BROWSER=1 but no Chromium was found: `apt-get install chromium` (what .ci/run "
                "does) or set WEMEM_CHROMIUM to the browser's path"
            )
        pytest.skip(
            "no Chromium on this machine: `apt-get install chromium` or set WEMEM_CHROMIUM (CI installs it "
            "and never skips this test)"
        )
    return CHROMIUM


def browse(chromium: str, url: str, work: Path, *action: str) -> tuple[str, list[str]]:
    """Run headless Chromium on ``url`` with ``action`` flags; returns its stdout and the URLs the page
    requested, from Chromium's net log."""
    netlog = work / f"netlog-{len(list(work.glob('netlog-*')))}.json"
    done = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}", *action, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, page_requests(json.loads(netlog.read_text()))


def page_requests(netlog: dict) -> list[str]:
    """URLs of the requests a page made: a URL request started on behalf of a document has the document's origin
    as initiator ("null" for a file), Chromium's own (update checks, accounts) have "not an origin"."""
    start_job = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [
        event["params"] for event in netlog["events"] if event["type"] == start_job and "url" in event.get("params", {})
    ]  # the begin phase names the URL
    return [params["url"] for params in starts if params.get("initiator") != "not an origin"]


def words(text: str) -> str:
    """Rendered text as a reader sees it: ligatures (the PDF's "ﬁ") unfolded, all whitespace one space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    place = tmp_path_factory.mktemp("browser")
    write_report(open_study("audit", report_study.build(place)), place / "report")
    return json.loads((place / "report" / "report.json").read_text()), place / "report"


def test_the_report_renders_to_pdf_and_png_with_its_headline_and_attack_table(chromium, written, tmp_path: Path):
    doc, out = written
    url = (out / "report.html").as_uri()
    _, pdf_requests = browse(chromium, url, tmp_path, f"--print-to-pdf={tmp_path / 'report.pdf'}")
    _, png_requests = browse(
        chromium, url, tmp_path, f"--screenshot={tmp_path / 'report.png'}", "--window-size=1200,2400"
    )
    assert pdf_requests == [] and png_requests == []  # the page requested nothing, from no network
    text = words(" ".join(page.extract_text() for page in PdfReader(tmp_path / "report.pdf").pages))
    assert words(doc["headline"]["text"]) in text
    assert "undefended pruned model" in text and "best defended model (trial #0)" in text
    for row in doc["attack_table"]:  # every attack's row, as the JSON's numbers, in the order the table shows
        figures = [
            f"{row[side][key]:.4f}" if key else "\u2013"
            for side in ("undefended", "defended")
            for key in ("balanced_accuracy", "auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", None)
        ]
        assert f"{row['attack']} {' '.join(figures)}" in text
    assert "RuntimeError: out of memory" in text and "Reproducibility" in text
    shot = Image.open(tmp_path / "report.png").convert("RGB")
    assert shot.size == (1200, 2400)
    assert len(shot.getcolors(maxcolors=1 << 20) or []) > 200  # drawn: text, tables and embedded plots, not blank


def test_the_trials_table_sorts_in_the_browser(chromium, written, tmp_path: Path):
    doc, out = written
    dom, requests = browse(chromium, (out / "report.html").as_uri() + "#sort=-privacy", tmp_path, "--dump-dom")
    assert requests == []
    table = re.search(r'<table id="trial-table".*?</table>', dom, re.S).group(0)
    numbers = [int(n) for n in re.findall(r'<tr><td class="n" data-key="(\d+)"', table)]
    by_leakage = sorted((t for t in doc["trials"] if t["privacy"] is not None), key=lambda t: -t["privacy"])
    assert numbers == [t["number"] for t in by_leakage] + [3]  # most leaky first; the failed trial has none: last


def test_the_network_check_sees_a_page_that_fetches(chromium, tmp_path: Path):
    """The check above can fail: a page loading two outside images is caught, Chromium's own requests are not."""
    page = tmp_path / "fetches.html"
    page.write_text('<p>x</p><img src="http://127.0.0.1:9/a.png"><img src="https://example.invalid/b.png">')
    _, requests = browse(chromium, page.as_uri(), tmp_path, "--dump-dom")
    assert sorted(requests) == ["http://127.0.0.1:9/a.png", "https://example.invalid/b.png"]
