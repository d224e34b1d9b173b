"""Study lifecycle: launch, resume and summaries. The command line is a thin layer over these functions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from wemem.errors import WememError

from pydantic import ValidationError

from .config import StudyDefinition
from .lifecycle import retry_callback
from .runner import check_trial_fits, init_ray, shared_work
from .spaces import REFERENCE_SETTINGS, reference_params
from .storage import (GRACE_PERIOD_S, MAX_RETRY, active_count, check_storage_url, create_or_load_study, load_study,
                      open_storage, redact, refuse_conflicting, storage_url)
from .trials import run_trials

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """Where a study lives and runs: command-line options shared by every command."""

    storage: str | None = None
    cache_dir: str | None = None
    data_root: str | None = None
    ray_address: str | None = None
    stale_after: int = GRACE_PERIOD_S
    resources: dict[str, Any] | None = None  # overrides of [resources] for this launcher only

    @property
    def storage_url(self) -> str:
        return storage_url(self.storage)

    def open_storage(self, must_exist: bool = False) -> optuna.storages.RDBStorage:
        return open_storage(self.storage_url, must_exist=must_exist, grace_period=self.stale_after,
                            stale_trial_callback=retry_callback(MAX_RETRY))


def resolve_cache_dir(options: Options, study: optuna.Study | None = None) -> str:
    """``--cache-dir``; else the folder the study was launched with, if it holds a wemem cache; else ./.wemem-cache.

    A storage may come from someone else: the folder it names is written to only when it already is a cache
    (so a received storage can never make us create or fill a folder the user did not name).
    """
    if options.cache_dir:
        return str(Path(options.cache_dir).resolve())
    stored = study.user_attrs.get("cache_dir") if study is not None else None
    if isinstance(stored, str) and holds_wemem_cache(Path(stored)):
        return stored
    return str(Path(".wemem-cache").resolve())


def holds_wemem_cache(folder: Path) -> bool:
    """A folder wemem's shared work wrote into: an entry with its checksummed split (see wemem.assets)."""
    try:
        return folder.is_dir() and any((entry / "split.pt.sha256").is_file() for entry in folder.iterdir())
    except OSError:
        return False


def validate_inputs(definition: StudyDefinition, data_root: str | None, cache_dir: str) -> None:
    """Everything a study needs that can be checked before anything is created in the storage or the cache."""
    from wemem.assets import check_inputs

    check_inputs(definition.experiment(data_root), cache_dir)


def attach_ray(definition: StudyDefinition, options: Options) -> StudyDefinition:
    """Start or join Ray and check that a trial of this launcher's resources fits it (else it would wait
    forever); returns the definition with this launcher's resources."""
    definition = with_resources(definition, options)
    init_ray(options.ray_address)
    check_trial_fits(definition)
    return definition


def launch(definition: StudyDefinition, options: Options, echo: Echo = print) -> optuna.Study:
    check_storage_url(options.storage_url)
    cache_dir = resolve_cache_dir(options)
    validate_inputs(definition, options.data_root, cache_dir)  # everything is checked before anything is stored
    storage = options.open_storage()
    refuse_conflicting(definition, storage)
    running = attach_ray(definition, options)
    study, created = create_or_load_study(definition, storage, {"cache_dir": cache_dir,
                                                                "data_root": options.data_root})
    if created:
        echo(f"created study {definition.name!r} in {redact(options.storage_url)}")
        if definition.search.enqueue_reference:
            multiple = len(definition.search.defenses) > 1
            for defense in definition.search.defenses:
                if defense in REFERENCE_SETTINGS:
                    study.enqueue_trial(reference_params(defense, multiple), user_attrs={"warm_start": "reference"})
    else:
        echo(f"study {definition.name!r} exists; continuing it to its budget of {definition.study.n_trials} trials")
    run_study(study, storage, running, options, definition.study.n_trials, echo)
    return study


def with_resources(definition: StudyDefinition, options: Options) -> StudyDefinition:
    """This launcher's resources: the study's, with the command line's overrides (not part of its identity)."""
    if not options.resources:
        return definition
    resources = definition.resources.model_copy(update=options.resources)
    try:
        checked = type(resources).model_validate(resources.model_dump())
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise WememError(f"invalid resources for this launcher ({problems}); fix --cpus-per-trial, "
                         "--gpus-per-trial or --max-concurrent-trials") from None
    return definition.model_copy(update={"resources": checked})


def resume(name: str, options: Options, n_trials: int | None = None,
           echo: Echo = print) -> tuple[optuna.Study, StudyDefinition]:
    if n_trials is not None and n_trials < 1:
        raise WememError(f"--n-trials must be a positive number of trials to add (got {n_trials}); omit it to "
                         "finish the study's budget")
    storage = options.open_storage(must_exist=True)
    study, definition = load_study(name, storage)
    validate_inputs(definition, _data_root(options, study), resolve_cache_dir(options, study))
    launcher = attach_ray(definition, options)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if running:
        echo(f"trial(s) {running} are RUNNING: those of a dead launcher on this machine are failed and re-run now, "
             f"those of a launcher elsewhere once it has been silent for {options.stale_after} s")
    target = active_count(study) + n_trials if n_trials is not None else definition.study.n_trials
    if target <= active_count(study) and not running:
        echo(f"study {name!r} already has its {definition.study.n_trials} trials; pass --n-trials N to add more")
    run_study(study, storage, launcher, options, target, echo)
    return study, definition


