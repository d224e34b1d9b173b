"""Validity checks: does the audit mean what the user thinks it means?

A shape check is not a validity check: a checkpoint of the right width evaluated on features it was not trained
on scores at chance, and fine-tuning during pruning then fits a new model to the new features, so the "victim"
audited is not the user's model at all -- yet every later number looks fine. These checks measure what each
input means, as pure functions of arrays (plus :func:`checkpoint_outcomes`, which runs the checkpoint once); the
search layer decides when to run them, stores them with the study, and refuses or warns.

Each check returns a :class:`Check`: ``pass``, ``warn`` (reported, the study goes on) or ``fail`` (the study is
refused unless the user overrides that check by name, which is then recorded as ``overridden``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import WememError
from .uncertainty import MIN_FALSE_POSITIVES, clopper_pearson, tpr_resolution, unresolvable_text

Status = Literal["pass", "warn", "fail", "overridden"]

# the checks a user may override (the others only warn)
OVERRIDABLE = ("checkpoint", "resolution")

# shadows mimic the victim when their training sets are within this factor of the victim's and their accuracy
# within this many points: an adaptive attack's thresholds transfer from shadow to victim only when the two
# generalize alike, and the gap between train and test accuracy moves with the training-set size
MIMICRY_SIZE_FACTOR = 1.5
MIMICRY_ACCURACY_GAP = 0.05


@dataclass(frozen=True)
class Check:
    """One validity check's outcome: its name, status, one sentence for people, and the figures behind it."""

    name: str
    status: Status
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(str(data["name"]), data["status"], str(data["message"]), dict(data.get("figures", {})))

    def overridden(self) -> Check:
        return Check(self.name, "overridden", f"{self.message} [overridden by the user]", self.figures)

    def line(self) -> str:
        return f"{self.name}: {self.status.upper()} - {self.message}"


# ---------------------------------------------------------------------------------- a checkpoint victim


def checkpoint_check(
    member_correct: np.ndarray,
    non_member_correct: np.ndarray,
    member_labels: np.ndarray,
    checkpoint: str = "the checkpoint",
) -> Check:
    """Does a user's trained victim behave like a model trained on its marked members, on the tool's features?

    Refused when its accuracy on its members is not clearly above the majority-class rate among them (the lower
    end of the exact 95% interval does not exceed it: the model predicts no better than a constant), or when its
    members score clearly below the non-members (by more than two standard errors of the difference): a model
    is at least as accurate on what it trained on. Either way the model is not reading these features as it
    read its training data, and an audit of it would audit a model re-fitted by the pruning's fine-tuning.
    """
    member_correct, non_member_correct = np.asarray(member_correct, bool), np.asarray(non_member_correct, bool)
    n1, n0 = len(member_correct), len(non_member_correct)
    on_members = float(member_correct.mean()) if n1 else math.nan
    on_others = float(non_member_correct.mean()) if n0 else math.nan
    majority = float(np.bincount(np.asarray(member_labels, dtype=np.int64)).max() / n1) if n1 else math.nan
    low, _ = clopper_pearson(int(member_correct.sum()), n1)
    gap_se = math.sqrt(on_members * (1 - on_members) / max(n1, 1) + on_others * (1 - on_others) / max(n0, 1))
    figures = {
        "member_accuracy": on_members,
        "non_member_accuracy": on_others,
        "majority_rate": majority,
        "member_accuracy_low": low,
        "members": n1,
        "non_members": n0,
    }
    measured = (
        f"{checkpoint} scores {on_members:.3f} on its {n1} marked members and {on_others:.3f} on the "
        f"{n0} other samples (majority class among the members: {majority:.3f})"
    )
    problems = []
    if not low > majority:
        problems.append("it is not clearly above the majority-class rate on its own members")
    if on_members < on_others - 2 * gap_se:
        problems.append("its members score below the non-members")
    if not problems:
        return Check("checkpoint", "pass", measured, figures)
    return Check(
        "checkpoint",
        "fail",
        f"{measured}: {' and '.join(problems)}, so it is not reading these features as it read its "
        "training data. The likely cause is the feature encoding: the tool encodes a csv:/parquet: table "
        "itself (its own column order, one-hot and scaling), which need not be the one the model was "
        "trained on. Fix: give the model its own features with a loader plug-in (docs/own_model.md, "
        "'What a loader returns'), or check the member column. To audit it anyway pass --override-check "
        "checkpoint (recorded in the report)",
        figures,
    )


