"""``report.html``: the audit document (:mod:`.audit`) as one self-contained page.

Everything is inline (styles, the PNG plots as ``data:`` URIs, the few lines of script that sort the trials
table), so the file opens offline, travels as one attachment and requests nothing from any network. Every number
is formatted from the document it is given; nothing here reads the study. Every string from the study (names,
failure reasons, the definition) is escaped: a study file or a failure message cannot inject markup or script.

Written with the standard library's ``html.escape`` rather than a template engine: the page is a dozen small
sections, and a Jinja2 dependency for that would be one more package to audit and pin.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..confirm._confirmation import PRIVACY, UTILITY
from ._audit import SIDES, AttackRowJSON, CheckJSON, HeadlineJSON, ReportJSON, Side
from ._text import METRIC_LABELS

Cell = tuple[str, Any]  # (shown text, sort key) of one table cell

# the figures the page embeds, in its order, each with the section it belongs to
FIGURES = {
    "privacy_utility.png": "Privacy and utility of every trial",
    "sparsity.png": "Leakage and accuracy against the searched sparsity",
    "confirmation.png": "Confirmation",
    "roc.png": "ROC curves of the best trial (log-log: low false positive rates)",
    "attacks.png": "Attacks on the best trial",
    "history.png": "Optimization history",
    "importance.png": "Parameter importance",
    "timings.png": "Stage timings",
}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c1c1c;max-width:1100px;margin:0 auto;
padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.headline{border-left:6px solid #888;background:#f5f5f5;padding:10px 14px;margin:16px 0}
.headline.confirmed{border-color:#2e7d32;background:#eef7ee}.headline.notgain{border-color:#c62828;background:#fbeeee}
.headline.warn{border-color:#ef6c00;background:#fff3e0}.wide{overflow-x:auto}
.headline .status{font-weight:600;text-transform:uppercase;font-size:12px;letter-spacing:.05em}
.headline .text{font-size:16px;margin:4px 0}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f7f7f7;padding:10px;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f0f0f0;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
.missing{background:#fff8e1;border:1px solid #ffe082;padding:8px 14px}img{max-width:100%;height:auto}
figure{margin:8px 0 16px}figcaption{color:#555;font-size:12px}dl{display:grid;grid-template-columns:max-content auto;
gap:2px 16px}dt{font-weight:600}dd{margin:0}
@media print{body{max-width:none;padding:0}h2{break-after:avoid}table,figure,.headline{break-inside:avoid}
.noprint{display:none}}
"""

# Sorts a table.sortable by the clicked column (numbers by their data-key, text otherwise); a URL ending in
# #sort=COLUMN or #sort=-COLUMN opens the page sorted (shareable, and how the browser test checks this script).
SCRIPT = """
function wememSort(table, col, desc){
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const key = r => { const c = r.cells[col], k = c.dataset.key; return k === undefined ? c.textContent : k; };
  const num = rows.every(r => { const k = key(r); return k === "" || !isNaN(parseFloat(k)); });
  rows.sort((a, b) => { let x = key(a), y = key(b);
    if (num) { x = x === "" ? Infinity : parseFloat(x); y = y === "" ? Infinity : parseFloat(y);
               return desc ? (y === Infinity ? -1 : x === Infinity ? 1 : y - x) : x - y; }
    return desc ? y.localeCompare(x) : x.localeCompare(y); });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[table.tHead.rows.length - 1].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === col ? (desc ? "descending" : "ascending") : "none"));
}
document.querySelectorAll("table.sortable").forEach(table => {
  Array.from(table.tHead.rows[table.tHead.rows.length - 1].cells).forEach((th, i) => th.addEventListener("click", () =>
    wememSort(table, i, th.getAttribute("aria-sort") === "ascending")));
});
const wanted = /^#sort=(-?)(.+)$/.exec(decodeURIComponent(location.hash));
if (wanted) { const table = document.getElementById("trial-table");
  const cells = table.tHead.rows[table.tHead.rows.length - 1].cells;
  const col = Array.from(cells).findIndex(th => th.dataset.column === wanted[2]);
  if (col >= 0) wememSort(table, col, wanted[1] === "-"); }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def with_code(text: str) -> str:
    """Escaped text whose `backquoted` commands are set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))


