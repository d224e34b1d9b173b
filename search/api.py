"""The Python API, for notebooks and scripts: what the ``wemem`` commands do, returning objects, printing nothing
unless asked (pass ``echo=print`` for the commands' progress lines).

    from search import api

    study = api.launch("examples/own_model/study.toml", storage="sqlite:///own.db")
    print(study.trials[["number", "defense", "utility", "privacy"]])
    confirmed = api.confirm(study.name, seeds=3, storage="sqlite:///own.db")
    api.export(study.name, "best.toml", storage="sqlite:///own.db")

Every function takes the ``wemem`` commands' places as keywords (``storage``, ``cache_dir``, ``data_root``,
``ray_address``); errors a user can fix are :class:`wemem.errors.WememError`, with the message the command
prints. A caller's Ray (``ray.init()`` beforehand) is used and left running; one started here is left running
too, for the next call (``ray.shutdown()`` ends it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import pandas as pd

from wemem.errors import WememError

from .study import LAUNCHER_RESOURCES, OpenStudy, Options, best_trials, open_study
from .studyfile import StudyDefinition, load_study_file, parse_study

Echo = Callable[[str], None]
# what ``attacks=`` takes: "all", comma-separated names ("conf,lira") or a sequence of names, as ``--attacks``
AttackNames = Union[Literal["all"], str, Sequence[str]]


def quiet(_line: str) -> None:
    """The default echo: the API prints nothing unless asked."""


def _quiet_libraries() -> None:
    """Optuna logs every study it creates at INFO; the commands lower it to WARNING, and so does the API."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class StudyResult:
    """A study as stored: its trials, best setting, undefended reference and stored confirmation. Read from the
    storage when asked (``refresh()`` reads again after more trials ran elsewhere)."""

    opened: OpenStudy

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
        from .results.report import trials_table

        return trials_table(self.opened.study)

    @property
    def best(self) -> list[dict[str, Any]]:
        """The best trial (single objective) or the Pareto set, as ``wemem export`` writes them."""
        from .results.export import trial_record

        return [trial_record(t) for t in best_trials(self.opened.study)]

    @property
    def reference(self) -> dict[str, Any] | None:
        """The undefended iteratively pruned model's accuracy and leakage."""
        from .storage.records import stored_reference

        return stored_reference(self.opened.study)

    @property
    def confirmation(self) -> dict[str, Any] | None:
        """The latest ``confirm`` result stored with the study (means, intervals, paired differences)."""
        from .storage.records import stored_confirmation

        return stored_confirmation(self.opened.study)

    @property
    def validity(self) -> list[dict[str, Any]]:
        """The study's validity checks (name, status: pass/warn/fail/overridden, message, figures), as
        ``wemem status`` and the report show them; empty for a study launched before they existed."""
        from .storage.records import stored_validity

        return [check.to_dict() for check in stored_validity(self.opened.study)]

    def summary(self) -> str:
        """The text ``wemem status NAME`` starts with."""
        from .results.text import summary_lines

        return "\n".join(summary_lines(self.opened))

    def refresh(self) -> "StudyResult":
        return StudyResult(open_study(self.name, self.opened.options))


def definition_of(study: str | Path | StudyDefinition | dict[str, Any]) -> StudyDefinition:
    """A study file path, a parsed definition, or the study file's content as a dict (plug-ins are then imported
    from the working directory first)."""
    if isinstance(study, StudyDefinition):
        return study
    if isinstance(study, dict):
        return parse_study(study, "<dict>")
    if isinstance(study, (str, Path)):
        return load_study_file(study)
    raise WememError(f"a study is a study file path, a StudyDefinition or a dict, not a {type(study).__name__}")


