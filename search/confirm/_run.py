"""Confirmation of a study's best settings on fresh seeds (``wemem confirm NAME``).

A study reports the winner's own evaluation, which is the minimum of many noisy evaluations and so biased
low (winner's curse). Confirmation re-evaluates the best K settings and the undefended reference on N seeds the
search never saw and reports means, 95% t-intervals over seeds, and the defended-minus-reference differences
paired by seed.

What a fresh seed changes: everything the study seed drives -- the T/E split (datasets without an official test
split), the victim/shadow split and so the members and non-members, the pretraining of the victim and shadows,
the mem-scores, the fine-tuning of every pruning round and the attack's target sampling. Each confirmation seed
is an independent replication of the whole experiment (what ``wemem run --seed S`` does), not a re-run of the
fine-tuning alone: the winner was selected on one particular draw of members and targets, and with a few hundred
targets a side that draw is the largest part of the noise, so keeping it would keep most of the bias. The
study's pretrained models and mem-scores are therefore not reused (the seed enters both); each seed computes its
own once and caches it like a study would (see docs/confirmation.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from objectives import TrialSpec
from wemem.assets import Echo

from ..storage._records import check_stored_code
from ..study import OpenStudy
from ..studyfile import StudyDefinition
from ._candidates import Candidate, Evaluate, candidates, confirmation_seeds, named_comparison
from ._confirmation import Confirmation, SeedResult
from ._suites import confirm_study, judged_by


def seed_spec(spec: TrialSpec, seed: int) -> TrialSpec:
    return replace(spec, experiment=replace(spec.experiment, seed=seed))


def evaluate_on_seed(spec: TrialSpec, candidate: Candidate, base: Any, assets: Any, share: Any) -> SeedResult:
    """One defended run on one seed, pruned as the candidate's trial was, in a Ray task like a trial's
    coordinator: its K+1 models and its attacks are Ray jobs of their own with the trial's share; the seed's
    assets arrive through the object store."""
    from objectives import evaluate_trial
    from wemem.defenses import Setting

    from ..execution._jobs import receive

    # base, the seed's reference at the study's pruning, only enters the objective's score, which confirmation
    # does not read: a candidate at another sparsity needs no reference of its own
    outcome = evaluate_trial(
        candidate.at_pruning(spec), Setting(candidate.defense, candidate.settings), base, receive(assets), map_fn=share
    )
    return SeedResult(outcome.utility, outcome.privacy, outcome.strongest_attack)


def seed_work(spec: TrialSpec, share: Any, echo: Echo) -> tuple[Any, Any]:
    """A seed's shared work, in the launcher like a study's (its jobs on the trials' shares; cached per seed):
    the shipped assets and the seed's undefended reference."""
    from objectives import reference
    from wemem.assets import prepare_assets

    from ..execution._jobs import ship

    assets = prepare_assets(spec.experiment, spec.cache_dir, share)
    base = reference(spec, assets, share)
    echo(
        f"seed {spec.experiment.seed}: shared work ready (undefended pruned reference: accuracy "
        f"{base.utility:.4f}, strongest attack {base.strongest_attack} {base.privacy:.4f})"
    )
    return ship(assets), base


def ray_evaluator(spec: TrialSpec, definition: StudyDefinition, echo: Echo) -> Evaluate:
    """Prepares each seed's shared work (and so its reference) in the launcher, then runs the defended runs as Ray
    tasks, at most ``max_concurrent_trials`` at a time."""
    import ray

    from ..execution._cluster import HEAD_CPU, task_share

    share = task_share(definition)
    # an evaluation is deterministic given its seed, so one whose worker the node's memory monitor killed is
    # simply run again rather than losing the whole confirmation
    task = ray.remote(evaluate_on_seed).options(
        num_cpus=HEAD_CPU, max_retries=2, retry_exceptions=[ray.exceptions.OutOfMemoryError]
    )
    limit = definition.resources.max_concurrent_trials

    def run(jobs: list[tuple[Candidate, int]]) -> Iterator[tuple[int, SeedResult]]:
        prepared = {seed: seed_work(seed_spec(spec, seed), share, echo) for seed in sorted({s for _, s in jobs})}
        done = 0
        for i, (candidate, seed) in enumerate(jobs):
            if candidate.is_reference:
                base = prepared[seed][1]
                done += 1
                yield i, SeedResult(base.utility, base.privacy, base.strongest_attack)
        queue = [i for i, (candidate, _) in enumerate(jobs) if not candidate.is_reference]
        running: dict[Any, int] = {}
        while queue or running:
            while queue and len(running) < limit:
                i = queue.pop(0)
                candidate, seed = jobs[i]
                shipped, base = prepared[seed]
                running[task.remote(seed_spec(spec, seed), candidate, base, shipped, share)] = i
            (ready,), _ = ray.wait(list(running), num_returns=1)
            i = running.pop(ready)
            result, done = ray.get(ready), done + 1
            candidate, seed = jobs[i]
            echo(
                f"[{done}/{len(jobs)}] {candidate.label} ({candidate.defense}) seed {seed}: "
                f"accuracy {result.utility:.4f}, strongest attack {result.strongest_attack} {result.privacy:.4f}"
            )
            yield i, result

    return run


def seed_variation(from_checkpoint: bool) -> str:
    """What a fresh seed varies, so the intervals are read for what they cover. A victim from a checkpoint is
    the user's trained model on every seed: its weights and members are fixed, and the intervals hold none of
    the variation a retrained victim or another draw of members would add."""
    if from_checkpoint:
        return (
            "each fresh seed redraws the shadows' data and training, the mem-scores, the victim's non-member "
            "targets and the sample of its member targets, and the fine-tuning of every pruning round; not the "
            "victim's trained weights (the checkpoint) nor its members, which are the same on every seed"
        )
    return "each fresh seed with its own split (so its own members and non-members), pretraining and mem-scores"


def comparison_candidate(compare: tuple[str, Mapping[str, Any]] | None) -> Candidate | None:
    """The named comparison setting, checked like a defense setting before anything runs."""
    if compare is None:
        return None
    from wemem.defenses import make_defense

    defense, settings = compare
    make_defense(defense, dict(settings))  # an unknown defense or a bad setting fails here, before any evaluation
    return named_comparison(defense, settings)


def confirm(
    opened: OpenStudy,
    top: int = 1,
    n_seeds: int = 3,
    echo: Echo = print,
    attacks: Sequence[str] | None = None,
    compare: tuple[str, Mapping[str, Any]] | None = None,
    mlflow: str | None = None,
) -> Confirmation:
    """Confirm the study's best ``top`` settings on ``n_seeds`` fresh seeds and store the result with the study
    (and log it to MLflow: at ``mlflow``, else where ``MLFLOW_TRACKING_URI`` tracks the study already);
    judged by the study's attacks, or by ``attacks`` (see :func:`~.suites.judged_by`). Tuning is judged against
    ``compare`` (a defense and its settings) when given, else against the best of the paper's defaults the study
    enqueued: it is evaluated on the same seeds and each tuned setting's difference from it is paired by seed."""
    from ..execution._cluster import init_ray
    from ..execution._tracking import log_confirmation, tracking_of

    tracking = tracking_of(mlflow, None)  # a bad --mlflow is refused before any evaluation
    study, definition = opened.study, opened.definition
    check_stored_code(study, opened.spec.experiment)  # the study's plug-ins, as it recorded them, or nothing runs
    chosen = candidates(study, top, comparison_candidate(compare))
    seeds = confirmation_seeds(definition.study.seed, n_seeds)
    study_spec = opened.spec
    # confirmation has no early stopping: every run goes to the end. Its replications are its seeds: each seed is
    # evaluated once ([search] repeats and target_draws quiet a study's ranking on its one seed; the interval
    # over fresh seeds already holds every noise, and with all ten attacks a target draw costs a trial's time)
    spec = replace(judged_by(study_spec, attacks), round_reports=False, repeats=1, target_draws=1)
    echo(
        f"confirming {', '.join(c.label for c in chosen)} on fresh seeds {seeds} "
        f"({len(chosen) * len(seeds)} evaluations; {seed_variation(definition.model.checkpoint is not None)}; "
        f"judged by {', '.join(spec.attacks)})"
    )
    init_ray(opened.options.ray_address)
    delta = definition.objective_config().constraint_delta
    confirmation = confirm_study(
        study, study_spec, spec, chosen, seeds, ray_evaluator(spec, definition, echo), delta, echo
    )
    log_confirmation(tracking, opened, confirmation.to_json(), echo)
    return confirmation
