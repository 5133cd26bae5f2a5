"""The package layout: every module sits in the folder of the stage it serves, and imports
point one way (docs/architecture.md):

    commands, cli  ->  flows  ->  project / toolchain / device  ->  pipeline  ->  model  ->
    board  ->  base

`device` never imports `toolchain` (a serial link needs no compiler), and nothing below the
flows imports a flow or a command. Function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinyforge"

# Modules at the package root that everything may use.
BASE = {"__init__", "errors", "interrupts", "proc", "resources", "system", "jsonout", "storage",
        "units", "userfiles"}

# Which layers each layer may import (its own layer is always allowed).
ALLOWED = {
    "base": set(),
    "board": {"base"},
    "model": {"board", "base"},
    # The sensor pipeline: its configuration, host reference and device settings.
    "pipeline": {"model", "board", "base"},
    # The firmware a project holds speaks the serial protocol, so project may use it.
    "project": {"pipeline", "device", "model", "board", "base"},
    "toolchain": {"board", "base"},
    "device": {"board", "base"},
    # Plots and the HTML page, from plain data: nothing below it is needed to draw.
    "report": {"base"},
    "flows": {"report", "project", "toolchain", "device", "pipeline", "model", "board", "base"},
    "commands": {"flows", "report", "project", "toolchain", "device", "pipeline", "model",
                 "board", "base"},
    "cli": {"commands", "base"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "tinyforge", module
    if len(parts) == 1:
        return "base"
    if parts[1] in BASE:
        return "base"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: put it in a stage folder "
                         f"({', '.join(sorted(ALLOWED))}) or add it to BASE")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(name: str, source: str, *, is_package: bool = False) -> set[str]:
    """Every tinyforge module that module `name` (with this source) imports, by absolute name."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tinyforge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tinyforge"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent.joinpath(*candidate.split(".")).with_suffix(".py")
                             .is_file() or PACKAGE.parent.joinpath(*candidate.split("."))
                             .is_dir())
                found.add(candidate if is_module else target)
    return found


def python_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "platforms" not in p.relative_to(PACKAGE).parts)


def test_every_module_has_a_layer():
    for path in python_modules():
        layer_of(module_name(path))


def wrong_imports(name: str, source: str, *, is_package: bool = False) -> list[str]:
    layer = layer_of(name)
    return sorted(target for target in imported_modules(name, source, is_package=is_package)
                  if (other := layer_of(target)) != layer and other not in ALLOWED[layer])


@pytest.mark.parametrize("path", python_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path):
    name = module_name(path)
    wrong = wrong_imports(name, path.read_text(encoding="utf-8"),
                          is_package=path.name == "__init__.py")
    layer = layer_of(name)
    assert not wrong, (f"{name} ({layer}) imports {wrong}; {layer} may import "
                       f"only {sorted(ALLOWED[layer]) or 'base'}")


def test_the_rule_catches_imports_that_point_the_wrong_way():
    # The check must be able to fail: a device module reaching for the compiler (also
    # inside a function), and a model module reaching up to a flow.
    device = "import os\n\ndef f():\n    from ..toolchain import pio\n"
    assert wrong_imports("tinyforge.device.emulator", device) == ["tinyforge.toolchain.pio"]
    model = "from ..flows.build import build\nfrom ..errors import InputError\n"
    assert wrong_imports("tinyforge.model.reader", model) == ["tinyforge.flows.build"]
    assert wrong_imports("tinyforge.flows.build", model) == []


def test_every_error_class_lives_in_errors_py():
    stray = []
    for path in python_modules():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception", "Failed", "Unavailable")) for b in bases):
                    stray.append(f"{module_name(path)}.{node.name}")
    assert not stray, f"error classes outside tinyforge/errors.py: {stray}"
