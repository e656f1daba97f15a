"""The layout's promises: the import rules, what ``import accel`` loads, unit sizes.

The import rules are read statically, with the AST, from every ``.py`` under ``accel/``:
imports inside functions and under ``TYPE_CHECKING`` count as much as those at the top, and
relative imports are resolved. They fail on:

* an import cycle between accel modules;
* ``accel`` importing ``models``, anywhere (the data library stands without the models);
* a private name (leading underscore) imported from another module; this one also over
  ``models``, ``benchmarks`` and the flat scripts;
* the dependency direction broken. The layers are ``accel.io`` <- ``accel.data`` <-
  ``accel.train`` and ``accel.deploy``: a module of a layer depends only on its own layer and
  the layers below it, directly or through any other accel module (so ``accel.cli`` or
  ``accel.telemetry`` may serve every layer only while they depend on none above it). ``train``
  and ``deploy`` stand side by side and neither depends on the other: a deployed model needs
  no optimizer, a training run no exporter; what both need goes down into ``data`` or ``io``.
  The rest of ``accel`` (``inspect``, ``prepare``, ``index``, ``demo``, the package itself)
  sits on top and may use every layer.

The checker is plain functions over a root folder, so the tests below also run it on a copy
of ``accel`` with a violation planted, to show that it fails.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train.py", "evaluate.py", "test.py", "predict.py")
SOURCES = [*sorted((ROOT / "accel").rglob("*.py")), *sorted((ROOT / "models").rglob("*.py")),
           *sorted((ROOT / "benchmarks").rglob("*.py")), *(ROOT / s for s in SCRIPTS)]
MAX_FUNCTION_LINES = 80

OURS = ("accel", "models", "benchmarks")  # the packages whose private names stay private
LAYER_RANK = {"accel.io": 0, "accel.data": 1, "accel.train": 2, "accel.deploy": 2}
# (importer, imported) pairs the rules let through for now, each with the reason it goes.
ALLOWED: set[tuple[str, str]] = set()  # (importer, "models") pairs excused from the rule: none


# --------------------------------------------------------------------------- the checker
@dataclass(frozen=True)
class Import:
    importer: str      # the importing module, e.g. accel.io.decord
    target: str        # the module imported (a submodule where ``from pkg import mod`` names one)
    name: str | None   # the name taken from ``target`` (``from target import name``); None: the module
    where: str         # file:line of the import statement


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_imports(root: Path, paths: list[Path]) -> list[Import]:
    """Every import statement in ``paths`` (files under ``root``), relative ones resolved."""
    modules = {module_name(root, p) for top in OURS for p in (root / top).rglob("*.py")}
    found = []
    for path in paths:
        importer = module_name(root, path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [Import(importer, a.name, None, where) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    found.append(Import(importer, sub, None, where) if sub in modules
                                 else Import(importer, source, a.name, where))
    return found


def private_imports(found: list[Import]) -> list[str]:
    """``from other_module import _name`` within our packages."""
    return [f"{i.where}: {i.name} imported from {i.target}" for i in found
            if i.name and i.name.startswith("_") and not i.name.startswith("__")
            and i.target.split(".")[0] in OURS and i.target != i.importer]


def import_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (a module list, first = last) per strongly connected group (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph.get(v, {})):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return [_shortest_cycle(graph, group) for group in groups]


def _shortest_cycle(graph: dict[str, dict[str, str]], group: list[str]) -> list[str]:
    start, inside = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in inside and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def _layer(module: str) -> str | None:
    return next((layer for layer in LAYER_RANK if module == layer or module.startswith(layer + ".")), None)


def _may_use(layer: str, other: str) -> bool:
    return other == layer or LAYER_RANK[other] < LAYER_RANK[layer]


def _reach(graph: dict[str, dict[str, str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in graph.get(todo.pop(), {}):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def layout_problems(root: Path) -> list[str]:
    """Every break of the import rules (module docstring) in ``root/accel``, one line each."""
    found = find_imports(root, sorted((root / "accel").rglob("*.py")))
    problems = [f"{i.where}: accel imports {i.target}" for i in found
                if i.target.split(".")[0] == "models" and (i.importer, i.target.split(".")[0]) not in ALLOWED]
    problems += private_imports(found)
    graph: dict[str, dict[str, str]] = {}  # importer -> {imported accel module: where}
    for i in found:
        if i.target.split(".")[0] == "accel" and i.target != i.importer:
            graph.setdefault(i.importer, {}).setdefault(i.target, i.where)
    for cycle in import_cycles(graph):
        wheres = ", ".join(graph[a][b] for a, b in zip(cycle, cycle[1:]))
        problems.append(f"import cycle: {' -> '.join(cycle)} ({wheres})")
    for importer, targets in sorted(graph.items()):
        layer = _layer(importer)
        if layer is None:
            continue
        for target, where in sorted(targets.items()):
            if _layer(target) is not None and _may_use(layer, str(_layer(target))):
                continue  # a layer it may use: that layer's own imports are checked there
            above = sorted(m for m in _reach(graph, target)
                           if _layer(m) is not None and not _may_use(layer, _layer(m)))
            if above:
                first = target if target in above else above[0]
                via = "" if first == target else f", which leads to {', '.join(above[:3])}"
                problems.append(f"{where}: {importer} imports {target}{via} ({layer.split('.')[1]} "
                                f"must not depend on {str(_layer(first)).split('.')[1]})")
    return problems


# --------------------------------------------------------------------------- the rules, on the tree
def test_import_rules_hold():
    problems = layout_problems(ROOT)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_the_tree():
    """Guards against a checker that passes because it reads nothing."""
    found = find_imports(ROOT, sorted((ROOT / "accel").rglob("*.py")))
    pairs = {(i.importer, i.target) for i in found}
    assert ("accel.io.decord", "accel.io.fallback") in pairs  # relative, at the top
    assert ("accel.io.decord", "decord") in pairs             # inside a method


@pytest.mark.parametrize("tree", ["models", "benchmarks", "scripts"])
def test_no_private_name_imported_across_modules(tree):
    paths = [ROOT / s for s in SCRIPTS] if tree == "scripts" else sorted((ROOT / tree).rglob("*.py"))
    crossings = private_imports(find_imports(ROOT, paths))
    assert not crossings, "\n".join(crossings)


# Each planted into a copy of accel, inside a function: the lines appended, the problem expected.
PLANTS = {
    "models": ("accel/io/reader.py", "from models import x", "accel imports models"),
    "cycle": ("accel/io/index.py", "from .backends import open_video", "import cycle: "),
    "private": ("accel/data/batch.py", "from .manifests import _resolve",
                "_resolve imported from accel.data.manifests"),
    "upward": ("accel/io/frames.py", "from ..data.sampling import sample_indices",
               "accel.io.frames imports accel.data.sampling (io must not depend on data)"),
    "sideways": ("accel/deploy/perf.py", "import accel.train.losses",
                 "accel.deploy.perf imports accel.train.losses (deploy must not depend on train)"),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_the_checker_fails_on_a_planted_violation(tmp_path, plant):
    shutil.copytree(ROOT / "accel", tmp_path / "accel", ignore=shutil.ignore_patterns("__pycache__"))
    file, statement, expected = PLANTS[plant]
    path = tmp_path / file
    text = path.read_text()
    path.write_text(f"{text}\n\ndef _planted():\n    {statement}\n")
    line = text.count("\n") + 4
    hits = [p for p in layout_problems(tmp_path) if f"{file}:{line}" in p]
    assert hits and expected in hits[0], f"planted {statement!r} in {file}:{line}; reported: {hits}"


# --------------------------------------------------------------------------- what import accel loads
def _new_modules(statement: str) -> list[str]:
    """Modules that ``statement`` loads beyond what ``import torch`` already did, in a fresh interpreter."""
    code = ("import json, sys, torch; before = set(sys.modules); "
            f"{statement}; print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_accel_loads_only_decoding_and_data():
    """The heavy third-party modules the static rules cannot see stay out of ``import accel``."""
    loaded = _new_modules("import accel")
    assert "accel.io" in loaded and "accel.data" in loaded  # the check itself can see modules
    for forbidden in ("models", "matplotlib", "sklearn", "torch.distributed", "accel.train",
                      "accel.deploy", "accel.data.dali", "nvidia.dali"):
        hits = [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")]
        assert not hits, f"import accel loads {hits}"


# --------------------------------------------------------------------------- unit sizes
def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in SOURCES for f in _functions(ast.parse(p.read_text()))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_the_longest_files_run_first_and_exist():
    """conftest's LONGEST_FILES_FIRST names real files (a renamed one would silently lose its
    place at the front of the run)."""
    from tests.conftest import LONGEST_FILES_FIRST

    missing = [name for name in LONGEST_FILES_FIRST if not (ROOT / name).is_file()]
    assert not missing, missing
