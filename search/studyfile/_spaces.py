"""Sampling a defense's search space (SPEC section 10) define-by-run from an Optuna trial. Each defense declares
its space and its paper's reference setting on its class (:mod:`wemem.defenses.space`); this module turns them
into Optuna's distributions and back.

Parameters are named ``<defense>.<setting>`` so that, when the defense itself is a categorical choice, each
defense keeps its own distributions. A study file may narrow a range (``[low, high]``) or fix a value.
``[search.space.pruning]`` searches the pruning with the defense (``pruning.sparsity``, ``pruning.steps``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import cast

import optuna

from wemem.config import PruningConfig
from wemem.defenses import DEFENSES, Defense, Setting
from wemem.defenses.space import SpaceParam, Value, is_number
from wemem.defenses.wemem import MIN_GAP, stride_below_width

ParamOverride = list[float] | float | int | str | list[str]  # a study file's range, choices or fixed value
Overrides = Mapping[str, Mapping[str, ParamOverride]]  # per defense, per setting (the study's [search.space])


def _imported_defenses() -> dict[str, type[Defense]]:
    """The registered defense classes already imported, by name: an installed defense not yet named stays
    unimported (importing it runs its package's code)."""
    found: dict[str, type[Defense]] = {}
    pending: list[type[Defense]] = [Defense]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "name" in vars(cls) and cls.name in DEFENSES and DEFENSES.get(cls.name) is cls:
            found[cls.name] = cls
    return dict(sorted(found.items()))


def searchable(defense: str) -> bool:
    """Whether ``defense`` is registered and declares a search space."""
    return defense in DEFENSES and bool(DEFENSES.get(defense).space())


def searchable_defenses() -> list[str]:
    """The searchable defenses already imported (the built-in ones, and installed ones named so far)."""
    return [name for name, cls in _imported_defenses().items() if cls.space()]


class _PaperDefaults(Mapping[str, Mapping[str, Value]]):
    """Each defense's reference setting (``Defense.paper_defaults``) by defense name; a defense without one is
    not a key."""

    def __getitem__(self, defense: str) -> Mapping[str, Value]:
        defaults = DEFENSES.get(defense).paper_defaults if defense in DEFENSES else None
        if not defaults:
            raise KeyError(defense)
        return defaults

    def __iter__(self) -> Iterator[str]:
        return (name for name, cls in _imported_defenses().items() if cls.paper_defaults)

    def __len__(self) -> int:
        return sum(1 for _ in self)


REFERENCE_SETTINGS: Mapping[str, Mapping[str, Value]] = _PaperDefaults()


def space_for(defense: str, overrides: Overrides | None = None) -> tuple[SpaceParam, ...]:
    """The defense's space with the study file's overrides applied."""
    custom = (overrides or {}).get(defense, {})
    result = []
    for param in DEFENSES.get(defense).space():
        value = custom.get(param.name)
        if value is None:
            result.append(param)
        elif isinstance(value, list) and param.choices is not None:
            result.append(replace(param, choices=tuple(value), fixed=None))  # a list searches, even a fixed param
        elif isinstance(value, list):
            result.append(replace(param, low=float(value[0]), high=float(value[1])))
        else:
            result.append(replace(param, fixed=value))
    return tuple(result)


def _check_override(where: str, param: SpaceParam, value: object) -> None:
    """A study file's override of one parameter: a range [low, high], a list of choices, or one fixed value."""
    if param.choices is not None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in param.choices]
        if bad or not values:
            raise ValueError(f"{where}: {bad or value!r} not among the allowed {list(param.choices)}")
        return
    low, high = param.bounds
    allowed = f"the allowed [{low}, {high}]"
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if len(value) != 2 or not all(is_number(v) for v in value) or not value[0] < value[1]:
            raise ValueError(f"{where}: a range must be [low, high], two finite numbers with low < high (got {value})")
        if value[0] < low or value[1] > high:
            raise ValueError(f"{where}: range {value} leaves {allowed}")
    elif not is_number(value):
        raise ValueError(
            f"{where}: {value!r} is not a finite number; give a number in {allowed} or a range [low, high]"
        )
    elif not low <= value <= high:
        raise ValueError(f"{where}: {value} is outside {allowed}")
    if param.integer and not all(is_number(v) and float(v).is_integer() for v in values):
        raise ValueError(f"{where}: {value} must be whole numbers (a count) in {allowed}")


