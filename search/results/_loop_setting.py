"""An exported setting for the user's own training loop (:mod:`wemem.loop`).

Export files are read here, in the search layer, and ``wemem`` never imports ``search``: the loader lives beside
apply's reader and returns the ``wemem`` type the loop components take. Nothing is rebuilt and no plug-in code is
checked or run: the loop brings its own model and data.
"""

from __future__ import annotations

from pathlib import Path

from wemem.defenses import Setting
from wemem.loop import LoopSetting

from ..studyfile._exports import read_export
from ._apply import definition_from_export, select_record, trial_pruning


def load_setting(path: str | Path, trial: int | None = None) -> LoopSetting:
    """The setting ``wemem export`` wrote to ``path`` (its best one, or trial ``trial`` of its Pareto set), with
    the pruning it was evaluated at (the sparsity its trial searched, if the study searched it), and the training,
    mem-score models and seed of the study it came from; every problem is a WememError."""
    document = read_export(path)
    record = select_record(document, trial, str(path))
    definition = definition_from_export(document, str(path))
    setting = Setting(record.setting.defense, record.setting.settings)  # validated by the defense's settings
    experiment = definition.experiment(base_dir=str(Path(path).resolve().parent))
    return LoopSetting(
        setting=setting,
        pruning=trial_pruning(definition.pruning_config(), record),
        training=experiment.train,
        memscore_models=experiment.memscore_models,
        seed=experiment.seed,
        study=definition.name,
        trial=record.number,
        model=definition.model.name,
        dataset=definition.data.dataset,
    )
