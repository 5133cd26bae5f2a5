"""tinyforge's own PlatformIO core directory, prepared so `pio run` never needs the registry.

PlatformIO keeps its packages in a core directory (`PLATFORMIO_CORE_DIR`). tinyforge uses its
own, `~/.tinyforge/platformio` unless `TINYFORGE_PIO_CORE_DIR` or `--core-dir` says otherwise,
and never touches the user's `~/.platformio`. `setup()` seeds it with the two packages the
`qemu-m4` target needs, built from software already on this machine:

- `tool-scons`: PlatformIO 6.2.0 runs every build through SCons 4.11.1 (package version
  4.41101.0). It is copied from the `scons` wheel installed next to tinyforge.
- `toolchain-gccarmnoneeabi`: symlinks to Debian's `/usr/bin/arm-none-eabi-*`.

Each package gets a `.piopm` whose owner is `platformio`: without it PlatformIO does not
recognise the package and goes to the registry (see docs/emulator.md). The dev-platform
itself is linked from tinyforge's package folder, so rendered projects name it
(`platform = tinyforge-qemu-m4`) instead of holding this machine's path to it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

from .. import resources, storage
from ..errors import ToolMissingError
from .programs import (
    SCONS_PACKAGE_VERSION,
    SCONS_VERSION,
    Toolchain,
    find_qemu,
    find_scons,
    find_toolchain,
)

__all__ = ["ENV_CORE_DIR", "PLATFORM_NAME", "SetupReport", "core_dir", "is_ready", "setup"]

log = logging.getLogger(__name__)

ENV_CORE_DIR = "TINYFORGE_PIO_CORE_DIR"
DEFAULT_CORE_DIR = Path("~/.tinyforge/platformio")

_SEED_STAMP = ".tinyforge-seed.json"
_WHAT = "tinyforge's PlatformIO core dir"
# The folder of tinyforge's own dev-platform for qemu-m4; projects name it by its
# platform.json name, which PlatformIO finds through the link _register_platform() writes.
PLATFORM_NAME = "qemu_m4"


@dataclasses.dataclass
class SetupReport:
    """What `setup()` did: (action, what, path) per package and for the platform link;
    action is create, identical or replace."""

    core_dir: Path
    actions: list[tuple[str, str, Path]]

    @property
    def changed(self) -> bool:
        return any(action != "identical" for action, _, _ in self.actions)


def core_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The core directory to use: `explicit`, else $TINYFORGE_PIO_CORE_DIR, else the default."""
    chosen = explicit or os.environ.get(ENV_CORE_DIR)
    if not chosen:
        return storage.home_path(DEFAULT_CORE_DIR.relative_to("~"), what=_WHAT,
                                 variable=ENV_CORE_DIR).resolve()
    return Path(chosen).expanduser().resolve()


# --- setup ------------------------------------------------------------------------------

def setup(core: str | os.PathLike | None = None, *, require_qemu: bool = True) -> SetupReport:
    """Seed `core` (see `core_dir`) with tool-scons and the Debian toolchain; idempotent.

    Each package is built in a temporary folder next to its final place and renamed into
    place, so an interrupted setup never leaves a half-written package PlatformIO would use.
    """
    target = core_dir(core)
    # An unwritable folder is reported first, whatever else is missing; nothing is created
    # before the tools are found.
    storage.check_writable(target, what=_WHAT, variable=ENV_CORE_DIR, option="--core-dir")
    toolchain = find_toolchain()
    if require_qemu:
        find_qemu()
    scons = find_scons()
    packages = target / "packages"
    for folder in (target, packages, target / "platforms"):
        storage.require_writable(folder, what=_WHAT, variable=ENV_CORE_DIR, option="--core-dir")
    try:
        actions = [
            _install(packages / "tool-scons", "tool-scons", _scons_seed(scons)),
            _install(packages / "toolchain-gccarmnoneeabi", "toolchain-gccarmnoneeabi",
                     _toolchain_seed(toolchain)),
            _register_platform(target / "platforms", PLATFORM_NAME),
        ]
    except OSError as exc:
        raise _setup_failure(exc, target) from None
    for action, name, path in actions:
        # `build` calls this on every emulated build; `tinyforge setup` prints the actions.
        log.debug("%-9s %s (%s)", action, name, path)
    return SetupReport(core_dir=target, actions=actions)


def _setup_failure(exc: OSError, target: Path) -> Exception:
    """A write into the core dir that failed (disk full, permissions), or a source unreadable."""
    filename = str(getattr(exc, "filename", "") or "")
    reason = exc.strerror or str(exc)
    if not filename or filename.startswith(str(target)):
        return storage.unwritable(Path(filename or target), reason, what=_WHAT,
                                  variable=ENV_CORE_DIR, option="--core-dir")
    return ToolMissingError(f"cannot copy {filename} into {target}: {reason}",
                            hint="reinstall tinyforge's environment (`make setup`), then run "
                                 "`tinyforge setup` again")


@dataclasses.dataclass(frozen=True)
class _Seed:
    """What a package folder must hold; `stamp` identifies the source it was made from."""

    package_json: dict
    piopm: dict
    stamp: dict
    fill: object  # callable(folder: Path) -> None


