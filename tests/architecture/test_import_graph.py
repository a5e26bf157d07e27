"""The library's import graph (module-level and deferred imports) has no cycle, and never reaches the lab."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in (SRC / "vectorgate").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: pathlib.Path, name: str, modules: dict[str, pathlib.Path]) -> set[str]:
    """Modules of the library that ``name`` imports, at module level or deferred inside a
    function (a deferred import that closes a cycle only hides it); ``if TYPE_CHECKING:``
    blocks are left out."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(body: list[ast.AST]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            visit(list(ast.iter_child_nodes(node)))
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
    visit(tree.body)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _imports(path, name, modules)
        # A package's submodule importing the package itself would be a cycle through __init__.
        graph[name] = deps
    return graph


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert graph.get("vectorgate.patching.core"), "the graph was not built"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_shadows_the_standard_library():
    import sys

    stdlib = set(sys.stdlib_module_names)
    shadowing = [name for name in _modules() if name.split(".")[-1] in stdlib]
    assert shadowing == []


def _lab_imports(path: pathlib.Path) -> list[str]:
    """Every import of ``vectorgate_lab`` in ``path``: module-level, deferred inside a function,
    under ``if TYPE_CHECKING:``, or by name through ``importlib.import_module`` / ``__import__``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func.endswith(("import_module", "__import__")) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path.name}:{node.lineno}: {n}" for n in names
                  if n == "vectorgate_lab" or n.startswith("vectorgate_lab.")]
    return found


def test_the_library_never_imports_the_lab():
    """The lab (lab/src/vectorgate_lab) imports the library, never the other way round."""
    modules = _modules()
    assert "vectorgate.cli" in modules, "the library's modules were not found"
    found = [f"{name}: {hit}" for name, path in modules.items() for hit in _lab_imports(path)]
    assert found == []


def test_the_lab_import_finder_finds_each_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import vectorgate_lab\n"
        "def f():\n    from vectorgate_lab.compare import TASKS\n"
        "import importlib\nimportlib.import_module('vectorgate_lab.bench')\n"
        "import vectorgate_labs\nfrom vectorgate import gate\n"
    )
    hits = _lab_imports(probe)
    assert [h.split(": ", 1)[1] for h in hits] == ["vectorgate_lab", "vectorgate_lab.compare", "vectorgate_lab.bench"]
