"""Launching and resuming a study: check every input, open or create the study, start or join Ray, prepare the
shared work once, measure the reference once, then run trials up to the budget."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import optuna
from pydantic import ValidationError

from wemem.assets import Echo, check_inputs, input_checks
from wemem.errors import WememError, validation_problems
from wemem.files import check_writable_folder
from wemem.validity import Check, apply_overrides, require_valid

from ..storage._records import check_stored_code, store_launch_place, store_reference, store_validity, stored_validity
from ..storage._urls import check_storage_url, new_sqlite_file, redact, refuse_foreign_tables
from ..study import (
    OpenStudy,
    Options,
    Place,
    active_count,
    create_or_load_study,
    load_study,
    refuse_conflicting,
    running_numbers,
    withdraw_new_study,
)
from ..studyfile import StudyDefinition
from ._cluster import check_trial_fits, init_ray
from ._tracking import StudyTracker, Tracking, tracking_of
from ._trainable import shared_work
from ._tune import run_trials
from ._warm_start import enqueue, paper_defaults, warm_starts

SHARED_WORK_CHECKS = ("reference", "mimicry")  # measured on the shared work (see trainable.study_checks)


def validate_inputs(definition: StudyDefinition, place: Place) -> list[Check]:
    """Everything a study needs that can be checked before anything is created in the storage or the cache,
    and the validity checks whose inputs exist by then (refused when one fails and the user did not override it)."""
    experiment = definition.experiment(place.data_root, place.base_dir)
    pools = check_inputs(experiment, place.cache_dir)
    checks = apply_overrides(
        input_checks(experiment, pools, definition.objective_config().privacy_metric), place.options.overrides
    )
    require_valid(checks)
    return checks


def report_checks(study: optuna.Study, checks: list[Check], echo: Echo) -> None:
    """Print the checks and record them with the study (a later launcher's replace an earlier one's)."""
    for check in checks:
        echo(f"validity {check.line()}")
    store_validity(study, checks)


def attach_ray(definition: StudyDefinition, options: Options) -> StudyDefinition:
    """Start or join Ray and check that a trial of this launcher's resources fits it (else it would wait
    forever); returns the definition with this launcher's resources."""
    definition = with_resources(definition, options)
    init_ray(options.ray_address)
    check_trial_fits(definition)
    return definition


def with_resources(definition: StudyDefinition, options: Options) -> StudyDefinition:
    """This launcher's resources: the study's, with the command line's overrides (not part of its identity)."""
    if not options.resources:
        return definition
    resources = definition.resources.model_copy(update=options.resources)
    try:
        checked = type(resources).model_validate(resources.model_dump())
    except ValidationError as error:
        problems = "; ".join(validation_problems(error))
        raise WememError(
            f"invalid resources for this launcher ({problems}); fix --cpus-per-trial, "
            "--gpus-per-trial or --max-concurrent-trials"
        ) from None
    return definition.model_copy(update={"resources": checked})


def existing_storage(
    definition: StudyDefinition, options: Options, new_file: Path | None
) -> optuna.storages.RDBStorage | None:
    """The storage opened for writing (probed, and the study compared with its file) before Ray starts, so its
    problems cost no Ray start; None when it is a SQLite file still to create (``new_file``): that waits until
    nothing can refuse the launch any more, so a refused launch leaves no file (its folder is checked now)."""
    if new_file is not None:
        check_writable_folder(new_file.parent, "--storage")
        return None
    storage = options.open_storage()
    refuse_conflicting(definition, storage)
    return storage