def _bounds(param: SpaceParam, value: ParamOverride | None) -> tuple[float, float]:
    if value is None:
        low, high = param.bounds
        return float(low), float(high)
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (float(value), float(value))


def _check_window(defense: str, stride: tuple[float, float], width: tuple[float, float]) -> None:
    """Every width the sampler may draw must leave room for the stride: the derived stride is clipped to the
    stride's bounds, so its lowest value (or a fixed stride) must stay below the lowest width by MIN_GAP."""
    fixed_stride = stride[0] == stride[1]
    if not stride_below_width(stride[0], width[0], MIN_GAP):
        raise ValueError(
            f"search.space.{defense}: stride_fraction ({'fixed at' if fixed_stride else 'from'} "
            f"{stride[0]}) must stay below width_fraction (from {width[0]}) by at least {MIN_GAP} for "
            f"every sampled width; lower the stride to at most {width[0] - MIN_GAP:g} or raise the "
            f"width's low end to at least {stride[0] + MIN_GAP:g}"
        )


def validate_overrides(overrides: Overrides) -> None:
    for defense, values in overrides.items():
        if defense == PRUNING and isinstance(values, Mapping):
            for key, value in values.items():
                _check_pruning_override(key, value)
            continue
        if not searchable(defense):
            raise ValueError(
                f"search.space.{defense}: no such searchable defense; choose from {', '.join(searchable_defenses())}"
            )
        if not isinstance(values, Mapping):
            raise ValueError(f"search.space.{defense} must be a table of settings, e.g. [search.space.{defense}]")
        names = {p.name: p for p in DEFENSES.get(defense).space()}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"search.space.{defense}.{key}: unknown setting; choose from {', '.join(names)}")
            _check_override(f"search.space.{defense}.{key}", names[key], value)
        if "stride_fraction" in names and "width_fraction" in names:
            _check_window(
                defense,
                _bounds(names["stride_fraction"], values.get("stride_fraction")),
                _bounds(names["width_fraction"], values.get("width_fraction")),
            )


def derive_window(settings: Mapping[str, Value], stride: SpaceParam) -> dict[str, Value]:
    """The stride a defense receives from the sampled width and stride ratio (see wemem.defenses.wemem.STRIDE):
    ratio * width, clipped to the stride's bounds; a fixed stride is used as it is. Returns the settings without
    the ratio."""
    result = {k: v for k, v in settings.items() if k != "stride_ratio"}
    if stride.fixed is not None:
        result["stride_fraction"] = stride.fixed
    else:
        low, high = stride.bounds
        raw = float(settings["stride_ratio"]) * float(settings["width_fraction"])
        result["stride_fraction"] = float(f"{min(max(raw, low), high):.10g}")  # 0.1*0.22 -> 0.022
    return result


def recorded_scales(trial: optuna.Trial) -> dict[str, bool]:
    """Whether each parameter the trial's study has already recorded is on a log scale. Optuna refuses one
    parameter name with two scales in a study, so a study created before a parameter moved to a log scale keeps
    the scale of its first trials when resumed (its stored trials read and rank as they are)."""
    study = getattr(trial, "study", None)
    scales: dict[str, bool] = {}
    for earlier in study.get_trials(deepcopy=False) if study is not None else []:
        for name, distribution in earlier.distributions.items():
            if name not in scales and hasattr(distribution, "log"):
                scales[name] = distribution.log
    return scales


