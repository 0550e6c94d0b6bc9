"""Every ``from ray_logmilp... import name`` resolves — in the library, the entry scripts, the benchmarks
and the tests — also those inside functions and fixtures.

Lazy imports keep torch and Ray out of config checks, but a lazy import that names a moved function only
fails when its code path runs (the evaluate job's heatmaps did, once). This walks the source instead."""
import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("ray_logmilp", "jobs", "tune", "serve", "bench", "tests")


def _imports():
    for path in sorted(p for folder in SOURCES for p in (REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray_logmilp") and node.level == 0:
                for alias in node.names:
                    yield pytest.param(node.module, alias.name, id=f"{path.relative_to(REPO)}:{node.lineno}:{alias.name}")


@pytest.mark.parametrize("module,name", list(_imports()))
def test_library_import_resolves(module, name):
    mod = importlib.import_module(module)
    if not hasattr(mod, name):
        importlib.import_module(f"{module}.{name}")          # a submodule imported by name
