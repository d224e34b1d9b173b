"""The Python API, for notebooks and scripts: what the ``wemem`` commands do, returning objects, printing nothing
unless asked (pass ``echo=print`` for the commands' progress lines).

    from search import api

    study = api.launch("examples/own_model/study.toml", storage="sqlite:///own.db")
    print(study.trials[["number", "defense", "utility", "privacy"]])
    confirmed = api.confirm(study.name, seeds=3, storage="sqlite:///own.db")
    api.export(study.name, "best.toml", storage="sqlite:///own.db")

Every ``wemem`` command is a function here, and the command line calls it: it parses the arguments, calls the
function and prints what it returns (or what it echoes). Every function takes the commands' places as keywords
(``storage``, ``cache_dir``, ``data_root``, ``ray_address``). Errors a user can fix are
:class:`wemem.errors.WememError`, with the message the command prints, by kind: :class:`BadInputError` (an argument
or input file), :class:`StorageError` (the storage) and :class:`InterruptedStudyError` (Ctrl-C or SIGTERM; also a
``KeyboardInterrupt``), all from :mod:`search.exceptions`. A caller's Ray (``ray.init()`` beforehand) is used
and left running; one started here is left running too, for the next call (``ray.shutdown()`` ends it).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
import pandas as pd
import torch

from wemem.config import ExperimentConfig, PruningConfig
from wemem.defenses import UNDEFENDED, Setting
from wemem.errors import WememError
from wemem.memscore import ImportOrder
from wemem.pipeline import ExperimentResult

from ._runs import Execution, Experiment, Run
from .exceptions import BadInputError, InterruptedStudyError, StorageError
from .storage._records import ReferenceRecord
from .storage._urls import GRACE_PERIOD_S, MIN_GRACE_PERIOD_S
from .study import LAUNCHER_RESOURCES, OpenStudy, Options, best_trials, open_study
from .studyfile import StudyDefinition, load_study_file, parse_study

if TYPE_CHECKING:  # the confirmation's and the audit's types only: importing them loads the science
    from .confirm import Confirmation
    from .results._artifact_audit import AuditRecord

Echo = Callable[[str], None]
# what ``attacks=`` takes: "all", comma-separated names ("conf,lira") or a sequence of names, as ``--attacks``
AttackNames = Literal["all"] | str | Sequence[str]


_PRUNING = PruningConfig()  # run's pruning defaults are the science's
# the defaults of run's and memscore's experiment and execution (frozen: one shared value is safe)
_EXPERIMENT, _EXECUTION = Experiment(), Execution()


def quiet(_line: str) -> None:
    """The default echo: the API prints nothing unless asked."""


def _quiet_libraries() -> None:
    """Optuna logs every study it creates at INFO; the commands lower it to WARNING, and so does the API."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class StudyResult:
    """A study as stored: its trials, best setting, undefended reference and stored confirmation. Read from the
    storage when asked (``refresh()`` reads again after more trials ran elsewhere). ``started``: when the launch
    or resume that returned it started (None for a study only read)."""

    opened: OpenStudy
    started: datetime.datetime | None = None

    @property
    def name(self) -> str:
        return self.opened.name

    @property
    def definition(self) -> StudyDefinition:
        return self.opened.definition

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial: number, state, defense, utility (test accuracy), privacy (leakage), feasible,
        parameters (``param.*``), every attack's metrics (``ATTACK.METRIC``) and stage timings."""
        from .results._report import trials_table

        return trials_table(self.opened.study)

    @property
    def best(self) -> list[Mapping[str, object]]:
        """The best trial (single objective) or the Pareto set, as ``wemem export`` writes them."""
        from .results._export import trial_record

        return [trial_record(t) for t in best_trials(self.opened.study)]

    @property
    def reference(self) -> ReferenceRecord | None:
        """The undefended iteratively pruned model's accuracy and leakage."""
        from .storage._records import stored_reference

        return stored_reference(self.opened.study)

    @property
    def confirmation(self) -> Confirmation | None:
        """The latest ``confirm`` result stored with the study (means, intervals, paired differences), the value
        :func:`confirm` returned."""
        from .confirm import Confirmation
        from .storage._records import stored_confirmation

        stored = stored_confirmation(self.opened.study)
        return None if stored is None else Confirmation.from_json(stored)

    @property
    def validity(self) -> list[Mapping[str, object]]:
        """The study's validity checks (name, status: pass/warn/fail/overridden, message, figures), as
        ``wemem status`` and the report show them; empty for a study launched before they existed."""
        from .storage._records import stored_validity

        return [check.to_dict() for check in stored_validity(self.opened.study)]

    def summary(self) -> str:
        """The text ``wemem status NAME`` starts with."""
        from .results._text import summary_lines

        return "\n".join(summary_lines(self.opened))

    def refresh(self) -> StudyResult:
        return StudyResult(open_study(self.name, self.opened.options))

    def refuse_all_failed(self) -> None:
        """Raise when every trial the launch or resume that returned this ran failed: it has found nothing, and
        ``wemem launch``/``resume`` exit non-zero, naming a reason, so scripts and schedulers notice (the trials
        and their reasons are stored)."""
        from optuna.trial import TrialState

        from .storage._records import SURPLUS_ATTR, fail_reason

        study = self.opened.study
        # Optuna stamps trials with the launcher machine's local time, as datetime.now() does
        ran = [
            t
            for t in study.get_trials(deepcopy=False)
            if self.started is not None
            and t.datetime_start is not None
            and t.datetime_start >= self.started
            and not t.user_attrs.get(SURPLUS_ATTR)
        ]
        if ran and all(t.state == TrialState.FAIL for t in ran):
            raise WememError(
                f"every one of the {len(ran)} trial(s) this launcher ran failed, e.g. trial "
                f"#{ran[0].number}: {fail_reason(ran[0])}. Fix the cause, then `wemem resume "
                f"{study.study_name}` (`wemem status {study.study_name}` lists each reason)"
            )


