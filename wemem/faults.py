"""Failpoints: deterministic crash injection for the fault tests (a process killed at a named moment).

``WEMEM_FAILPOINTS="NAME[:SIGNAL][@TOKEN],..."`` makes the process that reaches ``failpoint(NAME)`` send itself
SIGNAL (default KILL; INT acts as Ctrl-C). With ``@TOKEN`` (a file path) it fires once across all processes:
the one that removes the token file fires, every later one passes. Unset, a failpoint costs one dict lookup.
Tests kill at exact moments this way instead of racing a timer against real work.
"""

from __future__ import annotations

import os
import signal

ENV = "WEMEM_FAILPOINTS"


def _armed(name: str) -> tuple[str, str | None] | None:
    for entry in os.environ.get(ENV, "").split(","):
        entry, _, token = entry.strip().partition("@")
        point, _, sig = entry.partition(":")
        if point == name:
            return sig or "KILL", token or None
    return None


def failpoint(name: str) -> None:
    armed = _armed(name)
    if armed is None:
        return
    sig, token = armed
    if token is not None:
        try:
            os.remove(token)  # atomic: exactly one process wins the token
        except FileNotFoundError:
            return
    os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))