def number(value: object, digits: int = 4) -> str:
    """A metric as shown: fixed digits; a missing value as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def points(value: float | None) -> str:
    return "\u2013" if value is None else f"{100 * value:+.1f}"


def cell(value: object, digits: int = 4) -> Cell:
    return number(value, digits), value


def table(
    headings: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    table_id: str | None = None,
    columns: Sequence[str] | None = None,
    sortable: bool = False,
    groups: Sequence[tuple[str, int]] = (),
) -> str:
    """An HTML table; numeric cells are right-aligned and carry their value as the sort key. ``groups``:
    (heading, number of columns) of a row above the headings."""
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    head = "".join(
        f'<th data-column="{esc(c)}">{esc(h)}</th>' if columns else f"<th>{esc(h)}</th>"
        for h, c in zip(headings, columns or headings)
    )
    if groups:
        head = "".join(f'<th colspan="{n}">{esc(h)}</th>' for h, n in groups) + "</tr><tr>" + head
    body = []
    for row in rows:
        cells = []
        for shown, key in row:
            if isinstance(key, (int, float)) and not isinstance(key, bool):
                cells.append(f'<td class="n" data-key="{key!r}">{esc(shown)}</td>')
            elif key is None and shown == "\u2013":
                cells.append(f'<td class="n" data-key="">{esc(shown)}</td>')
            else:
                cells.append(f"<td>{esc(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table{attrs}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure(name: str, figures: dict[str, bytes]) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode("ascii")
    return (
        f'<figure><img alt="{esc(FIGURES[name])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(FIGURES[name])} ({esc(name)} in this folder)</figcaption></figure>"
    )


def definition_list(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def settings_text(settings: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


# ------------------------------------------------------------------------------------------------ sections


def verdict(h: HeadlineJSON) -> tuple[str, str]:
    """The headline's colour class and status words. Green only for a confirmed gain that keeps the accuracy
    constraint: a reader who looks at nothing else must not take a gain bought with too much accuracy for a pass.
    A leakage_cap study's answer is whether its best confirmed setting keeps the cap."""
    if "leakage_cap" in h:
        return cap_verdict(h)
    if h.get("gain_confirmed") is None:
        return "", h["status"]
    stale = " (stale: see below)" if h["status"] == "stale" else ""
    if not h["gain_confirmed"]:
        return "notgain", "no confirmed gain" + stale
    constraint = h.get("accuracy_constraint")
    if constraint not in (None, "holds"):
        return "warn", f"confirmed gain, but the accuracy constraint is {constraint}{stale}"
    return ("warn" if stale else "confirmed"), "confirmed gain" + stale


def cap_verdict(h: HeadlineJSON) -> tuple[str, str]:
    """Green only when a confirmed setting's leakage interval keeps the cap and the confirmation is current."""
    stale = " (stale: see below)" if h["status"] == "stale" else ""
    cap = f"the leakage cap {h.get('max_leakage', float('nan')):g}{stale}"
    if h["leakage_cap"] != "keeps the cap":
        return "notgain", f"no confirmed setting keeps {cap}"
    return ("warn" if stale else "confirmed"), f"keeps {cap}"


def validity_caveats(doc: ReportJSON) -> list[CheckJSON]:
    """The validity checks that did not simply hold: each a reason to read the headline with care."""
    return [c for c in doc.get("validity") or [] if c["status"] != "pass"]


def headline_section(doc: ReportJSON) -> str:
    h = doc["headline"]
    kind, status = verdict(h)
    caveats = validity_caveats(doc)
    if caveats and kind == "confirmed":  # never green when the inputs may not mean what the figures assume
        kind, status = "warn", f"{status}, with validity warnings"
    parts = [
        f'<div class="headline {kind}" id="headline"><div class="status">{esc(status)}</div>',
        f'<div class="text">{esc(h["text"])}</div>',
    ]
    if "privacy_difference" in h:
        setting = f"{h['defense']} ({settings_text(h['settings'])})" if h["settings"] else h["defense"]
        constraint = f"; accuracy constraint: {h['accuracy_constraint']}" if h.get("accuracy_constraint") else ""
        parts.append(
            f"<div>setting: {esc(h['label'])}, {esc(setting)}; seeds {esc(h['seeds'])}; "
            f"{esc(h['judges'])}{esc(constraint)}</div>"
        )
    if "verdict" in h:
        parts.append(f'<div class="text" id="verdict">{esc(h["verdict"])}</div>')
    if "note" in h:
        parts.append(f"<div>{esc(h['note'])}</div>")
    if "command" in h:
        parts.append(f"<div>to get it: <code>{esc(h['command'])}</code></div>")
    if caveats:
        named = ", ".join(f"{c['name']} ({VALIDITY_STATUS.get(c['status'], c['status'])})" for c in caveats)
        parts.append(f'<div id="validity-caveats">validity: {esc(named)}; see <a href="#validity">Validity</a></div>')
    return "".join(parts) + "</div>"


