"""Search spaces per defense (SPEC section 10), sampled define-by-run from an Optuna trial.

Parameters are named ``<defense>.<setting>`` so that, when the defense itself is a categorical choice, each
defense keeps its own distributions. A study file may narrow a range (``[low, high]``) or fix a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import optuna

from wemem.defenses import DEFENSES
from wemem.defenses.wemem import RiskSettings

MIN_GAP = 0.005  # stride must stay strictly below width (SPEC section 10)


@dataclass(frozen=True)
class Param:
    """One setting of a defense's space. ``derived``: not sampled, computed from other parameters (its bounds
    clip the computed value; a study file may narrow them or fix the value, which then replaces the derivation)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    fixed: Any = None
    derived: bool = False

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        if self.fixed is not None:
            trial.set_user_attr(key, self.fixed)
            return self.fixed
        if self.choices is not None:
            return trial.suggest_categorical(key, list(self.choices))
        if self.integer:
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a value this parameter may take (for warm starts)."""
        if self.fixed is not None:
            return value == self.fixed
        if self.choices is not None:
            return value in self.choices
        return _is_number(value) and self.low <= value <= self.high and (not self.integer or float(value).is_integer())


# The window is sampled in a fixed box: the width, and the stride as a fraction of the width (stride_ratio), both
# on log scales (halving a window matters as much at 0.1 as at 0.6). The stride a defense receives,
# stride_fraction = stride_ratio * width_fraction, is derived and clipped to the SPEC's [0.005, 0.2]; with the
# ratio at most 0.5 and the width at least 0.05 it always stays below the width by more than MIN_GAP. Sampling the
# stride first would move the width's lower bound with it, a box TPE's densities model badly.
STRIDE = Param("stride_fraction", 0.005, 0.2, derived=True)
WINDOW = (Param("order", choices=("h2l", "l2h")), Param("width_fraction", 0.05, 0.8, log=True),
          Param("stride_ratio", 0.02, 0.5, log=True), STRIDE)
# RMR's optimizer is fixed to the defense's default (see docs/deviations.md for the comparison behind it); a study
# may search both with `optimizer = ["two_adam", "single"]` or fix the other one.
RMR_OPTIMIZER = Param("optimizer", choices=("two_adam", "single"), fixed=RiskSettings.model_fields["optimizer"].default)
RISK = (Param("risky_fraction", 0.01, 0.5, log=True), Param("lambda_mem", 1e-3, 1.0, log=True), RMR_OPTIMIZER)

def installed_space(name: str) -> tuple[Param, ...] | None:
    """The search space an installed package's defense (a ``wemem.defenses`` entry point) declares as its class
    attribute ``search_space``: ``{setting: (low, high) | [choice, ...] | {"low", "high", "log", "integer"}}``."""
    if name not in DEFENSES.names() or name in BUILT_IN_SPACES:
        return None
    declared = getattr(DEFENSES.get(name), "search_space", None)
    if not isinstance(declared, dict) or not declared:
        return None
    params = []
    for setting, value in declared.items():
        if isinstance(value, dict):
            params.append(Param(setting, **value))
        elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            params.append(Param(setting, float(value[0]), float(value[1])))
        elif isinstance(value, list) and value:
            params.append(Param(setting, choices=tuple(value)))
        else:
            raise ValueError(f"defense {name!r} declares search_space[{setting!r}] = {value!r}; give (low, high), a "
                             f"list of choices or a dict of Param fields")
    return tuple(params)


class _Spaces(dict):
    """The built-in spaces, and those of installed defenses, looked up when first named."""

    def __missing__(self, name: str) -> tuple[Param, ...]:
        space = installed_space(name)
        if space is None:
            raise KeyError(name)
        self[name] = space
        return space

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and installed_space(name) is not None)


BUILT_IN_SPACES: dict[str, tuple[Param, ...]] = {
    "rsw": WINDOW,
    "rmr": RISK,
    "swmr": WINDOW + RISK,
    # the five baselines (SPEC sections 8 and 10)
    "ppb": (Param("lambda_kl", 0.5, 16.0, log=True),),
    "advreg": (Param("theta", 0.5, 8.0, log=True), Param("k", 1, 10, integer=True)),  # k: inference steps per classifier step
    "dpsgd": (Param("sigma", 0.1, 4.0, log=True), Param("clip", 0.5, 5.0, log=True)),
    "relaxloss": (Param("alpha", 0.1, 3.0, log=True),),
    "hamp": (Param("gamma", 0.3, 0.99), Param("alpha", 1e-3, 1.0, log=True)),
}
SPACES: dict[str, tuple[Param, ...]] = _Spaces(BUILT_IN_SPACES)

# The paper's reference settings (SPEC section 7), as fractions of each class list so they transfer across
# datasets: CIFAR-10 classes hold 2,250 victim samples (W=500 -> 0.22, D=50 -> 0.022, D=100 -> 0.044).
REFERENCE_SETTINGS: dict[str, dict[str, Any]] = {
    "rsw": {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022},
    "rmr": {"lambda_mem": 0.1, "risky_fraction": 0.2},
    "swmr": {"order": "h2l", "width_fraction": 0.22, "stride_fraction": 0.044, "lambda_mem": 0.1,
             "risky_fraction": 0.2},
}
# The baselines' warm-start settings are the defenses' own defaults (the values usual in the literature), read
# from each defense's settings model so the two never disagree.
REFERENCE_SETTINGS.update({
    name: {param.name: getattr(DEFENSES.get(name).Settings(), param.name) for param in SPACES[name]}
    for name in ("ppb", "advreg", "dpsgd", "relaxloss", "hamp")})


def space_for(defense: str, overrides: dict[str, dict[str, Any]] | None = None) -> tuple[Param, ...]:
    params = SPACES[defense]
    custom = (overrides or {}).get(defense, {})
    result = []
    for param in params:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_override(where: str, param: Param, value: Any) -> None:
    """A study file's override of one parameter: a range [low, high], a list of choices, or one fixed value."""
    if param.choices is not None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in param.choices]
        if bad or not values:
            raise ValueError(f"{where}: {bad or value!r} not among the allowed {list(param.choices)}")
        return
    allowed = f"the allowed [{param.low}, {param.high}]"
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if len(value) != 2 or not all(_is_number(v) for v in value) or not value[0] < value[1]:
            raise ValueError(f"{where}: a range must be [low, high], two finite numbers with low < high (got {value})")
        if value[0] < param.low or value[1] > param.high:
            raise ValueError(f"{where}: range {value} leaves {allowed}")
    elif not _is_number(value):
        raise ValueError(f"{where}: {value!r} is not a finite number; give a number in {allowed} or a range [low, high]")
    elif not param.low <= value <= param.high:
        raise ValueError(f"{where}: {value} is outside {allowed}")
    if param.integer and not all(float(v).is_integer() for v in values):
        raise ValueError(f"{where}: {value} must be whole numbers (a count) in {allowed}")


