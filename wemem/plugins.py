"""Plug-ins named by import path: ``module:name`` or ``package.module:name`` (a model factory, a data loader).

Naming a plug-in runs its module's code, as ``python module.py`` would: a study file that names one is a program,
and so is an export or a stored study. What a reference can reach is closed by construction, not by a list of
forbidden names (installed code is named by an entry point of its distribution instead, see
:class:`wemem.registry.Registry`):

- **a file of the folder that names it.** The module is ``module.py`` or a package folder ``package/`` (with its
  ``__init__.py``) in the folder of the file that names it (the study file's; the working directory for ``wemem
  run``, ``memscore`` and ``apply``), and every file on the way resolves, symlinks followed, inside that folder. The
  standard library, installed packages and wemem itself are never reached, whatever they import or re-export.
- **a name that module defines.** The attribute is one name, never a dotted walk, and its object was defined by
  that module (its ``__module__`` is the module's): an imported ``rmtree`` or ``os`` is refused, uncalled.
- **loaded by path, never through sys.path.** The module runs under a private name
  (``_wemem_plugin_<digest>.module``, the digest covering its folder and its files) that no installed module has,
  so it shadows nothing and an edited file is loaded afresh. Neither its folder nor the working directory is put
  on ``sys.path``: a ``wave.py`` beside the plug-in is not the ``wave`` it imports. A package's modules import each
  other relatively or by the package's own name, which is mapped to the private name for its own modules only.
  The code is compiled from the source file: no ``__pycache__`` beside it is read (it could hold other code than
  the hashed source) or written.
- **hashed file by file.** :func:`plugin_files` hashes every ``.py`` file of a package (or the one module file)
  by reading them, so exports and stored studies record what ran (:func:`code_record`), and
  :func:`check_record` refuses a new, missing or changed file before anything is imported.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from .errors import WememError

_NAME = r"[A-Za-z_]\w*"
_DOTTED = rf"{_NAME}(?:\.{_NAME})*"
# a dotted attribute matches, so that it is refused by the rule (parse_reference) rather than as an unknown name
REFERENCE = re.compile(rf"^({_DOTTED}):({_DOTTED})$")
RULE = (
    "a plug-in reference names a module file (or package folder) in the folder of the file that names it, and "
    "a class or function that module defines"
)
PRIVATE_PREFIX = "_wemem_plugin_"


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
        raise WememError(
            f"{kind} {text!r} is neither a built-in name nor an import path; write "
            f"'package.module:attribute' (e.g. 'mymodel:Net' for Net in mymodel.py)"
        )
    ref = PluginRef(match.group(1), match.group(2))
    _refuse_walk(ref, kind)
    _refuse_ours(ref, kind)
    return ref


def _refuse_walk(ref: PluginRef, kind: str) -> None:
    """``module:a.b`` would walk from the module into whatever it imported (``tempfile._shutil.rmtree``)."""
    if "." not in ref.attribute:
        return
    raise WememError(
        f"{kind} {ref.text!r}: the attribute {ref.attribute!r} is a dotted path, which walks into what "
        f"the module imported; refused without importing it ({RULE}). Name one class or function of "
        f"your own module: 'mymodule:Name'"
    )


# wemem-search's own top-level packages, should the installed metadata be unreadable (a source checkout)
OWN_PACKAGES = ("wemem", "objectives", "search")


@functools.cache
def own_packages() -> frozenset[str]:
    """The top-level packages the wemem-search distribution ships (read from the installed metadata)."""
    from importlib import metadata

    shipped = {
        module for module, distributions in metadata.packages_distributions().items() if "wemem-search" in distributions
    }
    return frozenset(shipped | set(OWN_PACKAGES))


def _refuse_ours(ref: PluginRef, kind: str) -> None:
    """A plug-in package named like one of ours would replace it in ``sys.modules`` of the launcher and of every
    Ray worker, so the tool would run on the user's module where it expects its own."""
    if ref.top_level not in own_packages():
        return
    rest = ref.module.partition(".")[2]
    raise WememError(
        f"{kind} {ref.text!r} names {ref.top_level!r}, a package of wemem-search itself, so a module "
        f"of yours by that name would replace the tool's own; refused without importing it. Rename "
        f"your {'package folder' if rest else 'module'} (e.g. 'my_{ref.top_level}"
        f"{'.' + rest if rest else ''}:{ref.attribute}')"
    )