def missing_section(doc: ReportJSON) -> str:
    if not doc["missing"]:
        return ""
    items = "".join(f"<li>{with_code(m)}</li>" for m in doc["missing"])
    return f'<div class="missing" id="missing"><strong>Not in this report yet</strong><ul>{items}</ul></div>'


VALIDITY_STATUS = {"pass": "holds", "warn": "warning", "fail": "failed", "overridden": "failed, overridden by the user"}


def validity_section(doc: ReportJSON) -> str:
    """Does the audit mean what it seems to? Each check (wemem.validity) with what it measured."""
    checks = doc.get("validity") or []
    if not checks:
        return (
            "<h2 id='validity'>Validity</h2><p>No validity checks are stored with this study: it was run before "
            "they existed. Resume or relaunch it to measure them.</p>"
        )
    rows = [[cell(c["name"]), cell(VALIDITY_STATUS.get(c["status"], c["status"])), cell(c["message"])] for c in checks]
    return (
        "<h2 id='validity'>Validity</h2><p>Whether the inputs mean what the audit assumes (docs/validity.md): a "
        "warning or an override means the figures below may not say what they seem to.</p>"
        + table(["check", "status", "what was measured"], rows, table_id="validity")
    )


def study_section(doc: ReportJSON) -> str:
    s = doc["study"]
    data = s["dataset"]
    pruning = s["pruning"]
    rows = [
        ("dataset", f"{data['dataset']} ({data.get('shadows', '?')} shadow models)"),
        ("model", s["model"]),
        ("pruning", ", ".join(f"{k} {v}" for k, v in pruning.items())),
        ("defenses searched", ", ".join(s["defenses"])),
        ("attacks", ", ".join(s["attacks"]) + (" (adaptive)" if s["adaptive_attacks"] else "")),
        ("objective", s["objective_text"]),
        ("constraint", s["constraint"] or "none (this mode has no accuracy constraint)"),
        ("search", f"{s['n_trials']} trials, {s['sampler']} sampler, seed {s['seed']}"),
        ("trials", ", ".join(f"{n} {state}" for state, n in doc["counts"].items() if n) or "none"),
    ]
    return "<h2 id='study'>Study</h2>" + definition_list(rows)


def results_section(doc: ReportJSON, figures: dict[str, bytes]) -> str:
    parts = ["<h2 id='results'>Privacy and utility</h2>"]
    ref = doc["reference"]
    if ref is not None:
        parts.append(
            f"<p>Undefended pruned model: test accuracy {number(ref[UTILITY])}, strongest attack "
            f"{esc(ref['strongest_attack'])} at {number(ref[PRIVACY])}.</p>"
        )
    if doc["best"]:
        label = "Pareto front" if doc["pareto"] else "Best trial (its own evaluation, biased low by the selection)"
        parts.append(f"<h3>{esc(label)}</h3>")
        parts.append(
            table(
                ["trial", "defense", "settings", "test accuracy", "leakage", "strongest attack", "feasible"],
                (
                    [
                        cell(b["trial_number"]),
                        cell(b["defense"]),
                        cell(settings_text(b["settings"])),
                        cell(b["metrics"]["test_accuracy"]),
                        cell(b["metrics"][PRIVACY]),
                        cell(b["metrics"]["strongest_attack"]),
                        cell(b["feasible"]),
                    ]
                    for b in doc["best"]
                ),
                table_id="front" if doc["pareto"] else "best",
            )
        )
    parts.append(figure("privacy_utility.png", figures))
    parts.append(confirmation_table(doc))
    parts.append(figure("confirmation.png", figures))
    return "".join(parts)


