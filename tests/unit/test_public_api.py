"""Every import README shows works, and each stage package exports what its __all__ names."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
STAGES = ("model", "accuracy", "hardware", "search", "train", "deploy")


def readme_imports() -> list[tuple[str, str]]:
    text = README.read_text()
    out = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        for mod, names in re.findall(r"^from (hwnas[\w.]*) import ([\w, ]+)$", block, re.M):
            out += [(mod, n.strip()) for n in names.split(",") if n.strip()]
    return out


def test_readme_shows_python_imports():
    assert len(readme_imports()) >= 3


@pytest.mark.parametrize("module,name", readme_imports())
def test_readme_import_works(module, name):
    assert hasattr(importlib.import_module(module), name), f"README imports {name} from {module}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_exports(stage):
    pkg = importlib.import_module(f"hwnas.{stage}")
    assert pkg.__doc__ and len(pkg.__doc__.split()) > 15, f"hwnas.{stage} needs a docstring saying what it takes and gives"
    assert pkg.__all__, stage
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


def test_stages_import_only_downward():
    """cli -> deploy/search/train -> hardware/accuracy -> model -> shared; nothing imports cli."""
    import ast

    level = {"errors": 0, "io": 0, "datadir": 0, "model": 1, "accuracy": 2, "hardware": 2,
             "search": 3, "train": 3, "deploy": 3, "cli": 4}
    root = README.parent / "hwnas"
    bad = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        stage = parts[0]
        if stage not in level or stage in ("errors", "io", "datadir"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hwnas."):
                tgt = node.module.split(".")[1]
                if tgt != stage and tgt in level and level[tgt] >= level[stage]:
                    bad.append(f"{path.relative_to(root)}:{node.lineno} imports {node.module}")
    assert not bad, bad
