"""What a new study evaluates first: the paper's defaults, then earlier work (``[search] warm_start``): the
settings of export files and the best settings of other studies in the same storage.

Everything is read and checked before anything is created: each source exists and holds settings, each setting's
defense is one the study searches and its values lie in the study's space (checked by inverting the sampling,
:func:`search.studyfile._spaces.setting_params`), so an enqueued trial samples exactly the setting it came from.
Optuna's ``enqueue_trial(skip_if_exists=True)`` drops a setting already enqueued (a default, or a source's
duplicate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna

from wemem.defenses import Setting
from wemem.defenses.space import Value
from wemem.errors import WememError

from ..storage._records import WARM_START_ATTR, study_names, trial_setting
from ..study import ranked_trials
from ..study._ranking import PAPER_DEFAULT
from ..studyfile import REFERENCE_SETTINGS, StudyDefinition
from ..studyfile._exports import export_settings, read_export
from ..studyfile._schema import STUDY_SOURCE
from ..studyfile._spaces import setting_params


@dataclass(frozen=True)
class WarmStart:
    source: str  # "best.toml" or "study:NAME#12" (the trial it came from)
    setting: Setting
    params: Mapping[str, Value]  # what enqueue_trial needs


def checked(definition: StudyDefinition, source: str, setting: Setting) -> WarmStart:
    search = definition.search
    defense = setting.defense
    if defense not in search.defenses:
        raise WememError(
            f"[search] warm_start {source}: its setting uses defense {defense!r}, which this study "
            f"does not search ({', '.join(search.defenses)}); add it to [search] defenses or drop the "
            "source"
        )
    try:
        params = setting_params(
            defense, setting.settings, len(search.defenses) > 1, search.space, definition.pruning_config()
        )
    except ValueError as error:
        raise WememError(
            f"[search] warm_start {source}: {error}; widen [search.space.{defense}] or drop the source"
        ) from None
    return WarmStart(source, setting, params)


def from_study(
    name: str, top: int, open_storage: Callable[[], optuna.storages.BaseStorage]
) -> list[tuple[str, Setting]]:
    storage = open_storage()
    if name not in study_names(storage):
        raise WememError(
            f"[search] warm_start study:{name}: no study named {name!r} in this storage (it holds "
            f"{', '.join(study_names(storage)) or 'none'}); launch it first or fix the name"
        )
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        trials = ranked_trials(study)[:top]
    except WememError:
        raise WememError(
            f"[search] warm_start study:{name}: that study has no completed trial to start from; "
            f"resume it first or drop the source"
        ) from None
    return [(f"{STUDY_SOURCE}{name}#{t.number}", trial_setting(t)) for t in trials]


def from_export(source: str, folder: str) -> list[tuple[str, Setting]]:
    """The settings of an export (which ``wemem export`` wrote: recorded, they are checked against the study's
    space by :func:`checked`, like every other source's)."""
    path = Path(folder, source)
    try:
        return [
            (source, Setting.recorded(defense, settings))
            for defense, settings in export_settings(read_export(path), str(path))
        ]
    except WememError as error:
        raise WememError(f"[search] warm_start {source}: {error}") from None


def paper_defaults(definition: StudyDefinition) -> tuple[list[WarmStart], list[str]]:
    """The paper's default setting of each searched defense that has one ([search] enqueue_reference), and why
    any was left out: a study file that narrows or fixes a setting away from the default's value (it would not
    be the paper's setting any more, so it is not enqueued and tuning is not judged against it)."""
    search = definition.search
    if not search.enqueue_reference:
        return [], []
    starts: list[WarmStart] = []
    left_out: list[str] = []
    for defense in (d for d in search.defenses if d in REFERENCE_SETTINGS):
        try:
            params = setting_params(
                defense,
                REFERENCE_SETTINGS[defense],
                len(search.defenses) > 1,
                search.space,
                definition.pruning_config(),
            )
        except ValueError as error:
            left_out.append(f"the paper's default for {defense} is outside this study's space ({error}): not enqueued")
            continue
        starts.append(WarmStart(PAPER_DEFAULT, Setting(defense, REFERENCE_SETTINGS[defense]), params))
    return starts, left_out


def warm_starts(
    definition: StudyDefinition,
    folder: str,
    open_storage: Callable[[], optuna.storages.BaseStorage],
    defaults: list[WarmStart],
) -> list[WarmStart]:
    """Every warm start of the study, checked, less the settings already among ``defaults`` (the paper's, see
    :func:`paper_defaults`); ``open_storage`` (an existing storage only) is called only when a source names a
    study."""
    search = definition.search
    found: list[tuple[str, Setting]] = []
    for source in search.warm_start:
        if source.startswith(STUDY_SOURCE):
            found += from_study(source.removeprefix(STUDY_SOURCE), search.warm_start_top, open_storage)
        else:
            found += from_export(source, folder)
    # identity by the Optuna params, not Setting.key(): a study enqueues params, and settings that differ only in
    # what the space fixes or derives (a default spelled out, stride_ratio) are one enqueued trial
    key = lambda start: repr(sorted(start.params.items()))  # noqa: E731
    seen = {key(d) for d in defaults}
    starts: list[WarmStart] = []
    for start in (checked(definition, *item) for item in found):
        if key(start) not in seen:  # a setting already enqueued runs once
            seen.add(key(start))
            starts.append(start)
    if starts and len(defaults) + len(starts) > definition.study.n_trials:
        raise WememError(
            f"[search] warm_start enqueues {len(starts)} settings after {len(defaults)} paper's "
            f"default(s), more than the study's n_trials = {definition.study.n_trials}; raise [study] "
            "n_trials or lower [search] warm_start_top"
        )
    return starts


def enqueue(study: optuna.Study, starts: list[WarmStart]) -> None:
    for start in starts:
        study.enqueue_trial(dict(start.params), user_attrs={WARM_START_ATTR: start.source}, skip_if_exists=True)
