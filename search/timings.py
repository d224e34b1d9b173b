"""Display of a trial's stage timings (``wemem status NAME --trial N``, ``wemem run``, ``wemem report``).

The timings are recorded by :func:`wemem.pipeline.experiment_timings` and, for the study's shared work, by
:func:`objectives.trial.shared_seconds`; every figure is wall seconds.
"""

from __future__ import annotations

from typing import Any


def _parts(parts: dict[str, float], skip: str = "total") -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in parts.items() if name != skip)


def _with_parts(name: str, parts: dict[str, float]) -> str:
    inner = _parts(parts)
    return f"{name} {parts['total']:.2f}" + (f" ({inner})" if inner else "")


def timing_lines(timings: dict[str, Any]) -> list[str]:
    """Human-readable lines; empty when nothing was recorded (trials stored before timings existed)."""
    if not timings or "total" not in timings:
        return []
    lines = [f"timings (s): experiment {timings['total']:.2f} = pruning stage {timings['pruning_stage']:.2f}"
             f" + attack stage {timings['attack_stage']:.2f}"]
    if timings.get("shared"):
        lines.append(f"  shared work, once per study: {_parts(timings['shared'])}")
    models = timings.get("models", {})
    if models:
        lines.append("  models: " + "; ".join(_with_parts(name, parts) for name, parts in models.items()))
    attacks = timings.get("attacks", {})
    if attacks:
        lines.append("  attacks: " + "; ".join(_with_parts(name, parts) for name, parts in attacks.items()))
    return lines


def timing_columns(timings: dict[str, Any]) -> dict[str, float]:
    """Flat ``seconds.*`` columns for the trials table."""
    if not timings or "total" not in timings:
        return {}
    columns = {f"seconds.{key}": timings[key] for key in ("total", "pruning_stage", "attack_stage")}
    columns.update({f"seconds.shared.{name}": value for name, value in timings.get("shared", {}).items()})
    for name, parts in timings.get("models", {}).items():
        columns[f"seconds.model.{name}"] = parts["total"]
    for name, parts in timings.get("attacks", {}).items():
        columns.update({f"seconds.attack.{name}" + ("" if part == "total" else f".{part}"): value
                        for part, value in parts.items()})
    return columns
