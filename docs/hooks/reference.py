"""MkDocs hook: the reference pages' tables, generated at build time from the code they describe (the study file's
pydantic schema, the command line's argparse parser, the public surface of ``wemem``), so the pages cannot drift.

A page asks for a table with a marker line (``<!-- reference:NAME -->``); ``on_page_markdown`` replaces it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel
from pydantic.fields import FieldInfo

# ----- study-file keys -----------------------------------------------------------------------------------------


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section a field holds (an optional section, ``Section | None``, included); None for a value."""
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if models else None


def schema_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key a study file may set under ``model``, dotted (``study.name``), with its pydantic field: a field
    whose type is itself a section is walked, not listed."""
    for name, field in model.model_fields.items():
        section = section_model(field.annotation)
        if section is None:
            yield f"{prefix}{name}", field
        else:
            yield from schema_keys(section, f"{prefix}{name}.")


def type_text(annotation: Any) -> str:
    """A field's type as a reader of TOML knows it: ``Literal['a', 'b']`` as ``"a" | "b"``, ``X | None`` as
    ``X`` (None is the default, never a value a TOML file can hold)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is not None:
        args = ", ".join(type_text(arg) for arg in get_args(annotation) if arg is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as a TOML literal (JSON's literals are TOML's for strings, numbers, booleans and arrays)."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return "unset" if default is None else f"`{json.dumps(default)}`"


_BOUNDS: dict[type, Callable[[Any], str]] = {
    annotated_types.Ge: lambda c: f"≥ {c.ge}",
    annotated_types.Gt: lambda c: f"> {c.gt}",
    annotated_types.Le: lambda c: f"≤ {c.le}",
    annotated_types.Lt: lambda c: f"< {c.lt}",
    annotated_types.MinLen: lambda c: f"length ≥ {c.min_length}",
    annotated_types.MaxLen: lambda c: f"length ≤ {c.max_length}",
}


def bounds_text(field: FieldInfo) -> str:
    """The field's declared constraints (bounds, lengths, a pattern), as one cell."""
    parts = [_BOUNDS[type(c)](c) for c in field.metadata if type(c) in _BOUNDS]
    parts += [f"matches `{c.pattern}`" for c in field.metadata if getattr(c, "pattern", None)]
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def study_file_keys() -> str:
    """One table per section of the study file: every key, its type, default, bounds and description."""
    from search.studyfile import StudyDefinition

    lines: list[str] = []
    for section, field in StudyDefinition.model_fields.items():
        model = section_model(field.annotation)
        if model is None:
            raise TypeError(f"the study file's top-level key {section!r} is not a section: give it a row here")
        lines += ["", f"## [{section}]", ""] + ([field.description, ""] if field.description else [])
        lines += [_row("key", "type", "default", "bounds", "description"), _row(*["---"] * 5)]
        for key, leaf in schema_keys(model, f"{section}."):
            lines.append(
                _row(
                    f"`{key}`",
                    type_text(leaf.annotation),
                    default_text(leaf),
                    bounds_text(leaf),
                    leaf.description or "",
                )
            )
    return "\n".join(lines + ["", search_spaces()])


def _space_text(param: Any) -> str:
    if param.fixed is not None:
        return f"fixed at `{json.dumps(param.fixed)}`"
    if param.choices is not None:
        return "one of " + ", ".join(f"`{json.dumps(choice)}`" for choice in param.choices)
    scale = " (log scale)" if param.log else ""
    kind = "whole numbers" if param.integer else "range"
    return f"{kind} [{param.low:g}, {param.high:g}]{scale}" + (", derived from the others" if param.derived else "")


def search_spaces() -> str:
    """``search.space.DEFENSE.SETTING``: the settings each searchable defense declares, with the space a study
    samples unless its file narrows a range (``[low, high]``), lists choices or fixes a value."""
    from search.studyfile import space_for
    from wemem.defenses import DEFENSES

    lines = [
        "## search.space",
        "",
        (
            "`[search.space.DEFENSE]` narrows a defense's declared space: `SETTING = [low, high]` narrows a range, "
            "a list of strings restricts the choices, a single value fixes the setting. The declared spaces:"
        ),
        "",
        _row("key", "declared space"),
        _row("---", "---"),
    ]
    for defense in DEFENSES.names():
        lines += [_row(f"`search.space.{defense}.{param.name}`", _space_text(param)) for param in space_for(defense)]
    return "\n".join(lines)


# ----- the command line ----------------------------------------------------------------------------------------


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def _help(action: argparse.Action) -> str:
    # argparse %-formats help strings: "%(default)s" and the "%%" a literal percent sign is written as
    text = action.help % {**vars(action), "prog": "wemem"} if action.help else ""
    if action.choices is not None and not isinstance(action.choices, dict):
        text += f" (choices: {', '.join(str(choice) for choice in action.choices)})"
    return text


def command_line() -> str:
    """Each command of ``wemem``: its help, and a table of its arguments and flags."""
    from search.cli import build_parser

    # argparse lists its subcommands only through these attributes; the CLI's own parser is the source of truth
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # the names a study file or a flag may use, as `wemem --help` ends with them
    lines = ["The names each registry knows:", "", "```text", parser.epilog or "", "```"]
    for name, sub in commands.choices.items():
        lines += ["", f"## wemem {name}", "", sub.description or "", "", "```text", sub.format_usage().strip()]
        lines += ["```", "", _row("argument", "what it does"), _row("---", "---")]
        lines += [_row(_flags(a), _help(a)) for a in sub._actions if a.help != argparse.SUPPRESS]
    return "\n".join(lines)


# ----- the Python API ------------------------------------------------------------------------------------------


# a public name without a docstring (a registry, a constant) is still part of the surface: its signature shows
EVERY_NAME = ["      show_if_no_docstring: true"]


def _ancestors(module: str) -> set[str]:
    """``module`` and every package above it: ``a.b.c`` gives ``a.b.c``, ``a.b`` and ``a``."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def home_module(package: str, name: str, value: object) -> str:
    """The module below ``package`` a reader imports a public name from: the shallowest one that binds the same
    object and either lists it in its ``__all__`` (a registry or a constant has no ``__module__`` of its own) or
    holds the module that defines it (``wemem.defenses`` for ``Setting``, defined in ``wemem.defenses.base``)."""
    defined_in = value.__module__ if inspect.isclass(value) or inspect.isroutine(value) else ""
    candidates = [
        module.__name__
        for module in list(sys.modules.values())
        if module is not None
        and module.__name__.startswith(f"{package}.")
        and getattr(module, name, None) is value
        and (name in getattr(module, "__all__", ()) or module.__name__ in _ancestors(defined_in))
    ]
    if not candidates:
        raise LookupError(f"{package}.{name}: no module below {package} exports it; list it in that module's __all__")
    depth = min(module.count(".") for module in candidates)
    shallowest = sorted(module for module in candidates if module.count(".") == depth)
    if len(shallowest) > 1:
        raise LookupError(f"{package}.{name} is exported by {shallowest}: drop it from all but one __all__")
    return shallowest[0]


def wemem_api(markdown: str) -> str:
    """mkdocstrings directives for the public names of ``wemem``, each group in the module a reader imports it
    from (the package exports them lazily, which static analysis cannot follow). A module the page documents
    whole (a ``::: wemem.defenses`` line of its own) is left to that directive."""
    import wemem

    homes = {name: home_module("wemem", name, getattr(wemem, name)) for name in wemem.__all__}
    documented = set(re.findall(r"^::: ([\w.]+)\s*$", markdown, re.M))
    lines = ["## wemem", "", inspect.cleandoc(wemem.__doc__ or "")]
    for module in sorted(set(homes.values()) - documented):
        names = [name for name in wemem.__all__ if homes[name] == module]
        lines += ["", f"::: {module}", "    options:", f"      members: {json.dumps(names)}", *EVERY_NAME]
    return "\n".join(lines)


GENERATED: dict[str, Callable[[str], str]] = {
    "reference:study-file": lambda _: study_file_keys(),
    "reference:cli": lambda _: command_line(),
    "reference:wemem-api": wemem_api,
}

# The docstrings cross-reference the Sphinx way (:class:`Setting`), which Markdown renders as the role's name
# followed by code; each becomes an autorefs reference instead: a link where the name is documented on the site,
# plain code where it is not ("optional" keeps an unresolved one from being a warning).
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>([\w.]+)</code>")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    for name, generate in GENERATED.items():
        marker = f"<!-- {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate(markdown))
    return markdown


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return SPHINX_ROLE.sub(r'<autoref identifier="\1" optional><code>\1</code></autoref>', html)
