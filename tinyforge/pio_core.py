"""tinyforge's own PlatformIO core directory, prepared so `pio run` never needs the registry.

PlatformIO keeps its packages in a core directory (`PLATFORMIO_CORE_DIR`). tinyforge uses its
own, `~/.tinyforge/platformio` unless `TINYFORGE_PIO_CORE_DIR` or `--core-dir` says otherwise,
and never touches the user's `~/.platformio`. `setup()` seeds it with the two packages the
`qemu-m4` target needs, built from software already on this machine:

- `tool-scons`: PlatformIO 6.2.0 runs every build through SCons 4.11.1 (package version
  4.41101.0). It is copied from the `scons` wheel installed next to tinyforge.
- `toolchain-gccarmnoneeabi`: symlinks to Debian's `/usr/bin/arm-none-eabi-*`.

Each package gets a `.piopm` whose owner is `platformio`: without it PlatformIO does not
recognise the package and goes to the registry (see docs/emulator.md).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path

from . import proc
from .errors import ToolMissingError

__all__ = [
    "APT_INSTALL", "Check", "SetupReport", "Toolchain", "core_dir", "doctor_checks",
    "find_qemu", "find_scons", "find_toolchain", "is_ready", "pio_environment", "setup",
]

log = logging.getLogger("tinyforge.pio_core")

ENV_CORE_DIR = "TINYFORGE_PIO_CORE_DIR"
DEFAULT_CORE_DIR = Path("~/.tinyforge/platformio")

# Debian packages of the qemu-m4 target; the same list as APT_PACKAGES in the Makefile.
APT_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi",
                "libstdc++-arm-none-eabi-newlib", "qemu-system-arm")
# Without --no-install-recommends apt pulls ~3.3 GB of documentation and extras.
APT_INSTALL = "sudo apt-get install --no-install-recommends " + " ".join(APT_PACKAGES)

# PlatformIO 6.2.0 accepts exactly this SCons (platformio/dependencies.py: ~4.41101.0).
SCONS_VERSION = "4.11.1"
SCONS_PACKAGE_VERSION = "4.41101.0"
TOOLCHAIN_PREFIX = "arm-none-eabi-"
QEMU_PROGRAM = "qemu-system-arm"
QEMU_MACHINE = "mps2-an386"

# The flags of the qemu-m4 platform: the toolchain must have C and C++ libraries for them.
_MULTILIB_FLAGS = ("-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
                   "--specs=nano.specs")
_PROBE_TIMEOUT_S = 20.0
# Names PlatformIO reads from the environment that would point it at another core's content.
_CORE_LOCATION_VARS = ("PLATFORMIO_PLATFORMS_DIR", "PLATFORMIO_PACKAGES_DIR",
                       "PLATFORMIO_GLOBALLIB_DIR", "PLATFORMIO_CACHE_DIR")
_SEED_STAMP = ".tinyforge-seed.json"
# tinyforge's own dev-platform for qemu-m4 (referenced as `platform = symlink://...`).
PLATFORM_NAME = "qemu_m4"
PLATFORMS_DIR = Path(__file__).resolve().parent / "platforms"


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of `tinyforge doctor`: what was checked, whether it is fine, and how to fix it."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    chosen = explicit or os.environ.get(ENV_CORE_DIR) or DEFAULT_CORE_DIR
    return Path(chosen).expanduser().resolve()


def pio_environment(core: str | os.PathLike) -> dict[str, str]:
    """The environment for a child `pio`: tinyforge's core dir, no upgrade check, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in _CORE_LOCATION_VARS}
    env.update({
        "PLATFORMIO_CORE_DIR": str(Path(core)),
        # The upgrade check runs at the END of a successful command and stalls ~60 s offline.
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "no",
        "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "9999",
        # Progress bars are noise in captured output.
        "PLATFORMIO_DISABLE_PROGRESSBAR": "true",
    })
    return env


# --- finding what the seed is made from ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Toolchain:
    bin_dir: Path
    gcc_version: str
    programs: tuple[str, ...]  # file names, e.g. arm-none-eabi-gcc

    @property
    def package_version(self) -> str:
        """PlatformIO's encoding of a GCC version: 12.2.1 -> 1.120201.0."""
        major, minor, patch = (list(map(int, self.gcc_version.split("."))) + [0, 0])[:3]
        return f"1.{major}{minor:02d}{patch:02d}.0"


def find_toolchain() -> Toolchain:
    """Debian's arm-none-eabi GCC with newlib-nano and libstdc++ for the platform's flags."""
    gcc = Path(proc.resolve_program(TOOLCHAIN_PREFIX + "gcc", APT_INSTALL))
    bin_dir = gcc.parent
    version = proc.run([gcc, "-dumpversion"], timeout=_PROBE_TIMEOUT_S,
                       install_hint=APT_INSTALL, what="arm-none-eabi-gcc -dumpversion").text.strip()
    for library in ("libc_nano.a", "libstdc++_nano.a"):
        _require_library(gcc, library)
    programs = tuple(sorted(p.name for p in bin_dir.glob(TOOLCHAIN_PREFIX + "*")
                            if p.is_file() and os.access(p, os.X_OK)))
    return Toolchain(bin_dir=bin_dir, gcc_version=version, programs=programs)


