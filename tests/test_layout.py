"""The source layout: no import circles, imports only go down the layers, registries don't import their entries.

The whole check reads the source with :mod:`ast`; nothing under ``wemem``, ``objectives`` or ``search`` is imported.

Layers, lowest first (``LAYERS`` below, one line each). A module may import modules of its own layer or of a
lower layer, never of a higher one.

The design's rule ``search -> objectives -> wemem`` holds through the order of the rows, ``search`` split by
concept into its own rows. A module belongs to the layer with the longest matching prefix
(``search.storage.urls`` -> ``search.storage``); a module that matches no layer fails ("add it to LAYERS").

The package ``search`` itself (``search/__init__.py``) is the public façade: it may import any layer, and no
module may import it (inside ``search`` a submodule imports its siblings, never the package).

Rules checked:

1. No import circle. Every import counts: module level, inside functions (lazy imports), and under
   ``if TYPE_CHECKING:``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
   ``pkg`` (its ``__init__``); ``import a.b.c`` is an edge to ``a.b.c``. A package ``__init__`` importing its
   submodules is normal; a submodule importing its own package's ``__init__`` closes a circle and is reported.
2. Imports follow the layers above. Also: ``wemem`` imports no ``optuna``, ``ray``, ``objectives`` or
   ``search``; ``objectives`` imports no ``search`` and no ``optuna``.
3. A module that defines ``NAME = Registry(...)`` does not itself import a module that registers into ``NAME``
   (``@NAME.register(...)`` / ``NAME.register(...)``); the package ``__init__`` imports the entries instead.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wemem", "objectives", "search")
FACADE = "search"  # the public API package: may import any search layer; nothing may import it

LAYERS = [
    ("wemem",),  # the science: no Optuna, no Ray
    ("objectives",),  # one defense setting -> numbers
    ("search.exceptions",),  # the errors by kind: any search layer raises them
    ("search.studyfile",),  # study files (pydantic schema) and search spaces
    ("search.storage",),  # storage URLs and secrets, stored records, heartbeats
    ("search.study",),  # where a study lives (place), the open study object, create/load, ranking
    ("search.execution",),  # Ray cluster, worker jobs, the trainable, the Tune loop, launch/resume
    ("search.confirm",),  # fresh-seed confirmation
    ("search.results",),  # printed text, export, apply, report
    ("search._runs",),  # one experiment without a search (wemem run) and wemem memscore's mem-scores
    ("search.api",),  # the Python API (notebooks, scripts): the commands as functions
    ("search.cli",),  # the command line
]

# Top-level import names a package must never use (third-party or our own higher packages).
FORBIDDEN_TOP_LEVEL = {
    "wemem": ("optuna", "ray", "objectives", "search"),
    "objectives": ("search", "optuna"),
}


# --------------------------------------------------------------------------------------------------- the checker


def module_name(path: Path, root: Path = ROOT) -> str:
    """``root/search/storage/urls.py`` -> ``search.storage.urls``; ``root/wemem/data/__init__.py`` -> ``wemem.data``."""
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """The file of ``module`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_package(module: str, root: Path = ROOT) -> bool:
    path = module_path(module, root)
    return path is not None and path.name == "__init__.py"


def source_modules(root: Path = ROOT) -> list[str]:
    """Every module of the three packages under ``root``."""
    modules = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                modules.add(module_name(path, root))
    return sorted(modules)


def _existing(module: str, root: Path) -> str:
    """``module`` if it has a file, else its longest prefix that has one (``import a.b.gone`` runs ``a.b``); an
    external module is returned unchanged."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return module
    for end in range(len(parts), 0, -1):
        if module_path(".".join(parts[:end]), root) is not None:
            return ".".join(parts[:end])
    return module


def _parse(module: str, root: Path) -> ast.Module:
    path = module_path(module, root)
    assert path is not None, f"no file for module {module}"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(module: str, root: Path = ROOT) -> list[tuple[str, int]]:
    """Every import in ``module``'s file, anywhere (module level, functions, ``if TYPE_CHECKING:``), as
    ``(imported module, line)``. Relative imports are resolved; ``from pkg import name`` gives ``pkg.name`` when that
    is a module of ours, else ``pkg``. External imports come back as written (``ray.tune``)."""
    package = module if is_package(module, root) else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(_parse(module, root)):
        if isinstance(node, ast.Import):
            found += [(_existing(alias.name, root), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                up = node.level - 1
                assert up < len(parts), f"{module}:{node.lineno}: relative import above the top package"
                base = ".".join(parts[: len(parts) - up])
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                found.append((base, node.lineno))
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if alias.name != "*" and module_path(sub, root) is not None else _existing(base, root)
                found.append((target, node.lineno))
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {module of ours it imports: first line of that import}. Self-imports are dropped."""
    modules = source_modules(root)
    known = set(modules)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module in modules:
        for target, line in imports_of(module, root):
            if target in known and target != module:
                graph[module].setdefault(target, line)
    return graph


def _sccs(graph: dict[str, dict[str, int]] | dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative, so deep graphs don't hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _sample_cycle(graph, component: list[str]) -> list[str]:
    """A shortest circle through the component's first module, staying inside the component (BFS)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return list(reversed(path)) + [start]
            if child in members and child not in seen:
                seen.add(child)
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"no circle through {start} in {component}")


def cycles(graph) -> list[str]:
    """One line per strongly connected component of more than one module: its modules and a sample circle,
    ``a -> b -> c -> a``, followed by the line of each step's import when the graph records lines."""
    found = []
    for component in sorted(c for c in _sccs(graph) if len(c) > 1):
        chain = _sample_cycle(graph, component)
        lines = [f"{a}:{graph[a][b]}" for a, b in itertools.pairwise(chain) if isinstance(graph[a], dict)]
        found.append(
            f"circle of {len(component)} modules {{{', '.join(component)}}}: "
            + " -> ".join(chain)
            + (f"  (import lines {', '.join(lines)})" if lines else "")
        )
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer with the longest prefix matching ``module``; None if it is in no layer. The façade
    ``search`` is above every layer."""
    if module == FACADE:
        return len(layers)
    best, best_length = None, -1
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = i, len(prefix)
    return best


def _layer_label(index: int, layers) -> str:
    return FACADE + " (the façade)" if index == len(layers) else "/".join(layers[index])


def layer_violations(graph: dict[str, dict[str, int]], layers=LAYERS) -> list[str]:
    """Modules in no layer, and imports that go up the layers (or into the façade ``search``)."""
    found = [
        f"module {module} is in no layer; add it to LAYERS"
        for module in sorted(graph)
        if layer_of(module, layers) is None
    ]
    for module in sorted(graph):
        mine = layer_of(module, layers)
        if mine is None:
            continue
        for target, line in sorted(graph[module].items()):
            theirs = layer_of(target, layers)
            if theirs is None:
                continue
            if target == FACADE:
                found.append(
                    f"{module} (line {line}) imports the façade package {FACADE}; import the module "
                    f"that defines the name instead"
                )
            elif theirs > mine:
                found.append(
                    f"{module} (line {line}) imports {target}: layer {_layer_label(mine, layers)} "
                    f"may not import the higher layer {_layer_label(theirs, layers)}"
                )
    return found


def forbidden_import_violations(root: Path = ROOT) -> list[str]:
    """``wemem`` uses no Optuna/Ray/objectives/search; ``objectives`` uses no search/Optuna (by top-level name)."""
    found = []
    for module in source_modules(root):
        forbidden = FORBIDDEN_TOP_LEVEL.get(module.split(".")[0], ())
        for target, line in imports_of(module, root):
            top = target.split(".")[0]
            if top in forbidden:
                found.append(f"{module} (line {line}) imports {target}: {module.split('.')[0]} may not use {top}")
    return found


def _registries_defined(tree: ast.Module) -> list[str]:
    """Names bound at module level to ``Registry(...)``."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if isinstance(value, ast.Call):
            func = value.func
            func_name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if func_name == "Registry":
                names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _registers_into(tree: ast.Module) -> set[str]:
    """Registry names this file registers into: ``NAME.register(...)`` (decorator or plain call) where the file
    defines or imports ``NAME``, or ``something.NAME.register(...)`` (a registry reached through an import)."""
    bound = set(_registries_defined(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            bound |= {alias.asname or alias.name for alias in node.names}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in bound:
                names.add(owner.id)
            elif isinstance(owner, ast.Attribute):
                names.add(owner.attr)
    return names


def registry_violations(root: Path = ROOT) -> list[str]:
    """A module defining ``NAME = Registry(...)`` that imports (anywhere in its file) a module registering into
    ``NAME``."""
    modules = source_modules(root)
    trees = {m: _parse(m, root) for m in modules}
    registers = {m: _registers_into(t) for m, t in trees.items()}
    found = []
    for module, tree in trees.items():
        for name in _registries_defined(tree):
            for target, line in imports_of(module, root):
                if target != module and name in registers.get(target, ()):
                    found.append(
                        f"{module} (line {line}) defines the registry {name} and imports its entry "
                        f"module {target}; let the package __init__ import the entries"
                    )
    return sorted(set(found))


def _listing(title: str, violations: list[str]) -> str:
    return f"{len(violations)} {title}:\n  " + "\n  ".join(violations)


# ---------------------------------------------------------------------------------------- the real source


def test_the_graph_sees_the_source():
    graph = import_graph()
    assert len(graph) >= 40, f"only {len(graph)} modules found under {ROOT}: wrong root?"
    for package in PACKAGES:
        assert package in graph, f"package {package} not found under {ROOT}"
    assert sum(len(targets) for targets in graph.values()) >= 40, "almost no imports between our modules found"


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, _listing("import circles (a submodule must import siblings, never its package)", found)


def test_imports_follow_the_layers():
    found = layer_violations(import_graph()) + forbidden_import_violations()
    assert not found, _listing("layer violations (see LAYERS in tests/test_layout.py)", found)


def test_registries_do_not_import_their_entries():
    found = registry_violations()
    assert not found, _listing("registries importing their own entries", found)


# -------------------------------------------------------------------------- the checker on synthetic trees


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_names_modules(tmp_path):
    assert module_name(tmp_path / "search/storage/urls.py", tmp_path) == "search.storage.urls"
    assert module_name(tmp_path / "wemem/data/__init__.py", tmp_path) == "wemem.data"
    assert module_name(tmp_path / "search/__init__.py", tmp_path) == "search"


def test_checker_finds_a_two_module_circle(tmp_path):
    _write(
        tmp_path,
        {
            "wemem/__init__.py": "",
            "wemem/a.py": "from wemem import b\n",
            "wemem/b.py": "import wemem.a\n",
            "wemem/c.py": "from .a import x\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["wemem.c"] == {"wemem.a": 1}
    found = cycles(graph)
    assert len(found) == 1 and "wemem.a -> wemem.b -> wemem.a" in found[0], found


def test_checker_finds_a_lazy_and_type_checking_circle(tmp_path):
    _write(
        tmp_path,
        {
            "wemem/__init__.py": "",
            "wemem/a.py": "def f():\n    from .b import g\n    return g\n",
            "wemem/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import h\n",
            "wemem/c.py": "class K:\n    def m(self):\n        import wemem.a\n",
        },
    )
    found = cycles(import_graph(tmp_path))
    assert (
        len(found) == 1
        and "wemem.a -> wemem.b -> wemem.c -> wemem.a  (import lines wemem.a:2, wemem.b:3, wemem.c:3)" in found[0]
    )


def test_checker_finds_a_submodule_importing_its_package(tmp_path):
    _write(
        tmp_path,
        {
            "search/__init__.py": "",
            "search/study/__init__.py": "from .place import where\n",
            "search/study/place.py": "def where(): ...\n",
            "search/study/ranking.py": "from . import where\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["search.study"] == {"search.study.place": 1}
    assert graph["search.study.ranking"] == {"search.study": 1}  # `where` is a name, not a module
    assert cycles(graph) == []
    _write(
        tmp_path,
        {
            "search/study/place.py": "from . import ranking\nfrom search.study import ranking as r\n",
            "search/study/__init__.py": "from .place import where\nfrom . import ranking\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["search.study.place"] == {"search.study.ranking": 1}
    found = cycles(graph)
    assert len(found) == 1 and "search.study -> search.study.ranking -> search.study" in found[0], found


def test_checker_resolves_relative_imports(tmp_path):
    _write(
        tmp_path,
        {
            "wemem/__init__.py": "from . import data\n",
            "wemem/errors.py": "",
            "wemem/data/__init__.py": "from . import loaders\nfrom .registry import DATASETS\n",
            "wemem/data/registry.py": "from ..errors import require\nfrom .. import errors\n",
            "wemem/data/loaders.py": "from .registry import DATASETS\nfrom ..data import registry\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["wemem"] == {"wemem.data": 1}
    assert graph["wemem.data"] == {"wemem.data.loaders": 1, "wemem.data.registry": 2}
    assert graph["wemem.data.registry"] == {"wemem.errors": 1}
    assert graph["wemem.data.loaders"] == {"wemem.data.registry": 1}
    assert cycles(graph) == []


def test_checker_reports_upward_layer_imports(tmp_path):
    _write(
        tmp_path,
        {
            "wemem/__init__.py": "",
            "wemem/core.py": "import optuna\n",
            "objectives/__init__.py": "from wemem import core\n",
            "search/__init__.py": "from .cli import main\nfrom .storage import urls\n",
            "search/storage/__init__.py": "",
            "search/storage/urls.py": "from search.study import place\n",
            "search/study/__init__.py": "",
            "search/study/place.py": "from search.storage.urls import url\n",
            "search/cli/__init__.py": "",
            "search/cli/main.py": "import search\nfrom ..study import place\n",
            "search/flat.py": "",
        },
    )
    graph = import_graph(tmp_path)
    found = layer_violations(graph)
    assert "module search.flat is in no layer; add it to LAYERS" in found
    assert any(v.startswith("search.storage.urls (line 1) imports search.study.place") for v in found), found
    assert any(v.startswith("search.cli.main (line 1) imports the façade package search") for v in found), found
    assert not any(
        v.startswith(("search (", "objectives", "search.study.place", "search.cli.main (line 2)")) for v in found
    ), found
    assert len(found) == 3, found
    assert forbidden_import_violations(tmp_path) == ["wemem.core (line 1) imports optuna: wemem may not use optuna"]
    assert layer_of("search.storage.urls") == 4 and layer_of("search.cli_confirm") is None
    assert layer_of("search") == len(LAYERS) and layer_of("wemem.data.loaders") == 0


def test_checker_reports_a_registry_importing_its_entry(tmp_path):
    _write(
        tmp_path,
        {
            "wemem/__init__.py": "",
            "wemem/registry.py": "class Registry: ...\n",
            "wemem/models/__init__.py": "from .registry import MODELS\nfrom . import cnn\n",
            "wemem/models/registry.py": (
                "from ..registry import Registry\nMODELS: Registry[int] = Registry('model')\n"
                "def build():\n    from .cnn import resnet\n"
            ),
            "wemem/models/cnn.py": "from .registry import MODELS\n@MODELS.register('resnet')\ndef resnet(): ...\n",
            "wemem/attacks/__init__.py": "from . import base, lira\n",
            "wemem/attacks/base.py": (
                "from ..registry import Registry\nATTACKS = Registry('attack')\nATTACKS.register('x')(int)\n"
            ),
            "wemem/attacks/lira.py": "from .base import ATTACKS\nATTACKS.register('lira')(int)\n",
            "wemem/attacks/other.py": "from ..models import MODELS\n",
        },
    )
    found = registry_violations(tmp_path)
    assert found == [
        (
            "wemem.models.registry (line 4) defines the registry MODELS and imports its entry module "
            "wemem.models.cnn; let the package __init__ import the entries"
        )
    ], found
