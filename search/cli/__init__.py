"""The ``wemem`` command line (entry point ``search.cli:main``; ``python -m search.cli`` runs it too): the parser
and the table of commands in :mod:`._main`, the shared flags in :mod:`._common`, one module per group of verbs."""

import os
import sys

# `python -m search.cli` puts the working directory first on sys.path (`python -c` puts '' there), before anything
# below is imported: the working directory holds received files, and a numpy.py there would be every module's
# numpy. The command line imports nothing from it: plug-ins are loaded by path (wemem.plugins). The `wemem`
# console script puts its own bin folder there instead, which stays.
sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or ".") != os.path.realpath(os.getcwd())]

from ._main import COMMANDS, build_parser, main  # noqa: E402  (after the working directory left sys.path)

__all__ = ["COMMANDS", "build_parser", "main"]