@contextlib.contextmanager
def deletion_refused(study: optuna.Study, storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """End this launcher with a message when its study is deleted while it runs (``wemem delete NAME --force``):
    Optuna answers every later read or write of the study with a KeyError, wherever the launcher is."""
    try:
        yield
    except KeyError:
        if not is_deleted(study, storage):
            raise
        raise WememError(
            f"study {study.study_name!r} was deleted while this launcher ran (`wemem delete "
            f"{study.study_name} --force`), with all its trials; this launcher stopped and stored "
            "nothing more. Launch the study file again to start the study anew"
        ) from None


def is_deleted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> bool:
    try:
        storage.get_study_id_from_name(study.study_name)
    except KeyError:
        return True
    return False


def launch(definition: StudyDefinition, options: Options, echo: Echo = print, mlflow: str | None = None) -> OpenStudy:
    check_storage_url(options.storage_url)
    tracking = tracking_of(mlflow, definition.tracking)
    if not options.allow_foreign_tables:
        refuse_foreign_tables(options.storage_url)
    # plug-ins and relative paths start in the study file's folder (a definition not read from a file: here)
    folder = definition.folder or str(Path.cwd())
    place = Place.of(options, base_dir=folder)
    checks = validate_inputs(definition, place)  # everything is checked before anything is stored
    defaults, left_out = paper_defaults(definition)
    starts = warm_starts(definition, folder, lambda: options.open_storage(must_exist=True), defaults)
    new_file = new_sqlite_file(options.storage_url)
    storage = existing_storage(definition, options, new_file)
    running = attach_ray(definition, options)
    if storage is None:
        storage = options.open_storage()
    study, created = create_or_load_study(definition, storage, {})
    with deletion_refused(study, storage):
        try:
            if created:
                store_launch_place(study, place.cache_dir, options.data_root, folder)
                echo(f"created study {definition.name!r} in {redact(options.storage_url)}")
                for line in left_out:
                    echo(line)
                enqueue(study, defaults + starts)  # the paper's defaults first, then earlier work
            else:
                echo(
                    f"study {definition.name!r} exists; continuing it to its budget of {definition.study.n_trials} "
                    "trials"
                )
            report_checks(study, checks, echo)
            opened = OpenStudy(study, running, storage, Place.of(options, study, folder))
            run_study(opened, definition.study.n_trials, echo, tracking)
        except WememError:  # refused before a trial ran (a full cache folder, say): leave nothing this launch made
            if created:
                withdraw_new_study(study, storage, new_file)
            raise
    return opened


def resume(
    name: str, options: Options, n_trials: int | None = None, echo: Echo = print, mlflow: str | None = None
) -> OpenStudy:
    if n_trials is not None and n_trials < 1:
        raise WememError(
            f"--n-trials must be a positive number of trials to add (got {n_trials}); omit it to "
            "finish the study's budget"
        )
    tracking = tracking_of(mlflow, None)
    storage = options.open_storage(must_exist=True, writer=True)  # a read-only storage is refused here, first
    study, definition = load_study(name, storage)
    with deletion_refused(study, storage):
        place = Place.of(options, study)
        check_stored_code(study, definition.experiment(place.data_root, place.base_dir))  # before any of it runs
        checks = validate_inputs(definition, place)
        opened = OpenStudy(study, attach_ray(definition, options), storage, place)
        report_checks(study, checks, echo)
        running = running_numbers(study)
        if running:
            echo(
                f"trial(s) {running} are RUNNING: those of a dead launcher on this machine are failed and re-run now, "
                f"those of a launcher elsewhere once it has been silent for {options.stale_after} s"
            )
        target = active_count(study) + n_trials if n_trials is not None else definition.study.n_trials
        if target <= active_count(study) and not running:
            echo(f"study {name!r} already has its {definition.study.n_trials} trials; pass --n-trials N to add more")
        run_study(opened, target, echo, tracking)
    return opened


def run_study(opened: OpenStudy, target_total: int, echo: Echo, tracking: Tracking | None = None) -> None:
    """Prepare the shared work once (cached), measure the reference once, then run trials up to the target;
    with ``tracking``, each trial is logged to MLflow as it is told (with its per-target scores), and as the
    launcher ends, interrupted or not, every finished trial not logged yet (failed by the interrupt or a sweep,
    or other launchers'): the storage keeps every trial whatever MLflow answers."""
    study, spec = opened.study, opened.spec
    assets, base = shared_work(opened, echo)  # on the trials' CPU/GPU shares, then shipped
    store_reference(study, base.utility, base.privacy, base.strongest_attack, base.result["attacks"])
    echo(
        f"undefended iteratively pruned reference: accuracy {base.utility:.4f}, strongest attack "
        f"{base.strongest_attack} {spec.objective.privacy_metric} {base.privacy:.4f}"
    )
    for check in stored_validity(study):
        if check.name in SHARED_WORK_CHECKS:
            echo(f"validity {check.line()}")
    tracker = StudyTracker.open(tracking, opened, echo)
    try:
        if target_total > active_count(study) or running_numbers(study):
            echo(f"running {max(target_total - active_count(study), 0)} trial(s) of study {opened.name!r}")
            logged = None if tracker is None else functools.partial(tracker.log_finished, opened)
            run_trials(opened, base, target_total, echo, assets=assets, on_finished=logged)
    finally:
        if tracker is not None:
            tracker.log_trials(study, spec.objective.privacy_metric)