def confirmation_table(doc: ReportJSON) -> str:
    c = doc["confirmation"]
    if not c or c.get("status") == "not confirmed":
        return ""
    interval = lambda ci: f"{number(ci['mean'])} [{number(ci['low'])}, {number(ci['high'])}]"  # noqa: E731
    capped = "leakage_cap" in c
    rows = []
    for e in c["candidates"]:
        diff, udiff = e.get("privacy_difference"), e.get("utility_difference")
        versus = (e.get("vs_comparison") or {}).get(PRIVACY)
        role = {"default": " (paper's default)", "comparison": " (comparison)"}.get(e.get("role"), "")
        rows.append(
            [
                cell(e["label"] + role),
                cell("undefended" if e["label"] == "reference" else e["defense"]),
                cell(settings_text(e.get("settings") or {})),
                (interval(e[UTILITY]), e[UTILITY]["mean"]),
                (interval(e[PRIVACY]), e[PRIVACY]["mean"]),
                (("\u2013", None) if diff is None else (interval(diff), diff["mean"])),
                (("\u2013", None) if udiff is None else (interval(udiff), udiff["mean"])),
                cell(e.get("accuracy_constraint")),
                (("\u2013", None) if versus is None else (interval(versus), versus["mean"])),
            ]
            + ([cell(e.get("leakage_cap"))] if capped else [])
        )
    return (
        f"<h3>Confirmed on {len(c['seeds'])} fresh seeds {esc(c['seeds'])} (mean [95% t-interval])</h3>"
        + (
            f"<p id='seeds-vary'>What the seeds vary: {esc(doc['confirmation_varies'])}.</p>"
            if doc.get("confirmation_varies")
            else ""
        )
        + table(
            [
                "candidate",
                "defense",
                "settings",
                "test accuracy",
                "leakage",
                "leakage minus reference",
                "accuracy minus reference",
                "accuracy constraint",
                "leakage minus the comparison",
            ]
            + ([f"leakage cap {c['leakage_cap']['max_leakage']:g}"] if capped else []),
            rows,
            table_id="confirmation",
        )
    )


def attacks_section(doc: ReportJSON, figures: dict[str, bytes]) -> str:
    parts = ["<h2 id='attacks'>Per attack</h2>"]
    if not doc["attack_table"]:
        return parts[0] + "<p>No attack results are stored yet.</p>"
    best = doc["best"][0]["trial_number"] if doc["best"] else None
    headings = ["attack"] + ([h for _, h in METRIC_LABELS] + ["\u03b5 lower bound"]) * 2
    groups = [
        ("", 1),
        ("undefended pruned model", len(METRIC_LABELS) + 1),
        ("best defended model" + ("" if best is None else f" (trial #{best})"), len(METRIC_LABELS) + 1),
    ]
    rows = ([cell(r["attack"])] + [c for side in SIDES for c in attack_cells(r, side)] for r in doc["attack_table"])
    parts.append(
        "<p>Each attack's own evaluation of the undefended pruned model and of the best trial (the "
        "study's seed; the confirmation above uses fresh seeds), with its 95% stratified bootstrap interval "
        "over the victim's targets (the target sampling's share of the noise only). A TPR at an FPR that "
        "the victim's non-member targets cannot resolve is not shown as a number (docs/validity.md). "
        "\u03b5 lower bound: an empirical lower bound on the model's differential-privacy epsilon from the "
        "attack's own decisions (Clopper-Pearson, 95%; docs/attack_metrics.md), not an estimate of it.</p>"
    )
    parts.append(table(headings, rows, table_id="attack-table", groups=groups))
    parts.append(figure("attacks.png", figures))
    parts.append(figure("roc.png", figures))
    return "".join(parts)


def attack_cells(row: AttackRowJSON, side: Side) -> list[Cell]:
    """One model's metrics in the attack table: each value with its 95% interval, or the words saying the targets
    cannot resolve it; then the epsilon lower bound."""
    intervals = (row.get("intervals") or {}).get(side) or {}
    unresolved = (row.get("not_resolvable") or {}).get(side) or {}
    cells: list[Cell] = []
    for key, _ in METRIC_LABELS:
        value, interval = row[side][key], intervals.get(key)
        if key in unresolved:
            cells.append((unresolved[key], None))
        elif value is not None and interval:
            cells.append((f"{number(value)} [{number(interval[0])}, {number(interval[1])}]", value))
        else:
            cells.append(cell(value))
    bound = (row.get("epsilon_lower_bound") or {}).get(side)
    return cells + [cell(None if not bound else bound.get("value"), 3)]


