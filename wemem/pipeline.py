"""The experiment pipeline: pretrained models -> prune each with the defense -> attack adaptively.

One experiment = one defense setting applied to the victim and all K shadows (adaptive attacker), each pruned
by its own job so a caller can run them in parallel through a ``MapFn``. A job is the assets (which a parallel map
ships by reference) and one small typed request (:class:`PruningJob`, :class:`AttackJob`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import NotRequired, TypedDict

import numpy as np
import torch
from torch import nn

from .assets import StudyAssets
from .attacks import (
    ATTACKS,
    AttackInputs,
    Targets,
    balanced_targets,
    needs_sensitivity,
    output_sensitivity,
    population_indices,
    run_attacks_timed,
)
from .config import PruningConfig
from .defenses import UNDEFENDED, Defense, DefenseContext, Setting
from .parallel import LocalSteppers, MapFn, StepperMap, job_seed, serial_map
from .pruning import Masks, dense_masks, layer_sparsity, prune_to, sparsity_schedule
from .training import (
    RoundResult,
    accuracy,
    bound_heap_growth,
    on_training_device,
    place_model,
    predict_log_probs,
    train_round,
)


@dataclass
class PrunedModel:
    name: str
    test_accuracy: float
    dev_accuracy: float
    defense_seconds: float
    rounds: list[dict[str, float]]
    layer_sparsity: dict[str, float]
    report: dict[str, float]
    log_probs: np.ndarray  # deployed outputs over the whole pool, for the attacks
    # output sensitivities [n_pool, C] when an attack needs them: measured on this model's own attack targets
    # (the only rows an attack reads, see attack_targets), NaN elsewhere
    sensitivity: np.ndarray | None = None
    state: dict[str, torch.Tensor] | None = None
    masks: Masks | None = None
    # wall seconds of this model's job: "setup" (assets, model, defense), "pruning" (every round's pruning and
    # fine-tuning), "outputs" (deployed outputs and, for SAMIA, sensitivities over the pool), "total"
    timings: dict[str, float] = field(default_factory=dict)
    # accuracy on its own training set: with the test accuracy, the generalization gap the validity checks report
    train_accuracy: float = float("nan")


def fine_tuning_schedule(pruning: PruningConfig | None) -> list[float]:
    """Sparsity of each fine-tuning round; no round at all without pruning (the dense pretrained original)."""
    return [] if pruning is None else sparsity_schedule(pruning.sparsity, pruning.steps, pruning.one_shot)


# round index, victim round accuracy, and the round's attack inputs on the experiment's target draw number d (0 to
# draws - 1), built when asked: early stopping reads the study's own draw alone, racing rounds read every draw
RoundMonitor = Callable[[int, float, Callable[[int], AttackInputs]], None]


@dataclass
class RoundReport:
    """One model after one pruning round: its round checkpoint's test accuracy and deployed outputs."""

    name: str
    round: int
    sparsity: float
    test_accuracy: float
    log_probs: np.ndarray
    sensitivity: None = None  # per-round reports feed only the cheap attacks