def checkpoint_outcomes(model: Any, x: Any, y: Any, members: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which samples a trained model classifies correctly: (on its members, on every other sample, the members'
    labels), from one pass over the pool. ``model`` is a torch module, ``x``/``y`` the pool's tensors, ``members``
    the members' indices."""
    import torch

    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(batch).argmax(1) for batch in torch.split(x, 1024)])
    correct = (predicted.cpu() == y.cpu()).numpy()
    is_member = np.zeros(len(correct), dtype=bool)
    is_member[np.asarray(members, dtype=np.int64)] = True
    labels = y.cpu().numpy()[is_member]
    return correct[is_member], correct[~is_member], labels


# ---------------------------------------------------------------------------- the undefended reference


def chance_level(metric: str) -> float:
    """What an attack that knows nothing scores on a balanced set: 0.5 for balanced accuracy and AUC, the FPR
    itself for a TPR at a fixed FPR."""
    if metric.startswith("tpr_at_"):
        return float(metric[len("tpr_at_") :].split("%")[0]) / 100.0
    return 0.5


def reference_check(
    attacks: dict[str, dict[str, Any]],
    metric: str,
    train_accuracy: float | None,
    test_accuracy: float,
    privacy_se: float | None = None,
) -> Check:
    """Does the undefended pruned model leak measurably? Its generalization gap, and the strongest attack's 95%
    interval of the study's leakage metric over the targets.

    When the interval's lower end is not above chance, no defense can show a gain on this model: any defended
    leakage lies within the noise of an undefended one that is itself indistinguishable from guessing. This is a
    finding about the data and the model, not an input error, so it warns (the search still runs).
    Where a stored result predates the per-attack intervals, a normal interval of the strongest value with the
    reference's standard error is used instead, and said so.
    """
    scored = {name: m for name, m in attacks.items() if isinstance(m.get(metric), (int, float))}
    strongest = max(scored, key=lambda name: scored[name][metric])
    value = float(scored[strongest][metric])
    interval = scored[strongest].get("intervals", {}).get(metric)
    how = "bootstrap over the targets"
    if interval is None:
        se = privacy_se or 0.0
        interval, how = [value - 1.96 * se, value + 1.96 * se], "normal, from the reference's standard error"
    chance = chance_level(metric)
    gap = None if train_accuracy is None or math.isnan(train_accuracy) else train_accuracy - test_accuracy
    figures = {
        "metric": metric,
        "strongest_attack": strongest,
        "value": value,
        "low": float(interval[0]),
        "high": float(interval[1]),
        "chance": chance,
        "interval": how,
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "generalization_gap": gap,
    }
    gap_text = (
        "" if gap is None else f"generalization gap {gap:+.3f} (train {train_accuracy:.3f}, test {test_accuracy:.3f}); "
    )
    measured = (
        f"{gap_text}strongest attack {strongest} {metric} {value:.4f} [95% CI {interval[0]:.4f}, {interval[1]:.4f}]"
    )
    if interval[0] > chance:
        return Check("reference", "pass", f"the undefended pruned model leaks measurably: {measured}", figures)
    return Check(
        "reference",
        "warn",
        f"the undefended pruned model shows no measurable leakage: {measured}, whose lower end is not "
        f"above chance ({chance:g}). No defense can show a gain here; a larger model, a smaller "
        "training set or more pruning rounds would leak more",
        figures,
    )


# ------------------------------------------------------------------------------------------- resolution