def _bounds(param: Param, value: Any) -> tuple[float, float]:
    if value is None:
        return float(param.low), float(param.high)
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (float(value), float(value))


def _check_window(defense: str, stride: tuple[float, float], width: tuple[float, float]) -> None:
    """Every width the sampler may draw must leave room for the stride: the derived stride is clipped to the
    stride's bounds, so its lowest value (or a fixed stride) must stay below the lowest width by MIN_GAP."""
    fixed_stride = stride[0] == stride[1]
    if stride[0] + MIN_GAP > width[0]:
        raise ValueError(f"search.space.{defense}: stride_fraction ({'fixed at' if fixed_stride else 'from'} "
                         f"{stride[0]}) must stay below width_fraction (from {width[0]}) by at least {MIN_GAP} for "
                         f"every sampled width; lower the stride to at most {width[0] - MIN_GAP:g} or raise the "
                         f"width's low end to at least {stride[0] + MIN_GAP:g}")


def validate_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    for defense, values in overrides.items():
        if defense not in SPACES:
            raise ValueError(f"search.space.{defense}: no such searchable defense; choose from {', '.join(sorted(SPACES))}")
        if not isinstance(values, dict):
            raise ValueError(f"search.space.{defense} must be a table of settings, e.g. [search.space.{defense}]")
        names = {p.name: p for p in SPACES[defense]}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"search.space.{defense}.{key}: unknown setting; choose from {', '.join(names)}")
            _check_override(f"search.space.{defense}.{key}", names[key], value)
        if "stride_fraction" in names and "width_fraction" in names:
            _check_window(defense, _bounds(names["stride_fraction"], values.get("stride_fraction")),
                          _bounds(names["width_fraction"], values.get("width_fraction")))


