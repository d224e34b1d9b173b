"""Evaluate one trial (one defense setting) and the study's undefended iteratively pruned reference."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import NotRequired, TypedDict

import numpy as np
from filelock import FileLock

from wemem.assets import Echo, StudyAssets, cache_path, load_checked, save_checked
from wemem.attacks import AttackInputs, run_attacks
from wemem.config import ExperimentConfig, PruningConfig, content_hash
from wemem.defenses import UNDEFENDED, Setting
from wemem.parallel import MapFn, StepperMap, serial_map
from wemem.pipeline import (
    ExperimentFigures,
    ExperimentRecord,
    ExperimentResult,
    ExperimentTimings,
    RoundMonitor,
    attack_targets,
    fine_tuning_schedule,
    run_experiment,
)

from ._leakage import leakage
from ._objective import ObjectiveConfig, ObjectiveValue, score


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares."""

    experiment: ExperimentConfig
    pruning: PruningConfig
    attacks: tuple[str, ...]
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    cache_dir: str = ".wemem-cache"
    adaptive: bool = True
    round_reports: bool = False  # report a per-round objective (for early stopping of poor trials)
    # ``[search] repeats`` and ``target_draws``: score each evaluation as the mean over ``repeats`` fine-tunings
    # of every model (other seeds), each attacked on ``target_draws`` draws of its balanced target set
    repeats: int = 1
    target_draws: int = 1
    # ``[search] racing``: report each (fine-tuning, draw)'s objective as it is known, so a pruner may stop the trial
    instance_reports: bool = False
    # ``[search] racing_rounds``: report each (pruning round, draw) of the first fine-tuning first, as instances
    round_racing: bool = False


# The cheap attacks (those that declare ``cheap``: thresholds only, no model training), behind the per-round
# objective and the study file's default [attacks] names. Listed in this order because the default list is stored
# in every study's definition (part of its identity): a derived, sorted order would make existing studies differ.
CHEAP_ATTACKS = ("conf", "entr", "mentr", "hconf")


@dataclass(frozen=True)
class RoundHooks:
    """How a trial reports per-round objectives: ``report(round, value)`` and the stepper executor to use."""

    report: Callable[[int, float], None]
    stepper_map: StepperMap


# ``report(instance, value)``: one instance's objective (see :func:`instance_index` and :func:`round_instance`)
InstanceReport = Callable[[int, float], None]


def raced_rounds(spec: TrialSpec) -> int:
    """How many pruning rounds of the first fine-tuning are racing instances (``[search] racing_rounds``)."""
    return len(fine_tuning_schedule(spec.pruning)) if spec.round_racing else 0


def round_instance(spec: TrialSpec, round_index: int, draw: int) -> int:
    """A (pruning round, target draw) instance's number in the first fine-tuning: round * D + d."""
    return round_index * spec.target_draws + draw


def instance_index(spec: TrialSpec, fine_tuning: int, draw: int) -> int:
    """A (fine-tuning, target draw) instance's number, the same in every trial of a study, so a racing pruner
    pairs the same draws: after the raced rounds' instances, (rounds + r) * D + d."""
    return (raced_rounds(spec) + fine_tuning) * spec.target_draws + draw


def instance_values(spec: TrialSpec, base: Reference, result: ExperimentResult) -> list[float]:
    """The objective of each target draw of one fine-tuning, scored alone against the trial's floor. A single
    instance has no standard error of its own, so leakage_cap judges its point leakage (``privacy_se`` 0)."""
    floor = floor_utility(spec, base)
    return [
        score(
            spec_leakage(spec, attacks)[0], result.utility, floor, spec.objective, sparsity=spec.pruning.sparsity
        ).values[0]
        for attacks in [result.attacks, *result.more_draws]
    ]


def instance_reporter(
    spec: TrialSpec, base: Reference, report: InstanceReport
) -> Callable[[int, ExperimentResult], None]:
    """Report every draw of a finished fine-tuning in instance order. The draws of one fine-tuning are attacked
    together (their attack stage is a small share of the fine-tuning's time, see docs/benchmarks.md), so a pruner
    that stops the trial after any of them saves the fine-tunings that follow."""

    def finished(fine_tuning: int, result: ExperimentResult) -> None:
        for draw, value in enumerate(instance_values(spec, base, result)):
            report(instance_index(spec, fine_tuning, draw), value)

    return finished


