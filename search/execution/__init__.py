"""Running a study's trials on Ray: the cluster (:mod:`._cluster`: ``ray.init``, shares, placement bundles), the
worker side of every job (:mod:`._jobs`), the shared work and the Tune trainable (:mod:`._trainable`), the searcher,
scheduler and run loop (:mod:`._tune`), and launching or resuming a study (:mod:`._launcher`).

This ``__init__`` re-exports nothing on purpose: a fresh Ray worker unpickles its job from :mod:`._jobs` and
imports this package first, so it must not pull in Ray Tune, Optuna or the study layer (seconds per process).
"""
