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
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    fixed: Any = None

    def suggest(self, trial: optuna.Trial, key: str, low: float | None = None) -> Any:
        if self.fixed is not None:
            trial.set_user_attr(key, self.fixed)
            return self.fixed
        if self.choices is not None:
            return trial.suggest_categorical(key, list(self.choices))
        low = self.low if low is None else max(self.low, low)
        if self.integer:
            return trial.suggest_int(key, int(low), int(self.high), log=self.log)
        return trial.suggest_float(key, low, self.high, log=self.log)


WINDOW = (Param("order", choices=("h2l", "l2h")), Param("stride_fraction", 0.005, 0.2),
          Param("width_fraction", 0.05, 0.8))
# RMR's optimizer is fixed to the defense's default (see docs/deviations.md for the comparison behind it); a study
# may search both with `optimizer = ["two_adam", "single"]` or fix the other one.
RMR_OPTIMIZER = Param("optimizer", choices=("two_adam", "single"), fixed=RiskSettings.model_fields["optimizer"].default)
RISK = (Param("risky_fraction", 0.01, 0.5), Param("lambda_mem", 1e-3, 1.0, log=True), RMR_OPTIMIZER)

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
    "advreg": (Param("theta", 0.5, 8.0), Param("k", 1, 10, integer=True)),  # k: inference steps per classifier step
    "dpsgd": (Param("sigma", 0.1, 4.0, log=True), Param("clip", 0.5, 5.0)),
    "relaxloss": (Param("alpha", 0.1, 3.0),),
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
    """Every stride the sampler may draw must leave a width: the width is sampled from [stride + MIN_GAP, width
    high] after the stride (a fixed width is used as it is), so the stride's high end must fit below it."""
    fixed_width = width[0] == width[1]
    room = width[0] if fixed_width else width[1]
    if stride[1] + MIN_GAP > room:
        raise ValueError(f"search.space.{defense}: stride_fraction (up to {stride[1]}) must stay below "
                         f"width_fraction ({'fixed at' if fixed_width else 'up to'} {room}) by at least {MIN_GAP} "
                         f"for every sampled stride; lower the stride's high end to at most {room - MIN_GAP:g} or "
                         f"raise the width's")


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


def suggest_setting(trial: optuna.Trial, defenses: Sequence[str],
                    overrides: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """Sample (defense, settings) define-by-run. The defense is a categorical parameter when several are given."""
    defense = defenses[0] if len(defenses) == 1 else trial.suggest_categorical("defense", list(defenses))
    settings: dict[str, Any] = {}
    for param in space_for(defense, overrides):
        low = None
        if param.name == "width_fraction" and "stride_fraction" in settings:
            low = settings["stride_fraction"] + MIN_GAP  # keeps stride strictly below width
        settings[param.name] = param.suggest(trial, f"{defense}.{param.name}", low)
    trial.set_user_attr("defense", defense)
    trial.set_user_attr("settings", settings)
    return defense, settings


def reference_params(defense: str, multiple: bool) -> dict[str, Any]:
    """The Optuna params that reproduce the defense's reference setting (for ``study.enqueue_trial``)."""
    params = {f"{defense}.{k}": v for k, v in REFERENCE_SETTINGS[defense].items()}
    if multiple:
        params["defense"] = defense
    return params
