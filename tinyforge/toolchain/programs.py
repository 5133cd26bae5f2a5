"""Finding the programs the emulated target is built and run with, on this machine.

- the arm-none-eabi GCC with newlib-nano and libstdc++ for Cortex-M4F (Debian's);
- QEMU with the mps2-an386 machine;
- the SCons that PlatformIO 6.2.0 requires, from the `scons` wheel next to tinyforge.
Each lookup raises `ToolMissingError` with the command that installs what is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from pathlib import Path

from .. import proc
from ..errors import ToolMissingError
from ..system import APT_INSTALL, QEMU_MACHINE, QEMU_PROGRAM, TOOLCHAIN_PREFIX

__all__ = ["SCONS_PACKAGE_VERSION", "SCONS_VERSION", "Toolchain", "find_qemu", "find_scons",
           "find_toolchain"]

# PlatformIO 6.2.0 accepts exactly this SCons (platformio/dependencies.py: ~4.41101.0).
SCONS_VERSION = "4.11.1"
SCONS_PACKAGE_VERSION = "4.41101.0"
# The flags of the qemu-m4 platform: the toolchain must have C and C++ libraries for them.
_MULTILIB_FLAGS = ("-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
                   "--specs=nano.specs")
_PROBE_TIMEOUT_S = 20.0


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
