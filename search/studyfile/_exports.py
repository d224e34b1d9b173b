"""Reading export files (``wemem export``'s TOML or JSON): ``apply`` reads one to rebuild a model, a study's
``[search] warm_start`` to start from its settings. An export may come from someone else: it is parsed as data
(TOML or JSON, nothing in it is run) and every field read is checked."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path

from wemem.errors import WememError


def read_export(path: str | Path) -> Mapping[str, object]:
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise WememError(
            f"{path} is not an export file: `wemem export` writes .toml or .json files "
            "(model.pt is the output of apply, not its input)"
        )
    if not path.is_file():
        raise WememError(f"export file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise WememError(
            f"export file {path} is not text (binary data); pass a file written by `wemem export`"
        ) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise WememError(f"export file {path} is not valid {path.suffix[1:].upper()}: {error}") from None
    except RecursionError:  # the parsers recurse once per level: a forged file nests beyond Python's stack
        raise WememError(
            f"export file {path} is nested too deep to read (tables or arrays thousands of levels "
            f"inside each other, which `wemem export` never writes); pass a file written by "
            f"`wemem export`"
        ) from None
    if not isinstance(document, dict):
        raise WememError(f"export file {path} does not hold a table of keys; pass a file written by `wemem export`")
    return document


def export_settings(document: Mapping[str, object], source: str) -> list[tuple[str, Mapping[str, object]]]:
    """The settings an export recommends, each a defense and its settings as stored: its best setting, or each
    point of its Pareto set."""
    entries = document.get("pareto") if "pareto" in document else [document["best"]] if "best" in document else None
    if not isinstance(entries, list) or not entries:
        raise WememError(f"{source} has no [best] setting or [[pareto]] set; pass a file written by `wemem export`")
    settings: list[tuple[str, Mapping[str, object]]] = []
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("defense"), str)
            and isinstance(entry.get("settings", {}), dict)
        ):
            raise WememError(
                f"{source}: a recommended setting needs a defense name and a table of settings "
                f"(got {str(entry)[:80]!r}); pass a file written by `wemem export`"
            )
        settings.append((entry["defense"], dict(entry.get("settings", {}))))
    return settings
