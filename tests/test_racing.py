"""Racing: a trial reports each (fine-tuning, draw) instance's objective and Optuna's pruner (Wilcoxon or successive
halving) stops it where a hand computation says; a stopped trial is PRUNED with its evidence; bad racing keys exit 2
and change nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import scipy.stats
from helpers import TINY_STUDY
from optuna.trial import TrialState
from test_bad_input import assert_refused, place, study_file  # noqa: F401 -- place is the fixture

from objectives import ObjectiveConfig, RoundHooks, TrialSpec, evaluate_trial, reference, score
from objectives._trial import instance_index, round_instance, round_monitor
from search.execution._tune import OptunaPruningScheduler
from search.results._text import racing_lines
from search.study import RACING_ATTR, make_pruner
from search.studyfile import StudyDefinition, parse_study
from wemem.defenses import Setting
from wemem.parallel import LocalSteppers

MILD_RMR = Setting("rmr", {"lambda_mem": 0.01, "risky_fraction": 0.05})
BEST = [0.55, 0.57, 0.54, 0.56, 0.55, 0.58, 0.53, 0.56]  # the best trial's instances (R2 D4)
# a trial slightly worse on most instances: the signed-rank test needs several before it is sure
WORSE = [b + d for b, d in zip(BEST, [0.01, -0.005, 0.02, 0.03, 0.015, 0.025, 0.01, 0.02])]


def racing_definition(**search: object) -> StudyDefinition:
    return parse_study(dict(TINY_STUDY, search={"defenses": ["rmr"], "repeats": 2, "target_draws": 4, **search}))


def scheduler_on(definition: StudyDefinition) -> tuple[OptunaPruningScheduler, optuna.Study]:
    """The product's scheduler on an in-memory study with the product's pruner, its searcher reduced to what the
    scheduler reads (no Ray Tune)."""
    study = optuna.create_study(direction="minimize", pruner=make_pruner(definition))
    searcher = SimpleNamespace(definition=definition, study=study, storage=study._storage, pending={}, pruned=set())
    return OptunaPruningScheduler(searcher), study  # type: ignore[arg-type]


def race(scheduler: OptunaPruningScheduler, study: optuna.Study, values: list[float]) -> int | None:
    """Run one trial through the scheduler instance by instance, as the trainable reports them; the instance it
    was stopped after (told PRUNED), or None (told COMPLETE with its mean)."""
    trial = study.ask()
    tune_trial = SimpleNamespace(trial_id=f"tune-{trial.number}")
    scheduler.searcher.pending[tune_trial.trial_id] = trial
    for index, value in enumerate(values):
        decision = scheduler.on_trial_result(None, tune_trial, {"instance": index, "intermediate": value})
        if decision == scheduler.STOP:
            study.tell(trial, state=TrialState.PRUNED)
            return index
    study.tell(trial, float(np.mean(values)))
    return None


def wilcoxon_stop(best: list[float], values: list[float], min_instances: int, p_threshold: float) -> int | None:
    """By hand: the first instance, before the last, after which the one-sided signed-rank test says the trial is
    worse than the best (p under the threshold) while its mean so far is worse than the best's."""
    for index in range(min_instances - 1, len(values) - 1):
        seen = values[: index + 1]
        differences = np.subtract(seen, best[: index + 1])
        p = scipy.stats.wilcoxon(differences, alternative="greater", zero_method="zsplit").pvalue
        if p < p_threshold and np.mean(seen) > np.mean(best):
            return index
    return None


