"""The documentation site: it builds with ``mkdocs build --strict`` (a warning or a broken link fails), its reference
pages list exactly what the code accepts (every study-file key of the pydantic schema, every command and flag of
the parser), and its start page and API page render in headless Chromium with nothing on the browser console and
no request leaving the site's own files.

Skips where MkDocs or Chromium is absent; ``.ci/run`` sets WEMEM_REQUIRE_BROWSER=1 (and the test extra installs
the docs extra), so in CI a missing tool fails instead."""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel
from test_report_browser import FLAGS, chromium, page_requests  # noqa: F401  (chromium: the fixture)

import search.api
import wemem
from search.cli import build_parser
from search.studyfile import StudyDefinition
from wemem.defenses import DEFENSES

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
# Chromium writes each console message of a page to stderr as ``...:CONSOLE:LINE] "message", source: URL``, with
# no level: a page of the site must log nothing at all (its scripts log only on failure)
CONSOLE = re.compile(r":CONSOLE(?::\d+)?\] (.*)")


class Warnings(logging.Handler):
    """The warnings a build logs: each fails a strict build (the site's link, anchor and nav checks, mkdocstrings)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def mkdocs_build(config: Path, site: Path) -> list[str]:
    """Build the site as ``make docs`` does (strict), in this process, which has already imported the code the
    reference pages are generated from; returns the build's warnings (none: it built)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    warnings, logger = Warnings(), logging.getLogger("mkdocs")
    logger.addHandler(warnings)
    try:
        build(load_config(str(config), strict=True, site_dir=str(site)))
        assert warnings.messages == []  # strict: a warning aborts the build
    except Abort:
        assert warnings.messages  # and nothing else does
    finally:
        logger.removeHandler(warnings)
    return warnings.messages


@pytest.fixture(scope="module")
def mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("WEMEM_REQUIRE_BROWSER") == "1":
            pytest.fail("WEMEM_REQUIRE_BROWSER=1 but MkDocs is not installed: `pip install -e '.[docs]'`")
        pytest.skip("MkDocs is not installed: `pip install -e '.[docs]'` (CI installs it and never skips this test)")


@pytest.fixture(scope="module")
def site(mkdocs: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    assert mkdocs_build(ROOT / "mkdocs.yml", out) == []
    return out


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key a study file may set: the leaves of the schema's nested sections (optional ones too)."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        options = get_args(field.annotation) or (field.annotation,)
        nested = [c for c in options if isinstance(c, type) and issubclass(c, BaseModel)]
        keys |= schema_keys(nested[0], f"{prefix}{name}.") if nested else {f"{prefix}{name}"}
    return keys


def page_text(site: Path, page: str) -> str:
    return (site / page).read_text()


def test_the_study_file_page_lists_exactly_the_keys_the_schema_accepts(site: Path):
    listed = re.findall(r"<tr>\s*<td><code>([\w.]+)</code></td>", page_text(site, "reference/study_file.html"))
    assert len(listed) == len(set(listed))  # no key twice
    spaces = {key for key in listed if key.startswith("search.space.")}
    assert set(listed) - spaces == schema_keys(StudyDefinition)
    # [search.space.DEFENSE] takes the settings each searchable defense declares
    declared = {f"search.space.{name}.{p.name}" for name in DEFENSES.names() for p in DEFENSES.get(name).space()}
    assert spaces == declared and "search.space.swmr.width_fraction" in spaces


def test_the_cli_page_lists_every_command_with_its_flags(site: Path):
    text = html.unescape(page_text(site, "reference/cli.html"))
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sections = {m.group(1): chunk for chunk in text.split("<h2")[1:] if (m := re.match(r"[^>]*>wemem ([\w-]+)", chunk))}
    assert list(sections) == list(commands.choices)
    for name, parser in commands.choices.items():
        for action in parser._actions:
            assert all(flag in sections[name] for flag in action.option_strings), (name, action.option_strings)


def test_a_strict_build_fails_on_a_broken_link(mkdocs: None, tmp_path: Path):
    """The gate bites: the site's own link checks, on a page that links to a missing one, fail the build."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Start\n\nSee [the guide](missing.md).\n")
    config = {"site_name": "t", "docs_dir": "docs", "validation": CONFIG["validation"]}
    (tmp_path / "mkdocs.yml").write_text(json.dumps(config))  # JSON is YAML
    warnings = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert any("missing.md" in warning for warning in warnings)  # a warning: a strict build aborts


def render(chromium: str, page: Path, work: Path) -> tuple[str, list[str], list[str]]:
    """Open ``page`` in headless Chromium: its DOM after its scripts ran, its console messages, the URLs it
    requested."""
    netlog = work / f"netlog-{page.stem}.json"
    done = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={work / 'profile'}",
            f"--log-net-log={netlog}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",  # let the page's deferred scripts (search, navigation) run
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]
    return done.stdout, console, page_requests(json.loads(netlog.read_text()))


def start_page() -> str:
    """The built file of the nav's first page: the one a reader opens first."""
    first = CONFIG["nav"][0]
    while not isinstance(first, str):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return first.removesuffix(".md") + ".html"


@pytest.mark.parametrize("page", [start_page(), "reference/api.html"])
def test_the_page_renders_in_chromium_without_console_messages(chromium: str, site: Path, page: str, tmp_path: Path):
    dom, console, requests = render(chromium, site / page, tmp_path)
    assert console == []
    assert [url for url in requests if not url.startswith("file://")] == []  # fonts and scripts are the site's own
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is not None and title.group(1).strip().endswith(CONFIG["site_name"])
    assert re.search(r"<h1[^>]*>", dom)
    if page == "reference/api.html":  # every function and result of search.api, and wemem's public surface
        own = [name for name in search.api.__all__ if getattr(search.api, name).__module__ == "search.api"]
        assert "launch" in own and all(f'id="search.api.{name}"' in dom for name in own)
        assert all(f'id="{wemem._WHERE[name]}.{name}"' in dom for name in wemem.__all__)


def test_the_console_check_sees_a_page_that_logs_an_error(chromium: str, tmp_path: Path):
    """The check above can fail: a script error on a page is caught."""
    page = tmp_path / "fails.html"
    page.write_text("<title>x</title><script>console.error('boom'); undefinedFunction();</script>")
    _, console, _ = render(chromium, page, tmp_path)
    assert any("boom" in m for m in console) and any("Uncaught ReferenceError" in m for m in console)
