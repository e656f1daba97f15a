"""The layout's promises: what ``import accel`` loads, unit sizes, no private names across modules."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((ROOT / "accel").rglob("*.py")), *sorted((ROOT / "models").rglob("*.py")),
           *sorted((ROOT / "benchmarks").rglob("*.py")), ROOT / "train.py", ROOT / "evaluate.py", ROOT / "predict.py",
           ROOT / "test.py"]
MAX_FUNCTION_LINES = 80


def _new_modules(statement: str) -> list[str]:
    """Modules that ``statement`` loads beyond what ``import torch`` already did, in a fresh interpreter."""
    code = ("import json, sys, torch; before = set(sys.modules); "
            f"{statement}; print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_accel_loads_only_decoding_and_data():
    loaded = _new_modules("import accel")
    assert "accel.io" in loaded and "accel.data" in loaded  # the check itself can see modules
    for forbidden in ("models", "matplotlib", "sklearn", "torch.distributed", "accel.train",
                      "accel.deploy", "accel.data.dali", "nvidia.dali"):
        hits = [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")]
        assert not hits, f"import accel loads {hits}"


def test_the_data_library_stands_without_models():
    loaded = _new_modules("import accel.train.engine, accel.train.evaluation, accel.deploy.export, "
                          "accel.data.dali")
    assert not [m for m in loaded if m == "models" or m.startswith("models.")]


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in SOURCES for f in _functions(ast.parse(p.read_text()))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_from(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@pytest.mark.parametrize("tree_root", ["accel", "models", "benchmarks", "scripts"])
def test_no_private_name_imported_across_modules(tree_root):
    sources = [p for p in SOURCES if p.is_relative_to(ROOT / tree_root)] if tree_root != "scripts" \
        else [ROOT / "train.py", ROOT / "evaluate.py", ROOT / "test.py"]
    crossings = []
    for p in sources:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                source = _imported_from(p, node)
                if source.split(".")[0] in ("accel", "models", "benchmarks") and source != _module_of(p):
                    crossings += [f"{p.relative_to(ROOT)}:{node.lineno} {a.name} from {source}"
                                  for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossings, "\n".join(crossings)