TRIAL_COLUMNS = (
    ("number", "trial"),
    ("state", "state"),
    ("defense", "defense"),
    (UTILITY, "test accuracy"),
    (PRIVACY, "leakage"),
    ("strongest_attack", "strongest attack"),
    ("feasible", "feasible"),
    ("seconds.total", "experiment seconds"),
)


def trial_settings(row: Mapping[str, object]) -> str:
    """A trial's setting from its ``param.<defense>.<name>`` columns (the defense's own parameters only)."""
    prefix = f"param.{row.get('defense')}."
    return settings_text({k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix) and v is not None})


def trials_section(doc: ReportJSON) -> str:
    parts = ["<h2 id='trials'>Trials</h2>"]
    if doc["trials"]:
        columns = [c for c, _ in TRIAL_COLUMNS] + ["settings"]
        headings = [h for _, h in TRIAL_COLUMNS] + ["settings"]
        digits: dict[str, int] = {"seconds.total": 1}
        rows = (
            [cell(row.get(c), digits.get(c, 4)) for c, _ in TRIAL_COLUMNS] + [cell(trial_settings(row))]
            for row in doc["trials"]
        )
        parts.append('<p class="noprint">Click a column heading to sort. trials.csv has one column per parameter.</p>')
        parts.append(table(headings, rows, table_id="trial-table", columns=columns, sortable=True))
    else:
        parts.append("<p>No trials yet.</p>")
    if doc["failed"]:
        parts.append("<h3 id='failed'>Failed trials</h3>")
        parts.append(
            table(
                ["trial", "reason"],
                ([cell(f["number"]), cell(f["reason"])] for f in doc["failed"]),
                table_id="failed-trials",
            )
        )
    return "".join(parts)


def timings_section(doc: ReportJSON, figures: dict[str, bytes]) -> str:
    t = doc["timings"]
    if not t["per_trial"]:
        return "<h2 id='timings'>Stage timings</h2><p>No stage timings are stored.</p>"
    parts = [
        "<h2 id='timings'>Stage timings (wall seconds)</h2>",
        table(
            ["trial", "experiment", "pruning stage", "attack stage"],
            (
                [cell(r["number"])]
                + [cell(r[k], 2) for k in ("seconds.total", "seconds.pruning_stage", "seconds.attack_stage")]
                for r in t["per_trial"]
            ),
            table_id="timings-table",
        ),
    ]
    medians = [("attack", name, v) for name, v in t["median_attack_seconds"].items()] + [
        ("model", name, v) for name, v in t["median_model_seconds"].items()
    ]
    if medians:
        parts.append(
            table(
                ["kind", "name", "median seconds per trial"],
                ([cell(kind), cell(name), cell(v, 2)] for kind, name, v in medians),
            )
        )
    parts.append(figure("timings.png", figures))
    return "".join(parts)


def search_section(figures: dict[str, bytes]) -> str:
    shown = figure("history.png", figures) + figure("importance.png", figures)
    return f"<h2 id='search'>Search</h2>{shown}" if shown else ""