def test_wilcoxon_racing_stops_where_the_signed_rank_test_says():
    definition = racing_definition(racing="wilcoxon")
    scheduler, study = scheduler_on(definition)
    assert race(scheduler, study, BEST) is None  # the first trial has no one to lose against
    expected = wilcoxon_stop(BEST, WORSE, min_instances=4, p_threshold=0.1)
    assert expected == 4  # a point inside the trial: 4 instances are not enough (p = 0.125), 5 are (p = 0.0625)
    assert race(scheduler, study, WORSE) == expected
    pruned = study.trials[1]
    assert pruned.state == TrialState.PRUNED and sorted(pruned.intermediate_values) == list(range(expected + 1))
    evidence = pruned.user_attrs[RACING_ATTR]
    assert evidence["pruner"] == "wilcoxon" and evidence["instances"] == list(range(expected + 1))
    assert evidence["values"] == pytest.approx(WORSE[: expected + 1]) and evidence["best_trial"] == 0
    hand = scipy.stats.wilcoxon(np.subtract(WORSE, BEST)[: expected + 1], alternative="greater").pvalue
    assert evidence["p_value"] == pytest.approx(hand)
    assert (
        racing_lines(pruned)
        == [  # what `wemem status NAME --trial 1` prints of it
            f"  stopped by racing (wilcoxon) after instances {list(range(expected + 1))}: "
            + ", ".join(f"{v:.4f}" for v in WORSE[: expected + 1])
            + f"; one-sided Wilcoxon p = {hand:.3g} that it is worse than trial 0"
        ]
    )
    assert racing_lines(study.trials[0]) == []
    # a better trial runs every instance and becomes the best
    assert race(scheduler, study, [b - 0.02 for b in BEST]) is None and study.best_trial.number == 2


def test_racing_never_stops_a_trial_after_its_last_instance():
    """Stopping after the last instance saves nothing; the evaluation is kept (COMPLETE)."""
    scheduler, study = scheduler_on(racing_definition(racing="wilcoxon", racing_p_threshold=0.9))
    race(scheduler, study, BEST)
    late = BEST[:7] + [BEST[7] + 0.5]  # equal until the last instance, then far worse
    assert race(scheduler, study, late) is None and study.trials[1].state == TrialState.COMPLETE


