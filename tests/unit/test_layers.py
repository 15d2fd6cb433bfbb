"""The layers hold in the imports: each package of harness/ imports only the packages below it,
analysis reads only the store's schema and the paper's facts, and no modules import each other.

Reads the source (every import, at module level or inside a function, TYPE_CHECKING ones too);
imports nothing of the harness, needs no network or model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())

# What each layer may import from harness/ and analysis/ besides itself. A layer is a package or a
# single module; the longest matching name decides. The top (cli, worker, status, display, enqueue,
# tuning, bench, hf_trainer, baseline) may import anything.
ERRORS = "harness.errors"
ALLOWED: dict[str, set[str]] = {
    "harness.errors": set(),
    "harness.protocol": {ERRORS},
    "harness.noise": {ERRORS},
    "harness.runtime": {ERRORS},
    "harness.training": {ERRORS, "harness.protocol", "harness.noise", "harness.runtime"},
    # The store writes what a job hands back: the RunResult and the records inside it.
    "harness.store": {ERRORS, "harness.protocol", "harness.training.runner",
                      "harness.training.artifacts", "harness.noise.sets"},
    # The store's schema and the paper's facts (no data loading, no queue verbs, no training),
    # and the names of the token-change metrics noisy jobs store (harness.noise.tokens).
    "analysis": {"harness.store.db", "harness.store.jobs", "harness.store.packing",
                 "harness.protocol.paper", "harness.protocol.tasks", "harness.protocol.spec",
                 "harness.protocol.grids", "harness.noise.tokens"},
}
TOP = {"harness.cli", "harness.worker", "harness.status", "harness.display", "harness.enqueue",
       "harness.tuning", "harness.bench", "harness.hf_trainer", "harness.baseline", "harness"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in ("harness", "analysis"):
        for path in (REPO / pkg).rglob("*.py"):
            if "versions" not in path.parts:  # Alembic revisions import only alembic/sqlalchemy
                found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every harness/analysis import in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from harness.store import db` imports the module harness.store.db
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in ("harness", "analysis"):
                out.append((t, node.lineno, id(node) in top_level))
    return out


def _layer(module: str) -> str | None:
    matches = [layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def _allowed(importer: str, imported: str) -> bool:
    if importer in TOP:
        return True
    layer = _layer(importer)
    assert layer is not None, f"{importer} belongs to no layer: add it to ALLOWED or TOP"
    if imported == layer or imported.startswith(layer + "."):
        return True
    return any(imported == a or imported.startswith(a + ".") for a in ALLOWED[layer])


MODULES = _modules()
EDGES = [(name, *imp) for name, path in sorted(MODULES.items())
         for imp in _imports(name, path, set(MODULES))]


def test_the_source_is_read():
    # a reader that found nothing would pass every test below
    assert len(MODULES) > 40 and len(EDGES) > 100
    assert ("harness.training.finetune", "harness.protocol.data") in {(a, b) for a, b, *_ in EDGES}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer):
    bad = [f"{a} imports {b} (line {line})" for a, b, line, _ in EDGES
           if _layer(a) == layer and a not in TOP and not _allowed(a, b)]
    assert not bad, "\n".join(bad)


def test_every_module_belongs_to_a_layer():
    assert not [m for m in MODULES if m not in TOP and _layer(m) is None]


def test_no_import_circles():
    """Module-level imports form no cycle between modules (a package's __init__ aside)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, top in EDGES:
        if top and b in graph and a != b and not MODULES[a].name == "__init__.py":
            graph[a].add(b)
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_packages_depend_on_each_other_without_a_circle():
    """Every import counted, lazy ones too: a package never reaches back to one that uses it."""
    def package(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if parts[0] == "harness" and len(parts) > 2 else parts[0]
    graph: dict[str, set[str]] = {}
    for a, b, *_ in EDGES:
        pa, pb = package(a), package(b)
        if pa != pb and a not in TOP:
            graph.setdefault(pa, set()).add(pb)
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            n = todo.pop()
            assert n != start, f"package {start} reaches itself through {sorted(seen)}"
            if n not in seen:
                seen.add(n)
                todo.extend(graph.get(n, ()))
