"""Evaluate one trial (one defense setting) and the study's undefended iteratively pruned reference."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from filelock import FileLock

from wemem.assets import Echo, StudyAssets, cache_path, load_checked, save_checked
from wemem.config import ExperimentConfig, PruningConfig, content_hash
from wemem.attacks import AttackInputs, run_attacks
from wemem.parallel import MapFn, StepperMap, serial_map
from wemem.pipeline import ExperimentResult, run_experiment

from .leakage import leakage
from .objective import ObjectiveConfig, ObjectiveValue, score


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


# The cheap attacks (those that declare ``cheap``: thresholds only, no model training), behind the per-round
# objective and the study file's default [attacks] names. Listed in this order because the default list is stored
# in every study's definition (part of its identity): a derived, sorted order would make existing studies differ.
CHEAP_ATTACKS = ("conf", "entr", "mentr", "hconf")


@dataclass(frozen=True)
class RoundHooks:
    """How a trial reports per-round objectives: ``report(round, value)`` and the stepper executor to use."""

    report: Callable[[int, float], None]
    stepper_map: StepperMap


@dataclass(frozen=True)
class Reference:
    """The undefended iteratively pruned model: U_base and P_base, measured once per study."""

    utility: float
    privacy: float
    strongest_attack: str
    result: dict[str, Any]


@dataclass
class TrialOutcome:
    utility: float
    privacy: float
    strongest_attack: str
    objective: ObjectiveValue
    result: ExperimentResult
    shared_seconds: dict[str, float] = field(default_factory=dict)  # see :func:`shared_seconds`

    def user_attrs(self) -> dict[str, Any]:
        """JSON-serializable numbers to store with the trial."""
        data = self.result.to_dict()
        return {
            "utility": self.utility,
            "privacy": self.privacy,
            "strongest_attack": self.strongest_attack,
            "feasible": self.objective.feasible,
            "attacks": data["attacks"],
            "defense_seconds": data["defense_seconds"],
            "trial_seconds": data["seconds"],
            "victim_rounds": data["victim_rounds"],
            "victim_layer_sparsity": data["victim_layer_sparsity"],
            "shadow_accuracy": data["shadow_accuracy"],
            "defense_report": data["defense_report"],
            "pretrained_accuracy": data["pretrained_accuracy"],
            "timings": {"shared": self.shared_seconds, **data["timings"]},
        }


def spec_leakage(spec: TrialSpec, attacks: dict[str, dict[str, Any]]) -> tuple[float, str]:
    among = list(spec.objective.privacy_attacks) if spec.objective.privacy_attacks else None
    return leakage(attacks, spec.objective.privacy_metric, among)


def reference(spec: TrialSpec, assets: StudyAssets, map_fn: MapFn = serial_map,
              log: Echo = lambda message: None) -> Reference:
    """U_base and P_base of the undefended iteratively pruned model, cached (checksummed) next to the assets."""
    key = content_hash({"pruning": asdict(spec.pruning), "attacks": list(spec.attacks), "adaptive": spec.adaptive,
                        "metric": spec.objective.privacy_metric, "among": spec.objective.privacy_attacks})
    directory = cache_path(spec.experiment, spec.cache_dir)
    path = directory / f"reference-{key}.json"
    with FileLock(str(directory / ".reference.lock")):
        cached = load_checked(path, lambda p: Reference(**json.loads(p.read_text())), log)
        if cached is not None:
            return cached
        result = run_experiment(assets, "none", {}, spec.pruning, list(spec.attacks), map_fn, spec.adaptive)
        privacy, attack = spec_leakage(spec, result.attacks)
        ref = Reference(result.utility, privacy, attack, result.to_dict())
        save_checked(path, lambda tmp: tmp.write_text(json.dumps(asdict(ref))))
        return ref


def round_objective(spec: TrialSpec, base: Reference, victim_accuracy: float, inputs: AttackInputs) -> float:
    """The objective of one pruning round's checkpoints, judged by the cheap attacks only."""
    privacy, _ = leakage(run_attacks(list(CHEAP_ATTACKS), inputs), spec.objective.privacy_metric)
    return score(privacy, victim_accuracy, base.utility, spec.objective).values[0]


def shared_seconds(assets: StudyAssets, base: Reference) -> dict[str, float]:
    """The study's setting-independent work (split, pretraining, mem-scores, reference) in seconds, as recorded
    when each piece was computed (carried by the assets); no trial pays it again."""
    recorded = dict(assets.timings)
    if "seconds" in base.result:
        recorded["reference"] = base.result["seconds"]
    return recorded


def evaluate_trial(spec: TrialSpec, defense: str, settings: dict[str, Any], base: Reference, assets: StudyAssets,
                   map_fn: MapFn = serial_map, keep_victim_state: bool = False,
                   rounds: RoundHooks | None = None) -> TrialOutcome:
    monitor, stepper_map = None, None
    if rounds is not None:
        stepper_map = rounds.stepper_map
        monitor = lambda index, accuracy, inputs: rounds.report(  # noqa: E731
            index, round_objective(spec, base, accuracy, inputs))
    result = run_experiment(assets, defense, settings, spec.pruning, list(spec.attacks), map_fn, spec.adaptive,
                            keep_victim_state, round_monitor=monitor, stepper_map=stepper_map)
    privacy, attack = spec_leakage(spec, result.attacks)
    return TrialOutcome(result.utility, privacy, attack, score(privacy, result.utility, base.utility, spec.objective),
                        result, shared_seconds(assets, base))