# ------------------------------------------------------------------------------ finding a plug-in's files


class MissingModule(WememError):
    """The folder holds no file of the module a reference names."""


@dataclass(frozen=True)
class PluginSource:
    """Where a reference's code lives, found by reading the folder only: the folder (resolved), the top-level
    module file or package folder, and the file defining the named module."""

    folder: Path
    top: Path
    module_file: Path

    def files(self) -> list[Path]:
        """Every file of the plug-in: each ``.py`` file of the package, or the one module file."""
        return sorted(self.top.rglob("*.py")) if self.top.is_dir() else [self.top]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()


def plugin_folder(base_dir: str | Path | None) -> Path:
    """The folder a reference is read from: the named file's folder, else the working directory (``wemem run``)."""
    return Path(base_dir if base_dir is not None else Path.cwd()).resolve()


def module_chain(folder: Path, module: str) -> list[Path] | None:
    """The files Python would run for ``module`` (dotted) in ``folder``: each package's ``__init__.py`` on the
    way, then the module's ``name.py`` or ``name/__init__.py`` (a package first, as Python prefers); None when one
    is not there."""
    chain, path = [], folder
    parts = module.split(".")
    for depth, part in enumerate(parts):
        if (path / part / "__init__.py").is_file():
            path = path / part
            chain.append(path / "__init__.py")
        elif depth == len(parts) - 1 and (path / f"{part}.py").is_file():
            chain.append(path / f"{part}.py")
        else:
            return None
    return chain


def _outside(folder: Path, chain: list[Path]) -> Path | None:
    """The first file of ``chain`` that resolves (symlinks followed) outside ``folder``."""
    return next((file for file in chain if not file.resolve().is_relative_to(folder)), None)


def _elsewhere(top: str) -> str | None:
    """What a top-level name that is no file of the folder names (for messages), found without importing it and
    without trusting ``sys.modules`` or the working directory (they may hold a module of some folder): the
    standard library, installed code (found by the environment's finders), or nothing."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "the standard library"
    here = Path.cwd().resolve()
    environment = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    for finder in sys.meta_path:
        try:
            found = finder.find_spec(top, environment if finder is importlib.machinery.PathFinder else None)
        except Exception:  # an installed finder's own trouble (or one without find_spec): it found nothing
            found = None
        if found is not None:
            return "installed code"
    return None


def locate(ref: PluginRef, kind: str, base_dir: str | Path | None) -> PluginSource:
    """The files of a reference's module in its folder, or the refusal naming the rule; nothing is imported."""
    folder = plugin_folder(base_dir)
    chain = module_chain(folder, ref.module)
    if chain is None:
        what = _elsewhere(ref.top_level)
        if what is None:
            path = ref.module.replace(".", "/")
            raise MissingModule(
                f"{kind} {ref.text!r}: cannot import module {ref.module!r}: there is no {path}.py or "
                f"{path}/__init__.py in {folder} ({RULE}); put {ref.top_level}.py beside the study "
                f"file, or install a package that registers it as a wemem.{kind}s entry point"
            )
        hint = " For a torchvision model write 'torchvision:NAME'." if ref.top_level == "torchvision" else ""
        raise WememError(
            f"{kind} {ref.text!r} names {ref.top_level!r}, which is {what}, not a module file of "
            f"{folder}; refused without importing it: {RULE} (installed code is named by its "
            f"package's wemem.{kind}s entry point).{hint} Name your own module: "
            f"'mymodule:{ref.attribute}'"
        )
    outside = _outside(folder, chain)
    if outside is not None:
        raise WememError(
            f"{kind} {ref.text!r}: {outside.relative_to(folder)} is a link to {outside.resolve()}, "
            f"outside {folder}; refused without importing it: {RULE}. Copy your code into the folder "
            f"instead of linking to it"
        )
    single = folder / f"{ref.top_level}.py"
    return PluginSource(folder, single if chain[0] == single else folder / ref.top_level, chain[-1])


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_files(source: PluginSource) -> dict[str, str]:
    """{path relative to the folder: SHA-256} of every file of the plug-in."""
    return {source.relative(file): file_sha256(file) for file in source.files()}