def _piopm(kind: str, name: str, version: str) -> dict:
    return {"type": kind, "name": name, "version": version,
            "spec": {"owner": "platformio", "id": None, "name": name,
                     "requirements": None, "uri": None}}


def _scons_seed(scons: Path) -> _Seed:
    def fill(folder: Path) -> None:
        # The docbook tool (20 MB) is never used by PlatformIO's builders.
        shutil.copytree(scons, folder / "scons-local" / "SCons",
                        ignore=shutil.ignore_patterns("__pycache__", "docbook"))
        (folder / "scons.py").write_text(_SCONS_LAUNCHER, encoding="utf-8")

    name = "tool-scons"
    return _Seed(
        package_json={"name": name, "version": SCONS_PACKAGE_VERSION,
                      "description": f"SCons {SCONS_VERSION}, seeded by tinyforge from PyPI's "
                                     "scons wheel"},
        piopm=_piopm("tool", name, SCONS_PACKAGE_VERSION),
        stamp={"scons": SCONS_VERSION, "from": str(scons)},
        fill=fill)


_SCONS_LAUNCHER = '''\
# Written by `tinyforge setup`: runs the SCons copied next to this file.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scons-local"))

import SCons.Script  # noqa: E402

SCons.Script.main()
'''


def _toolchain_seed(toolchain: Toolchain) -> _Seed:
    def fill(folder: Path) -> None:
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        # Symlinks, not copies: GCC follows them back to /usr to find its libraries.
        for program in toolchain.programs:
            (bin_dir / program).symlink_to(toolchain.bin_dir / program)

    name = "toolchain-gccarmnoneeabi"
    version = toolchain.package_version
    return _Seed(
        # PlatformIO's name for this machine (linux_x86_64, linux_aarch64): the links
        # point at this machine's own compiler.
        package_json={"name": name, "version": version,
                      "system": [f"linux_{platform.machine().lower()}"],
                      "description": f"GNU Arm Embedded toolchain {toolchain.gcc_version} "
                                     f"from {toolchain.bin_dir} (registered by tinyforge)"},
        piopm=_piopm("tool", name, version),
        stamp={"gcc": toolchain.gcc_version, "from": str(toolchain.bin_dir),
               "programs": list(toolchain.programs)},
        fill=fill)


def _install(folder: Path, name: str, seed: _Seed) -> tuple[str, str, Path]:
    if _matches(folder, seed):
        return ("identical", name, folder)
    existed = folder.exists() or folder.is_symlink()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a package folder is not
        seed.fill(staging)
        _write_json(staging / "package.json", seed.package_json)
        _write_json(staging / ".piopm", seed.piopm)
        _write_json(staging / _SEED_STAMP, seed.stamp)
        if existed:
            # Two renames: PlatformIO sees either the old package or the new one, never a mix.
            retired = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=folder.parent))
            os.replace(folder, retired / "package")
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ("replace" if existed else "create", name, folder)


def _register_platform(platforms: Path, name: str) -> tuple[str, str, Path]:
    """Link the dev-platform folder into the core dir, in the format PlatformIO itself writes
    for a `symlink://` platform (`<name>.pio-link`). It is how `platform = tinyforge-qemu-m4`
    is found without the registry; rewritten when tinyforge moved."""
    link = platforms / f"{name}.pio-link"
    data = _platform_link(name)
    try:
        if _read_json(link) == data:
            return ("identical", f"platform {name}", link)
        action = "replace"
    except (OSError, ValueError):
        action = "create"
    platforms.mkdir(parents=True, exist_ok=True)
    staging = link.with_name(f".{link.name}.tmp")
    staging.write_text(json.dumps(data), encoding="utf-8")
    os.replace(staging, link)
    return (action, f"platform {name}", link)


def _platform_link(name: str) -> dict:
    """The `.pio-link` of the dev-platform of this copy of tinyforge."""
    path = resources.platforms_dir() / name
    return {"cwd": str(path), "spec": {"owner": None, "id": None, "name": name,
                                       "requirements": None, "uri": f"symlink://{path}"}}


def _matches(folder: Path, seed: _Seed) -> bool:
    try:
        return (_read_json(folder / "package.json") == seed.package_json
                and _read_json(folder / ".piopm") == seed.piopm
                and _read_json(folder / _SEED_STAMP) == seed.stamp)
    except (OSError, ValueError):
        return False


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- status ---

def is_ready(core: str | os.PathLike | None = None) -> bool:
    """Whether `core` holds both seeded packages and the platform link to this copy of
    tinyforge's dev-platform (no child processes). A link left by a copy that moved, or by
    another checkout, is not ready: `setup` (and every qemu-m4 build) points it here again."""
    target = core_dir(core)
    packages = target / "packages"
    try:
        linked = _read_json(target / "platforms" / f"{PLATFORM_NAME}.pio-link")
    except (OSError, ValueError):
        return False
    return all(
        (packages / name / ".piopm").is_file() and (packages / name / "package.json").is_file()
        for name in ("tool-scons", "toolchain-gccarmnoneeabi")
    ) and linked == _platform_link(PLATFORM_NAME)
