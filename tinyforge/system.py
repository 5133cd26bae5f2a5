"""Programs tinyforge runs from the host system, and the Debian packages that provide them.

The emulated target (qemu-m4) needs Debian's arm-none-eabi toolchain and QEMU; the Makefile's
APT_PACKAGES lists the same packages (plus chromium, for the report's browser test), and
`tinyforge doctor` prints `APT_INSTALL` as the fix.
"""

from __future__ import annotations

APT_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi",
                "libstdc++-arm-none-eabi-newlib", "qemu-system-arm")
# Without --no-install-recommends apt pulls ~3.3 GB of documentation and extras.
APT_INSTALL = "sudo apt-get install --no-install-recommends " + " ".join(APT_PACKAGES)

TOOLCHAIN_PREFIX = "arm-none-eabi-"
QEMU_PROGRAM = "qemu-system-arm"
# QEMU's Cortex-M4F board with an FPU (docs/emulator.md).
QEMU_MACHINE = "mps2-an386"