def plugin_files(text: str, kind: str, base_dir: str | Path | None) -> dict[str, str]:
    """Every file of the plug-in a reference names, with its SHA-256, read without running any of it."""
    return source_files(locate(parse_reference(text, kind), kind, base_dir))


def files_digest(files: dict[str, str]) -> str:
    """One SHA-256 for a plug-in's files: a single file's own (so an ``[own_code]`` entry holding only its module
    file's SHA-256 still matches), else that of the sorted (path, SHA-256) list."""
    if len(files) == 1:
        return next(iter(files.values()))
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def code_record(text: str, kind: str, base_dir: str | Path | None) -> dict[str, Any]:
    """What ``[own_code]`` records of a plug-in: its reference, every file's SHA-256 and their digest."""
    files = plugin_files(text, kind, base_dir)
    return {"reference": text, "sha256": files_digest(files), "files": files}


def check_record(entry: Any, text: str, kind: str, base_dir: str | Path | None, where: str, fix: str) -> dict[str, str]:
    """The plug-in's files here when they are exactly those ``entry`` (an ``[own_code]`` entry of ``where``, an export
    or a stored study) records, read and never imported; otherwise the refusal naming each new, missing or changed
    file. An entry holding one ``sha256`` and no ``files`` names the module's file by its SHA-256."""
    try:
        source = locate(parse_reference(text, kind), kind, base_dir)  # the rule first, whatever is recorded
    except MissingModule as error:
        raise WememError(
            f"{where} was made with the {kind} plug-in {text!r}, which is missing here ({error}); {fix}"
        ) from None
    if not (isinstance(entry, dict) and entry.get("reference") == text):
        raise WememError(
            f"{where} names the {kind} plug-in {text!r} without the hashes of its files "
            f"([own_code.{kind}]); refused, nothing imported: {fix}"
        )
    recorded = entry["files"] if "files" in entry else {source.relative(source.module_file): entry.get("sha256")}
    if not (isinstance(recorded, dict) and all(isinstance(v, str) for v in recorded.values())):
        raise WememError(f"{where}: [own_code.{kind}] holds no file hashes; refused, nothing imported: {fix}")
    found = source_files(source)
    changed = [
        f"{path} ({'new' if path not in recorded else 'missing' if path not in found else 'edited'})"
        for path in sorted(set(found) | set(recorded))
        if found.get(path) != recorded.get(path)
    ]
    if changed:
        raise WememError(
            f"the {kind} plug-in {text!r} has changed since the study ran: {', '.join(changed)} in "
            f"{source.folder} differ from what {where} records (refused, nothing imported); {fix}"
        )
    return found


def code_lines(code: dict[str, tuple[str, dict[str, str]]]) -> list[str]:
    """``{kind: (reference, files)}`` as the lines that name the code a command is about to run."""
    return [
        f"  {kind} {text!r}: " + ", ".join(f"{path} sha256 {sha256}" for path, sha256 in files.items())
        for kind, (text, files) in code.items()
    ]


# ------------------------------------------------------------------------------------- loading by path


def _public(text: str) -> str:
    """``text`` with the private names of loaded plug-ins written as the user's module names."""
    return re.sub(rf"{PRIVATE_PREFIX}[0-9a-f]+\.", "", text)


def _own_imports(private: str, top: str) -> dict[str, Any]:
    """The builtins of a plug-in's modules: ``import top...`` (the plug-in's own top-level name) is its private
    module; every other import is the environment's, so nothing beside the plug-in shadows an installed module."""

    def plugin_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and (name == top or name.startswith(top + ".")):
            imported = builtins.__import__(f"{private}.{name}", globals, locals, fromlist, 0)
            return imported if fromlist else sys.modules[f"{private}.{top}"]
        return builtins.__import__(name, globals, locals, fromlist, level)

    return {**vars(builtins), "__import__": plugin_import}


@dataclass(frozen=True)
class _Root:
    """One plug-in's sources in one folder: what its private name stands for."""

    folder: Path
    top: str
    builtins: dict[str, Any] = field(compare=False)