@dataclass(frozen=True)
class Repeated:
    """One evaluation's figures over its repeats: the means, the standard error of the leakage, and each
    (fine-tuning, draw)'s (utility, leakage)."""

    utility: float
    privacy: float
    privacy_se: float
    draws: list[list[tuple[float, float]]]  # [fine-tuning][draw] -> (utility, leakage)
    se_kind: str  # how privacy_se was estimated (see :func:`privacy_standard_error`)
    timings: list[ExperimentTimings]  # [fine-tuning] -> where its time went


def privacy_standard_error(leakage: list[list[float]], n_targets: int) -> tuple[float, str]:
    """The standard error of an evaluation's leakage, the mean of ``leakage[fine-tuning][draw]``.

    - R >= 2 fine-tunings: the sample standard deviation of their means over sqrt(R); it holds every noise the
      repeats redraw (fine-tuning and targets).
    - one fine-tuning, D >= 2 target draws: the draws' standard deviation over sqrt(D), the target sampling's
      share only (the fine-tuning's own noise is not in it).
    - scored once: the binomial bound sqrt(P (1 - P) / N) for a balanced accuracy P on N targets (N/2 a side;
      Var = (TPR(1-TPR) + TNR(1-TNR)) / 2N is largest at TPR = TNR = P), the target sampling's share only.
    """
    rows = [np.asarray(row, dtype=float) for row in leakage]
    if len(rows) >= 2:
        means = [row.mean() for row in rows]
        return float(np.std(means, ddof=1) / np.sqrt(len(means))), f"sd of {len(rows)} fine-tunings / sqrt(R)"
    row = rows[0]
    if len(row) >= 2:
        return float(row.std(ddof=1) / np.sqrt(len(row))), (
            f"sd of {len(row)} target draws / sqrt(D) (target sampling only)"
        )
    p = min(max(float(row[0]), 0.0), 1.0)
    return float(np.sqrt(p * (1 - p) / max(n_targets, 1))), f"binomial bound over {n_targets} targets"


def repeated(
    spec: TrialSpec,
    assets: StudyAssets,
    first: ExperimentResult,
    rerun: Callable[[int], ExperimentResult],
    finished: Callable[[int, ExperimentResult], None] = lambda fine_tuning, result: None,
) -> Repeated:
    """An evaluation over its repeats: ``first`` (fine-tuning 0, with its target draws) and ``rerun(r)`` for the
    fine-tunings r = 1..R-1; ``finished(r, result)`` is told of each fine-tuning before the next one starts (it may
    raise to stop the evaluation)."""
    results = []
    for fine_tuning in range(spec.repeats):
        result = first if fine_tuning == 0 else rerun(fine_tuning)
        finished(fine_tuning, result)
        results.append(result)
    draws = [
        [(result.utility, spec_leakage(spec, attacks)[0]) for attacks in [result.attacks, *result.more_draws]]
        for result in results
    ]
    se, kind = privacy_standard_error([[p for _, p in row] for row in draws], len(attack_targets(assets, 0).indices))
    return Repeated(
        float(np.mean([result.utility for result in results])),
        float(np.mean([p for row in draws for _, p in row])),
        se,
        draws,
        kind,
        [result.timings for result in results],
    )


@dataclass(frozen=True)
class Reference:
    """The undefended iteratively pruned model: U_base and P_base, measured once per study (means over the
    study's repeats)."""

    utility: float
    privacy: float
    strongest_attack: str
    result: ExperimentRecord
    privacy_se: float | None = None


class RepeatRecord(TypedDict):
    """One (fine-tuning, target draw) of an evaluation's repeats."""

    fine_tuning: int
    draw: int
    utility: float
    privacy: float


class TrialTimings(ExperimentTimings):
    shared: dict[str, float]  # see :func:`shared_seconds`


