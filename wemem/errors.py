"""Errors raised for bad user input. Each message names the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type only: wemem.errors is imported by everything, pydantic by few
    from pydantic import ValidationError

LISTED_AT_MOST = 10  # problems or names one message lists


class WememError(Exception):
    """Base class of errors a user can fix (bad input, missing files, unknown names)."""


class UnknownNameError(WememError, KeyError):
    """A dataset, model, defense or attack name that no registry knows."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def capped(items: Iterable[str], limit: int = LISTED_AT_MOST) -> list[str]:
    """The first ``limit`` items a message lists, then "and N more": a forged input may hold 200,000 mistakes, and
    a message listing them all would bury the first one."""
    listed = list(items)
    return listed[:limit] + ([f"and {len(listed) - limit:,} more"] if len(listed) > limit else [])


def validation_problems(
    error: ValidationError,
    where: Sequence[str] = (),
    whole: str = "",
    form: str = "{key}: {message}",
    messages: Mapping[str, str] | None = None,
) -> list[str]:
    """Each problem of a pydantic error as ``key.path: message`` (``where`` prefixes the path; ``whole`` names a
    problem of the value as a whole), at most :data:`LISTED_AT_MOST` of them. Pydantic's "Value error, " prefix
    is dropped: a validator's message says what is wrong by itself. ``form`` lays a problem out from its ``key``
    and ``message``; ``messages`` gives, by pydantic error type (e.g. "missing"), the words to use instead of
    pydantic's where those do not say what to do."""
    own = messages or {}
    return capped(
        form.format(
            key=".".join([*where, *map(str, e["loc"])]) or whole,
            message=own.get(e["type"], e["msg"].removeprefix("Value error, ")),
        )
        for e in error.errors()
    )


def require(condition: bool, message: str) -> None:
    if not condition:
        raise WememError(message)