def derive_window(settings: dict[str, Any], stride: Param) -> dict[str, Any]:
    """The stride a defense receives from the sampled width and stride ratio (see STRIDE): ratio * width, clipped
    to the stride's bounds; a fixed stride is used as it is. Returns the settings without the ratio."""
    result = {k: v for k, v in settings.items() if k != "stride_ratio"}
    if stride.fixed is not None:
        result["stride_fraction"] = stride.fixed
    else:
        raw = settings["stride_ratio"] * settings["width_fraction"]
        result["stride_fraction"] = float(f"{min(max(raw, stride.low), stride.high):.10g}")  # 0.1*0.22 -> 0.022
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


def sampled_params(params: dict[str, Param]) -> list[Param]:
    """The parameters the sampler draws: not the derived stride, and no stride ratio when the stride is fixed."""
    stride = params.get("stride_fraction")
    fixed_stride = stride is not None and stride.fixed is not None
    return [p for p in params.values() if not p.derived and not (p.name == "stride_ratio" and fixed_stride)]


def suggest_setting(trial: optuna.Trial, defenses: Sequence[str],
                    overrides: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """Sample (defense, settings) define-by-run. The defense is a categorical parameter when several are given;
    every other parameter has bounds of its own (a fixed box), so TPE's and GP's models see a fixed space."""
    defense = defenses[0] if len(defenses) == 1 else trial.suggest_categorical("defense", list(defenses))
    params = {param.name: param for param in space_for(defense, overrides)}
    stride = params.get("stride_fraction")
    scales = recorded_scales(trial)
    settings: dict[str, Any] = {}
    for param in sampled_params(params):
        key = f"{defense}.{param.name}"
        settings[param.name] = replace(param, log=scales.get(key, param.log)).suggest(trial, key)
    if stride is not None:
        settings = derive_window(settings, stride)
    trial.set_user_attr("defense", defense)
    trial.set_user_attr("settings", settings)
    return defense, settings


def _where(param: Param) -> str:
    if param.fixed is not None:
        return f"fixed at {param.fixed!r}"
    return f"among {list(param.choices)}" if param.choices is not None else f"in [{param.low:g}, {param.high:g}]"


def setting_params(defense: str, settings: dict[str, Any], multiple: bool,
                   overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Optuna params that make :func:`suggest_setting` return ``settings`` (for ``study.enqueue_trial``): the
    inverse of the sampling, so a warm start is checked against the study's space exactly as a sample would be.
    A ValueError names each setting the space cannot produce."""
    params = {param.name: param for param in space_for(defense, overrides)}
    unknown = sorted(set(settings) - set(params) - {"stride_ratio"})
    if unknown:
        raise ValueError(f"{defense} has no setting {', '.join(unknown)} in the search space (its settings: "
                         f"{', '.join(n for n in params if n != 'stride_ratio')})")
    values, stride = dict(settings), params.get("stride_fraction")
    if stride is not None:
        if not stride.contains(values.get("stride_fraction")):
            raise ValueError(f"{defense}.stride_fraction = {values.get('stride_fraction')!r} is not {_where(stride)} "
                             "as this study's space allows")
        if stride.fixed is None and _is_number(values.get("width_fraction")):  # else the width's own check below names it
            # 9 decimals: the ratio of a sampled stride is exact only up to the derivation's rounding
            values["stride_ratio"] = round(values.pop("stride_fraction") / values["width_fraction"], 9)
    out: dict[str, Any] = {}
    for param in sampled_params(params):
        shown = "stride_fraction / width_fraction" if param.name == "stride_ratio" else param.name
        if param.name not in values:
            if param.fixed is None:
                raise ValueError(f"{defense}: the setting gives no {shown}")
            continue
        if not param.contains(values[param.name]):
            raise ValueError(f"{defense}.{shown} = {values[param.name]!r} is not {_where(param)} as this study's "
                             "space allows")
        if param.fixed is None:
            out[f"{defense}.{param.name}"] = values[param.name]
    if multiple:
        out["defense"] = defense
    return out


def reference_params(defense: str, multiple: bool, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Optuna params that reproduce the defense's reference setting (for ``study.enqueue_trial``)."""
    return setting_params(defense, REFERENCE_SETTINGS[defense], multiple, overrides)
