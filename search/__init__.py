"""search: studies over defense settings -- study files, search spaces, Optuna storage and lifecycle, the Ray
Tune runner, resume, export and the ``wemem`` command line."""