class PruningRun:
    """Prune one pretrained model round by round, fine-tuning every round under the defense (SPEC 5, 7).

    Each round starts by growing the masks to the round's sparsity, continues from the previous round's
    last-epoch weights with the same optimizer state, and keeps its best-dev checkpoint; the output of
    ``finish()`` is the best-dev checkpoint of the last round. ``step()`` runs one round and reports on its
    checkpoint, so a caller can judge (and stop) a trial between rounds. With ``sensitivity`` the deployed
    model's output sensitivity (SAMIA) is measured on the model's attack targets. With ``pruning=None`` no round
    runs and the dense pretrained model is deployed as is, so the original is observed exactly like its pruned
    versions.

    The run keeps its own torch RNG state, so its result does not depend on how runs are interleaved.
    """

    # the run's own torch RNG states, saved by every _own_rng block (the CUDA one on a CUDA device only)
    _cpu_rng: torch.Tensor
    _cuda_rng: torch.Tensor | None

    def __init__(
        self,
        assets: StudyAssets,
        model_index: int,
        defense: Defense,
        pruning: PruningConfig | None,
        seed: int,
        keep_state: bool = False,
        sensitivity: bool = False,
        setup_seconds: float = 0.0,
        draws: tuple[int, ...] = (0,),
    ):
        start = time.perf_counter()
        bound_heap_growth()  # this process's peak memory is reached in pruning runs and the attacks after them
        self.name, self.split = assets.split.models()[model_index]
        self.target_rows = sensitivity_rows(assets, model_index, draws)
        self.pools, self.config, self.defense = on_training_device(assets.pools), assets.config, defense
        self.seed, self.keep_state, self.sensitivity = seed, keep_state, sensitivity
        self.schedule = fine_tuning_schedule(pruning)
        self.generator = torch.Generator().manual_seed(seed)
        with self._own_rng(fresh=True):
            self.model = self.config.new_model(self.pools)
        self.model = place_model(self.model, self.pools.x.device, self.config.train)
        self.model.load_state_dict(assets.pretrained[self.name])
        defense.bind(
            DefenseContext(self.pools, self.split.train, self.split.dev, assets.memscores, self.config.train, seed)
        )
        self.optimizer = defense.make_optimizer(self.model)
        self.masks = dense_masks(self.model)
        self.rounds: list[dict[str, float]] = []
        self.last_round: RoundResult | None = None  # its best-dev checkpoint is the one deployed
        self.seconds = 0.0
        self.setup_seconds = setup_seconds + time.perf_counter() - start

    @contextlib.contextmanager
    def _own_rng(self, fresh: bool = False) -> Iterator[None]:
        devices = [self.pools.x.device] if self.pools.x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if fresh:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._cpu_rng)
                if self._cuda_rng is not None:
                    torch.cuda.set_rng_state(self._cuda_rng, devices[0])
            yield
            self._cpu_rng = torch.get_rng_state()
            self._cuda_rng = torch.cuda.get_rng_state(devices[0]) if devices else None

    @property
    def done(self) -> bool:
        return len(self.rounds) == len(self.schedule)

    def _advance(self) -> RoundResult:
        index, sparsity = len(self.rounds), self.schedule[len(self.rounds)]
        start = time.perf_counter()
        with self._own_rng():
            self.masks = prune_to(self.model, self.masks, sparsity)
            result = train_round(
                self.model,
                self.optimizer,
                self.pools,
                self.split.dev,
                self.defense,
                self.masks,
                self.config.train.finetune_epochs,
                self.config.train.patience,
                self.generator,
            )
        self.seconds += time.perf_counter() - start
        self.last_round = result
        self.rounds.append(
            {
                "round": index,
                "sparsity": sparsity,
                "epochs": result.epochs,
                "best_epoch": result.best_epoch,
                "best_dev_accuracy": result.best_dev_accuracy,
            }
        )
        return result

    def step(self) -> RoundReport:
        """Run the next round and report on its best-dev checkpoint (the training continues from the last epoch)."""
        result = self._advance()
        last_epoch = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(result.best_state)
        everything = torch.arange(len(self.pools.y))
        with self._own_rng():
            report = RoundReport(
                self.name,
                len(self.rounds) - 1,
                self.rounds[-1]["sparsity"],
                accuracy(self.model, self.pools, self.split.test),
                predict_log_probs(self.model, self.pools, everything, self.defense).cpu().numpy(),
            )
        self.model.load_state_dict(last_epoch)
        return report

    def _target_sensitivity(self, model: nn.Module) -> np.ndarray:
        """SAMIA's sensitivities on this model's attack targets only: each costs 10 perturbed forward passes, and
        the targets are a fraction of the pool (a quarter on Location, about a seventh on CIFAR-10)."""
        rows = torch.as_tensor(self.target_rows)
        measured = (
            output_sensitivity(model, self.defense, self.pools.x[rows.to(self.pools.x.device)], self.seed).cpu().numpy()
        )
        sensitivity = np.full((len(self.pools.y), self.pools.num_classes), np.nan, dtype=measured.dtype)
        sensitivity[self.target_rows] = measured
        return sensitivity

    def finish(self) -> PrunedModel:
        """Run the remaining rounds and deploy the last round's best-dev checkpoint."""
        while not self.done:
            self._advance()
        start = time.perf_counter()
        model, pools = self.model, self.pools
        if self.last_round is None:
            dev_accuracy = accuracy(model, pools, self.split.dev)
        else:
            model.load_state_dict(self.last_round.best_state)
            dev_accuracy = self.last_round.best_dev_accuracy
        with self._own_rng():
            log_probs = predict_log_probs(model, pools, torch.arange(len(pools.y)), self.defense).cpu().numpy()
            sensitivity = self._target_sensitivity(model) if self.sensitivity else None
        test_accuracy = accuracy(model, pools, self.split.test)
        train_accuracy = accuracy(model, pools, self.split.train)
        outputs_seconds = time.perf_counter() - start
        return PrunedModel(
            name=self.name,
            test_accuracy=test_accuracy,
            dev_accuracy=dev_accuracy,
            defense_seconds=self.seconds,
            rounds=self.rounds,
            layer_sparsity=layer_sparsity(model),
            report=self.defense.report(),
            log_probs=log_probs,
            sensitivity=sensitivity,
            state={k: v.cpu() for k, v in model.state_dict().items()} if self.keep_state else None,
            masks={k: v.cpu() for k, v in self.masks.items()} if self.keep_state else None,
            timings={
                "setup": self.setup_seconds,
                "pruning": self.seconds,
                "outputs": outputs_seconds,
                "total": self.setup_seconds + self.seconds + outputs_seconds,
            },
            train_accuracy=train_accuracy,
        )


