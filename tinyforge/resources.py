"""Where tinyforge's data lives: board profiles, firmware templates, the bundled example.

In a source checkout (and an editable install) these are the top-level `boards/` and
`firmware_templates/` folders; a built wheel carries copies under `tinyforge/_resources/`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ToolMissingError

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = PACKAGE_DIR.parent
_WHEEL_DIR = PACKAGE_DIR / "_resources"


def _resource_dir(name: str) -> Path:
    for base in (_WHEEL_DIR, _CHECKOUT_DIR):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    raise ToolMissingError(f"tinyforge's '{name}' folder is missing from this installation",
                           hint="reinstall tinyforge (pip install --force-reinstall tinyforge, "
                                "or `make setup` in a checkout)")


def boards_dir() -> Path:
    return _resource_dir("boards")


def templates_dir() -> Path:
    return _resource_dir("firmware_templates")


def platforms_dir() -> Path:
    """tinyforge's own PlatformIO dev-platforms (qemu_m4), referenced as `symlink://`."""
    return PACKAGE_DIR / "toolchain" / "platforms"


def example_dir() -> Path:
    """The bundled example model (trained by examples/gesture/train.py)."""
    return PACKAGE_DIR / "example"
