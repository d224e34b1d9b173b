"""``wemem report``: the audit of a study as one self-contained page (``report.html``) and its numbers
(``report.json``, see :mod:`.audit`), the trials table (CSV and parquet, with ``seconds.*`` stage timings) and
the PNG plots the page embeds."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from wemem.assets import Echo
from wemem.files import check_output_folder, create_folder, csv_text, write_into, wrote
from wemem.uncertainty import CONFIDENCE, INTERVAL_METRICS

from ..confirm import Confirmation, Interval, judged_by_others, latest_confirmation
from ..confirm._confirmation import PRIVACY, UTILITY
from ..storage._records import ROC, TrialMetrics, stored_reference
from ..study import OpenStudy, best_trials
from ..studyfile import StudyDefinition
from ._audit import report_document
from ._html import FIGURES, render_html
from ._text import timing_columns

# the trials table's leading columns, present even when a study has no trial (an empty table still has a header)
BASE_COLUMNS = (
    "number",
    "state",
    "defense",
    UTILITY,
    PRIVACY,
    "privacy_se",
    "strongest_attack",
    "feasible",
    "defense_seconds",
    "duration_seconds",
)


def plain(text: Any) -> str:
    """A stored string (a study, defense, attack or parameter name) as matplotlib text shown as it is: an even
    number of ``$`` would start mathtext, whose parser rejects e.g. ``$\\frac{$``; ``\\$`` is a literal dollar, and
    outside mathtext matplotlib interprets nothing else."""
    return str(text).replace("$", r"\$")


def figure_png(fig: plt.Figure) -> bytes:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)  # figures are many per report; pyplot would keep them all alive otherwise
    return png.getvalue()


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        m = TrialMetrics.of(trial)
        row: dict[str, object] = {  # one row of the table: a column's values differ in type from trial to trial
            "number": trial.number,
            "state": trial.state.name,
            "defense": m.defense,
            UTILITY: m.utility,
            PRIVACY: m.privacy,
            "privacy_se": m.privacy_se,
            "strongest_attack": m.strongest_attack,
            "feasible": m.feasible,
            "defense_seconds": m.defense_seconds,
            "duration_seconds": trial.duration.total_seconds() if trial.duration else None,
        }
        for i, value in enumerate(trial.values or []):
            row[f"value_{i}"] = value
        for name, value in trial.params.items():
            row[f"param.{name}"] = value
        for attack, metrics in m.attacks.items():
            for metric in INTERVAL_METRICS:
                row[f"{attack}.{metric}"] = metrics.get(metric)
        row.update(timing_columns(m.timings))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (privacy, utility) not dominated under (minimize privacy, maximize utility)."""
    front = []
    for i, (p, u) in enumerate(points):
        dominated = np.any((points[:, 0] <= p) & (points[:, 1] >= u) & ((points[:, 0] < p) | (points[:, 1] > u)))
        if not dominated:
            front.append(i)
    return np.array(sorted(front, key=lambda i: points[i, 0]), dtype=int)


def plot_privacy_utility(
    table: pd.DataFrame,
    ref: Mapping[str, Any] | None,
    definition: StudyDefinition,
    confirmation: Confirmation | None = None,
) -> bytes:
    done = table[table.state == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(9.6, 4.8))
    for defense, group in done.groupby("defense"):
        ax.scatter(group.privacy, group.utility, label=plain(defense), alpha=0.8)
    points = done[[PRIVACY, UTILITY]].to_numpy(dtype=float)
    if len(points):
        front = points[pareto_front(points)]
        ax.plot(front[:, 0], front[:, 1], "k--", lw=1, label="Pareto front")
    if ref is not None:
        ax.scatter([ref[PRIVACY]], [ref[UTILITY]], marker="*", s=220, c="red", label="undefended pruned")
    if ref is not None and definition.objective_config().constraint_delta is not None:
        ax.axhline(ref[UTILITY] - definition.objective.delta, color="grey", lw=0.8, ls=":", label="accuracy floor")
    if definition.objective.max_leakage is not None:
        ax.axvline(definition.objective.max_leakage, color="red", lw=0.8, ls=":", label="leakage cap")
    if confirmation is not None:
        draw_confirmed_points(ax, confirmation)
    ax.set_xlabel(f"leakage: strongest attack {plain(definition.objective.privacy_metric)}")
    ax.set_ylabel("pruned victim test accuracy")
    ax.set_title(f"{plain(definition.name)}: privacy vs utility")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: never over a point
    return figure_png(fig)


SPARSITY_PARAM = "param.pruning.sparsity"  # the trials table's column of a study that searched the sparsity


def plot_sparsity(
    table: pd.DataFrame, ref: Mapping[str, Any] | None, definition: StudyDefinition, dense: float | None
) -> bytes:
    """Leakage (with its normal interval where the trial stored a standard error) and test accuracy against the
    sampled sparsity, per defense: how far the victim can be pruned before either breaks. ``dense``: the dense
    victim's test accuracy (every trial records it), the floor's reference with ``accuracy_reference = "dense"``."""
    done = table[(table.state == "COMPLETE") & table[SPARSITY_PARAM].notna()]
    z = float(NormalDist().inv_cdf(0.5 + CONFIDENCE / 2))
    fig, (leak, acc) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for defense, group in done.groupby("defense"):
        se = np.nan_to_num(group.privacy_se.to_numpy(dtype=float))  # none stored: no bar
        leak.errorbar(group[SPARSITY_PARAM], group.privacy, yerr=z * se, fmt="o", capsize=3, label=plain(defense))
        acc.scatter(group[SPARSITY_PARAM], group.utility, alpha=0.8, label=plain(defense))
    study_sparsity = definition.pruning.sparsity
    if ref is not None:
        leak.scatter([study_sparsity], [ref[PRIVACY]], marker="*", s=220, c="red", label="undefended pruned")
        acc.scatter([study_sparsity], [ref[UTILITY]], marker="*", s=220, c="red", label="undefended pruned")
    floor = accuracy_floor(dense, definition)
    if floor is not None:
        acc.axhline(floor, color="grey", lw=0.8, ls=":", label="accuracy floor")
    if definition.objective.max_leakage is not None:
        leak.axhline(definition.objective.max_leakage, color="red", lw=0.8, ls=":", label="leakage cap")
    leak.set_ylabel(f"leakage: strongest attack {plain(definition.objective.privacy_metric)} [{CONFIDENCE:.0%}]")
    acc.set_ylabel("pruned victim test accuracy")
    for ax in (leak, acc):
        ax.set_xlabel("sparsity")
        ax.legend(fontsize=8)
    leak.set_title(f"{plain(definition.name)}: leakage vs sparsity")
    acc.set_title("accuracy vs sparsity")
    return figure_png(fig)


def accuracy_floor(dense: float | None, definition: StudyDefinition) -> float | None:
    """A constrained study's floor when it is one line: against the dense victim (``accuracy_reference =
    "dense"``); against the pruned reference it moves with each trial's sparsity."""
    objective = definition.objective_config()
    if dense is None or objective.constraint_delta is None or objective.accuracy_reference != "dense":
        return None
    return dense - objective.constraint_delta


def error_bar(ci: Interval) -> list[list[float]]:
    """An interval as matplotlib's (below, above) distances from its mean."""
    return [[ci.mean - ci.low], [ci.high - ci.mean]]


def judges_text(confirmation: Confirmation) -> str:
    return f", {plain(judged_by_others(confirmation))}" if judged_by_others(confirmation) else ""


def draw_confirmed_points(ax: plt.Axes, confirmation: Confirmation) -> None:
    """Confirmed means with their 95% intervals over fresh seeds (both axes), next to the selected evaluations."""
    for entry in confirmation.candidates:
        p, u = entry.privacy, entry.utility
        reference = entry.is_reference
        ax.errorbar(
            p.mean,
            u.mean,
            xerr=error_bar(p),
            yerr=error_bar(u),
            fmt="*" if reference else "D",
            color="darkred" if reference else "black",
            ms=9 if reference else 6,
            capsize=3,
            lw=1,
            label=f"{plain(entry.label)} confirmed ({len(confirmation.seeds)} seeds"
            f"{judges_text(confirmation)}, 95% CI)",
        )


def plot_confirmation(confirmation: Confirmation, metric: str) -> bytes:
    """Defended-minus-reference differences of leakage and accuracy, paired by seed, with 95% intervals."""
    settings = [e for e in confirmation.candidates if e.vs_reference is not None]
    reference = confirmation.reference
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 0.9 + 0.6 * max(len(settings), 1)))
    for ax, key, title in (
        (axes[0], PRIVACY, f"leakage ({metric}) minus reference"),
        (axes[1], UTILITY, "accuracy minus reference"),
    ):
        for row, entry in enumerate(settings):
            d = getattr(entry.vs_reference, key)
            ax.errorbar(d.mean, row, xerr=error_bar(d), fmt="o", color="black", capsize=4)
            per_seed = [
                getattr(a, key) - getattr(b, key)
                for (_, a), (_, b) in zip(entry.per_seed, reference.per_seed if reference else ())
            ]
            ax.scatter(per_seed, [row] * len(per_seed), s=10, color="grey", alpha=0.7, zorder=0)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(settings)), [plain(f"{e.label} ({e.defense})") for e in settings])
        ax.set_title(title, fontsize=9)
    if confirmation.delta is not None:
        axes[1].axvline(-confirmation.delta, color="red", lw=0.8, ls=":", label="accuracy constraint")
        axes[1].legend(fontsize=7)
    fig.suptitle(
        f"confirmed on {len(confirmation.seeds)} fresh seeds (mean, 95% t-interval, paired by seed"
        f"{judges_text(confirmation)})",
        fontsize=10,
    )
    return figure_png(fig)


