"""The work of a trial on Ray: the shared work every trial reuses (prepared once, cached, shipped through the
object store) and the Tune trainable of one setting (K+1 parallel model jobs, then the attack jobs).

The searcher and the run loop live in :mod:`.tune`; the worker side of the jobs in :mod:`.jobs`.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypedDict

import numpy as np
from ray import tune

from objectives import Reference, RoundHooks, TrialSpec, evaluate_trial, reference
from wemem.assets import Echo, StudyAssets, content_fingerprint, prepare_assets
from wemem.config import PruningConfig
from wemem.defenses import Setting
from wemem.environment import describe
from wemem.errors import WememError
from wemem.pipeline import ExperimentResult
from wemem.validity import Check, mimicry_check, reference_check

from ..storage._records import (
    store_environment,
    store_fingerprint,
    store_own_code,
    store_shared_work_jobs,
    store_validity,
    stored_fingerprint,
    to_json,
)
from ..study import OpenStudy
from ._cluster import task_share
from ._jobs import Placement, RayMap, RaySteppers, Shipped, receive, ship


def compact_placements(records: list[Placement]) -> list[list[object]]:
    return [record.compact() for record in records]


class TrialConfig(TypedDict):
    """A trial's Tune config, as the searcher suggests it: the Optuna trial, the setting it sampled and the pruning
    it evaluates at (the study file's ``[pruning]``, or sampled from ``[search.space.pruning]``)."""

    optuna_trial: int
    setting: Setting
    pruning: PruningConfig


OUTCOME_KEY = "outcome"  # the key of a finished trial's TrialReport in its last Tune result


@dataclass(frozen=True)
class TrialReport:
    """A finished trial as it crosses Ray Tune to the launcher: its objective values, its accuracy constraint
    (None: the mode has none), the user attributes to store (plain JSON) and, when asked for, its per-target
    scores (:func:`scores_archive`; for MLflow, never stored). Tune's result dict carries it as one JSON string
    (:meth:`to_json`), so Tune never flattens or rewrites its keys."""

    values: list[float]
    constraint: float | None
    user_attrs: Mapping[str, object]
    scores: bytes | None = None

    def to_json(self) -> str:
        data: dict[str, object] = {
            "values": self.values,
            "constraint": self.constraint,
            "user_attrs": dict(self.user_attrs),
        }
        if self.scores is not None:
            data["scores"] = base64.b64encode(self.scores).decode("ascii")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> TrialReport:
        data = json.loads(text)
        scores = data.get("scores")
        return cls(data["values"], data["constraint"], data["user_attrs"], scores and base64.b64decode(scores))


def scores_archive(result: ExperimentResult) -> bytes:
    """A trial's per-target scores as a compressed ``.npz``: ``index`` (the victim's targets, pool indices),
    ``member`` (their membership) and ``score.ATTACK`` per attack (higher = member), on the first target draw
    of the first repeat -- the draw the trial's ROC points and intervals describe. A few thousand targets make
    tens of KB, small enough to travel in the trial's Tune result."""
    assert result.victim_targets is not None  # set by every run_experiment
    # Any: numpy's stub types the keyword arrays like its allow_pickle flag
    arrays: dict[str, Any] = {
        "index": result.victim_targets.indices,
        "member": result.victim_targets.is_member,
        **{f"score.{name}": scores for name, scores in result.attack_scores.items()},
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def shared_work(opened: OpenStudy, echo: Echo) -> tuple[Shipped, Reference]:
    """Prepare the assets on the trials' shares (cached by the launcher), ship them, measure the reference.

    Refuses (WememError) when the study was run against other assets: the fingerprint of split, pretrained
    weights, mem-scores and reference is stored with the study, so no trial is scored against another victim.
    """
    study, spec = opened.study, opened.spec
    share = task_share(opened.definition)
    assets = prepare_assets(spec.experiment, spec.cache_dir, share, log=echo)
    shipped = ship(assets)
    base = reference(spec, assets, share, log=echo)
    fingerprint = content_fingerprint(assets.fingerprint, base.utility, base.privacy, base.strongest_attack)
    stored = stored_fingerprint(study)
    if stored is None:
        store_fingerprint(study, fingerprint)
    elif stored != fingerprint:
        raise WememError(
            f"study {study.study_name!r} was run against other assets (fingerprint {stored[:12]}, this launcher has "
            f"{fingerprint[:12]}): the split, pretrained victim and shadows, mem-scores or reference differ, so "
            f"new trials would not be comparable. Run this launcher with the study's cache folder "
            f"(--cache-dir, copied from the first launcher) or start a new study under another name"
        )
    if share.placements:
        store_shared_work_jobs(study, compact_placements(share.placements))
    store_validity(study, study_checks(assets, base, spec.objective.privacy_metric))
    store_environment(study, describe())  # the latest launcher's versions and device, for the report
    store_own_code(study, spec.experiment.own_code(), assets.pools.encoding)  # for export and apply
    return shipped, base


def study_checks(assets: StudyAssets, base: Reference, metric: str) -> list[Check]:
    """The validity checks of the shared work: does the undefended pruned reference leak measurably, and do the
    shadows mimic the victim (training-set sizes, pruned test accuracies)?"""
    result = base.result
    # None in a reference cached without it: a cached reference is reused, never remeasured (its numbers are
    # in the study's assets fingerprint), and the check then leaves out the generalization gap
    train_accuracy = result.get("victim_train_accuracy")
    return [
        reference_check(result["attacks"], metric, train_accuracy, result["utility"], base.privacy_se),
        mimicry_check(
            len(assets.split.victim.train),
            result["utility"],
            [len(s.train) for s in assets.split.shadows],
            result["shadow_accuracy"],
        ),
    ]


def reference_at(
    at_pruning: TrialSpec, study_spec: TrialSpec, study_reference: Reference, assets: StudyAssets, share: RayMap
) -> Reference:
    """The undefended reference a trial is judged against: pruned like the trial. The study's own (the launcher's
    shared work) when the trial prunes like the study file; else measured once per pruning on the trial's share
    and cached under the cache folder (a file lock makes the trials at one sparsity measure it once between
    them, and every later trial at that sparsity reads it)."""
    if at_pruning.pruning == study_spec.pruning:
        return study_reference
    return reference(at_pruning, assets, share)


def failure_reason(error: BaseException) -> str:
    """One line saying why a trial failed: the innermost error of a Ray task chain, with its type."""
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the worker's own exception
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:500]


def round_report(index: int, value: float) -> None:
    """Early stopping's per-round objective, as the scheduler reads it."""
    tune.report({"round": index, "intermediate": value})


def trial_trainable(
    config: TrialConfig,
    spec: TrialSpec,
    reference: Reference,
    share: RayMap,
    assets: Shipped,
    timeout_s: float | None = None,
    keep_scores: bool = False,
) -> None:
    """One Tune trial: evaluate the setting with K+1 parallel jobs, then the attack jobs; report as JSON, with
    the per-target scores when ``keep_scores`` (the launcher tracks the study).

    With per-round reports (early stopping) the K+1 models live in Ray actors stepped round by round, and each
    round's objective is reported; the scheduler may stop the trial after any round. With per-instance reports
    (racing) each (fine-tuning, draw)'s objective is reported as ``instance`` (and, racing rounds, each first
    fine-tuning's (round, draw)'s before them, the models stepped as for early stopping); the scheduler may stop
    the trial after any of them. Where every job ran is reported with the outcome (``jobs``).
    """
    # fresh placement records for this trial; past the deadline its jobs are cancelled and it fails
    share = RayMap(share.num_cpus, share.num_gpus, deadline=None if timeout_s is None else time.time() + timeout_s)
    instances = None
    if spec.instance_reports:
        instances = lambda index, value: tune.report({"instance": index, "intermediate": value})  # noqa: E731
    rounds = None
    if spec.round_reports or spec.round_racing:
        rounds = RoundHooks(
            # racing rounds are instances of the race; early stopping's rounds are steps of the median pruner
            instances if spec.round_racing and instances is not None else round_report,
            lambda factory, jobs: RaySteppers(share, factory, jobs),
        )
    try:
        victim_assets = receive(assets)
        at_pruning = replace(spec, pruning=config["pruning"])
        base = reference_at(at_pruning, spec, reference, victim_assets, share)
        outcome = evaluate_trial(
            at_pruning, config["setting"], base, victim_assets, map_fn=share, rounds=rounds, instances=instances
        )
    except Exception as error:  # the trial fails alone, with its reason; the launcher goes on
        tune.report({"done": True, "error": failure_reason(error)})
        return
    attrs = to_json(dict(outcome.user_attrs(), jobs=compact_placements(share.placements)))
    scores = scores_archive(outcome.result) if keep_scores else None
    report = TrialReport(outcome.objective.values, outcome.objective.constraint, attrs, scores)
    tune.report({"done": True, OUTCOME_KEY: report.to_json()})
