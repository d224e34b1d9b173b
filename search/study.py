"""Study lifecycle: launch, resume and summaries. The command line is a thin layer over these functions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from wemem.errors import WememError

from .config import StudyDefinition
from .runner import init_ray, run_trials, shared_work
from .spaces import REFERENCE_SETTINGS, reference_params
from .storage import (STALE_AFTER_S, active_count, create_or_load_study, load_study, open_storage, redact,
                      storage_url, sweep_stale_trials)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """Where a study lives and runs: command-line options shared by every command."""

    storage: str | None = None
    cache_dir: str | None = None
    data_root: str | None = None
    ray_address: str | None = None
    stale_after: float = STALE_AFTER_S

    @property
    def storage_url(self) -> str:
        return storage_url(self.storage)


def resolve_cache_dir(options: Options, study: optuna.Study | None = None) -> str:
    if options.cache_dir:
        return str(Path(options.cache_dir).resolve())
    if study is not None and "cache_dir" in study.user_attrs:
        return study.user_attrs["cache_dir"]
    return str(Path(".wemem-cache").resolve())


def launch(definition: StudyDefinition, options: Options, echo: Echo = print) -> optuna.Study:
    storage = open_storage(options.storage_url)
    cache_dir = resolve_cache_dir(options)
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
        _sweep(study, storage, options, echo)
    run_study(study, storage, definition, options, definition.study.n_trials, echo)
    return study


def _sweep(study: optuna.Study, storage: optuna.storages.BaseStorage, options: Options, echo: Echo) -> None:
    swept = sweep_stale_trials(study, storage, options.stale_after)
    if swept:
        echo(f"failed {len(swept)} stale RUNNING trial(s) of a dead launcher and re-queued their settings: {swept}")


def resume(name: str, options: Options, n_trials: int | None = None,
           echo: Echo = print) -> tuple[optuna.Study, StudyDefinition]:
    storage = open_storage(options.storage_url)
    study, definition = load_study(name, storage)
    _sweep(study, storage, options, echo)
    target = active_count(study) + n_trials if n_trials is not None else definition.study.n_trials
    if target <= active_count(study):
        echo(f"study {name!r} already has its {definition.study.n_trials} trials; pass --n-trials N to add more")
    run_study(study, storage, definition, options, target, echo)
    return study, definition


def run_study(study: optuna.Study, storage: optuna.storages.BaseStorage, definition: StudyDefinition,
              options: Options, target_total: int, echo: Echo) -> None:
    """Prepare the shared work once (cached), measure the reference once, then run trials up to the target."""
    cache_dir = resolve_cache_dir(options, study)
    data_root = options.data_root if options.data_root is not None else study.user_attrs.get("data_root")
    spec = definition.trial_spec(cache_dir, data_root)
    init_ray(options.ray_address)
    assets, base = shared_work(study, definition, spec, echo)  # on the trials' CPU/GPU shares, then shipped
    study.set_user_attr("reference", {"utility": base.utility, "privacy": base.privacy,
                                      "strongest_attack": base.strongest_attack,
                                      "attacks": {k: {m: v for m, v in a.items() if m != "roc"}
                                                  for k, a in base.result["attacks"].items()}})
    echo(f"undefended iteratively pruned reference: accuracy {base.utility:.4f}, strongest attack "
         f"{base.strongest_attack} {spec.objective.privacy_metric} {base.privacy:.4f}")
    if target_total > active_count(study):
        echo(f"running {target_total - active_count(study)} trial(s) of study {definition.name!r}")
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
    lines.append(f"  stored in {redact(options.storage_url)}")
    storage_flag = f" --storage {redact(options.storage_url)}" if options.storage else ""
    program = invoked_as()
    lines.append(f"  resume: {program} resume {definition.name}{storage_flag} --n-trials 2")
    lines.append(f"  export: {program} export {definition.name}{storage_flag} --out best.toml")
    lines.append(f"  report: {program} report {definition.name}{storage_flag} --out report")
    return lines


def invoked_as() -> str:
    """How the user ran us (e.g. ``.venv/bin/wemem`` from ``make demo``), so printed commands work as shown."""
    program = sys.argv[0] if sys.argv else ""
    return program if Path(program).name == "wemem" else "wemem"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def open_study(name: str, options: Options) -> tuple[optuna.Study, StudyDefinition]:
    return load_study(name, open_storage(options.storage_url))