def _require_library(gcc: Path, library: str) -> None:
    # GCC prints the bare name back when it has no such file for these flags.
    found = proc.run([gcc, *_MULTILIB_FLAGS, f"-print-file-name={library}"],
                     timeout=_PROBE_TIMEOUT_S, what="arm-none-eabi-gcc").text.strip()
    if not os.path.isabs(found) or not os.path.isfile(found):
        raise ToolMissingError(
            f"arm-none-eabi-gcc has no {library} for Cortex-M4F (hard float, newlib-nano)",
            hint=f"install the C and C++ libraries: {APT_INSTALL}")


def find_qemu() -> Path:
    """`qemu-system-arm`, checked to have the mps2-an386 machine."""
    qemu = Path(proc.resolve_program(QEMU_PROGRAM, APT_INSTALL))
    machines = proc.run([qemu, "-machine", "help"], timeout=_PROBE_TIMEOUT_S,
                        what="qemu-system-arm -machine help").text
    if not any(line.split()[:1] == [QEMU_MACHINE] for line in machines.splitlines()):
        raise ToolMissingError(f"{qemu} has no '{QEMU_MACHINE}' machine (Cortex-M4F with FPU)",
                               hint=f"install Debian's QEMU 7.2 or later: {APT_INSTALL}")
    return qemu


def find_scons() -> Path:
    """The `SCons` package folder of the installed scons wheel (exact version PlatformIO needs)."""
    hint = f"install it next to tinyforge: pip install 'scons=={SCONS_VERSION}'"
    try:
        dist = importlib.metadata.distribution("scons")
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissingError("the 'scons' Python package is not installed", hint=hint) from None
    if dist.version != SCONS_VERSION:
        raise ToolMissingError(f"scons {dist.version} is installed; PlatformIO 6.2.0 needs "
                               f"exactly {SCONS_VERSION}", hint=hint)
    package = Path(dist.locate_file("SCons"))
    if not (package / "Script" / "__init__.py").is_file():
        raise ToolMissingError(f"the scons installation at {package} is incomplete", hint=hint)
    return package


# --- setup ------------------------------------------------------------------------------

def setup(core: str | os.PathLike | None = None, *, require_qemu: bool = True) -> SetupReport:
    """Seed `core` (see `core_dir`) with tool-scons and the Debian toolchain; idempotent.

    Each package is built in a temporary folder next to its final place and renamed into
    place, so an interrupted setup never leaves a half-written package PlatformIO would use.
    """
    target = core_dir(core)
    toolchain = find_toolchain()
    if require_qemu:
        find_qemu()
    scons = find_scons()
    packages = target / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    actions = [
        _install(packages / "tool-scons", "tool-scons", _scons_seed(scons)),
        _install(packages / "toolchain-gccarmnoneeabi", "toolchain-gccarmnoneeabi",
                 _toolchain_seed(toolchain)),
        _register_platform(target / "platforms", PLATFORM_NAME),
    ]
    for action, name, path in actions:
        # `build` calls this on every emulated build; `tinyforge setup` prints the actions.
        log.debug("%-9s %s (%s)", action, name, path)
    return SetupReport(core_dir=target, actions=actions)


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
    """Record the live link PlatformIO would write on the first `pio run`, so that first build
    prints no "Installing" line; the format is PlatformIO's own `<name>.pio-link`."""
    path = PLATFORMS_DIR / name
    link = platforms / f"{name}.pio-link"
    data = {"cwd": str(path), "spec": {"owner": None, "id": None, "name": name,
                                       "requirements": None, "uri": f"symlink://{path}"}}
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


# --- status -----------------------------------------------------------------------------

def is_ready(core: str | os.PathLike | None = None) -> bool:
    """Whether `core` holds both seeded packages and the platform link (no child processes)."""
    target = core_dir(core)
    packages = target / "packages"
    return all(
        (packages / name / ".piopm").is_file() and (packages / name / "package.json").is_file()
        for name in ("tool-scons", "toolchain-gccarmnoneeabi")
    ) and (target / "platforms" / f"{PLATFORM_NAME}.pio-link").is_file()


def doctor_checks(core: str | os.PathLike | None = None) -> list[Check]:
    """What the qemu-m4 target needs on this machine, each with a fix hint when missing."""
    checks = []
    try:
        toolchain = find_toolchain()
        checks.append(Check("arm-none-eabi toolchain", True,
                            f"GCC {toolchain.gcc_version} in {toolchain.bin_dir}, "
                            "newlib-nano and libstdc++ for Cortex-M4F"))
    except ToolMissingError as exc:
        checks.append(Check("arm-none-eabi toolchain", False, exc.message, exc.hint))
    try:
        checks.append(Check("QEMU", True, f"{find_qemu()} has the {QEMU_MACHINE} machine"))
    except ToolMissingError as exc:
        checks.append(Check("QEMU", False, exc.message, exc.hint))
    try:
        checks.append(Check("SCons for PlatformIO", True,
                            f"scons {SCONS_VERSION} at {find_scons()}"))
    except ToolMissingError as exc:
        checks.append(Check("SCons for PlatformIO", False, exc.message, exc.hint))
    target = core_dir(core)
    if is_ready(target):
        checks.append(Check("PlatformIO core dir", True, f"{target} is ready for qemu-m4"))
    else:
        option = f" --core-dir {target}" if core else ""
        checks.append(Check("PlatformIO core dir", False,
                            f"{target} is not prepared (tool-scons and the toolchain are "
                            "not registered there)", f"run `tinyforge setup{option}`"))
    return checks
