"""Errors raised for bad user input. Each message names the problem and the fix."""


class WememError(Exception):
    """Base class of errors a user can fix (bad input, missing files, unknown names)."""


class UnknownNameError(WememError, KeyError):
    """A dataset, model, defense or attack name that no registry knows."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise WememError(message)
