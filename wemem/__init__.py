"""wemem: the science of WeMeM (NDSS 2025) -- data, models, pruning, mem-scores, training, defenses, attacks.

This package imports neither Optuna nor Ray: parallelism is injected by callers as a ``map_fn``
(see :mod:`wemem.parallel`).
"""

__version__ = "0.1.0"