def resolution_check(metric: str, non_members: int) -> Check:
    """Can the study's leakage metric be measured on its targets at all? A TPR at FPR ``a`` needs at least
    :data:`~wemem.uncertainty.MIN_FALSE_POSITIVES` non-member false positives at its threshold (see
    :func:`wemem.uncertainty.tpr_resolution`); balanced accuracy and AUC always resolve."""
    if not metric.startswith("tpr_at_"):
        return Check(
            "resolution",
            "pass",
            f"{metric} resolves on any balanced target set",
            {"metric": metric, "non_members": non_members},
        )
    fpr = chance_level(metric)
    resolvable, needed = tpr_resolution(fpr, non_members)
    figures = {
        "metric": metric,
        "fpr": fpr,
        "non_members": non_members,
        "needed": needed,
        "minimum_false_positives": MIN_FALSE_POSITIVES,
    }
    if resolvable:
        return Check(
            "resolution", "pass", f"{metric} resolves with {non_members} non-member targets (needs {needed})", figures
        )
    return Check(
        "resolution",
        "fail",
        f"the study's privacy_metric {metric} is {unresolvable_text(non_members, needed)}: fewer than "
        f"{MIN_FALSE_POSITIVES} non-members can lie above its threshold. Use privacy_metric = "
        f'"balanced_accuracy" or "auc", a larger FPR, or more data; to run anyway pass '
        f"--override-check resolution (recorded in the report)",
        figures,
    )


# --------------------------------------------------------------------------------------- shadow mimicry


def mimicry_check(
    victim_train_size: int, victim_accuracy: float, shadow_train_sizes: list[int], shadow_accuracies: list[float]
) -> Check:
    """Do the shadows mimic the victim? Their training-set sizes and (pruned) test accuracies against the
    victim's; flagged when any shadow's training set is more than :data:`MIMICRY_SIZE_FACTOR` times larger or
    smaller, or the shadows' mean accuracy is more than :data:`MIMICRY_ACCURACY_GAP` away from the victim's."""
    sizes = [int(s) for s in shadow_train_sizes]
    mean_accuracy = float(np.mean(shadow_accuracies)) if shadow_accuracies else math.nan
    ratios = [s / victim_train_size for s in sizes] if victim_train_size else []
    figures = {
        "victim_train_size": int(victim_train_size),
        "shadow_train_sizes": sizes,
        "victim_accuracy": float(victim_accuracy),
        "shadow_accuracies": [float(a) for a in shadow_accuracies],
        "size_factor": MIMICRY_SIZE_FACTOR,
        "accuracy_gap": MIMICRY_ACCURACY_GAP,
    }
    measured = (
        (
            f"shadows train on {min(sizes)}-{max(sizes)} samples (victim {victim_train_size}) and reach "
            f"{mean_accuracy:.3f} test accuracy on average (victim {victim_accuracy:.3f})"
        )
        if sizes
        else "no shadow"
    )
    problems = []
    if any(r > MIMICRY_SIZE_FACTOR or r < 1 / MIMICRY_SIZE_FACTOR for r in ratios):
        problems.append(f"a training set differs from the victim's by more than a factor {MIMICRY_SIZE_FACTOR:g}")
    if abs(mean_accuracy - victim_accuracy) > MIMICRY_ACCURACY_GAP:
        problems.append(f"their accuracy is more than {MIMICRY_ACCURACY_GAP * 100:g} points from the victim's")
    if not problems:
        return Check("mimicry", "pass", measured, figures)
    return Check(
        "mimicry",
        "warn",
        f"{measured}: {'; '.join(problems)}, so attacks fitted on the shadows may transfer poorly and "
        "understate the leakage (with a checkpoint, mark more held-out rows so the shadows get as much "
        "data as the victim)",
        figures,
    )


def apply_overrides(checks: list[Check], overrides: tuple[str, ...] | list[str]) -> list[Check]:
    """The checks with each failed one the user overrode marked ``overridden``."""
    return [c.overridden() if c.status == "fail" and c.name in overrides else c for c in checks]


def require_valid(checks: list[Check], subject: str = "the study") -> None:
    """Refuse (a WememError listing each) when a check failed and was not overridden."""
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise WememError(f"{subject} is refused by its validity checks:\n" + "\n".join(f"  {c.line()}" for c in failed))


__all__ = [
    "Check",
    "OVERRIDABLE",
    "apply_overrides",
    "chance_level",
    "checkpoint_check",
    "checkpoint_outcomes",
    "mimicry_check",
    "reference_check",
    "require_valid",
    "resolution_check",
]