def prune_with_defense(
    assets: StudyAssets,
    model_index: int,
    defense: Defense,
    pruning: PruningConfig | None,
    seed: int,
    keep_state: bool = False,
    sensitivity: bool = False,
) -> PrunedModel:
    """All rounds of one model at once (see :class:`PruningRun`)."""
    return PruningRun(assets, model_index, defense, pruning, seed, keep_state, sensitivity).finish()


@dataclass(frozen=True)
class PruningJob:
    """One model's pruning run within an experiment: everything the job needs besides the assets."""

    model_index: int  # 0 = victim, 1..K = shadows
    setting: Setting
    pruning: PruningConfig | None
    keep_state: bool = False  # return the pruned weights and masks
    sensitivity: bool = False  # measure output sensitivities (an attack reads them)
    repeat: int = 0  # seeds the fine-tuning (0: the study's own seeds)
    draws: tuple[int, ...] = (0,)  # the target draws the model will be attacked on


def pruning_seed(assets: StudyAssets, model_index: int, repeat: int = 0) -> int:
    """The seed of a model's pruning run: its fine-tuning's and its output-sensitivity probes' (SAMIA), so a
    shipped copy of the model is probed as the engine probed it (:mod:`wemem.deployed`)."""
    return job_seed(assets.config.seed, "prune", model_index, repeat)


def sensitivity_rows(assets: StudyAssets, model_index: int, draws: tuple[int, ...] = (0,)) -> np.ndarray:
    """The rows where a model's output sensitivities (SAMIA) are probed: the rows the attacks will read, i.e. the
    first draw's targets, then those only the further draws (``[search] repeats`` over targets) add."""
    first = attack_targets(assets, model_index, draws[0]).indices
    more = [attack_targets(assets, model_index, d).indices for d in draws[1:]]
    return np.concatenate([first, np.setdiff1d(np.concatenate(more), first)]) if more else first


def pruning_run(assets: StudyAssets, job: PruningJob) -> PruningRun:
    """One model of one experiment, built where the job runs (the assets arrive as an argument), with a defense
    of its own: a defense holds its model's state."""
    return PruningRun(
        assets,
        job.model_index,
        job.setting.make(),
        job.pruning,
        pruning_seed(assets, job.model_index, job.repeat),
        job.keep_state,
        job.sensitivity,
        draws=job.draws,
    )


def prune_job(assets: StudyAssets, job: PruningJob) -> PrunedModel:
    """A whole pruning run as one job."""
    return pruning_run(assets, job).finish()


