"""wemem: the science of WeMeM (NDSS 2025) -- data, models, pruning, mem-scores, training, defenses, attacks.

This package imports neither Optuna nor Ray: parallelism is injected by callers as a ``map_fn``
(see :mod:`wemem.parallel`). The names below are its public surface (a user's own training loop, plug-ins, the
search layer); each is imported on first use (see :mod:`wemem._exports`). The defenses as components of a
user's own training loop are the public module :mod:`wemem.loop`.
"""

from ._exports import lazy_exports

__version__ = "0.1.0"

_WHERE = {
    "ATTACKS": "wemem.attacks",
    "DATASETS": "wemem.data",
    "DEFENSES": "wemem.defenses",
    "MODELS": "wemem.models",
    "UNDEFENDED": "wemem.defenses",
    "Attack": "wemem.attacks",
    "Defense": "wemem.defenses",
    "ExperimentConfig": "wemem.config",
    "ExperimentResult": "wemem.pipeline",
    "PruningConfig": "wemem.config",
    "Setting": "wemem.defenses",
    "UnknownNameError": "wemem.errors",
    "WememError": "wemem.errors",
    "make_defense": "wemem.defenses",
    "prepare_assets": "wemem.assets",
    "run_experiment": "wemem.pipeline",
}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