class _PluginLoader(importlib.machinery.SourceFileLoader):
    """Runs a plug-in module compiled from its source file (never a ``__pycache__`` beside it, read or written),
    with the plug-in's own builtins."""

    def __init__(self, fullname: str, path: str, root: _Root):
        super().__init__(fullname, path)
        self.root = root

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        module.__builtins__ = self.root.builtins  # type: ignore[attr-defined]
        super().exec_module(module)


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Finds the modules under a registered private name and nothing else: ``_wemem_plugin_<digest>.pkg.mod`` is
    ``pkg/mod.py`` of that root's folder, when it is part of the root's plug-in and resolves inside the folder."""

    def __init__(self) -> None:
        self.roots: dict[str, _Root] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        private, _, module = fullname.partition(".")
        root = self.roots.get(private)
        if root is None or not (module == root.top or module.startswith(root.top + ".")):
            return None
        chain = module_chain(root.folder, module)
        if chain is None or _outside(root.folder, chain) is not None:
            return None
        file = chain[-1]
        spec = importlib.util.spec_from_file_location(fullname, file, loader=_PluginLoader(fullname, str(file), root))
        if spec is not None and file.name == "__init__.py":
            # an empty __path__: a package's submodules are found here, by name and checked, never by the path
            # finder (which would load a linked file this finder refused, or a __pycache__ beside it)
            spec.submodule_search_locations = []
        return spec


_FINDER = _PluginFinder()


def _private_name(source: PluginSource, top: str, files: dict[str, str]) -> str:
    """The private top-level name of these sources, registered with the finder (once per folder and content)."""
    identity = json.dumps([str(source.folder), top, sorted(files.items())])
    private = PRIVATE_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]
    if private not in _FINDER.roots:
        _FINDER.roots[private] = _Root(source.folder, top, _own_imports(private, top))
    if private not in sys.modules:
        spec = importlib.machinery.ModuleSpec(private, None, is_package=True)
        sys.modules[private] = importlib.util.module_from_spec(spec)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return private


def import_module(ref: PluginRef, kind: str, base_dir: str | Path | None) -> ModuleType:
    """The reference's module, loaded by path from its folder under its private name."""
    source = locate(ref, kind, base_dir)
    private = _private_name(source, ref.top_level, source_files(source))
    try:
        return importlib.import_module(f"{private}.{ref.module}")
    except Exception as error:  # the user's module failed while importing: say so, with its own message
        raise WememError(
            f"{kind} {ref.text!r}: importing module {ref.module!r} failed ({type(error).__name__}: "
            f"{_public(str(error))}); fix that module ({source.module_file})"
        ) from None


def _defined_in(target: Any, module: ModuleType) -> bool:
    return getattr(target, "__module__", None) == module.__name__


def resolve(ref: PluginRef, kind: str, base_dir: str | Path | None) -> Any:
    """The class or function a reference names, defined by its module (never an object the module imported)."""
    module = import_module(ref, kind, base_dir)
    where = f"{ref.module!r} ({module.__file__})"
    namespace = vars(module)  # not getattr: a module's __getattr__ could hand out anything
    if ref.attribute not in namespace:
        defined = sorted(
            name
            for name, value in namespace.items()
            if not name.startswith("_") and callable(value) and _defined_in(value, module)
        )
        raise WememError(
            f"{kind} {ref.text!r}: {where} has no attribute {ref.attribute!r}; it defines: "
            f"{', '.join(defined[:12]) or 'nothing callable'}"
        )
    target = namespace[ref.attribute]
    if not _defined_in(target, module):
        origin = _public(str(getattr(target, "__module__", None) or type(target).__module__))
        raise WememError(
            f"{kind} {ref.text!r}: {ref.attribute!r} is not defined in {where} but imported into it "
            f"(from {origin}); refused without calling it: {RULE}. Define the {kind} in the module "
            f"itself, or name the module of yours that defines it"
        )
    return target


def check_signature(target: Any, ref_text: str, kind: str, arguments: tuple[Any, ...], expected: str) -> None:
    """Refuse a plug-in that cannot be called as documented, before calling it (so nothing of it runs)."""
    if not callable(target):
        raise WememError(
            f"{kind} {ref_text!r} is a {type(target).__name__}, not a class or function; it must be "
            f"callable as {expected}"
        )
    try:
        inspect.signature(target).bind(*arguments)
    except TypeError as error:
        raise WememError(
            f"{kind} {ref_text!r} cannot be called as {expected} ({error}); give it exactly those parameters"
        ) from None
    except ValueError:  # no signature to read (some builtins): the call itself will tell
        pass
