"""The import graph of the molediff package runs downhill (issue 26, item 4).

Every module of the package is found with :func:`pkgutil.walk_packages`, its source parsed with
:mod:`ast`, and every import of a molediff module (at the top AND inside functions: a lazy import is
still a dependency) becomes an edge; imports under ``if TYPE_CHECKING:`` are left out (they never run:
annotations only). A package's ``__init__`` is its own node (``molediff.chem``),
distinct from its submodules; importing ``molediff.chem.io`` is an edge to ``molediff.chem.io`` only.

Checked: (1) no cycle among molediff modules; (2) the layer rules below.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from functools import lru_cache
from pathlib import Path

import molediff

#: chem is the bottom of the molecular stack: it may use these and itself, nothing above.
CHEM_ALLOWED = ("molediff.chem", "molediff.elements", "molediff.errors", "molediff.atomic")
#: metrics takes its reference data as arguments: it never reaches for data or anything that runs it.
METRICS_FORBIDDEN = ("molediff.data", "molediff.sampling", "molediff.training", "molediff.commands", "molediff.commands.evaluate")
#: the DDPM core is domain-agnostic: nothing molecular (or anything else of molediff) below it.
DIFFUSION_ALLOWED = ("molediff.diffusion", "molediff.errors")
#: the graph and the state of a batch sit below the molecular diffusion and the networks (issue 39)
STATE = ("molediff.graph", "molediff.state")
STATE_ALLOWED = STATE + ("molediff.config", "molediff.diffusion", "molediff.elements", "molediff.errors")
#: the molecular diffusion and its neighbours read no data layer (PyG, the QM9 loader) and nothing that runs them
MOLECULAR = STATE + ("molediff.molecular", "molediff.guidance", "molediff.draws")
MOLECULAR_FORBIDDEN = ("molediff.data", "molediff.sampling", "molediff.training", "molediff.commands", "molediff.commands.evaluate",
                       "molediff.inpainting")
#: a network sees its inputs and the graph, never the diffusion that calls it
MODELS_FORBIDDEN = MOLECULAR_FORBIDDEN + ("molediff.molecular", "molediff.state", "molediff.guidance", "molediff.draws")

#: Edges allowed to break the rules for now, each with the reason; remove an entry once its caller is
#: moved (the test fails when an exception is no longer needed, so the list cannot go stale).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    """Every module of the package -> its source file."""
    found = {"molediff": Path(molediff.__file__)}
    for info in pkgutil.walk_packages(molediff.__path__, "molediff."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin, info.name
        if spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


def _resolve(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:``."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=1)
def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported molediff module: first line number}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only = {id(n) for guard in ast.walk(tree) if _is_type_checking(guard) for stmt in guard.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for a in node.names:  # `from molediff.chem import io` imports the submodule molediff.chem.io
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                targets = [node.args[0].value]
            for target in targets:
                while target and target not in modules and "." in target:  # `import molediff.chem.io.x` -> nearest module
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle path (``a -> b -> ... -> a``) per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # the graph is small (~60 nodes): recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for comp in components:
        start = min(comp)
        # breadth-first search inside the component for the shortest way back to start
        parent: dict[str, str] = {}
        frontier, seen, end = [start], {start}, None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w not in comp:
                        continue
                    if w == start:
                        end = v
                        break
                    if w not in seen:
                        seen.add(w)
                        parent[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [end]
        while path[-1] != start:
            path.append(parent[path[-1]])
        cycles.append([start, *reversed(path[:-1]), start])
    return cycles


def _describe(path: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"


def test_walk_finds_the_package():
    modules = _modules()
    for name in ("molediff.chem.io", "molediff.metrics", "molediff.data.reference", "molediff.commands.evaluate", "molediff.diffusion.schedule"):
        assert name in modules
    assert "molediff.metrics" in _graph()["molediff.data.reference"]  # function-level imports are seen too


def test_no_import_cycles():
    graph = {a: {b: n for b, n in edges.items() if (a, b) not in KNOWN_EXCEPTIONS} for a, edges in _graph().items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles among molediff modules:\n" + "\n".join(_describe(c, graph) for c in cycles)


def _violations() -> list[tuple[str, str, int, str]]:
    out = []
    for name, edges in _graph().items():
        for target, line in edges.items():
            if _in(name, ("molediff.chem",)) and not _in(target, CHEM_ALLOWED):
                out.append((name, target, line, f"chem may import only {', '.join(CHEM_ALLOWED)}"))
            if _in(name, ("molediff.metrics",)) and _in(target, METRICS_FORBIDDEN):
                out.append((name, target, line, "metrics takes its references as arguments; it imports no data or runner"))
            if _in(name, ("molediff.diffusion",)) and not _in(target, DIFFUSION_ALLOWED):
                out.append((name, target, line, "the diffusion core is domain-agnostic"))
            if _in(name, STATE) and not _in(target, STATE_ALLOWED):
                out.append((name, target, line, f"the graph and state types may import only {', '.join(STATE_ALLOWED)}"))
            if _in(name, MOLECULAR) and _in(target, MOLECULAR_FORBIDDEN):
                out.append((name, target, line, "the molecular diffusion reads no data layer and nothing that runs it"))
            if _in(name, ("molediff.models",)) and _in(target, MODELS_FORBIDDEN):
                out.append((name, target, line, "a network sees its inputs and the graph, not the diffusion or the data"))
    return out


def test_layer_rules():
    bad = [v for v in _violations() if (v[0], v[1]) not in KNOWN_EXCEPTIONS]
    assert not bad, "imports against the layer rules:\n" + "\n".join(f"{a} line {n} imports {b}: {why}" for a, b, n, why in bad)


def test_known_exceptions_are_still_needed():
    """An exception whose edge is gone must leave the list (so that it cannot come back unnoticed)."""
    graph = _graph()
    stale = [edge for edge in KNOWN_EXCEPTIONS if edge[1] not in graph.get(edge[0], {})]
    assert not stale, f"these known exceptions are no longer needed; delete them from KNOWN_EXCEPTIONS: {stale}"


def test_cycle_finder_reports_the_path():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    (cycle,) = _cycles(graph)
    assert cycle == ["a", "b", "c", "a"]
    assert _describe(cycle, graph) == "a (line 1) -> b (line 2) -> c (line 3) -> a"
    assert _cycles({"a": {"b": 1}, "b": {}}) == []