def sampled_params(params: Mapping[str, SpaceParam]) -> list[SpaceParam]:
    """The parameters the sampler draws: not the derived stride, and no stride ratio when the stride is fixed."""
    stride = params.get("stride_fraction")
    fixed_stride = stride is not None and stride.fixed is not None
    return [p for p in params.values() if not p.derived and not (p.name == "stride_ratio" and fixed_stride)]


def _suggest(trial: optuna.Trial, param: SpaceParam, key: str) -> Value:
    """One parameter's value: its fixed value, or drawn from its distribution under ``key``."""
    if param.fixed is not None:
        return param.fixed
    if param.choices is not None:
        return cast(Value, trial.suggest_categorical(key, list(param.choices)))  # one of the choices: never None
    low, high = param.bounds
    if param.integer:
        return trial.suggest_int(key, int(low), int(high), log=param.log)
    return trial.suggest_float(key, low, high, log=param.log)


def suggest_setting(trial: optuna.Trial, defenses: Sequence[str], overrides: Overrides | None = None) -> Setting:
    """Sample a setting define-by-run. The defense is a categorical parameter when several are given; every other
    parameter has bounds of its own (a fixed box), so TPE's and GP's models see a fixed space."""
    defense = defenses[0] if len(defenses) == 1 else str(trial.suggest_categorical("defense", list(defenses)))
    params = {param.name: param for param in space_for(defense, overrides)}
    stride = params.get("stride_fraction")
    scales = recorded_scales(trial)
    settings: dict[str, Value] = {}
    for param in sampled_params(params):
        key = f"{defense}.{param.name}"
        settings[param.name] = _suggest(trial, replace(param, log=scales.get(key, param.log)), key)
    if stride is not None:
        settings = derive_window(settings, stride)
    return Setting(defense, settings)


def _where(param: SpaceParam) -> str:
    if param.fixed is not None:
        return f"fixed at {param.fixed!r}"
    if param.choices is not None:
        return f"among {list(param.choices)}"
    low, high = param.bounds
    return f"in [{low:g}, {high:g}]"


def setting_params(
    defense: str,
    settings: Mapping[str, object],
    multiple: bool,
    overrides: Overrides | None = None,
    study_pruning: PruningConfig | None = None,
) -> dict[str, Value]:
    """The Optuna params that make :func:`suggest_setting` return ``settings`` (for ``study.enqueue_trial``): the
    inverse of the sampling, so a warm start is checked against the study's space exactly as a sample would be.
    A ValueError names each setting the space cannot produce. When the study searches the pruning, the params
    also pin the enqueued trial's pruning (:func:`pruning_params`; ``study_pruning``: the study file's
    ``[pruning]``)."""
    pinned = _pinned_pruning(overrides, study_pruning)
    params = {param.name: param for param in space_for(defense, overrides)}
    unknown = sorted(set(settings) - set(params) - {"stride_ratio"})
    if unknown:
        raise ValueError(
            f"{defense} has no setting {', '.join(unknown)} in the search space (its settings: "
            f"{', '.join(n for n in params if n != 'stride_ratio')})"
        )
    values, stride = dict(settings), params.get("stride_fraction")
    if stride is not None:
        given, width = values.get("stride_fraction"), values.get("width_fraction")
        if not stride.contains(given):
            raise ValueError(
                f"{defense}.stride_fraction = {given!r} is not {_where(stride)} as this study's space allows"
            )
        if stride.fixed is None and is_number(given) and is_number(width):  # else the width's own check names it
            # 9 decimals: the ratio of a sampled stride is exact only up to the derivation's rounding
            values["stride_ratio"] = round(given / width, 9)
            del values["stride_fraction"]
    out: dict[str, Value] = {}
    for param in sampled_params(params):
        shown = "stride_fraction / width_fraction" if param.name == "stride_ratio" else param.name
        if param.name not in values:
            if param.fixed is None:
                raise ValueError(f"{defense}: the setting gives no {shown}")
            continue
        value = values[param.name]
        if not param.contains(value):
            raise ValueError(f"{defense}.{shown} = {value!r} is not {_where(param)} as this study's space allows")
        if param.fixed is None:
            out[f"{defense}.{param.name}"] = value
    if multiple:
        out["defense"] = defense
    return {**out, **pinned}


