"""Where a study lives and runs: the options every command shares, and what they resolve to for one study
(its cache folder and data root), worked out once; :class:`OpenStudy` is the one object commands pass on."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna

from objectives import TrialSpec

from ..storage._heartbeat import retry_callback
from ..storage._records import stored_base_dir, stored_cache_dir, stored_data_root
from ..storage._urls import GRACE_PERIOD_S, MAX_RETRY, open_storage, storage_url
from ..studyfile import StudyDefinition

DEFAULT_CACHE_DIR = ".wemem-cache"
# the [resources] a launcher may set for itself (Options.resources): where and how it runs, not the study
LAUNCHER_RESOURCES = ("cpus_per_trial", "gpus_per_trial", "max_concurrent_trials")


@dataclass(frozen=True)
class Options:
    """Where a study lives and runs: command-line options shared by every command."""

    storage: str | None = None
    cache_dir: str | None = None
    data_root: str | None = None
    ray_address: str | None = None
    stale_after: int = GRACE_PERIOD_S
    resources: Mapping[str, float] | None = None  # overrides of [resources] for this launcher only
    overrides: tuple[str, ...] = ()  # failed validity checks (wemem.validity) this launcher runs past, by name
    allow_foreign_tables: bool = False  # launch into a SQLite file that also holds another program's tables

    @property
    def storage_url(self) -> str:
        return storage_url(self.storage)

    def open_storage(self, must_exist: bool = False, writer: bool | None = None) -> optuna.storages.RDBStorage:
        return open_storage(
            self.storage_url,
            must_exist=must_exist,
            grace_period=self.stale_after,
            stale_trial_callback=retry_callback(MAX_RETRY),
            writer=writer,
        )


def resolve_cache_dir(options: Options, study: optuna.Study | None = None) -> str:
    """``--cache-dir``; else the folder the study was launched with, if it holds a wemem cache; else ./.wemem-cache.

    A storage may come from someone else: the folder it names is written to only when it already is a cache
    (so a received storage can never make us create or fill a folder the user did not name).
    """
    if options.cache_dir:
        return str(Path(options.cache_dir).resolve())
    stored = stored_cache_dir(study) if study is not None else None
    if stored is not None and holds_wemem_cache(Path(stored)):
        return stored
    return str(Path(DEFAULT_CACHE_DIR).resolve())


def holds_wemem_cache(folder: Path) -> bool:
    """A folder wemem's shared work wrote into: an entry with its checksummed split (see wemem.assets)."""
    try:
        return folder.is_dir() and any((entry / "split.pt.sha256").is_file() for entry in folder.iterdir())
    except OSError:
        return False


def resolve_data_root(options: Options, study: optuna.Study | None = None) -> str | None:
    """``--data-root``; else the one the study was launched with (None: the study file's own)."""
    if options.data_root is not None or study is None:
        return options.data_root
    return stored_data_root(study)


@dataclass(frozen=True)
class Place:
    """The options of this command and what they resolve to for one study. ``base_dir`` is the study file's
    folder (stored at launch): plug-ins are imported from it first and relative data paths start there; None
    means the definition's own folder, else the working directory."""

    options: Options
    cache_dir: str
    data_root: str | None
    base_dir: str | None = None

    @classmethod
    def of(cls, options: Options, study: optuna.Study | None = None, base_dir: str | None = None) -> Place:
        stored = stored_base_dir(study) if study is not None and base_dir is None else None
        return cls(options, resolve_cache_dir(options, study), resolve_data_root(options, study), base_dir or stored)

    @property
    def storage_url(self) -> str:
        return self.options.storage_url


@dataclass(frozen=True)
class OpenStudy:
    """A study as every command after opening it uses it: the Optuna study, its definition (with this launcher's
    resources), its storage and its place. Launch, resume and open return it; running trials, confirm, the
    printed summaries, export and report take it."""

    study: optuna.Study
    definition: StudyDefinition
    storage: optuna.storages.RDBStorage
    place: Place

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def options(self) -> Options:
        return self.place.options

    @functools.cached_property
    def spec(self) -> TrialSpec:
        """What one trial evaluates, with this study's cache folder and data root."""
        return self.definition.trial_spec(self.place.cache_dir, self.place.data_root, self.place.base_dir)