def environment_rows(label: str, env: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if env is None:
        return [(label, "not recorded (launched by a version that did not record it)")]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    return [(label, f"Python {env['python']} on {env['platform']}; {env['device']}"), (f"{label}: packages", packages)]


def own_code_text(own: Mapping[str, Any]) -> str:
    """The user's plug-ins and checkpoint by SHA-256 (what an auditor compares with the files they were given)."""
    if not own:
        return "none: built-in model and data"
    return "; ".join(
        f"{kind} {entry.get('reference') or entry.get('path')} (sha256 {entry.get('sha256', '?')})"
        for kind, entry in sorted(own.items())
    )


def reproducibility_section(doc: ReportJSON) -> str:
    r = doc["reproducibility"]
    rows = [
        *environment_rows("study ran with", r["study_environment"]),
        *environment_rows("report written with", r["report_environment"]),
        ("seeds", f"study {r['seeds']['study']}; confirmation {r['seeds']['confirmation'] or 'none'}"),
        ("assets fingerprint", r["assets_fingerprint"] or "not recorded (no shared work has run)"),
        ("own code", own_code_text(r.get("own_code") or {})),
        ("report generated", doc["generated_at"]),
        ("format", doc["format"]),
    ]
    return (
        "<h2 id='reproducibility'>Reproducibility</h2>"
        + definition_list(rows)
        + "<h3>Study definition (a study file <code>wemem launch</code> reads)</h3>"
        + f"<pre id='definition'>{esc(r['definition_toml'])}</pre>"
    )


def leakage_cell(leakage: Mapping[str, Any] | None) -> Cell:
    """A leakage with its 95% interval (an en dash for none; a bound stored as null shows as one)."""
    if leakage is None:
        return number(None), None
    return f"{number(leakage['value'])} [{number(leakage['low'])}, {number(leakage['high'])}]", leakage["value"]


def audited_section(doc: ReportJSON) -> str:
    """The shipped files `wemem audit` attacked, each named by its SHA-256, beside the figure recorded for its
    setting (docs/audit_artifact.md)."""
    audits = doc.get("artifact_audits") or []
    if not audits:
        return ""
    rows = [
        [
            cell(a["time"]),
            cell(f"{a['file']} ({a['kind']})"),
            cell(a["sha256"]),
            cell(a["sparsity"]),
            cell(a["setting"]),
            leakage_cell(a["leakage"]),
            leakage_cell(a["recorded"]),
            cell(a["leakage_difference"]),
        ]
        for a in audits
    ]
    headings = ["audited", "file", "sha256", "sparsity", "setting", "leakage [95%]", "recorded [95%]", "difference"]
    return (
        "<h2 id='audited'>Audited artifacts</h2><p>"
        + with_code(
            "Shipped model files attacked by the study's suite on their own outputs (`wemem audit`): the same "
            "SHA-256 is the same file; a difference beyond float rounding means the file is not the model the "
            "study evaluated."
        )
        + "</p>"
        + table(headings, rows, table_id="audited")
    )


SECTIONS: tuple[Callable[[ReportJSON, dict[str, bytes]], str], ...] = (
    lambda d, f: missing_section(d),
    lambda d, f: validity_section(d),
    lambda d, f: study_section(d),
    results_section,
    attacks_section,
    lambda d, f: trials_section(d),
    timings_section,
    lambda d, f: search_section(f),
    lambda d, f: reproducibility_section(d),
    lambda d, f: audited_section(d),
)


def inline_hash(text: str) -> str:
    """The CSP source admitting one inline element: the SHA-256 of its exact text (between its tags, UTF-8)."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode('ascii')}'"


def content_security_policy() -> str:
    """The page's policy, defense in depth behind the escaping: no fetch of any kind (the plots are data: URIs);
    only the page's own style and sort script, by hash, so an injected script, style or inline event handler
    (onclick, onerror) would not run; no form may submit and no <base> may redirect relative URLs.

    Two directives cannot be had from a <meta> policy, so they are left out: ``frame-ancestors`` is ignored there
    (it needs an HTTP header, and a file has none), and browsers never implemented ``navigate-to``. Instead
    nothing in the page navigates: its only links are in-page #fragments, it has no meta refresh and no form,
    and its one script reads location.hash without ever setting a location.
    """
    return (
        f"default-src 'none'; img-src data:; style-src {inline_hash(STYLE)}; script-src {inline_hash(SCRIPT)}; "
        "form-action 'none'; base-uri 'none'"
    )


def render_html(doc: ReportJSON, figures: dict[str, bytes]) -> str:
    """The page for ``doc`` (a :func:`.audit.report_document`, as read back from report.json) and the PNGs it
    names (``figures``, by file name)."""
    name = doc["study"]["name"]
    body = "".join(section(doc, figures) for section in SECTIONS)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{content_security_policy()}">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>wemem audit: {esc(name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Membership-inference audit: study {esc(name)}</h1>"
        f'<div class="meta">written by wemem report on {esc(doc["generated_at"])} from report.json</div>'
        f"{headline_section(doc)}{body}<script>{SCRIPT}</script></body></html>\n"
    )
