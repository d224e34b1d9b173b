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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from wemem.errors import WememError

from .study import OpenStudy, Options, best_trials, open_study
from .studyfile import StudyDefinition, load_study_file, parse_study

Echo = Callable[[str], None]


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


def _options(storage: str | None, cache_dir: str | None, data_root: str | None, ray_address: str | None,
             resources: dict[str, Any] | None = None) -> Options:
    return Options(storage=storage, cache_dir=cache_dir, data_root=data_root, ray_address=ray_address,
                   resources=resources)


def launch(study: str | Path | StudyDefinition | dict[str, Any], *, storage: str | None = None,
           cache_dir: str | None = None, data_root: str | None = None, ray_address: str | None = None,
           resources: dict[str, Any] | None = None, echo: Echo = quiet) -> StudyResult:
    """Create (or continue) a study and run its trials to its budget, like ``wemem launch``."""
    from .execution.launcher import launch as launch_study

    options = _options(storage, cache_dir, data_root, ray_address, resources)
    _quiet_libraries()
    return StudyResult(launch_study(definition_of(study), options, echo))


def resume(name: str, *, n_trials: int | None = None, storage: str | None = None, cache_dir: str | None = None,
           data_root: str | None = None, ray_address: str | None = None, resources: dict[str, Any] | None = None,
           echo: Echo = quiet) -> StudyResult:
    """Continue a stored study: its remaining budget, or ``n_trials`` more, like ``wemem resume``."""
    from .execution.launcher import resume as resume_study

    options = _options(storage, cache_dir, data_root, ray_address, resources)
    _quiet_libraries()
    return StudyResult(resume_study(name, options, n_trials, echo))


def results(name: str, *, storage: str | None = None, cache_dir: str | None = None,
            data_root: str | None = None) -> StudyResult:
    """A stored study's results (nothing runs)."""
    return StudyResult(open_study(name, _options(storage, cache_dir, data_root, None)))


def confirm(name: str, *, top: int = 1, seeds: int = 3, attacks: Sequence[str] | None = None,
            compare: tuple[str, dict[str, Any]] | None = None,
            storage: str | None = None, cache_dir: str | None = None, data_root: str | None = None,
            ray_address: str | None = None, echo: Echo = quiet) -> dict[str, Any]:
    """Re-evaluate the best ``top`` settings, the paper's default (or ``compare``, a defense and its settings)
    and the reference on ``seeds`` fresh seeds, like ``wemem confirm``; returns the stored summary
    (``candidates`` with means, 95% intervals and paired differences, ``verdict`` the tuned-vs-default answer)."""
    from wemem.attacks import ATTACKS, parse_attack_names

    from .confirm import confirm as confirm_study

    judges = None if attacks is None else parse_attack_names(",".join(attacks), ATTACKS.names())
    opened = open_study(name, _options(storage, cache_dir, data_root, ray_address))
    _quiet_libraries()
    return confirm_study(opened, top, seeds, echo, judges, compare)


def export(name: str, path: str | Path, *, storage: str | None = None) -> Path:
    """Write the best setting (or Pareto set) as TOML or JSON, like ``wemem export``; returns the path."""
    from wemem.files import check_output_file

    from .results.export import export_document, write_export

    check_output_file(path, (".toml", ".json"))
    write_export(export_document(open_study(name, _options(storage, None, None, None))), path)
    return Path(path)


def apply(export_file: str | Path, out: str | Path, *, trial: int | None = None, cache_dir: str | None = None,
          data_root: str | None = None, echo: Echo = quiet) -> dict[str, Any]:
    """Rebuild, save and re-evaluate an exported setting in this process, like ``wemem apply --out OUT``;
    returns the evaluation written to ``OUT/evaluation.json``."""
    from .results.apply import apply_export, check_apply_out, load_export
    from .study import resolve_cache_dir

    check_apply_out(out)
    load_export(export_file, trial)
    cache = resolve_cache_dir(Options(cache_dir=cache_dir))
    return apply_export(export_file, out, cache, data_root, trial, None, echo)


__all__ = ["StudyResult", "apply", "confirm", "definition_of", "export", "launch", "results", "resume"]