def reference_params(
    defense: str, multiple: bool, overrides: Overrides | None = None, study_pruning: PruningConfig | None = None
) -> dict[str, Value]:
    """The Optuna params that reproduce the defense's reference setting (for ``study.enqueue_trial``)."""
    return setting_params(defense, REFERENCE_SETTINGS[defense], multiple, overrides, study_pruning)


# ----------------------------------------------------------------------------------------- the pruning's space
# ``[search.space.pruning]`` searches how far the victim is pruned together with the defense. The key is reserved:
# a defense registered as "pruning" could not be told apart from it, so such a defense cannot be searched.
PRUNING = "pruning"
# Each distinct sparsity costs one undefended reference (K+1 models, computed once and cached), so the sparsity is
# drawn on a grid from the range's low end: a ten-trial study meets each grid point more than once, and a step
# of 0.05 is finer than the accuracy and leakage differences a study can resolve between neighbouring sparsities.
SPARSITY_STEP = 0.05
_PRUNING_KEYS = ("sparsity", "steps")


def _pruning_param(name: str, value: ParamOverride) -> SpaceParam:
    """A validated pruning override as a parameter: a range searches, a number fixes it."""
    integer = name == "steps"
    if isinstance(value, list):
        low, high = float(value[0]), float(value[1])
        return SpaceParam(name, low, high, integer=integer)
    return SpaceParam(name, fixed=int(value) if integer else float(value), integer=integer)


def _check_pruning_override(key: str, value: object) -> None:
    where = f"search.space.{PRUNING}.{key}"
    if key not in _PRUNING_KEYS:
        raise ValueError(f"{where}: unknown key; the pruning's space has {' and '.join(_PRUNING_KEYS)}")
    given = value if isinstance(value, list) else [value]
    numbers = [v for v in given if is_number(v)]
    if len(numbers) != len(given):
        raise ValueError(f"{where}: {value!r} is not a number; give a range [low, high] or one fixed value")
    if isinstance(value, list) and (len(numbers) != 2 or numbers[0] >= numbers[1]):
        raise ValueError(f"{where}: a range must be [low, high], two finite numbers with low < high (got {value})")
    if key == "steps":
        if not all(v.is_integer() and v >= 1 for v in map(float, numbers)):
            raise ValueError(f"{where}: {value} must be whole numbers >= 1 (pruning steps)")
        return
    if not all(0 <= v < 1 for v in numbers):
        raise ValueError(f"{where}: {value} leaves [0, 1): a sparsity is the fraction of weights pruned, below 1")
    if len(numbers) == 2:
        steps = (numbers[1] - numbers[0]) / SPARSITY_STEP
        if not math.isclose(steps, round(steps), abs_tol=1e-9):
            raise ValueError(
                f"{where}: the sparsity is drawn on a grid of {SPARSITY_STEP} from the low end (one cached "
                f"reference per grid point), so high - low must be a multiple of {SPARSITY_STEP} (got {value})"
            )