class TrialAttrs(ExperimentFigures):
    """What a trial stores as its user attributes (JSON): the objective's figures and the first repeat's details
    (the experiment's figures, its ``utility`` replaced by the mean over the repeats)."""

    privacy_se: NotRequired[float]
    privacy_se_kind: NotRequired[str]
    repeats: NotRequired[list[RepeatRecord]]
    privacy: float
    strongest_attack: str
    feasible: bool
    trial_seconds: float
    timings: TrialTimings


@dataclass
class TrialOutcome:
    utility: float
    privacy: float
    strongest_attack: str
    objective: ObjectiveValue
    result: ExperimentResult
    shared_seconds: dict[str, float] = field(default_factory=dict)  # see :func:`shared_seconds`
    repeats: Repeated | None = None

    def user_attrs(self) -> TrialAttrs:
        """JSON-serializable numbers to store with the trial."""
        data = self.result.to_dict()
        attrs = TrialAttrs(
            utility=self.utility,
            privacy=self.privacy,
            strongest_attack=self.strongest_attack,
            feasible=self.objective.feasible,
            attacks=data["attacks"],
            defense_seconds=data["defense_seconds"],
            trial_seconds=data["seconds"],
            victim_rounds=data["victim_rounds"],
            victim_layer_sparsity=data["victim_layer_sparsity"],
            shadow_accuracy=data["shadow_accuracy"],
            defense_report=data["defense_report"],
            pretrained_accuracy=data["pretrained_accuracy"],
            timings=TrialTimings(shared=self.shared_seconds, **data["timings"]),
        )
        if self.repeats is None:
            return attrs
        repeats = [
            RepeatRecord(fine_tuning=r, draw=d, utility=u, privacy=p)
            for r, row in enumerate(self.repeats.draws)
            for d, (u, p) in enumerate(row)
        ]
        return TrialAttrs(
            privacy_se=self.repeats.privacy_se, privacy_se_kind=self.repeats.se_kind, repeats=repeats, **attrs
        )


def experiment_of(
    spec: TrialSpec,
    assets: StudyAssets,
    setting: Setting,
    map_fn: MapFn,
) -> Callable[..., ExperimentResult]:
    """``run_experiment`` of one setting as the spec evaluates it (its attacks and each fine-tuning's target
    draws); the caller adds the repeat and any per-run options."""
    return functools.partial(
        run_experiment,
        assets,
        setting,
        spec.pruning,
        list(spec.attacks),
        map_fn=map_fn,
        adaptive=spec.adaptive,
        draws=spec.target_draws,
    )


def spec_leakage(spec: TrialSpec, attacks: Mapping[str, Mapping[str, object]]) -> tuple[float, str]:
    among = list(spec.objective.privacy_attacks) if spec.objective.privacy_attacks else None
    return leakage(attacks, spec.objective.privacy_metric, among)


def reference(
    spec: TrialSpec, assets: StudyAssets, map_fn: MapFn = serial_map, log: Echo = lambda message: None
) -> Reference:
    """U_base and P_base of the undefended iteratively pruned model, cached (checksummed) next to the assets."""
    # in the key only when > 1: a study without repeats keeps the key (and the cached reference) it always had
    repeats = {k: v for k, v in (("repeats", spec.repeats), ("draws", spec.target_draws)) if v > 1}
    key = content_hash(
        {
            "pruning": asdict(spec.pruning),
            "attacks": list(spec.attacks),
            "adaptive": spec.adaptive,
            "metric": spec.objective.privacy_metric,
            "among": spec.objective.privacy_attacks,
            **repeats,
        }
    )
    directory = cache_path(spec.experiment, spec.cache_dir)
    path = directory / f"reference-{key}.json"
    with FileLock(str(directory / ".reference.lock")):
        cached = load_checked(path, lambda p: Reference(**json.loads(p.read_text())), log)
        if cached is not None:
            return cached
        run = experiment_of(spec, assets, Setting(UNDEFENDED), map_fn)
        result = run()
        noise = repeated(spec, assets, result, lambda r: run(repeat=r))
        ref = Reference(
            noise.utility, noise.privacy, spec_leakage(spec, result.attacks)[1], result.to_dict(), noise.privacy_se
        )
        save_checked(path, json.dumps(asdict(ref)))
        return ref


