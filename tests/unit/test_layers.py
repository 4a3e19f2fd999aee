"""The package's layers only point down, and its modules form no import cycle.

domain (pure) <- storage <- actors <- api <- node; benchmarks/ and sim/ sit on top
and nothing in the product imports them. Every import counts, also those inside
functions (a function-level import is still a dependency, only a hidden one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "storage", "actors", "api", "node", "benchmarks", "sim")
RANK = {name: i for i, name in enumerate(LAYERS)}
# The domain is pure: rules, models, codecs. None of these in it.
IMPURE = ("ray", "psycopg", "sqlalchemy", "duckdb", "aiohttp", "httpx", "fastapi", "starlette",
          "uvicorn", "socket", "asyncio", "subprocess")  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found["paynode." + ".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.append((node.lineno, base))
            # `from package import module` depends on the module itself
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names
                    if f"{base}.{a.name}" in MODULES]  # fmt: skip
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "paynode" and parts[1] in RANK else None


def test_every_import_uses_the_one_import_name() -> None:
    """No bare `node`, `api`, ... imports: they would resolve to a user's node.py."""
    bare = []
    for path in [*MODULES.values(), *sorted((REPO / "tests").rglob("*.py"))]:
        for line, imported in _imports("tests.x", path):
            if imported.split(".")[0] in RANK:
                bare.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not bare, "\n".join(bare)


def test_layers_point_down() -> None:
    upward = []
    for module, path in MODULES.items():
        own = _layer(module)
        assert own is not None
        for line, imported in _imports(module, path):
            target = _layer(imported)
            if target is not None and RANK[target] > RANK[own]:
                upward.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {imported}")
    assert not upward, "\n".join(upward)


def test_the_domain_is_pure() -> None:
    impure = []
    for module, path in MODULES.items():
        if _layer(module) != "domain":
            continue
        for line, imported in _imports(module, path):
            if imported.split(".")[0] in IMPURE:
                impure.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not impure, "\n".join(impure)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, imported in _imports(module, path):
            # a module, or the package whose __init__ defines the name
            target = imported if imported in MODULES else imported.rpartition(".")[0]
            if target in MODULES and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert not _cycles(_graph())


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_has_modules(layer: str) -> None:
    """A renamed folder must not make the checks above pass vacuously."""
    assert any(_layer(m) == layer for m in MODULES)