def _options(storage: str | None, cache_dir: str | Path | None, data_root: str | Path | None,
             ray_address: str | None, resources: Mapping[str, Any] | None = None, override_checks: Sequence[str] = (),
             allow_foreign_tables: bool = False) -> Options:
    """The commands' places and this launcher's settings, each of the type the command line would give."""
    _of_type(storage, str, "storage", "a storage URL such as 'sqlite:///wemem.db'")
    _of_type(ray_address, str, "ray_address", "a Ray address: 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    _of_type(allow_foreign_tables, bool, "allow_foreign_tables", "True or False")
    return Options(storage=storage, cache_dir=_folder(cache_dir, "cache_dir"),
                   data_root=_folder(data_root, "data_root"), ray_address=ray_address,
                   resources=_resources(resources), overrides=_override_names(override_checks),
                   allow_foreign_tables=allow_foreign_tables)


def _of_type(value: Any, kind: type | tuple[type, ...], argument: str, takes: str) -> None:
    """Refuse a value of another type than the argument takes (None stands for the argument's default)."""
    if value is not None and not isinstance(value, kind):
        raise WememError(f"{argument} takes {takes} (got {type(value).__name__} {value!r:.60})")


def _path(value: Any, argument: str) -> str | Path:
    if not isinstance(value, (str, os.PathLike)):
        raise WememError(f"{argument} takes a file or folder path, a str or Path (got {type(value).__name__} "
                         f"{value!r:.60})")
    return value


def _folder(value: str | Path | None, argument: str) -> str | None:
    _of_type(value, (str, os.PathLike), argument, "a folder path (str or Path)")
    return None if value is None else os.fspath(value)


def _resources(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``resources=`` as the resource flags give them: only the keys a launcher may set for itself."""
    known = ", ".join(LAUNCHER_RESOURCES)
    _of_type(resources, Mapping, "resources", f"a dict of {known}")
    if resources is None:
        return None
    unknown = [key for key in resources if key not in LAUNCHER_RESOURCES]
    if unknown:
        raise WememError(f"resources: unknown key(s) {', '.join(map(repr, unknown))}; the known keys are {known}")
    return dict(resources)


def _study_name(name: Any) -> str:
    if not isinstance(name, str):
        raise WememError(f"name takes a study name (got {name!r})")
    return name


def _echo(echo: Any) -> Echo:
    if not callable(echo):
        raise WememError(f"echo takes a function of one line, such as print (got {echo!r})")
    return echo


def _override_names(names: Sequence[str]) -> tuple[str, ...]:
    """``override_checks`` as ``--override-check`` takes them: names of validity checks that may be overridden."""
    from wemem.validity import OVERRIDABLE

    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise WememError(f"override_checks takes a list of check names ({', '.join(OVERRIDABLE)}), not {names!r}")
    unknown = [n for n in names if n not in OVERRIDABLE]
    if unknown:
        raise WememError(f"override_checks: unknown check(s) {unknown}; the checks a user may override are "
                         f"{', '.join(OVERRIDABLE)} (docs/validity.md)")
    return tuple(names)


def launch(study: str | Path | StudyDefinition | dict[str, Any], *, storage: str | None = None,
           cache_dir: str | None = None, data_root: str | None = None, ray_address: str | None = None,
           resources: dict[str, Any] | None = None, override_checks: Sequence[str] = (),
           allow_foreign_tables: bool = False, echo: Echo = quiet) -> StudyResult:
    """Create (or continue) a study and run its trials to its budget, like ``wemem launch``; ``override_checks``
    names failed validity checks to run past, like ``--override-check`` (recorded with the study);
    ``allow_foreign_tables`` launches into a SQLite file that also holds another program's tables."""
    from .execution.launcher import launch as launch_study

    options = _options(storage, cache_dir, data_root, ray_address, resources, override_checks, allow_foreign_tables)
    echo = _echo(echo)
    _quiet_libraries()
    return StudyResult(launch_study(definition_of(study), options, echo))


def resume(name: str, *, n_trials: int | None = None, storage: str | None = None, cache_dir: str | None = None,
           data_root: str | None = None, ray_address: str | None = None, resources: dict[str, Any] | None = None,
           override_checks: Sequence[str] = (), echo: Echo = quiet) -> StudyResult:
    """Continue a stored study: its remaining budget, or ``n_trials`` more, like ``wemem resume``."""
    from .execution.launcher import resume as resume_study

    name, echo = _study_name(name), _echo(echo)
    if n_trials is not None:
        _whole_number(n_trials, "n_trials", 1)
    options = _options(storage, cache_dir, data_root, ray_address, resources, override_checks)
    _quiet_libraries()
    return StudyResult(resume_study(name, options, n_trials, echo))


def results(name: str, *, storage: str | None = None, cache_dir: str | None = None,
            data_root: str | None = None) -> StudyResult:
    """A stored study's results (nothing runs)."""
    return StudyResult(open_study(_study_name(name), _options(storage, cache_dir, data_root, None)))


def _whole_number(value: Any, argument: str, least: int) -> int:
    """``value`` when it is a whole number >= ``least`` (a bool is not one: ``True`` would run one seed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise WememError(f"{argument} takes a whole number >= {least} (got {value!r})")
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
    raise WememError(f"attacks takes 'all', comma-separated names such as 'conf,lira' or a list of names "
                     f"(got {attacks!r})")


def _comparison(compare: tuple[str, Mapping[str, Any]] | None) -> tuple[str, dict[str, Any]] | None:
    """``compare=`` as ``--compare`` gives it: a defense name and its settings."""
    if compare is None:
        return None
    if not (isinstance(compare, (tuple, list)) and len(compare) == 2 and isinstance(compare[0], str)
            and isinstance(compare[1], Mapping)):
        raise WememError(f"compare takes a defense name and its settings, e.g. ('rsw', {{'width_fraction': 0.3}}) "
                         f"(got {compare!r})")
    return compare[0], dict(compare[1])


def echo_confirmation(summary: dict[str, Any], echo: Echo) -> None:
    """What ``wemem confirm`` prints once every evaluation is done: the confirmed figures, the closing sentence
    and the tuned-vs-default verdict (the command and the API both print through this)."""
    from .results.text import confirmed_lines

    for line in confirmed_lines(summary):
        echo(line)


def confirm(name: str, *, top: int = 1, seeds: int = 3, attacks: AttackNames | None = None,
            compare: tuple[str, Mapping[str, Any]] | None = None,
            storage: str | None = None, cache_dir: str | None = None, data_root: str | None = None,
            ray_address: str | None = None, echo: Echo = quiet) -> dict[str, Any]:
    """Re-evaluate the best ``top`` settings, the paper's default (or ``compare``, a defense and its settings)
    and the reference on ``seeds`` fresh seeds, like ``wemem confirm``; judged by the study's attacks, or by
    ``attacks`` ("all", "conf,lira" or ["conf", "lira"]). Returns the stored summary (``candidates`` with means,
    95% intervals and paired differences, ``verdict`` the tuned-vs-default answer); ``echo`` gets the progress
    lines and then what the command prints at its end."""
    from .confirm import confirm as confirm_study

    name, echo = _study_name(name), _echo(echo)
    top, seeds = _whole_number(top, "top", 1), _whole_number(seeds, "seeds", 2)
    judges, compared = attack_names(attacks), _comparison(compare)
    opened = open_study(name, _options(storage, cache_dir, data_root, ray_address))
    _quiet_libraries()
    summary = confirm_study(opened, top, seeds, echo, judges, compared)
    echo_confirmation(summary, echo)
    return summary


def export(name: str, path: str | Path, *, storage: str | None = None) -> Path:
    """Write the best setting (or Pareto set) as TOML or JSON, like ``wemem export``; returns the path."""
    from wemem.files import check_output_file

    from .results.export import export_document, write_export

    check_output_file(_path(path, "path"), (".toml", ".json"))
    write_export(export_document(open_study(_study_name(name), _options(storage, None, None, None))), path)
    return Path(path)


def apply(export_file: str | Path, out: str | Path, *, trial: int | None = None, cache_dir: str | None = None,
          data_root: str | None = None, echo: Echo = quiet, allow_code: bool = False) -> dict[str, Any]:
    """Rebuild, save and re-evaluate an exported setting in this process, like ``wemem apply --out OUT``;
    returns the evaluation written to ``OUT/evaluation.json``. Plug-in code the export names runs only with
    ``allow_code=True`` (``--allow-code``), after you have read it."""
    from .results.apply import apply_export, check_apply_out, load_export
    from .study import resolve_cache_dir

    if trial is not None:
        _whole_number(trial, "trial", 0)
    export_file, out, echo = _path(export_file, "export_file"), _path(out, "out"), _echo(echo)
    check_apply_out(out)
    load_export(export_file, trial, allow_code=allow_code)
    cache = resolve_cache_dir(Options(cache_dir=_folder(cache_dir, "cache_dir")))
    return apply_export(export_file, out, cache, _folder(data_root, "data_root"), trial, None, echo, allow_code)


__all__ = ["AttackNames", "StudyResult", "apply", "attack_names", "confirm", "definition_of", "echo_confirmation",
           "export", "launch", "results", "resume"]
