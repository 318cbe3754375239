"""The floors of DESIGN.md's layout, read off the source with ``ast``: a lower floor never
imports a higher one, no module imports itself back through others, and outside the
doors no ``tspipe`` import hides inside a function.

Floors, top to bottom: doors (every way in) > stages > the science (pretrain, extract,
localize) > data and models > runtime > the base modules (config, paths, provenance, io,
errors, reporting). catalog, tracking and dvc_inputs sit at the side: only doors (and
they themselves) use them. Doors may import lazily inside a command (start-up time of
``tspipe``); nothing else needs to.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

FLOORS = {"doors": 6, "stages": 5, "pretrain": 3, "extract": 3, "localize": 3, "data": 2,
          "models": 2, "runtime": 1}
SIDE = ("catalog", "tracking", "dvc_inputs")


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    in_function: bool


def imports(mods: dict[str, Path]) -> list[Import]:
    """Every ``tspipe`` import of every module, resolved to the module it loads."""
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nested = {id(node) for fn in ast.walk(tree)
                  if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                  for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import mod`` loads pkg.mod; ``from mod import name``, mod
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                           else node.module for a in node.names]
            else:
                continue
            for target in targets:
                if not target.startswith("tspipe"):
                    continue
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    found.append(Import(name, target, node.lineno, id(node) in nested))
    return sorted(set(found), key=lambda e: (e.source, e.line, e.target))


def floor(module: str) -> int:
    """``tspipe.X...``'s floor; the side modules and the base modules are 0."""
    if module == "tspipe.__main__":
        return FLOORS["doors"]
    part = module.split(".")[1] if "." in module else ""
    return FLOORS.get(part, 0)


def is_side(module: str) -> bool:
    return module.split(".")[1:2] in ([s] for s in SIDE)


def upward(edges: list[Import]) -> list[str]:
    bad = []
    for e in edges:
        if floor(e.target) > floor(e.source):
            bad.append(f"{e.source}:{e.line} imports {e.target}, a higher floor")
        elif is_side(e.target) and not (is_side(e.source) or floor(e.source) == FLOORS["doors"]):
            bad.append(f"{e.source}:{e.line} imports {e.target}: only doors record results")
    return bad


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


@pytest.fixture(scope="module")
def edges() -> list[Import]:
    return imports(modules())


def test_no_floor_imports_a_higher_one(edges):
    assert upward(edges) == []


def test_no_import_cycles(edges):
    assert cycles(edges) == []


def test_no_import_hides_in_a_function_outside_the_doors(edges):
    hidden = [f"{e.source}:{e.line} imports {e.target} inside a function"
              for e in edges if e.in_function and floor(e.source) != FLOORS["doors"]]
    assert hidden == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A tree with an upward import, a cycle hidden in a function and a stage that
    records into the catalog: each check names it."""
    pkg = tmp_path / "tspipe"
    for rel, text in {
        "__init__.py": "",
        "config.py": "from tspipe.stages.run import go\n",
        "stages/__init__.py": "",
        "stages/run.py": "from tspipe.catalog.api import Catalog\n"
                         "def go():\n    from tspipe.data.synth import make\n",
        "data/__init__.py": "",
        "data/synth.py": "from tspipe.stages import run\n",
        "catalog/__init__.py": "",
        "catalog/api.py": "Catalog = object\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    found = imports(modules(tmp_path))
    assert sorted(upward(found)) == [
        "tspipe.config:1 imports tspipe.stages.run, a higher floor",
        "tspipe.data.synth:1 imports tspipe.stages.run, a higher floor",
        "tspipe.stages.run:1 imports tspipe.catalog.api: only doors record results",
    ]
    assert cycles(found) == [["tspipe.data.synth", "tspipe.stages.run"]]
    assert [(e.source, e.target) for e in found if e.in_function] == [
        ("tspipe.stages.run", "tspipe.data.synth")]
