"""Stored confirmations per attack suite: which judges a confirmation used, storing it (archiving one by other
judges), every finished run stored as it arrives, and the section an export or summary carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import optuna

from objectives import ObjectiveConfig, TrialSpec
from wemem.assets import Echo
from wemem.attacks import check_attack_requirements
from wemem.faults import failpoint

from ..storage._records import (
    archived_confirmations,
    confirmation_runs,
    store_confirmation_record,
    store_confirmation_runs,
    stored_confirmation,
)
from ._candidates import Candidate, Evaluate
from ._confirmation import Confirmation, ConfirmationStatus, LeakageCap, SeedResult, Suite
from ._statistics import confirm_with, known_results, setting_key, verdict


def judged_by(spec: TrialSpec, attacks: Sequence[str] | None) -> TrialSpec:
    """The spec a confirmation evaluates with: the study's own (``attacks`` None), or one judged by ``attacks``,
    its leakage the maximum over all of them.

    Why a confirmation may judge with other attacks than the search did: a study evaluates dozens of settings
    and only ranks them, so it can afford to search with a cheap suite (on a CPU, without SAMIA, whose
    transformer is most of a trial's attack stage) and confirm the winner with all ten -- the multi-fidelity
    pattern of hyperparameter search: a cheap objective to select, the full one for the number a user quotes.
    """
    if attacks is None:
        return spec
    check_attack_requirements(list(attacks), spec.experiment.shadows)  # before anything runs or is stored
    return replace(spec, attacks=tuple(attacks), objective=replace(spec.objective, privacy_attacks=None))


def judge_sets(spec: TrialSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A spec's attacks and the ones its leakage is the maximum over, as sets (their order changes no number)."""
    return tuple(sorted(spec.attacks)), tuple(sorted(spec.objective.privacy_attacks or ()))


def suite_fields(spec: TrialSpec, study_spec: TrialSpec) -> Suite:
    """What a stored confirmation records of its judges (and whether they are the study's own)."""
    attacks, among = judge_sets(spec)
    return Suite(attacks, among, (attacks, among) == judge_sets(study_spec))


def suite_key(confirmation: Confirmation, study_spec: TrialSpec) -> str:
    """Which judges a stored confirmation used (one stored before suites were recorded used the study's)."""
    return (confirmation.suite or suite_fields(study_spec, study_spec)).key()


def leakage_cap(objective: ObjectiveConfig) -> LeakageCap | None:
    """The cap a leakage_cap study's confirmation judges its settings against (None: the study has none)."""
    if objective.max_leakage is None:
        return None
    return LeakageCap(objective.max_leakage, objective.leakage_se_multiple)


def read_confirmation(stored: Mapping[str, Any] | None) -> Confirmation | None:
    return None if stored is None else Confirmation.from_json(stored)


def latest_confirmation(study: optuna.Study) -> Confirmation | None:
    """The study's latest confirmation (what status, export and report read)."""
    return read_confirmation(stored_confirmation(study))


def stored_confirmations(study: optuna.Study, study_spec: TrialSpec) -> dict[str, Confirmation]:
    """Every stored confirmation by its judges: the latest (``confirmation``, what export and report read) and
    those of other suites it replaced (``confirmation:<suite>``), so switching suites loses and reruns nothing."""
    latest = latest_confirmation(study)
    stored = [Confirmation.from_json(c) for c in archived_confirmations(study)] + ([latest] if latest else [])
    return {suite_key(confirmation, study_spec): confirmation for confirmation in stored}


def confirm_study(
    study: optuna.Study,
    study_spec: TrialSpec,
    spec: TrialSpec,
    chosen: list[Candidate],
    seeds: list[int],
    evaluate: Evaluate,
    delta: float | None,
    echo: Echo = print,
) -> Confirmation:
    """Confirm ``chosen`` on ``seeds`` as judged by ``spec`` and store the result with the study.

    Every finished evaluation is stored at once (user attribute ``confirmation_runs:<suite>``, by setting and
    seed), so a confirmation killed after hours of CIFAR-sized runs loses only the runs in flight: the next
    one with the same judges reuses the rest, as it reuses earlier confirmations' per-seed results. (Each seed's
    pretraining, mem-scores and reference are also cached on disk, like a study's.)
    """
    judges = suite_fields(spec, study_spec)
    suite = judges.key()
    runs = confirmation_runs(study, suite)
    known = {
        **known_results(stored_confirmations(study, study_spec).get(suite)),
        **{key: SeedResult(**row) for key, row in runs.items()},
    }
    wanted = {setting_key(c.defense, c.settings, s) for c in chosen for s in seeds}
    if wanted & set(known):
        echo(f"reusing {len(wanted & set(known))} of {len(wanted)} evaluations stored by an earlier confirmation")

    def record(key: str, result: SeedResult) -> None:
        runs[key] = asdict(result)
        store_confirmation_runs(study, suite, runs)
        failpoint("confirm_run_stored")  # the fault tests kill the launcher here

    confirmation = replace(
        confirm_with(chosen, seeds, evaluate, delta, known, record, leakage_cap(study_spec.objective)),
        metric=study_spec.objective.privacy_metric,
        suite=judges,
    )
    confirmation = replace(confirmation, verdict=verdict(confirmation))
    store_confirmation(study, confirmation, study_spec)
    return confirmation


def judged_by_others(confirmation: Confirmation) -> str:
    """ "judged by N attacks" when a confirmation's attacks are not the study's own (``--attacks``), else ""."""
    suite = confirmation.suite
    return f"judged by {len(suite.attacks)} attacks" if suite is not None and not suite.study_suite else ""


def store_confirmation(study: optuna.Study, confirmation: Confirmation, study_spec: TrialSpec) -> None:
    """Make ``confirmation`` the study's, first archiving a latest one judged by other attacks."""
    stored = stored_confirmation(study)
    previous = read_confirmation(stored)
    if previous is not None and suite_key(previous, study_spec) != suite_key(confirmation, study_spec):
        store_confirmation_record(study, confirmation.to_json(), suite_key(previous, study_spec), stored)
    else:
        store_confirmation_record(study, confirmation.to_json())


def export_section(study: optuna.Study, best_numbers: list[int]) -> ConfirmationStatus:
    """What ``wemem export`` carries: the confirmed figures, or a note that there are none (and how to get them)."""
    confirmation = latest_confirmation(study)
    if confirmation is None:
        return ConfirmationStatus(
            "not confirmed",
            None,
            f"the figures above are the selected trial's own evaluation, biased low by the "
            f"selection; run `wemem confirm {study.study_name}` for fresh-seed means and "
            f"intervals",
        )
    confirmed = {c.trial_number for c in confirmation.candidates}
    missing = [n for n in best_numbers if n not in confirmed]
    confirmation = replace(confirmation, verdict=verdict(confirmation) or confirmation.verdict)
    if not missing:
        return ConfirmationStatus("confirmed", confirmation)
    return ConfirmationStatus(
        "stale",
        confirmation,
        f"trial(s) {missing} became best after this confirmation; run `wemem confirm {study.study_name}` again",
    )
