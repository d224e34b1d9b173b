"""The errors of wemem-search by kind, so that a caller catches what it can handle (as ``optuna.exceptions`` does).

Every one is a :class:`wemem.errors.WememError`, so ``except WememError`` still catches them all; the command line
prints the message and exits 2, or 130 for :class:`InterruptedStudyError`. This module sits below every other
``search`` layer: any of them may raise these.
"""

from __future__ import annotations

from collections.abc import Sequence

from wemem.errors import WememError


class BadInputError(WememError):
    """Raised when an argument, a study file or another input a user gave is invalid.

    The message names the problem and how to fix it; nothing was stored or run.
    """


class StorageError(WememError):
    """Raised when the study storage cannot be opened, read or written, or is not one this tool may use.

    An unreachable server, wrong credentials, a read-only file, a database without Optuna's tables or one holding
    another program's tables. The message never shows a secret of the storage URL.
    """


class InterruptedStudyError(WememError, KeyboardInterrupt):
    """Raised when Ctrl-C or SIGTERM stopped a command; what finished before it is stored.

    It is a :class:`KeyboardInterrupt` too, so code that stops on Ctrl-C still stops. ``advice`` says how to
    continue (the command line prints it); ``requeued`` numbers the running trials that were failed and whose
    settings were re-queued.
    """

    def __init__(self, advice: str, requeued: Sequence[int] = ()):
        super().__init__(f"interrupted; {advice}")
        self.advice = advice
        self.requeued = list(requeued)


__all__ = ["BadInputError", "InterruptedStudyError", "StorageError", "WememError"]