class ExperimentTimings(TypedDict):
    """Where an experiment's wall time went (see :func:`experiment_timings`)."""

    total: float
    pruning_stage: float
    attack_stage: float
    models: dict[str, dict[str, float]]
    attacks: dict[str, dict[str, float]]


class ExperimentFigures(TypedDict):
    """What an experiment measured of its models, as JSON: the keys an experiment's record and a trial's stored
    attributes share."""

    utility: float
    pretrained_accuracy: float
    attacks: dict[str, dict[str, object]]
    defense_seconds: float
    victim_rounds: list[dict[str, float]]
    victim_layer_sparsity: dict[str, float]
    shadow_accuracy: list[float]
    defense_report: dict[str, float]


class ExperimentRecord(ExperimentFigures):
    """An experiment's result as JSON (:meth:`ExperimentResult.to_dict`): the setting as its two stored keys."""

    defense: str
    settings: dict[str, object]
    seconds: float
    timings: ExperimentTimings
    more_draws: list[dict[str, dict[str, object]]]
    victim_train_accuracy: NotRequired[float]  # absent from a reference cached before it was measured


@dataclass
class ExperimentResult:
    setting: Setting
    utility: float  # pruned victim test accuracy
    pretrained_accuracy: float
    attacks: dict[str, dict[str, object]]
    defense_seconds: float
    seconds: float
    victim_rounds: list[dict[str, float]]
    victim_layer_sparsity: dict[str, float]
    shadow_accuracy: list[float]
    timings: ExperimentTimings
    defense_report: dict[str, float] = field(default_factory=dict)
    victim: PrunedModel | None = None
    # the attacks' metrics on each further target draw of the same pruned models (``draws`` > 1), without ROC
    # points; ``attacks`` is the first draw's
    more_draws: list[dict[str, dict[str, object]]] = field(default_factory=list)
    victim_train_accuracy: float = float("nan")  # the pruned victim's accuracy on its members
    # the first draw's targets and each attack's per-target scores on them (arrays: never in :meth:`to_dict`)
    victim_targets: Targets | None = None
    attack_scores: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> ExperimentRecord:
        return copy.deepcopy(
            ExperimentRecord(
                defense=self.setting.defense,
                settings=self.setting.settings,
                utility=self.utility,
                pretrained_accuracy=self.pretrained_accuracy,
                attacks=self.attacks,
                defense_seconds=self.defense_seconds,
                seconds=self.seconds,
                victim_rounds=self.victim_rounds,
                victim_layer_sparsity=self.victim_layer_sparsity,
                shadow_accuracy=self.shadow_accuracy,
                defense_report=self.defense_report,
                timings=self.timings,
                more_draws=self.more_draws,
                victim_train_accuracy=self.victim_train_accuracy,
            )
        )


def attack_targets(assets: StudyAssets, model_index: int, draw: int = 0) -> Targets:
    """The balanced member/non-member set on which model ``model_index`` (0 = victim) is observed by the attacks;
    ``draw`` > 0 draws another one (the larger side subsampled with another seed)."""
    return balanced_targets(
        assets.split.models()[model_index][1], job_seed(assets.config.seed, "attack", 0, draw) + model_index
    )


def attack_inputs(
    assets: StudyAssets,
    victim: PrunedModel | RoundReport,
    shadows: list[PrunedModel] | list[RoundReport],
    draw: int = 0,
) -> AttackInputs:
    victim_targets = attack_targets(assets, 0, draw)
    # measured for every model of an experiment or for none (one flag of its pruning jobs)
    shadow_sensitivity = [s.sensitivity for s in shadows if s.sensitivity is not None]
    return AttackInputs(
        labels=assets.pools.y.cpu().numpy(),
        victim_log_probs=victim.log_probs,
        shadow_log_probs=[s.log_probs for s in shadows],
        victim_targets=victim_targets,
        shadow_targets=[attack_targets(assets, k, draw) for k in range(1, len(shadows) + 1)],
        seed=job_seed(assets.config.seed, "attack", 0, draw),
        victim_sensitivity=victim.sensitivity,
        shadow_sensitivity=None if victim.sensitivity is None else shadow_sensitivity,
        population=population_indices(assets.split, victim_targets),
    )