def halving_stops(trials: list[list[float]], rungs: list[int], reduction: int) -> list[int | None]:
    """By hand, trial after trial: successive halving on running means. At each rung's step a trial goes on only
    while its running mean is among the best 1/reduction of those of every trial that reached the rung (itself
    included); the instance each trial is stopped after (None: it ran them all)."""
    reached: dict[int, list[float]] = {step: [] for step in rungs}
    stops: list[int | None] = []
    for values in trials:
        means = np.cumsum(values) / np.arange(1, len(values) + 1)
        stop = None
        for step in rungs:
            reached[step].append(means[step])
            competing = sorted(reached[step])
            if means[step] > competing[max(len(competing) // reduction - 1, 0)]:
                stop = step
                break
        stops.append(stop)
    return stops


def test_halving_racing_stops_at_the_rung_where_the_running_mean_falls_behind():
    definition = racing_definition(racing="halving", racing_reduction_factor=2)
    scheduler, study = scheduler_on(definition)
    # good on the first fine-tuning, poor on the second: passes the rung after 4 instances, not the one after 7
    late = BEST[:4] + [b + 0.1 for b in BEST[4:]]
    trials = [[b + 0.04 for b in BEST], BEST, [b + 0.03 for b in BEST], late]
    expected = halving_stops(trials, rungs=[3, 6], reduction=2)  # racing_min_instances 4: step 3, then x2: step 6
    assert expected == [None, None, 3, 6]
    assert [race(scheduler, study, values) for values in trials] == expected
    pruned = study.trials[3]
    assert pruned.state == TrialState.PRUNED
    assert pruned.user_attrs[RACING_ATTR] == {
        "pruner": "halving",
        "instances": list(range(7)),
        "values": pytest.approx(late[:7]),
    }


def test_racing_rounds_number_the_first_fine_tunings_rounds_before_the_instances():
    """TINY_STUDY prunes in 2 steps, so it fine-tunes in 3 rounds (round 0 at sparsity 0): with racing_rounds,
    R2 D4 is 3 x 4 round instances, then 2 x 4 more."""
    definition = racing_definition(racing="wilcoxon", racing_rounds=True)
    assert definition.racing_instances() == (20, 4, 12)  # judged first after round 0's four draws
    assert racing_definition(racing="wilcoxon").racing_instances() == (8, 4, 0)
    spec = definition.trial_spec("cache")
    assert [round_instance(spec, r, d) for r, d in [(0, 0), (0, 3), (1, 0), (1, 3)]] == [0, 3, 4, 7]
    assert [instance_index(spec, r, d) for r, d in [(0, 0), (0, 3), (1, 0), (1, 3)]] == [12, 15, 16, 19]
    plain = racing_definition(racing="wilcoxon").trial_spec("cache")
    assert [instance_index(plain, r, d) for r, d in [(0, 0), (1, 3)]] == [0, 7]
    # a space that fixes the steps (4: 5 rounds) numbers the rounds its trials prune in
    fixed = racing_definition(racing="wilcoxon", racing_rounds=True, space={"pruning": {"steps": 4}})
    assert fixed.racing_instances() == (28, 4, 20)


def test_racing_rounds_report_every_draw_of_a_round_as_an_instance(monkeypatch: pytest.MonkeyPatch):
    """Early stopping reports a round's objective on the study's own draw at step ``round``; racing rounds report
    each draw's at its instance number."""
    monkeypatch.setattr(
        "objectives._trial.round_objective", lambda spec, base, accuracy, inputs: accuracy + inputs
    )  # a stand-in that tells the draws apart
    draws = [0.1, 0.2, 0.3, 0.4]  # one round's attack inputs, one per target draw
    reported: list[tuple[int, float]] = []
    raced = racing_definition(racing="wilcoxon", racing_rounds=True).trial_spec("cache")
    round_monitor(raced, None, lambda step, value: reported.append((step, value)))(1, 1.0, draws.__getitem__)  # type: ignore[arg-type]
    assert reported == [(4, 1.1), (5, 1.2), (6, 1.3), (7, 1.4)]
    reported.clear()
    stopping = parse_study(dict(TINY_STUDY, search={"defenses": ["rmr"], "early_stopping": "median"}))
    asked: list[int] = []

    def read(draw: int) -> float:
        asked.append(draw)
        return draws[draw]

    round_monitor(stopping.trial_spec("cache"), None, lambda step, value: reported.append((step, value)))(  # type: ignore[arg-type]
        1, 1.0, read
    )
    assert reported == [(1, 1.1)] and asked == [0]  # early stopping builds the study's own draw's inputs alone


def test_wilcoxon_racing_on_rounds_stops_inside_the_first_fine_tuning():
    """The same signed-rank decision, with the rounds' instances first: a trial worse on every draw of round 0
    stops after them, inside its first fine-tuning (instance 12 would be its first fine-tuning's first draw)."""
    scheduler, study = scheduler_on(racing_definition(racing="wilcoxon", racing_rounds=True))
    rounds = [0.56, 0.55, 0.57, 0.55, 0.56, 0.54, 0.55, 0.57, 0.55, 0.56, 0.54, 0.55]  # 3 rounds x 4 draws
    best = rounds + BEST
    worse = [b + 0.02 for b in best]
    assert race(scheduler, study, best) is None
    expected = wilcoxon_stop(best, worse, min_instances=4, p_threshold=0.1)
    assert expected == 3  # four pairs all worse: p = 1/16, under 0.1
    assert race(scheduler, study, worse) == expected
    evidence = study.trials[1].user_attrs[RACING_ATTR]
    assert evidence["instances"] == list(range(expected + 1)) and evidence["round_instances"] == 12
    assert racing_lines(study.trials[1])[0].startswith(
        "  stopped by racing (wilcoxon) after instances [0, 1, 2, 3] (instances 0-11 judge the first fine-tuning's "
        "pruning rounds): 0.5800, 0.5700, 0.5900, 0.5700; one-sided Wilcoxon p = 0.0625"
    )


def test_a_trial_racing_its_rounds_reports_each_rounds_draws_then_each_fine_tunings(
    tiny_config, tiny_pruning, tiny_assets, cache_dir
):
    """In process (the Ray path differs only in the stepper executor): 3 rounds x 2 draws of the first
    fine-tuning, each the round's objective on that draw, then 2 fine-tunings x 2 draws, each the draw's
    figures scored alone; the final figures are those of the trial without racing."""
    spec = TrialSpec(
        tiny_config, tiny_pruning, ("conf", "hconf"), ObjectiveConfig(), str(cache_dir), repeats=2, target_draws=2
    )
    raced = replace(spec, instance_reports=True, round_racing=True)
    base = reference(spec, tiny_assets)
    reported: list[tuple[int, float]] = []
    report = lambda step, value: reported.append((step, value))  # noqa: E731
    outcome = evaluate_trial(
        raced, MILD_RMR, base, tiny_assets, rounds=RoundHooks(report, LocalSteppers), instances=report
    )
    assert [step for step, _ in reported] == list(range(10))
    instances = [score(p, u, base.utility, spec.objective).values[0] for row in outcome.repeats.draws for u, p in row]
    assert [value for _, value in reported[6:]] == pytest.approx(instances)
    assert len({value for _, value in reported[:6]}) > 1  # the rounds' values are each their own
    plain = evaluate_trial(spec, MILD_RMR, base, tiny_assets)
    assert (outcome.utility, outcome.privacy, outcome.objective) == (plain.utility, plain.privacy, plain.objective)
    assert outcome.repeats.draws == plain.repeats.draws


def test_the_trainable_races_rounds_through_the_instances(monkeypatch: pytest.MonkeyPatch):
    """The Tune trainable hands a racing_rounds trial round hooks whose reports are racing instances (what the
    scheduler races on), and an early-stopping trial hooks whose reports are rounds (what the median pruner
    reads)."""
    from search.execution import _trainable

    sent: list[dict] = []
    monkeypatch.setattr(_trainable.tune, "report", sent.append)
    monkeypatch.setattr(_trainable, "receive", lambda assets: assets)
    monkeypatch.setattr(_trainable, "reference_at", lambda *args: None)

    def reports_one_round(spec, setting, base, assets, map_fn, rounds, instances):
        rounds.report(0, 0.5)
        raise RuntimeError("stop here")

    monkeypatch.setattr(_trainable, "evaluate_trial", reports_one_round)
    config = {"setting": MILD_RMR, "pruning": None}
    for definition, first in [
        (racing_definition(racing="wilcoxon", racing_rounds=True), {"instance": 0, "intermediate": 0.5}),
        (parse_study(dict(TINY_STUDY, search={"defenses": ["rmr"], "early_stopping": "median"})), {"round": 0}),
    ]:
        sent.clear()
        share = SimpleNamespace(num_cpus=1, num_gpus=0)
        _trainable.trial_trainable(config, definition.trial_spec("cache"), None, share, None)  # type: ignore[arg-type]
        assert sent[0] == first | {"intermediate": 0.5} and sent[1]["done"] is True


@pytest.fixture(scope="module")
def raced_study(ray_session, tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """A tiny racing study: a mild RMR setting, then a strong one (poor), each scored on 3 target draws."""
    from search.execution._launcher import launch
    from search.storage import open_storage
    from search.study import Options, create_or_load_study

    folder = tmp_path_factory.mktemp("raced")
    options = Options(storage=f"sqlite:///{folder / 'study.db'}", cache_dir=str(folder / "cache"))
    definition = parse_study(
        dict(
            TINY_STUDY,
            study={"name": "raced", "n_trials": 2, "seed": 7},
            search={
                "defenses": ["rmr"],
                "enqueue_reference": False,
                "target_draws": 3,
                "racing": "wilcoxon",
                "racing_min_instances": 2,
                "racing_p_threshold": 0.3,  # two instances both worse give p = 0.25
            },
        )
    )
    study, _ = create_or_load_study(definition, open_storage(options.storage_url), {"cache_dir": options.cache_dir})
    study.enqueue_trial({"rmr.lambda_mem": 0.01, "rmr.risky_fraction": 0.05})  # mild: completes
    study.enqueue_trial({"rmr.lambda_mem": 1.0, "rmr.risky_fraction": 0.5})  # strong L2 on half the data: poor
    return launch(definition, options, lambda m: None).study


@pytest.mark.e2e
def test_a_raced_study_stores_pruned_trials_with_their_evidence(raced_study: optuna.Study):
    first, second = raced_study.get_trials()
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [0, 1, 2]
    assert RACING_ATTR not in first.user_attrs
    # PRUNED after two instances (the third is the last, never judged), never COMPLETE with a partial value
    assert second.state == TrialState.PRUNED and sorted(second.intermediate_values) == [0, 1]
    evidence = second.user_attrs[RACING_ATTR]
    assert evidence["pruner"] == "wilcoxon" and evidence["instances"] == [0, 1] and evidence["best_trial"] == 0
    assert evidence["values"] == [second.intermediate_values[0], second.intermediate_values[1]]
    assert evidence["p_value"] == pytest.approx(0.25) and "round_instances" not in evidence
    assert "utility" not in second.user_attrs  # no partial evaluation is stored as the trial's figures


RACING_CASES = [
    ("racing-unknown", {"racing": "fastest", "target_draws": 4}, ["search.racing", "wilcoxon"]),
    ("racing-one-instance", {"racing": "wilcoxon"}, ["repeats x target_draws is 1", "target_draws"]),
    ("racing-with-median", {"racing": "wilcoxon", "target_draws": 4, "early_stopping": "median"}, ["choose one"]),
    ("racing-p-threshold-1", {"racing": "wilcoxon", "target_draws": 4, "racing_p_threshold": 1.0}, ["p_threshold"]),
    ("racing-min-instances-1", {"racing": "halving", "target_draws": 4, "racing_min_instances": 1}, ["min_instances"]),
    (
        "racing-min-instances-all",
        {"racing": "halving", "target_draws": 4, "racing_min_instances": 4},
        ["racing_min_instances is 4", "below 4"],
    ),
    ("racing-reduction-1", {"racing": "halving", "target_draws": 4, "racing_reduction_factor": 1}, ["reduction"]),
    ("racing-rounds-alone", {"racing_rounds": True, "target_draws": 4}, ["racing is 'none'", "racing_rounds"]),
    (
        "racing-rounds-searched-steps",
        {"racing": "wilcoxon", "racing_rounds": True, "target_draws": 4, "space": {"pruning": {"steps": [1, 3]}}},
        ["search.space.pruning.steps searches", "fix the steps"],
    ),
]


@pytest.mark.parametrize("search, expected", [c[1:] for c in RACING_CASES], ids=[c[0] for c in RACING_CASES])
def test_bad_racing_input_exits_2_and_changes_nothing(
    place: Path,
    search: dict,
    expected: list[str],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("WEMEM_STORAGE", f"sqlite:///{place / 'wemem.db'}")
    monkeypatch.chdir(place)
    assert_refused(place, ["launch", study_file(place, search=search)], expected, capsys)


def test_racing_needs_one_objective(place: Path, capsys, monkeypatch):
    monkeypatch.setenv("WEMEM_STORAGE", f"sqlite:///{place / 'wemem.db'}")
    monkeypatch.chdir(place)
    argv = ["launch", study_file(place, search={"racing": "wilcoxon", "target_draws": 4}, objective={"mode": "pareto"})]
    assert_refused(place, argv, ["search.racing needs one objective"], capsys)