def _data_root(options: Options, study: optuna.Study) -> str | None:
    return options.data_root if options.data_root is not None else study.user_attrs.get("data_root")


def run_study(study: optuna.Study, storage: optuna.storages.RDBStorage, definition: StudyDefinition,
              options: Options, target_total: int, echo: Echo) -> None:
    """Prepare the shared work once (cached), measure the reference once, then run trials up to the target."""
    cache_dir = resolve_cache_dir(options, study)
    spec = definition.trial_spec(cache_dir, _data_root(options, study))
    assets, base = shared_work(study, definition, spec, echo)  # on the trials' CPU/GPU shares, then shipped
    study.set_user_attr("reference", {"utility": base.utility, "privacy": base.privacy,
                                      "strongest_attack": base.strongest_attack,
                                      "attacks": {k: {m: v for m, v in a.items() if m != "roc"}
                                                  for k, a in base.result["attacks"].items()}})
    echo(f"undefended iteratively pruned reference: accuracy {base.utility:.4f}, strongest attack "
         f"{base.strongest_attack} {spec.objective.privacy_metric} {base.privacy:.4f}")
    if target_total > active_count(study) or study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        echo(f"running {max(target_total - active_count(study), 0)} trial(s) of study {definition.name!r}")
        run_trials(study, storage, definition, spec, base, target_total, Path(cache_dir) / "ray-results", echo,
                   assets=assets)


# ------------------------------------------------------------------------------------------- best trials


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Single objective: the best feasible trial (or the least infeasible). Two objectives: the Pareto set."""
    if len(study.directions) > 1:
        return list(study.best_trials)
    trials = completed(study)
    if not trials:
        return []
    feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())] or trials
    return [min(feasible, key=lambda t: t.value)]


def reference_of(study: optuna.Study) -> dict[str, Any]:
    if "reference" not in study.user_attrs:
        raise WememError(f"study {study.study_name!r} has no reference measurement yet; run `wemem resume {study.study_name}`")
    return study.user_attrs["reference"]


def summary_lines(study: optuna.Study, definition: StudyDefinition, options: Options) -> list[str]:
    ref = study.user_attrs.get("reference")
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    lines = [f"study {definition.name!r}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    if ref:
        lines.append(f"  undefended pruned model: test accuracy {ref['utility']:.4f}, strongest attack "
                     f"{ref['strongest_attack']} at {ref['privacy']:.4f}")
    for trial in best_trials(study):
        a = trial.user_attrs
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in a.get("settings", {}).items())
        lines.append(f"  best trial #{trial.number}: defense {a.get('defense')} ({settings})")
        lines.append(f"    test accuracy {a.get('utility', float('nan')):.4f}, strongest attack "
                     f"{a.get('strongest_attack')} at {a.get('privacy', float('nan')):.4f}"
                     + ("" if a.get("feasible", True) else " (violates the accuracy constraint)"))
    lines += confirmation_lines(study)
    lines.append(f"  stored in {redact(options.storage_url)}")
    storage_flag = f" --storage {redact(options.storage_url)}" if options.storage else ""
    program = invoked_as()
    lines.append(f"  confirm: {program} confirm {definition.name}{storage_flag} --attacks {judges_for(definition)}")
    lines.append(f"  resume: {program} resume {definition.name}{storage_flag} --n-trials 2")
    lines.append(f"  export: {program} export {definition.name}{storage_flag} --out best.toml")
    lines.append(f"  report: {program} report {definition.name}{storage_flag} --out report")
    return lines


def judges_for(definition: StudyDefinition) -> str:
    """``all`` when every attack can judge this study, else the comma-separated ones that can (e.g. LiRA
    needs two shadows): the confirm hint must be a command that runs."""
    from wemem.attacks import ATTACKS

    runnable = [name for name in ATTACKS.names() if ATTACKS.get(name).min_shadows <= definition.data.shadows]
    return "all" if runnable == ATTACKS.names() else ",".join(runnable)


def confirmation_lines(study: optuna.Study) -> list[str]:
    """The stored confirmation's closing sentence (the number to quote), or why there is none to show."""
    from .confirm import export_section, headline

    section = export_section(study, [t.number for t in best_trials(study)])
    if section["status"] == "not confirmed":
        return ["  not confirmed: the best trial's own evaluation above is biased low by the selection"]
    return [f"  {line}" for line in headline(section)] + ([f"  ({section['note']})"] if "note" in section else [])


def invoked_as() -> str:
    """How the user ran us (e.g. ``.venv/bin/wemem`` from ``make demo``), so printed commands work as shown."""
    program = sys.argv[0] if sys.argv else ""
    return program if Path(program).name == "wemem" else "wemem"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def open_study(name: str, options: Options) -> tuple[optuna.Study, StudyDefinition]:
    """A stored study for reading (status, export, report): never creates a storage or a study."""
    return load_study(name, options.open_storage(must_exist=True))