def plot_history(table: pd.DataFrame, directions: list[str]) -> bytes:
    done = table[table.state == "COMPLETE"].sort_values("number")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(done.number, done.value_0, s=18, label="objective value" if len(directions) == 1 else "leakage")
    if len(done):
        best = np.minimum.accumulate(done.value_0.to_numpy(dtype=float))
        ax.step(done.number, best, where="post", color="red", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("objective (minimized)")
    ax.set_title("optimization history")
    ax.legend(fontsize=8)
    return figure_png(fig)


def parameter_importance(study: optuna.Study) -> dict[str, float]:
    """Optuna's default importances over the parameters every completed trial shares (empty if too few trials)."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        return {}
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():  # PED-ANOVA warns that it ranks for low targets: ours are minimized
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study, target=target)
    except (RuntimeError, ValueError):  # e.g. no parameter shared by all trials, or all values equal
        return {}


def plot_importance(importances: dict[str, float]) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.4 * max(len(importances), 1)))
    if importances:
        names = list(importances)[::-1]
        ax.barh([plain(n) for n in names], [importances[n] for n in names])
        ax.set_xlabel("importance (Optuna's default evaluator)")
    else:
        ax.text(0.5, 0.5, "needs >= 2 completed trials sharing a parameter", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title("parameter importance")
    return figure_png(fig)


def plot_attacks(trial: optuna.trial.FrozenTrial, ref: Mapping[str, Any] | None) -> bytes:
    attacks = TrialMetrics.of(trial).attacks
    names = list(attacks)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for ax, metric in zip(axes, ("balanced_accuracy", "auc")):
        ax.bar(
            x - 0.2,
            [(ref or {}).get("attacks", {}).get(n, {}).get(metric, np.nan) for n in names],
            0.4,
            label="undefended pruned",
        )
        ax.bar(x + 0.2, [attacks[n][metric] for n in names], 0.4, label=f"trial #{trial.number}")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, [plain(n) for n in names], rotation=45, ha="right")
        ax.set_ylim(0.4, 1.0)
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"attacks on the best trial ({plain(TrialMetrics.of(trial).defense)})")
    return figure_png(fig)


def plot_roc(trial: optuna.trial.FrozenTrial) -> bytes:
    """ROC curves (log-log, where low-FPR leakage shows) of every attack on the best trial, from stored points."""
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for name, metrics in TrialMetrics.of(trial).attacks.items():
        roc = metrics.get(ROC)
        if roc:
            ax.plot(roc["fpr"], roc["tpr"], lw=1.2, label=f"{plain(name)} (AUC {metrics['auc']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC of the attacks on trial #{trial.number} ({plain(TrialMetrics.of(trial).defense)})")
    if ax.get_legend_handles_labels()[0]:  # trials stored without ROC points draw none
        ax.legend(fontsize=7)
    return figure_png(fig)


def plot_timings(table: pd.DataFrame) -> bytes:
    """Where trials spend their time: the pruning and attack stages per trial, and each attack's median."""
    timed = table.dropna(subset=["seconds.pruning_stage"])
    attacks = [c for c in table.columns if c.startswith("seconds.attack.") and c.count(".") == 2]
    fig, (stages, per_attack) = plt.subplots(1, 2, figsize=(11, 4.2))
    stages.bar(timed.number, timed["seconds.pruning_stage"], label="pruning stage (K+1 models)")
    stages.bar(timed.number, timed["seconds.attack_stage"], bottom=timed["seconds.pruning_stage"], label="attack stage")
    stages.set_xlabel("trial")
    stages.xaxis.set_major_locator(MaxNLocator(integer=True))
    stages.set_ylabel("wall seconds")
    stages.legend(fontsize=8)
    medians = timed[attacks].median().sort_values()
    per_attack.barh([plain(c.removeprefix("seconds.attack.")) for c in medians.index], medians.to_numpy())
    per_attack.set_xlabel("median wall seconds per trial")
    per_attack.set_title("attacks")
    return figure_png(fig)


def parquet_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def report_figures(opened: OpenStudy, table: pd.DataFrame) -> dict[str, bytes]:
    """The PNG plots, by file name: only those the stored study has the data for."""
    study, definition = opened.study, opened.definition
    ref, confirmation, best = stored_reference(study), latest_confirmation(study), best_trials(study)
    plots = {}
    if best:
        plots = {
            "privacy_utility.png": lambda: plot_privacy_utility(table, ref, definition, confirmation),
            "history.png": lambda: plot_history(table, definition.objective_config().directions),
            "importance.png": lambda: plot_importance(parameter_importance(study)),
            "attacks.png": lambda: plot_attacks(best[0], ref),
            "roc.png": lambda: plot_roc(best[0]),
        }
    if confirmation is not None:
        plots["confirmation.png"] = lambda: plot_confirmation(confirmation, definition.objective.privacy_metric)
    if best and SPARSITY_PARAM in table.columns:
        dense = best[0].user_attrs.get("pretrained_accuracy")
        plots["sparsity.png"] = lambda: plot_sparsity(table, ref, definition, dense)
    if "seconds.pruning_stage" in table.columns and table["seconds.pruning_stage"].notna().any():
        plots["timings.png"] = lambda: plot_timings(table)  # none where no trial recorded them
    return {name: draw() for name, draw in plots.items()}


REPORT_FILES = ("trials.csv", "trials.parquet", *FIGURES, "report.json", "report.html")


def check_report_out(out_dir: str | Path) -> Path:
    """Refuse an --out that could not take the report's files (a file, a device, a link planted where one goes)."""
    return check_output_folder(out_dir, REPORT_FILES)


def write_report(opened: OpenStudy, out_dir: str | Path, echo: Echo = lambda line: None) -> list[Path]:
    """Write the report's files into ``out_dir`` (created if needed), each atomically and never through a link
    found there (:func:`wemem.files.write_into`); ``echo`` gets one "wrote FILE" (or "replaced existing FILE")
    line per file, then one line per thing the report lacks.

    ``report.html`` is rendered from ``report.json`` as read back, so the page shows the JSON's numbers.
    """
    table = trials_table(opened.study)
    figures = report_figures(opened, table)
    document = report_document(opened, table, list(figures))
    text = json.dumps(document, indent=2, allow_nan=False)
    files: dict[str, bytes | str] = {
        "trials.csv": csv_text(table, index=False),
        "trials.parquet": parquet_bytes(table),
        **figures,
        "report.json": text,
        "report.html": render_html(json.loads(text), figures),
    }
    out = create_folder(out_dir)
    written = []
    for name, content in files.items():
        echo(wrote((out / name, write_into(out, name, content))))
        written.append(out / name)
    for item in document["missing"]:
        echo(f"not in the report yet: {item}")
    return written