def floor_utility(spec: TrialSpec, base: Reference) -> float:
    """The accuracy the study's floor is stated against: the undefended reference pruned like the trial, or the
    dense (pretrained) victim's (``[objective] accuracy_reference``)."""
    dense = base.result.get("pretrained_accuracy")
    return spec.objective.floor_utility(base.utility, None if dense is None else float(dense))


def round_leakage(spec: TrialSpec, inputs: AttackInputs) -> float:
    """One pruning round's checkpoints' leakage on one target draw, judged by the cheap attacks only (they take
    milliseconds, so judging every round costs little beside its fine-tuning)."""
    return leakage(run_attacks(list(CHEAP_ATTACKS), inputs, uncertainty=False), spec.objective.privacy_metric)[0]


def round_objective(spec: TrialSpec, base: Reference, victim_accuracy: float, inputs: AttackInputs) -> float:
    """The objective of one pruning round's checkpoints on one target draw (cheap attacks only)."""
    return score(
        round_leakage(spec, inputs),
        victim_accuracy,
        floor_utility(spec, base),
        spec.objective,
        sparsity=spec.pruning.sparsity,
    ).values[0]


def round_monitor(spec: TrialSpec, base: Reference, report: Callable[[int, float], None]) -> RoundMonitor:
    """What a trial reports after each pruning round of its first fine-tuning: for early stopping the round's
    objective on the study's own target draw, at step ``round``; for racing rounds each draw's objective as its
    own instance (:func:`round_instance`), so a pruner pairs trials draw by draw inside the fine-tuning."""
    if not spec.round_racing:
        return lambda index, accuracy, inputs_on: report(index, round_objective(spec, base, accuracy, inputs_on(0)))

    def raced(index: int, accuracy: float, inputs_on: Callable[[int], AttackInputs]) -> None:
        for draw in range(spec.target_draws):
            report(round_instance(spec, index, draw), round_objective(spec, base, accuracy, inputs_on(draw)))

    return raced


def shared_seconds(assets: StudyAssets, base: Reference) -> dict[str, float]:
    """The study's setting-independent work (split, pretraining, mem-scores, reference) in seconds, as recorded
    when each piece was computed (carried by the assets); no trial pays it again."""
    recorded = dict(assets.timings)
    if "seconds" in base.result:
        recorded["reference"] = base.result["seconds"]
    return recorded


def evaluate_trial(
    spec: TrialSpec,
    setting: Setting,
    base: Reference,
    assets: StudyAssets,
    map_fn: MapFn = serial_map,
    keep_victim_state: bool = False,
    rounds: RoundHooks | None = None,
    instances: InstanceReport | None = None,
) -> TrialOutcome:
    """One setting's evaluation; ``rounds`` reports each pruning round's objective (early stopping, or racing
    rounds: see :func:`round_monitor`), ``instances`` each (fine-tuning, draw)'s (racing). Either may raise to stop
    the trial."""
    monitor, stepper_map = None, None
    if rounds is not None:
        stepper_map, monitor = rounds.stepper_map, round_monitor(spec, base, rounds.report)
    run = experiment_of(spec, assets, setting, map_fn)
    result = run(keep_victim_state=keep_victim_state, round_monitor=monitor, stepper_map=stepper_map)
    finished = instance_reporter(spec, base, instances) if instances is not None else lambda r, result: None
    noise = repeated(spec, assets, result, lambda r: run(repeat=r), finished)
    attack = spec_leakage(spec, result.attacks)[1]  # the strongest attack of the first repeat
    return TrialOutcome(
        noise.utility,
        noise.privacy,
        attack,
        score(
            noise.privacy,
            noise.utility,
            floor_utility(spec, base),
            spec.objective,
            privacy_se=noise.privacy_se,
            sparsity=spec.pruning.sparsity,
        ),
        result,
        shared_seconds(assets, base),
        noise,
    )
