"""The ``wemem`` command line (entry point ``search.cli:main``; ``python -m search.cli`` runs it too): the parser
and the table of commands in :mod:`.main`, the shared flags in :mod:`.common`, one module per group of verbs."""

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
