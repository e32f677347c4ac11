"""The package's shape: no import circles, kernels that import nothing from the package above them, and
an ``import microast_fast`` that pulls in neither triton nor the benchmark harness."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> package name, as setup.py installs them.
SOURCES = {ROOT / "microast_fast": "microast_fast", ROOT / "kernels": "microast_fast.kernels"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if folder == ROOT / "microast_fast" and parts[0] == "kernels":
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def top_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level (assignments, definitions, imports)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def imports(name: str, path: Path, paths: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (function bodies included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            # "from a import b": module a.b if there is one, else a name that module a binds (running a);
            # anything else is a module not written in Python (the CUDA extension).
            bound = top_level_names(paths[base]) if base in paths else set()
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths or alias.name not in bound else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in paths and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, found) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with the path that does (depth-first search)."""
    found = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append(path + [start])
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_graph_is_read_as_python_imports_it():
    graph = import_graph()
    assert "microast_fast.backends.base" in graph["microast_fast.backends.torch_backend"]
    assert "microast_fast.kernels.encoder_head" in graph["microast_fast.kernels"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                                       ["c", "a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_kernels_import_nothing_from_the_package_above():
    upward = {(name, target) for name, targets in import_graph().items() if name.startswith("microast_fast.kernels")
              for target in targets if not target.startswith("microast_fast.kernels")}
    assert not upward, sorted(upward)


def test_importing_the_package_loads_no_triton_and_no_benchmark_harness():
    script = ("import sys, microast_fast; print(sorted(m for m in sys.modules "
              "if m.split('.')[0] == 'triton' or m.startswith(('microast_fast.bench', 'microast_fast.kernels'))))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