def attack_groups(names: list[str]) -> list[list[str]]:
    """How the attack suite splits into parallel jobs: each attack that trains a network (the NN family,
    SAMIA) is a job of its own; the closed-form ones (thresholds, LiRA, RMIA) take milliseconds and share one."""
    neural = [name for name in names if ATTACKS.get(name).trains_network]
    closed_form = [name for name in names if name not in neural]
    return ([closed_form] if closed_form else []) + [[name] for name in neural]


@dataclass(frozen=True)
class DeployedModels:
    """What the attackers observe of an experiment: the victim's and the shadows' deployed outputs. One value
    that every attack job of the experiment shares, so a parallel map can ship it once."""

    victim: PrunedModel
    shadows: list[PrunedModel]


@dataclass(frozen=True)
class AttackJob:
    """Some attacks of the suite on one target draw."""

    names: tuple[str, ...]
    draw: int = 0
    uncertainty: bool = True  # the intervals and the epsilon bound (see :func:`wemem.attacks.timed_attack`)


def attack_job(
    assets: StudyAssets,
    models: DeployedModels,
    job: AttackJob,
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """The job's attacks: their metrics, their timings and their per-target scores (see
    :func:`wemem.attacks.timed_attack`)."""
    bound_heap_growth()  # a worker may run attack jobs only: SAMIA's probe and training fragment its heap alike
    scores: dict[str, np.ndarray] = {}
    metrics, timings = run_attacks_timed(
        list(job.names), attack_inputs(assets, models.victim, models.shadows, job.draw), job.uncertainty, scores
    )
    return metrics, timings, scores


def run_attack_stage(
    assets: StudyAssets,
    victim: PrunedModel,
    shadows: list[PrunedModel],
    names: list[str],
    map_fn: MapFn = serial_map,
    draws: tuple[int, ...] = (0,),
    scores: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, dict[str, object]]], dict[str, dict[str, float]]]:
    """The attack suite on each target draw as jobs of ``map_fn`` (so they run on the trial's devices, all draws
    at once): per draw, the metrics in suite order; and each attack's timings summed over the draws. ``scores``,
    when given, receives each attack's per-target scores on the first draw."""
    outputs_only = lambda m: replace(m, state=None, masks=None)  # noqa: E731 -- what attackers see
    models = DeployedModels(outputs_only(victim), [outputs_only(s) for s in shadows])
    # the first draw's metrics are the ones shown with their intervals; the further draws feed means only
    requests = [AttackJob(tuple(group), draw, draw == draws[0]) for draw in draws for group in attack_groups(names)]
    merged: list[dict[str, dict[str, object]]] = [{} for _ in draws]
    seconds: dict[str, dict[str, float]] = {}
    jobs = map_fn(attack_job, [(assets, models, r) for r in requests])
    for request, (results, timings, job_scores) in zip(requests, jobs):
        merged[draws.index(request.draw)].update(results)
        if scores is not None and request.draw == draws[0]:
            scores.update(job_scores)
        for name, parts in timings.items():
            seconds[name] = {k: seconds.get(name, {}).get(k, 0.0) + v for k, v in parts.items()}
    return [{name: m[name] for name in names} for m in merged], {name: seconds[name] for name in names}


def experiment_timings(
    models: list[PrunedModel],
    pruning_stage: float,
    attack_stage: float,
    attacks: dict[str, dict[str, float]],
    total: float,
) -> ExperimentTimings:
    """Where an experiment's wall time went.

    ``pruning_stage`` is the wall time of pruning all K+1 models (in parallel where the map runs them so), each
    model's own job split under ``models``; ``attack_stage`` is building the attack inputs and running every
    attack, each attack's seconds (and for attacks that train a classifier, its ``fit`` and ``score`` parts)
    under ``attacks``.
    """
    return ExperimentTimings(
        total=total,
        pruning_stage=pruning_stage,
        attack_stage=attack_stage,
        models={m.name: m.timings for m in models},
        attacks=attacks,
    )


