"""Attacks on tiny constructed inputs computed by hand, the attack inputs the pipeline builds, and the
adaptive / non-adaptive experiment (SPEC sections 2 and 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wemem.attacks import (
    ATTACKS,
    AttackInputs,
    Targets,
    needs_sensitivity,
    parse_attack_names,
    population_indices,
    run_attack,
)
from wemem.attacks.lira import Lira, scaled_confidence
from wemem.attacks.rmia import Rmia, population_scores
from wemem.attacks.threshold import negative_modified_entropy
from wemem.data import ModelSplit, StudySplit
from wemem.defenses import UNDEFENDED, Setting
from wemem.errors import WememError
from wemem.metrics import population_threshold
from wemem.pipeline import attack_targets, run_experiment

ALL_ATTACKS = ["conf", "entr", "mentr", "hconf", "nn", "top3_nn", "cl_nn", "samia", "lira", "rmia"]


def binary_log_probs(p_true: list[float]) -> np.ndarray:
    """Two-class outputs with label 0 having probability ``p_true``."""
    p = np.asarray(p_true, dtype=np.float64)
    return np.log(np.stack([p, 1.0 - p], axis=1))


def logistic_log_probs(phi: list[float]) -> np.ndarray:
    """Two-class outputs whose scaled confidence log(p_0 / p_1) is ``phi``."""
    phi = np.asarray(phi, dtype=np.float64)
    return np.stack([-np.logaddexp(0.0, -phi), -np.logaddexp(0.0, phi)], axis=1)


def inputs_for(victim: np.ndarray, shadows: list[np.ndarray], targets: Targets, **extra) -> AttackInputs:
    """Attack inputs where every model is attacked on the same pool targets (labels all 0)."""
    return AttackInputs(
        labels=np.zeros(len(victim), dtype=int),
        victim_log_probs=victim,
        shadow_log_probs=shadows,
        victim_targets=targets,
        shadow_targets=[targets] * len(shadows),
        **extra,
    )


def test_registry_holds_the_ten_attacks():
    assert sorted(ALL_ATTACKS) == ATTACKS.names()


def test_modified_entropy_on_a_hand_computed_posterior():
    log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]))
    # y = 0: (1 - 0.7) log(1/0.7) + 0.2 log(1/0.8) + 0.1 log(1/0.9) = 0.107002 + 0.044629 + 0.010536
    # y = 1: (1 - 0.2) log(1/0.2) + 0.7 log(1/0.3) + 0.1 log(1/0.9) = 1.287550 + 0.842781 + 0.010536
    expected = -np.array([0.162167, 2.140867])
    assert negative_modified_entropy(log_probs, np.array([0, 1])) == pytest.approx(expected, abs=1e-6)


def test_separable_confidences_are_found_by_the_threshold_attacks():
    targets = Targets(np.arange(6), np.array([1, 1, 1, 0, 0, 0], bool))
    outputs = binary_log_probs([0.99, 0.95, 0.9, 0.6, 0.55, 0.5])
    for name in ("conf", "entr", "mentr", "hconf"):
        metrics = run_attack(name, inputs_for(outputs, [outputs, outputs], targets))
        assert (metrics["balanced_accuracy"], metrics["auc"]) == (1.0, 1.0), name


def test_scaled_confidence_stays_finite_when_p_y_rounds_to_one():
    log_probs = torch.log_softmax(torch.tensor([[40.0, 0.0], [0.0, 2.0]], dtype=torch.float64), 1).numpy()
    assert np.exp(log_probs[0, 0]) == 1.0  # the naive log(p / (1 - p)) would be inf
    assert scaled_confidence(log_probs, np.array([0, 0])) == pytest.approx([40.0, -2.0])


def test_lira_scores_by_hand():
    # targets x0 (member), x1: shadow phi (0, 2) and (1, -1) -> mu_out = (1, 0); squared deviations 1+1+1+1 over
    # n (K - 1) = 2 -> sigma_out = sqrt(2); victim phi (2, 0) -> z = (1/sqrt(2), 0): the score is z itself.
    # population z0, z1: shadow phi 0 -> mu 0; victim phi 0.1 sqrt(2), 0.5 sqrt(2) -> z = 0.1, 0.5 (same sigma).
    # Label-free cut: fraction of the population below minus fraction of the targets below, at each cut
    # 0: 0 - 0; 0.1: 0 - 1/2; 0.5: 1/2 - 1/2; 0.7071: 1 - 1/2 = 0.5, the largest -> midpoint of 0.5 and 0.7071
    r2 = math.sqrt(2)
    targets = Targets(np.arange(2), np.array([True, False]))
    inputs = inputs_for(
        logistic_log_probs([2.0, 0.0, 0.1 * r2, 0.5 * r2]),
        [logistic_log_probs([0.0, 1.0, 0.0, 0.0]), logistic_log_probs([2.0, -1.0, 0.0, 0.0])],
        targets,
        population=np.array([2, 3]),
    )
    scores, threshold = Lira().decision_scores(inputs)
    assert scores == pytest.approx([1 / r2, 0.0])
    assert threshold == pytest.approx(0.5 * (0.5 + 1 / r2))
    assert run_attack("lira", inputs)["balanced_accuracy"] == 1.0


def test_lira_needs_two_shadows():
    targets = Targets(np.arange(2), np.array([True, False]))
    outputs = logistic_log_probs([1.0, 0.0])
    with pytest.raises(WememError, match="at least 2 shadow"):
        Lira().decision_scores(inputs_for(outputs, [outputs], targets))


def test_rmia_scores_by_hand():
    # pool: targets x0 (member), x1; population z0..z3.  a = 0.3: Pr = 0.65 * mean_k p_y(shadow_k) + 0.35
    # shadow means: x0 0.5, x1 0.4, z 0.5 -> Pr: 0.675, 0.61, 0.675
    # ratios: x0 0.9/0.675 = 1.333, x1 0.4/0.61 = 0.656; z (0.5, 0.95, 0.3, 0.6)/0.675 = (0.741, 1.407, 0.444, 0.889)
    # fraction of z with ratio(x)/ratio(z) >= 1: x0 3/4, x1 1/4; ties are broken by (0.5/4) * r / (1 + r):
    # x0 + 0.125 * 1.3333/2.3333 = 0.071429, x1 + 0.125 * 0.65574/1.65574 = 0.049505
    victim = binary_log_probs([0.9, 0.4, 0.5, 0.95, 0.3, 0.6])
    shadows = [binary_log_probs([0.4, 0.6, 0.5, 0.5, 0.5, 0.5]), binary_log_probs([0.6, 0.2, 0.5, 0.5, 0.5, 0.5])]
    targets = Targets(np.arange(2), np.array([True, False]))
    scores, threshold = Rmia().decision_scores(inputs_for(victim, shadows, targets, population=np.arange(2, 6)))
    assert scores == pytest.approx([0.75 + 0.071429, 0.25 + 0.049505], abs=1e-6)
    # the population against itself (each left out): ratios (0.741, 1.407, 0.444, 0.889) dominate 1, 3, 0, 2 of the
    # 3 others, tie-broken by (0.5/3) r / (1 + r); the threshold is the label-free cut between them and the targets
    ratios = np.array([0.5, 0.95, 0.3, 0.6]) / 0.675
    own = np.array([1, 3, 0, 2]) / 3 + (0.5 / 3) * ratios / (1 + ratios)
    assert population_scores(ratios, 1.0) == pytest.approx(own)
    assert threshold == population_threshold(scores, own)


def test_rmia_ties_are_ordered_by_the_likelihood_ratio():
    # shadows all 0.5 -> Pr = 0.65 * 0.5 + 0.35 = 0.675, so ratio = p_y(victim) / 0.675
    pr = 0.675
    population_probs = [1 * pr, 1.2 * pr, 1.3 * pr, 1.4 * pr]  # ratios 1, 1.2, 1.3, 1.4 (p_y must stay < 1)
    victim = binary_log_probs([1.25 * pr, 1.27 * pr, 0.9 * pr, 0.95 * pr] + population_probs)
    shadows = [binary_log_probs([0.5] * 8)] * 2
    targets = Targets(np.arange(4), np.array([True, True, False, False]))
    scores, _ = Rmia().decision_scores(inputs_for(victim, shadows, targets, population=np.arange(4, 8)))
    # fractions: 1.25 and 1.27 dominate ratios 1 and 1.2 -> 0.5; 0.9 and 0.95 dominate nothing -> 0
    expected = [0.5 + 0.125 * r / (1 + r) for r in (1.25, 1.27)] + [0.125 * r / (1 + r) for r in (0.9, 0.95)]
    assert scores == pytest.approx(expected, abs=1e-9)
    assert scores[1] > scores[0] and scores[3] > scores[2]


def test_rmia_tie_break_stays_below_half_a_step_for_odd_populations():
    from wemem.attacks.rmia import break_ties

    # n = 3: the largest fraction below 0.5 is 1/3; even an enormous ratio keeps it below 0.5
    assert break_ties(np.array([1 / 3]), np.array([1e12]), 3)[0] < 0.5
    assert break_ties(np.array([2 / 3, 1 / 3]), np.array([1e-9, 1e12]), 3).tolist() == sorted(
        break_ties(np.array([2 / 3, 1 / 3]), np.array([1e-9, 1e12]), 3).tolist(), reverse=True
    )


def test_rmia_without_population_is_a_clear_error():
    outputs = binary_log_probs([0.9, 0.4])
    with pytest.raises(WememError, match="population"):
        Rmia().decision_scores(inputs_for(outputs, [outputs], Targets(np.arange(2), np.array([True, False]))))


def test_population_is_the_split_s_held_out_slice():
    as_t = lambda *v: torch.tensor(v)  # noqa: E731
    split = StudySplit(
        victim=ModelSplit(as_t(0, 1), as_t(2), as_t(3, 4)),
        shadows=(ModelSplit(as_t(5, 6), as_t(7), as_t(3, 8)),),
        population=as_t(9, 10),
    )
    victim_targets = Targets(np.array([0, 1, 3, 4]), np.array([1, 1, 0, 0], bool))
    assert population_indices(split, victim_targets).tolist() == [9, 10]


@pytest.mark.parametrize("leak", [0, 2, 7, 8])  # a victim member, victim dev, shadow dev, shadow test sample
def test_population_overlapping_any_model_set_is_refused(leak):
    as_t = lambda *v: torch.tensor(v)  # noqa: E731
    split = StudySplit(
        victim=ModelSplit(as_t(0, 1), as_t(2), as_t(3, 4)),
        shadows=(ModelSplit(as_t(5, 6), as_t(7), as_t(3, 8)),),
        population=as_t(9, leak),
    )
    with pytest.raises(WememError, match="overlaps"):
        population_indices(split, Targets(np.array([0, 1, 3, 4]), np.array([1, 1, 0, 0], bool)))


def test_shadow_observations_keep_sensitivities_aligned():
    log_probs = [np.log(np.full((4, 2), 0.5)) for _ in range(2)]
    sensitivity = [np.arange(8.0).reshape(4, 2), 10 + np.arange(8.0).reshape(4, 2)]
    inputs = AttackInputs(
        labels=np.array([0, 1, 0, 1]),
        victim_log_probs=log_probs[0],
        shadow_log_probs=log_probs,
        victim_targets=Targets(np.array([0, 1]), np.array([True, False])),
        shadow_targets=[
            Targets(np.array([2, 3]), np.array([True, False])),
            Targets(np.array([1, 0]), np.array([True, False])),
        ],
        victim_sensitivity=sensitivity[0],
        shadow_sensitivity=sensitivity,
    )
    observed = inputs.shadow_observations()
    assert observed.sensitivity.tolist() == [[4, 5], [6, 7], [12, 13], [10, 11]]
    assert observed.labels.tolist() == [0, 1, 1, 0]
    assert observed.is_member.tolist() == [True, False, True, False]


def test_only_samia_needs_sensitivity():
    assert needs_sensitivity(["conf", "samia"]) and not needs_sensitivity([n for n in ALL_ATTACKS if n != "samia"])
    with pytest.raises(WememError, match="unknown attack 'lra'"):
        needs_sensitivity(["lra"])


# ----------------------------------------------------------------------------------- the experiment


SWMR = {"order": "h2l", "width_fraction": 0.5, "stride_fraction": 0.25, "lambda_mem": 0.1, "risky_fraction": 0.2}


class Recorder:
    """A serial map that records the jobs it runs (and can stop before running them)."""

    def __init__(self, run: bool = True):
        self.run, self.calls = run, []

    @property
    def jobs(self):  # the first call: the K+1 pruning runs
        return self.calls[0]

    def __call__(self, fn, jobs):
        self.calls.append(list(jobs))
        if not self.run:
            raise InterruptedError("jobs recorded")
        return [fn(*job) for job in jobs]


def test_adaptive_shadows_get_the_victims_defense(tiny_config, tiny_pruning, tiny_assets, cache_dir):
    recorder = Recorder(run=False)
    with pytest.raises(InterruptedError):
        run_experiment(tiny_assets, Setting("swmr", SWMR), tiny_pruning, ["conf"], recorder)
    defenses = [job.setting for _, job in recorder.jobs]
    assert defenses == [Setting("swmr", SWMR)] * (tiny_config.shadows + 1)
    assert not any(job.sensitivity for _, job in recorder.jobs)  # no attack asked for sensitivities


def test_non_adaptive_experiment_runs_every_attack(tiny_config, tiny_pruning, tiny_assets, cache_dir):
    recorder = Recorder()
    result = run_experiment(
        tiny_assets, Setting("swmr", SWMR), tiny_pruning, ALL_ATTACKS, recorder, adaptive=False, keep_victim_state=True
    )
    (_, victim_job), *shadow_jobs = recorder.jobs
    assert victim_job.setting == Setting("swmr", SWMR)
    assert all(job.setting == Setting(UNDEFENDED) for _, job in shadow_jobs)
    assert all(job.sensitivity for _, job in recorder.jobs)  # samia asked for sensitivities on every model
    # the attacks ran as jobs of the same map: the closed-form ones together, each trained attack on its own
    attack_jobs = [job for *_, job in recorder.calls[1]]
    assert sorted(name for job in attack_jobs for name in job.names) == sorted(ALL_ATTACKS)
    assert all(len(job.names) == 1 for job in attack_jobs[1:]) and "conf" in attack_jobs[0].names

    pools = tiny_assets.pools
    sensitivity = result.victim.sensitivity
    assert sensitivity.shape == (len(pools.y), pools.num_classes)
    # measured on the victim's attack targets (the rows SAMIA reads), and nowhere else
    targets = attack_targets(tiny_assets, 0).indices
    measured = np.isfinite(sensitivity).all(axis=1)
    assert np.array_equal(np.flatnonzero(measured), np.sort(targets)) and len(targets) < len(pools.y)
    assert (sensitivity[targets] >= 0).all() and sensitivity[targets].max() > 0

    assert set(result.attacks) == set(ALL_ATTACKS)
    for name, metrics in result.attacks.items():
        assert 0.0 <= metrics["balanced_accuracy"] <= 1.0 and 0.0 <= metrics["auc"] <= 1.0, name
        assert metrics["tpr_at_0.1%_fpr"] <= metrics["tpr_at_1%_fpr"], name
        assert len(metrics["roc"]["fpr"]) == len(metrics["roc"]["tpr"]) >= 2, name

    # stage timings: every model's job and every attack, trained attacks split into fitting and scoring
    timings = result.timings
    assert set(timings["models"]) == {"victim", "shadow0", "shadow1"}
    assert all(t["total"] >= t["pruning"] > 0 for t in timings["models"].values())
    assert set(timings["attacks"]) == set(ALL_ATTACKS)
    for name in ("nn", "top3_nn", "cl_nn", "samia"):
        assert set(timings["attacks"][name]) == {"fit", "score", "total"}, name
    assert timings["attack_stage"] >= sum(t["total"] for t in timings["attacks"].values())
    assert timings["total"] >= timings["pruning_stage"] + timings["attack_stage"]


def test_attack_lists_from_the_command_line():
    assert parse_attack_names(None, ["conf"]) == ["conf"]
    assert parse_attack_names("all", []) == ATTACKS.names() and len(ATTACKS.names()) == 10
    assert parse_attack_names(" samia, conf ,samia", []) == ["samia", "conf"]  # repeats count once
    with pytest.raises(WememError, match="unknown attack 'magic'; choose one of: cl_nn"):
        parse_attack_names("conf,magic", [])
    with pytest.raises(WememError, match="no attack named"):
        parse_attack_names(" , ", ["conf"])


def test_the_cheap_suite_is_the_attacks_that_declare_themselves_cheap():
    from objectives import CHEAP_ATTACKS

    assert set(CHEAP_ATTACKS) == {name for name in ATTACKS.names() if ATTACKS.get(name).cheap}