def definition_of(study: str | Path | StudyDefinition | Mapping[str, object]) -> StudyDefinition:
    """A study file path, a parsed definition, or the study file's content as a dict (plug-ins are then imported
    from the working directory first)."""
    if isinstance(study, StudyDefinition):
        return study
    if isinstance(study, Mapping):
        return parse_study(study, "<dict>")
    if isinstance(study, (str, Path)):
        return load_study_file(study)
    raise BadInputError(f"a study is a study file path, a StudyDefinition or a dict, not a {type(study).__name__}")


def _options(
    storage: str | None,
    cache_dir: str | Path | None,
    data_root: str | Path | None,
    ray_address: str | None,
    resources: Mapping[str, float] | None = None,
    override_checks: Sequence[str] = (),
    allow_foreign_tables: bool = False,
    *,
    stale_after: int = GRACE_PERIOD_S,
) -> Options:
    """The commands' places and this launcher's settings, each of the type the command line would give."""
    _of_type(storage, str, "storage", "a storage URL such as 'sqlite:///wemem.db'")
    _of_type(ray_address, str, "ray_address", "a Ray address: 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    _of_type(allow_foreign_tables, bool, "allow_foreign_tables", "True or False")
    return Options(
        storage=storage,
        cache_dir=_folder(cache_dir, "cache_dir"),
        data_root=_folder(data_root, "data_root"),
        ray_address=ray_address,
        stale_after=_whole_number(stale_after, "stale_after", MIN_GRACE_PERIOD_S),
        resources=_resources(resources),
        overrides=_override_names(override_checks),
        allow_foreign_tables=allow_foreign_tables,
    )


def _of_type(value: Any, kind: type | tuple[type, ...], argument: str, takes: str) -> None:
    """Refuse a value of another type than the argument takes (None stands for the argument's default)."""
    if value is not None and not isinstance(value, kind):
        raise BadInputError(f"{argument} takes {takes} (got {type(value).__name__} {value!r:.60})")


def _path(value: Any, argument: str) -> str | Path:
    if not isinstance(value, (str, os.PathLike)):
        raise BadInputError(
            f"{argument} takes a file or folder path, a str or Path (got {type(value).__name__} {value!r:.60})"
        )
    return value if isinstance(value, str) else Path(value)


def _folder(value: str | Path | None, argument: str) -> str | None:
    _of_type(value, (str, os.PathLike), argument, "a folder path (str or Path)")
    return None if value is None else os.fspath(value)


def _resources(resources: Mapping[str, float] | None) -> dict[str, float] | None:
    """``resources=`` as the resource flags give them: only the keys a launcher may set for itself."""
    known = ", ".join(LAUNCHER_RESOURCES)
    _of_type(resources, Mapping, "resources", f"a dict of {known}")
    if resources is None:
        return None
    unknown = [key for key in resources if key not in LAUNCHER_RESOURCES]
    if unknown:
        raise BadInputError(f"resources: unknown key(s) {', '.join(map(repr, unknown))}; the known keys are {known}")
    return dict(resources)


def _study_name(name: Any) -> str:
    if not isinstance(name, str):
        raise BadInputError(f"name takes a study name (got {name!r})")
    return name


def _echo(echo: Any) -> Echo:
    if not callable(echo):
        raise BadInputError(f"echo takes a function of one line, such as print (got {echo!r})")
    return echo


def _override_names(names: Sequence[str]) -> tuple[str, ...]:
    """``override_checks`` as ``--override-check`` takes them: names of validity checks that may be overridden."""
    from wemem.validity import OVERRIDABLE

    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise BadInputError(f"override_checks takes a list of check names ({', '.join(OVERRIDABLE)}), not {names!r}")
    unknown = [n for n in names if n not in OVERRIDABLE]
    if unknown:
        raise BadInputError(
            f"override_checks: unknown check(s) {unknown}; the checks a user may override are "
            f"{', '.join(OVERRIDABLE)} (docs/validity.md)"
        )
    return tuple(names)


def resume_advice(name: str, requeued: Sequence[int] = ()) -> str:
    """How to go on after a launcher of study ``name`` was interrupted."""
    detail = f" Running trial(s) {list(requeued)} were failed and their settings re-queued." if requeued else ""
    return f"finished trials are stored.{detail} Continue with `wemem resume {name}`."


@contextmanager
def _continued_by_resume(name: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM (a KeyboardInterrupt, as the command line raises for both) during a launcher's trials,
    as an :class:`InterruptedStudyError` naming the trials it re-queued and the resume that continues them."""
    try:
        yield
    except InterruptedStudyError:
        raise
    except KeyboardInterrupt as interrupt:
        requeued = getattr(interrupt, "requeued", [])
        raise InterruptedStudyError(resume_advice(name, requeued), requeued) from interrupt


def launch(
    study: str | Path | StudyDefinition | Mapping[str, object],
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
    resources: Mapping[str, float] | None = None,
    override_checks: Sequence[str] = (),
    allow_foreign_tables: bool = False,
    mlflow: str | None = None,
    echo: Echo = quiet,
) -> StudyResult:
    """Create (or continue) a study and run its trials to its budget, like ``wemem launch``; ``override_checks``
    names failed validity checks to run past, like ``--override-check`` (recorded with the study);
    ``allow_foreign_tables`` launches into a SQLite file that also holds another program's tables;
    ``stale_after``: seconds without a heartbeat after which a RUNNING trial is failed and re-queued;
    ``mlflow``: an MLflow tracking URI to log the trials to, like ``--mlflow`` (over the file's [tracking])."""
    from .execution._launcher import launch as launch_study

    options = _options(
        storage,
        cache_dir,
        data_root,
        ray_address,
        resources,
        override_checks,
        allow_foreign_tables,
        stale_after=stale_after,
    )
    echo = _echo(echo)
    _quiet_libraries()
    definition = definition_of(study)
    started = datetime.datetime.now()
    with _continued_by_resume(definition.name):
        return StudyResult(launch_study(definition, options, echo, mlflow), started)


def resume(
    name: str,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
    resources: Mapping[str, float] | None = None,
    override_checks: Sequence[str] = (),
    mlflow: str | None = None,
    echo: Echo = quiet,
) -> StudyResult:
    """Continue a stored study: its remaining budget, or ``n_trials`` more, like ``wemem resume``; ``mlflow``: an
    MLflow tracking URI to log the trials to, like ``--mlflow``."""
    from .execution._launcher import resume as resume_study

    name, echo = _study_name(name), _echo(echo)
    if n_trials is not None:
        _whole_number(n_trials, "n_trials", 1)
    options = _options(storage, cache_dir, data_root, ray_address, resources, override_checks, stale_after=stale_after)
    _quiet_libraries()
    started = datetime.datetime.now()
    with _continued_by_resume(name):
        return StudyResult(resume_study(name, options, n_trials, echo, mlflow), started)


def results(
    name: str,
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
) -> StudyResult:
    """A stored study's results (nothing runs)."""
    return StudyResult(
        open_study(_study_name(name), _options(storage, cache_dir, data_root, None, stale_after=stale_after))
    )


def _whole_number(value: Any, argument: str, least: int) -> int:
    """``value`` when it is a whole number >= ``least`` (a bool is not one: ``True`` would run one seed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BadInputError(f"{argument} takes a whole number >= {least} (got {value!r})")
    return value


def attack_names(attacks: AttackNames | None) -> list[str] | None:
    """``attacks=`` read as ``--attacks`` reads its text (None: the study's own judges); unknown names and other
    types are refused here, before anything is opened or run."""
    from wemem.attacks import ATTACKS, parse_attack_names

    if attacks is None:
        return None
    if isinstance(attacks, str):
        return parse_attack_names(attacks, ATTACKS.names())
    if isinstance(attacks, Sequence) and all(isinstance(name, str) for name in attacks):
        return parse_attack_names(",".join(attacks), ATTACKS.names())
    raise BadInputError(
        f"attacks takes 'all', comma-separated names such as 'conf,lira' or a list of names (got {attacks!r})"
    )


def _comparison(compare: tuple[str, Mapping[str, Any]] | None) -> tuple[str, dict[str, Any]] | None:
    """``compare=`` as ``--compare`` gives it: a defense name and its settings."""
    if compare is None:
        return None
    if not (
        isinstance(compare, (tuple, list))
        and len(compare) == 2
        and isinstance(compare[0], str)
        and isinstance(compare[1], Mapping)
    ):
        raise BadInputError(
            f"compare takes a defense name and its settings, e.g. ('rsw', {{'width_fraction': 0.3}}) (got {compare!r})"
        )
    return compare[0], dict(compare[1])


def echo_confirmation(confirmation: Confirmation, echo: Echo) -> None:
    """What ``wemem confirm`` prints once every evaluation is done: the confirmed figures, the closing sentence
    and the tuned-vs-default verdict (the command and the API both print through this)."""
    from .results._text import confirmed_lines

    for line in confirmed_lines(confirmation):
        echo(line)


def confirm(
    name: str,
    *,
    top: int = 1,
    seeds: int = 3,
    attacks: AttackNames | None = None,
    compare: tuple[str, Mapping[str, Any]] | None = None,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
    mlflow: str | None = None,
    echo: Echo = quiet,
) -> Confirmation:
    """Re-evaluate the best ``top`` settings, the paper's default (or ``compare``, a defense and its settings)
    and the reference on ``seeds`` fresh seeds, like ``wemem confirm``; judged by the study's attacks, or by
    ``attacks`` ("all", "conf,lira" or ["conf", "lira"]). Returns the stored confirmation (``candidates`` with
    means, 95% intervals and paired differences, ``verdict`` the tuned-vs-default answer); ``mlflow``: an MLflow
    tracking URI to log the confirmation to, like ``--mlflow``; ``echo`` gets the progress lines and then what the
    command prints at its end."""
    from .confirm import confirm as confirm_study

    name, echo = _study_name(name), _echo(echo)
    top, seeds = _whole_number(top, "top", 1), _whole_number(seeds, "seeds", 2)
    judges, compared = attack_names(attacks), _comparison(compare)
    opened = open_study(name, _options(storage, cache_dir, data_root, ray_address, stale_after=stale_after))
    _quiet_libraries()
    confirmation = confirm_study(opened, top, seeds, echo, judges, compared, mlflow)
    echo_confirmation(confirmation, echo)
    return confirmation


def export(
    name: str,
    path: str | Path,
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
    echo: Echo = quiet,
) -> Path:
    """Write the best setting (or Pareto set) as TOML or JSON, like ``wemem export``; returns the path, and
    ``echo`` gets the line saying it was written (or replaced)."""
    from wemem.files import check_output_file, wrote

    from .results._export import export_document, write_export

    name, echo = _study_name(name), _echo(echo)
    check_output_file(_path(path, "path"), (".toml", ".json"))  # before the storage is opened
    opened = open_study(name, _options(storage, cache_dir, data_root, None, stale_after=stale_after))
    echo(wrote((path, write_export(export_document(opened), path))))
    return Path(path)


def _exported_trial(trial: Any) -> int | None:
    """``trial=`` as ``--trial`` takes it: which trial of an exported Pareto set (None: the export's best trial, or
    the only one of its Pareto set)."""
    return None if trial is None else _whole_number(trial, "trial", 0)


def apply(
    export_file: str | Path,
    out: str | Path,
    *,
    trial: int | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    parallel: bool = False,
    echo: Echo = quiet,
    allow_code: bool = False,
) -> Mapping[str, object]:
    """Rebuild, save and re-evaluate an exported setting, like ``wemem apply --out OUT``: in this process, or
    with ``parallel=True`` as Ray tasks (Ray started here, or joined at ``ray_address``), as the command does.
    Returns the evaluation written to ``OUT/evaluation.json``. Plug-in code the export names runs only with
    ``allow_code=True`` (``--allow-code``), after you have read it."""
    from wemem.files import check_writable_folder

    from .execution import _cluster as cluster
    from .results._apply import apply_export, check_apply_out, load_export
    from .study import resolve_cache_dir

    trial = _exported_trial(trial)
    export_file, out, echo = _path(export_file, "export_file"), _path(out, "out"), _echo(echo)
    options = _options(None, cache_dir, data_root, ray_address)
    # a bad out, cache folder or export file is refused before Ray starts and the minutes of work
    check_apply_out(out)
    cache = resolve_cache_dir(options)
    check_writable_folder(cache, "--cache-dir")
    load_export(export_file, trial, allow_code=allow_code)
    if parallel:
        cluster.init_ray(options.ray_address)
    return apply_export(
        export_file, out, cache, options.data_root, trial, cluster.task_share if parallel else None, echo, allow_code
    )


@dataclass(frozen=True)
class ArtifactAudit:
    """What ``wemem audit`` measured and stored with the study: the file (name, SHA-256, sparsity), its leakage
    and accuracy with their intervals, the recorded figure and the difference (``record``, as stored)."""

    record: AuditRecord

    def lines(self) -> list[str]:
        from .results._artifact_audit import audit_lines

        return audit_lines(self.record)


def audit(
    artifact: str | Path,
    *,
    study: str,
    export_file: str | Path | None = None,
    trial: int | None = None,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    parallel: bool = False,
    echo: Echo = quiet,
) -> ArtifactAudit:
    """Run the study's attack suite against a shipped model file's own outputs (an .onnx through onnxruntime, or
    a .safetensors loaded into the study's model) and store the result with the study, like ``wemem audit
    ARTIFACT --study NAME``. The setting comes from the file's metadata, else from ``export_file`` (and ``trial``
    in a Pareto export). Every input is checked before anything is written."""
    from wemem.parallel import serial_map

    from .execution import _cluster as cluster
    from .results._artifact_audit import audit_artifact, checked_artifact

    trial = _exported_trial(trial)
    artifact, echo = _path(artifact, "artifact"), _echo(echo)
    export_file = None if export_file is None else _path(export_file, "export_file")
    options = _options(storage, cache_dir, data_root, ray_address)
    _quiet_libraries()
    opened = open_study(_study_name(study), options)
    checked = checked_artifact(opened, artifact, export_file, trial)  # before Ray starts and anything is written
    if parallel:
        cluster.init_ray(options.ray_address)
    map_fn = cluster.task_share(opened.definition) if parallel else serial_map
    return ArtifactAudit(audit_artifact(opened, checked, map_fn, echo))


def report(
    name: str,
    out: str | Path,
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
    echo: Echo = quiet,
) -> list[Path]:
    """Write a study's audit into the folder ``out``, like ``wemem report``: report.html, report.json, the trials
    table and the plots; returns the files written, and ``echo`` gets a line per file and per thing it lacks."""
    from .results._report import check_report_out, write_report

    name, echo = _study_name(name), _echo(echo)
    check_report_out(_path(out, "out"))  # before the storage is opened
    return write_report(
        open_study(name, _options(storage, cache_dir, data_root, None, stale_after=stale_after)), out, echo
    )


# --------------------------------------------------------------------------------------- wemem status


@dataclass(frozen=True)
class StudyStatus:
    """What ``wemem status NAME`` shows: the study's summary, then one line per trial, with why a trial failed
    or why a RUNNING trial's launcher looks dead (``health``: trial number -> reason, None while alive), then one
    line per audit of a shipped file (``wemem audit``)."""

    study: StudyResult
    health: Mapping[int, str | None]

    def lines(self) -> list[str]:
        from .results._artifact_audit import audited_lines
        from .results._text import summary_lines, trial_table_lines

        opened = self.study.opened
        return summary_lines(opened) + trial_table_lines(opened, dict(self.health)) + audited_lines(opened.study)


@dataclass(frozen=True)
class TrialStatus:
    """What ``wemem status NAME --trial N`` shows: one trial's state, values, setting, metrics and timings."""

    study: StudyResult
    trial: optuna.trial.FrozenTrial

    def lines(self) -> list[str]:
        from .results._text import trial_detail_lines

        return trial_detail_lines(self.study.opened.study, self.trial)


@dataclass(frozen=True)
class ForeignStudy:
    """A plain Optuna study sharing the storage: no stored definition, so listed by name and trial count only."""

    name: str
    n_trials: int

    def lines(self) -> list[str]:
        return [f"study {self.name!r}: not a wemem study (no stored definition); {self.n_trials} trial(s)"]


@dataclass(frozen=True)
class StudyListing:
    """What ``wemem status`` shows: every study of a storage (``storage``: its URL, secrets masked), each with
    the first lines of its summary."""

    storage: str
    studies: tuple[StudyResult | ForeignStudy, ...]

    def lines(self) -> list[str]:
        from .results._text import summary_lines

        names = ", ".join(study.name for study in self.studies) or "none"
        return [f"studies in {self.storage}: {names}"] + [
            line
            for study in self.studies
            for line in (study.lines() if isinstance(study, ForeignStudy) else summary_lines(study.opened)[:3])
        ]


def studies(
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
) -> StudyListing:
    """Every study of the storage, like ``wemem status`` without a name (nothing runs)."""
    from .storage._records import NotAWememStudy, study_names
    from .storage._urls import redact
    from .study import Place, load_study

    options = _options(storage, cache_dir, data_root, None, stale_after=stale_after)
    opened_storage = options.open_storage(must_exist=True)

    def listed(name: str) -> StudyResult | ForeignStudy:
        try:
            study, definition = load_study(name, opened_storage)
        except NotAWememStudy:  # listed, never an abort
            study_id = opened_storage.get_study_id_from_name(name)
            return ForeignStudy(name, len(opened_storage.get_all_trials(study_id, deepcopy=False)))
        return StudyResult(OpenStudy(study, definition, opened_storage, Place.of(options, study)))

    return StudyListing(redact(options.storage_url), tuple(listed(name) for name in study_names(opened_storage)))


def status(
    name: str,
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
) -> StudyStatus:
    """A stored study's summary and trials, like ``wemem status NAME`` (nothing runs)."""
    from .storage._heartbeat import running_trial_health

    study = results(name, storage=storage, cache_dir=cache_dir, data_root=data_root, stale_after=stale_after)
    return StudyStatus(study, running_trial_health(study.opened.study, study.opened.storage))


def trial_status(
    name: str,
    number: int,
    *,
    storage: str | None = None,
    cache_dir: str | None = None,
    data_root: str | None = None,
    stale_after: int = GRACE_PERIOD_S,
) -> TrialStatus:
    """One trial of a stored study in detail, like ``wemem status NAME --trial N``."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise BadInputError(f"number takes a trial number (got {number!r})")
    study = results(name, storage=storage, cache_dir=cache_dir, data_root=data_root, stale_after=stale_after)
    trials = {trial.number: trial for trial in study.opened.study.get_trials(deepcopy=False)}
    if number not in trials:
        raise BadInputError(
            f"study {name!r} has no trial #{number}; its trials are numbered 0.."
            f"{max(trials, default=-1)} (see `wemem status {name}`)"
        )
    return TrialStatus(study, trials[number])


# --------------------------------------------------------------------------------------- wemem delete


@dataclass(frozen=True)
class DeletedStudy:
    """A study deleted by :func:`delete`: its name and the storage's URL (secrets masked)."""

    name: str
    storage: str

    def line(self) -> str:
        return f"deleted study {self.name!r} from {self.storage}"


def delete(
    name: str, *, yes: bool = False, force: bool = False, storage: str | None = None, stale_after: int = GRACE_PERIOD_S
) -> DeletedStudy:
    """Delete a stored study and all its trials, like ``wemem delete``: only with ``yes=True`` (``--yes``), and
    while a launcher runs it (its RUNNING trials have fresh heartbeats) only with ``force=True``."""
    from .storage._heartbeat import running_trial_health
    from .storage._records import stored_definition
    from .storage._urls import redact

    name = _study_name(name)
    _of_type(yes, bool, "yes", "True or False")
    _of_type(force, bool, "force", "True or False")
    options = _options(storage, None, None, None, stale_after=stale_after)
    opened_storage = options.open_storage(must_exist=True)
    stored_definition(name, opened_storage)  # names the known studies when it does not exist
    where = redact(options.storage_url)
    if not yes:
        raise BadInputError(
            f"deleting study {name!r} removes all its trials from {where} for good; run `wemem "
            f"delete {name} --yes` to confirm (export it first if you need it)"
        )
    study = optuna.load_study(study_name=name, storage=opened_storage)
    live = [number for number, dead in running_trial_health(study, opened_storage).items() if dead is None]
    if live and not force:
        raise BadInputError(
            f"study {name!r} is being run: trial(s) {live} are RUNNING with fresh heartbeats, so a "
            "launcher is alive and would fail on the deleted study. Stop it first (Ctrl-C or kill "
            "-TERM lets it re-queue its trials), or pass --force to delete it anyway"
        )
    optuna.delete_study(study_name=name, storage=opened_storage)
    return DeletedStudy(name, where)


# ------------------------------------------------------------------------------------------ wemem run


@dataclass(frozen=True)
class RunResult:
    """One experiment without a search (:func:`run`): the rows run, each one's result, the metrics table (one row
    per run and attack) and the line saying where OUT.json and OUT.csv were written."""

    runs: tuple[Run, ...]
    results: tuple[ExperimentResult, ...]
    table: pd.DataFrame
    saved: str


def run(
    experiment: Experiment = _EXPERIMENT,
    *,
    defense: str = UNDEFENDED,
    settings: Mapping[str, object] | None = None,
    sparsity: float = _PRUNING.sparsity,
    steps: int = _PRUNING.steps,
    one_shot: bool = False,
    compare: bool = False,
    attacks: AttackNames | None = None,
    adaptive: bool = True,
    out: str | Path = "wemem-run",
    execution: Execution = _EXECUTION,
    override_checks: Sequence[str] = (),
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    echo: Echo = quiet,
) -> RunResult:
    """Prune the victim and its shadows with one defense setting, attack, and save the full metrics table as
    ``out``.json and ``out``.csv, like ``wemem run``; ``compare`` puts the undefended original, one-shot and
    iterative pruning beside it. Judged by every attack unless ``attacks`` names some; ``adaptive=False`` prunes
    the shadows undefended. ``echo`` gets the progress, then the tables and timings before the files are written
    (so a full disk at the end still leaves them printed)."""
    from wemem.assets import check_inputs, input_checks, prepare_assets
    from wemem.attacks import ATTACKS, check_attack_requirements
    from wemem.pipeline import run_experiment
    from wemem.validity import apply_overrides, require_valid

    from ._runs import (
        check_result_files,
        experiment_config,
        format_tables,
        metrics_table,
        parallel_map,
        planned_runs,
        pruning_config,
        result_documents,
        save_results,
    )
    from .results._text import timing_lines
    from .study import resolve_cache_dir

    echo, overrides = _echo(echo), _override_names(override_checks)
    _of_type(experiment, Experiment, "experiment", "an Experiment")
    _of_type(execution, Execution, "execution", "an Execution")
    check_result_files(_path(out, "out"))  # first: the results of minutes of work need a place
    config = experiment_config(experiment, _folder(data_root, "data_root"))
    setting = Setting(defense, settings or {})  # bad settings fail before any training
    judges = attack_names(attacks) or ATTACKS.names()
    check_attack_requirements(judges, config.shadows)  # every requirement is checked before any work starts
    runs = planned_runs(setting, pruning_config(sparsity, steps, one_shot), compare)
    options = _options(None, cache_dir, data_root, ray_address)
    cache = resolve_cache_dir(options)
    pools = check_inputs(config, cache)  # data, model and cache folder: before Ray starts or anything trains
    checks = apply_overrides(input_checks(config, pools, "balanced_accuracy"), overrides)
    require_valid(checks, "the run")
    for check in checks:
        echo(f"validity {check.line()}")
    map_fn = parallel_map(execution, options.ray_address, experiment.shadows)

    assets = prepare_assets(config, cache, map_fn, log=echo)
    results = []
    for planned in runs:
        echo(f"running {planned.label} ...")
        results.append(run_experiment(assets, planned.setting, planned.pruning, judges, map_fn, adaptive=adaptive))
    table = metrics_table(runs, results)
    echo(format_tables(table))
    for planned, result in zip(runs, results):
        echo("\n".join([f"\n{planned.label}", *timing_lines(result.timings)]))
    saved = save_results(Path(out), result_documents(config, runs, results, table))
    echo(saved)
    return RunResult(tuple(runs), tuple(results), table, saved)


# ------------------------------------------------------------------------------------- wemem memscore


@dataclass(frozen=True)
class MemScores:
    """Mem-scores now in the cache (compute, import) or written out (export): the scores and that file."""

    scores: torch.Tensor
    path: Path


def _memscore_experiment(experiment: Experiment | str | Path, data_root: str | Path | None) -> ExperimentConfig:
    """An :class:`Experiment`, or a study file path: its experiment, so the scores land in that study's cache."""
    from ._runs import experiment_config

    if isinstance(experiment, Experiment):
        return experiment_config(experiment, _folder(data_root, "data_root"))
    return load_study_file(_path(experiment, "experiment")).experiment(_folder(data_root, "data_root"))


def _memscore_cache(cache_dir: str | Path | None, installs: bool) -> str:
    """The cache folder; one that compute or import installs scores in must be writable."""
    from wemem.files import check_writable_folder

    from .study import resolve_cache_dir

    cache = resolve_cache_dir(_options(None, cache_dir, None, None))
    if installs:
        check_writable_folder(cache, "--cache-dir")
    return cache


def memscore_compute(
    experiment: Experiment | str | Path = _EXPERIMENT,
    *,
    out: str | Path | None = None,
    execution: Execution = _EXECUTION,
    cache_dir: str | None = None,
    data_root: str | None = None,
    ray_address: str | None = None,
    echo: Echo = quiet,
) -> MemScores:
    """Train the experiment's mem-score models (complementary halves of its training pool) and cache the scores,
    like ``wemem memscore compute``; ``experiment`` may be a study file, whose cache they then land in; ``out``
    also writes them as CSV."""
    from wemem.assets import check_inputs, save_memscores
    from wemem.files import check_output_file
    from wemem.memscore import compute_memscores

    from ._runs import describe, parallel_map, write_scores_out

    echo = _echo(echo)
    if out is not None:
        check_output_file(_path(out, "out"), create_parents=True)  # first: before models are trained
    cache = _memscore_cache(cache_dir, installs=True)
    config = _memscore_experiment(experiment, data_root)
    pools = check_inputs(config, cache)  # the data, the model against it, the cache: before Ray starts
    echo(f"training {config.memscore_models} models on complementary halves of {config.dataset}'s training pool")
    shadows = experiment.shadows if isinstance(experiment, Experiment) else _EXPERIMENT.shadows
    scores = compute_memscores(config, pools, parallel_map(execution, ray_address, shadows))
    target = save_memscores(scores, config, cache)
    echo(f"{describe(scores)}; cached in {target}")
    if out is not None:
        echo(write_scores_out(scores, Path(out), config))
    return MemScores(scores, target)


def memscore_import(
    file: str | Path,
    experiment: Experiment | str | Path = _EXPERIMENT,
    *,
    order: ImportOrder = "auto",
    cache_dir: str | None = None,
    data_root: str | None = None,
    echo: Echo = quiet,
) -> MemScores:
    """Check a mem-score CSV against the experiment's dataset (length, values, row order) and install it in the
    cache, like ``wemem memscore import FILE``; ``order`` says the row order of a CSV without wemem's header."""
    from wemem.assets import import_memscores, memscore_path

    from ._runs import describe

    file, echo = _path(file, "file"), _echo(echo)
    cache = _memscore_cache(cache_dir, installs=True)
    config = _memscore_experiment(experiment, data_root)
    scores = import_memscores(config, cache, file, order)
    target = memscore_path(config, cache)
    echo(f"imported {describe(scores)} into {target}")
    return MemScores(scores, target)


def memscore_export(
    out: str | Path,
    experiment: Experiment | str | Path = _EXPERIMENT,
    *,
    cache_dir: str | None = None,
    data_root: str | None = None,
    echo: Echo = quiet,
) -> MemScores:
    """Write the experiment's cached mem-scores as CSV with wemem's order header, like ``wemem memscore export``."""
    from wemem.assets import memscore_path
    from wemem.files import check_output_file
    from wemem.memscore import read_memscores_csv

    from ._runs import describe, write_scores_out

    echo = _echo(echo)
    check_output_file(_path(out, "out"), create_parents=True)  # first: before the cache is read
    cache = _memscore_cache(cache_dir, installs=False)
    config = _memscore_experiment(experiment, data_root)
    source = memscore_path(config, cache)
    if not source.exists():
        raise BadInputError(
            f"no cached mem-scores for {config.dataset}/{config.model} seed {config.seed} in "
            f"{cache}; run `wemem memscore compute` (with the same options) first"
        )
    scores = read_memscores_csv(source)
    echo(f"exported {describe(scores)}: {write_scores_out(scores, Path(out), config)}")
    return MemScores(scores, Path(out))


__all__ = [
    "ArtifactAudit",
    "AttackNames",
    "BadInputError",
    "DeletedStudy",
    "Execution",
    "Experiment",
    "ForeignStudy",
    "InterruptedStudyError",
    "MemScores",
    "RunResult",
    "StorageError",
    "StudyListing",
    "StudyResult",
    "StudyStatus",
    "TrialStatus",
    "WememError",
    "apply",
    "attack_names",
    "audit",
    "confirm",
    "definition_of",
    "delete",
    "echo_confirmation",
    "export",
    "launch",
    "memscore_compute",
    "memscore_export",
    "memscore_import",
    "report",
    "results",
    "resume",
    "resume_advice",
    "run",
    "status",
    "studies",
    "trial_status",
]