def _inputs_by_draw(
    assets: StudyAssets, victim: RoundReport, shadows: list[RoundReport], draw_ids: tuple[int, ...]
) -> Callable[[int], AttackInputs]:
    """One round's attack inputs on the experiment's d-th target draw, for its round monitor."""
    return lambda d: attack_inputs(assets, victim, shadows, draw_ids[d])


def run_experiment(
    assets: StudyAssets,
    setting: Setting,
    pruning: PruningConfig | None,
    attacks: list[str],
    map_fn: MapFn = serial_map,
    adaptive: bool = True,
    keep_victim_state: bool = False,
    round_monitor: RoundMonitor | None = None,
    stepper_map: StepperMap | None = None,
    repeat: int = 0,
    draws: int = 1,
) -> ExperimentResult:
    """Prune the victim and the K shadows with one defense setting (in parallel through ``map_fn``), attack.

    Adaptive by default: the shadows are pruned with the very same defense and settings. With
    ``adaptive=False`` the shadows are pruned undefended (the non-adaptive attacker of the comparisons).
    ``pruning=None`` attacks the dense pretrained victim and shadows (the "original" of the paper's comparison).
    Every heavy piece -- the K+1 pruning runs and the attacks -- is a job of ``map_fn`` (or ``stepper_map``).

    With a ``round_monitor`` the K+1 models advance round by round (as steppers of ``stepper_map``) and the
    monitor sees every round's victim accuracy and attack inputs on each target draw; it may raise to stop the
    experiment.

    ``repeat`` seeds the fine-tuning of every model (0: the study's own seeds); the pruned models are attacked on
    ``draws`` target draws of their own (``repeat * draws`` to ``repeat * draws + draws - 1``: draw 0 is the
    study's own), the first in ``attacks`` and the others in ``more_draws`` (see ``[search] repeats`` and
    ``target_draws``).
    """
    draw_ids = tuple(range(repeat * draws, (repeat + 1) * draws))
    start = time.perf_counter()
    setting.make()  # a setting read back from a study was not validated here: fail before fanning out
    sensitivity = needs_sensitivity(attacks)  # also validates the attack names
    victim_job = PruningJob(
        0, setting, pruning, keep_state=keep_victim_state, sensitivity=sensitivity, repeat=repeat, draws=draw_ids
    )
    shadow_job = replace(victim_job, setting=setting if adaptive else Setting(UNDEFENDED), keep_state=False)
    jobs = [(assets, victim_job)] + [
        (assets, replace(shadow_job, model_index=index)) for index in range(1, assets.config.shadows + 1)
    ]
    pruning_start = time.perf_counter()
    if round_monitor is None:
        victim, *shadows = map_fn(prune_job, jobs)
    else:
        group = (stepper_map or LocalSteppers)(pruning_run, jobs)
        for _ in fine_tuning_schedule(pruning):
            victim_round, *shadow_rounds = group.step()
            round_monitor(
                victim_round.round,
                victim_round.test_accuracy,
                _inputs_by_draw(assets, victim_round, shadow_rounds, draw_ids),
            )
        victim, *shadows = group.finish()
    attack_start = time.perf_counter()
    scores: dict[str, np.ndarray] = {}
    (results, *more), attack_seconds = run_attack_stage(assets, victim, shadows, attacks, map_fn, draw_ids, scores)
    end = time.perf_counter()
    return ExperimentResult(
        setting=setting,
        utility=victim.test_accuracy,
        pretrained_accuracy=assets.pretrained_accuracy["victim"],
        attacks=results,
        defense_seconds=victim.defense_seconds,
        seconds=end - start,
        victim_rounds=victim.rounds,
        victim_layer_sparsity=victim.layer_sparsity,
        shadow_accuracy=[s.test_accuracy for s in shadows],
        defense_report=victim.report,
        victim=victim if keep_victim_state else None,
        timings=experiment_timings(
            [victim, *shadows], attack_start - pruning_start, end - attack_start, attack_seconds, end - start
        ),
        more_draws=[{name: {k: v for k, v in m.items() if k != "roc"} for name, m in draw.items()} for draw in more],
        victim_train_accuracy=victim.train_accuracy,
        victim_targets=attack_targets(assets, 0, draw_ids[0]),
        attack_scores=scores,
    )