def validate_pruning_search(
    overrides: Overrides, one_shot: bool, sparsity_objective: bool, defenses: Sequence[str]
) -> None:
    """What ``[search.space.pruning]`` may hold, given the rest of the study file (each key's own values are
    checked by :func:`validate_overrides`)."""
    if PRUNING in defenses:
        raise ValueError(
            f"search.defenses: a defense named {PRUNING!r} cannot be searched, [search.space.{PRUNING}] is the "
            "sparsity's space; register the defense under another name"
        )
    pruning = overrides.get(PRUNING, {})
    if one_shot and "steps" in pruning:
        raise ValueError(
            f"search.space.{PRUNING}.steps: a one-shot pruning (pruning.one_shot = true) takes no steps; remove "
            "the steps or set one_shot = false"
        )
    if sparsity_objective and not isinstance(pruning.get("sparsity"), list):
        raise ValueError(
            "objective.sparsity_objective maximizes the sparsity, so it must be searched: add "
            f"[search.space.{PRUNING}] sparsity = [low, high] or remove sparsity_objective"
        )


def pruning_space(overrides: Overrides | None) -> dict[str, SpaceParam]:
    """The pruning parameters the study file names under ``[search.space.pruning]``, by key."""
    return {key: _pruning_param(key, value) for key, value in (overrides or {}).get(PRUNING, {}).items()}


def trial_steps(overrides: Overrides | None, study_pruning: PruningConfig) -> int | None:
    """The pruning steps every trial prunes in: the study file's ``[pruning] steps``, or the number
    ``[search.space.pruning] steps`` fixes; None when the space searches them (trials differ)."""
    param = pruning_space(overrides).get("steps")
    if param is None:
        return study_pruning.steps
    return None if param.fixed is None else int(param.fixed)


def _suggest_sparsity(trial: optuna.Trial, param: SpaceParam) -> float:
    if param.fixed is not None:
        return float(param.fixed)
    low, high = param.bounds
    # rounded: low + k * step carries float noise, and the sparsity is part of the cached reference's key
    return round(trial.suggest_float(f"{PRUNING}.sparsity", low, high, step=SPARSITY_STEP), 10)


def suggest_pruning(trial: optuna.Trial, overrides: Overrides | None, study_pruning: PruningConfig) -> PruningConfig:
    """The trial's pruning: the study file's ``[pruning]`` with the searched keys sampled (``pruning.sparsity``,
    ``pruning.steps``: fixed bounds, like the defense's parameters) or fixed as ``[search.space.pruning]`` says."""
    params = pruning_space(overrides)
    sparsity, steps = study_pruning.sparsity, study_pruning.steps
    if "sparsity" in params:
        sparsity = _suggest_sparsity(trial, params["sparsity"])
    if "steps" in params:
        steps = int(_suggest(trial, params["steps"], f"{PRUNING}.steps"))
    return replace(study_pruning, sparsity=sparsity, steps=steps)


def _enqueued_value(param: SpaceParam, study_value: float, grid: float | None) -> float:
    """Where an enqueued setting is evaluated on a searched pruning key: at the study file's ``[pruning]`` value
    when the range holds it (the paper's setting as the study states it), else at the range's middle; on the
    sampling's grid, since Optuna refuses an enqueued value off it."""
    low, high = param.bounds
    value = study_value if low <= study_value <= high else (low + high) / 2
    step = grid or 1.0
    return round(low + round((value - low) / step) * step, 10)


def _pinned_pruning(overrides: Overrides | None, study_pruning: PruningConfig | None) -> dict[str, Value]:
    if study_pruning is None:
        if pruning_space(overrides):
            raise ValueError(f"the study searches [search.space.{PRUNING}]: give its [pruning] (study_pruning)")
        return {}
    return pruning_params(overrides, study_pruning)


def pruning_params(overrides: Overrides | None, study_pruning: PruningConfig) -> dict[str, Value]:
    """The Optuna params of the pruning an enqueued setting (a paper's default, a warm start) is evaluated at
    (see :func:`_enqueued_value`); none when the pruning is not searched."""
    out: dict[str, Value] = {}
    for key, param in pruning_space(overrides).items():
        if param.fixed is None:
            value = _enqueued_value(param, getattr(study_pruning, key), SPARSITY_STEP if key == "sparsity" else None)
            out[f"{PRUNING}.{key}"] = value if key == "sparsity" else int(value)
    return out
