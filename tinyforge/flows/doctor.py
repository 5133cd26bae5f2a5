"""`tinyforge doctor` as a library: what this machine has, what is missing, how to get it."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from .. import proc, storage, system
from ..board import profiles
from ..board.tflm_source import ENV_VAR, resolve_tflm_source
from ..errors import TinyforgeError, ToolMissingError, UnwritableFolderError
from ..toolchain import offline_core, pio, programs

_PIO_VERSION_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of `tinyforge doctor`: what was checked, whether it is fine, and how to fix it."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_checks(*, tflm: Path | None = None, network: bool = True) -> list[Check]:
    checks = [_python_package("platformio", "PlatformIO", required=True),
              _python_package("tflite-micro", "host TFLM runtime (tflite-micro)", required=True),
              _python_package("tensorflow-cpu", "TensorFlow (only to convert Keras models)",
                              required=False),
              _pio_runs()]
    checks += emulator_checks()
    checks.append(_tflm_tree(tflm))
    checks += _real_board_packages()
    if network:
        checks.append(_registry())
    return checks


def _python_package(distribution: str, label: str, *, required: bool) -> Check:
    try:
        version = importlib.metadata.version(distribution)
        return Check(label, True, f"{distribution} {version}")
    except importlib.metadata.PackageNotFoundError:
        hint = f"pip install {distribution} (or run `make setup`)"
        detail = "not installed" + ("" if required else " (optional)")
        return Check(label, not required, detail, hint)


def _pio_runs() -> Check:
    try:
        result = proc.run(pio.pio_argv("--version"), timeout=_PIO_VERSION_TIMEOUT_S,
                          env=pio.environment(None), what="pio --version")
        return Check("pio command", True, result.output[-1] if result.output else "ok")
    except TinyforgeError as error:
        return Check("pio command", False, error.message, error.hint)


def _tflm_tree(explicit: Path | None) -> Check:
    try:
        root = resolve_tflm_source(explicit)
    except TinyforgeError as error:
        return Check("TFLM source tree", False, error.message, error.hint)
    if root is None:
        return Check("TFLM source tree", True,
                     f"none given (optional: --tflm PATH or {ENV_VAR}); builds use the pinned "
                     "library, which PlatformIO downloads",
                     f"for offline qemu-m4 model builds set {ENV_VAR} to a TFLM Arduino library")
    return Check("TFLM source tree", True, str(root))


def _real_board_packages() -> list[Check]:
    checks = []
    for board in profiles.load_all():
        if board.emulated:
            continue
        core = pio.core_dir_for(board)
        missing = [m for m in pio.missing_packages(board, Path("."), core, local_tflm=True)]
        if missing:
            checks.append(Check(f"PlatformIO packages for {board.id}", True,
                                f"not installed yet: {', '.join(missing)} (downloaded by the "
                                "first build; needs network)"))
        else:
            checks.append(Check(f"PlatformIO packages for {board.id}", True, "installed"))
    return checks


def _registry() -> Check:
    if pio.registry_reachable():
        return Check("PlatformIO registry", True, "reachable")
    return Check("PlatformIO registry", True,
                 f"unreachable within {pio.REACHABILITY_TIMEOUT_S:g} s: builds for real boards "
                 "need their packages installed already; qemu-m4 builds work offline",
                 "connect to the internet once to let PlatformIO download a board's packages")


def emulator_checks(core: str | os.PathLike | None = None) -> list[Check]:
    """What the qemu-m4 target needs on this machine, each with a fix hint when missing."""
    checks = []
    try:
        toolchain = programs.find_toolchain()
        checks.append(Check("arm-none-eabi toolchain", True,
                            f"GCC {toolchain.gcc_version} in {toolchain.bin_dir}, "
                            "newlib-nano and libstdc++ for Cortex-M4F"))
    except ToolMissingError as exc:
        checks.append(Check("arm-none-eabi toolchain", False, exc.message, exc.hint))
    try:
        checks.append(Check("QEMU", True, f"{programs.find_qemu()} has the {system.QEMU_MACHINE} machine"))
    except ToolMissingError as exc:
        checks.append(Check("QEMU", False, exc.message, exc.hint))
    try:
        checks.append(Check("SCons for PlatformIO", True,
                            f"scons {programs.SCONS_VERSION} at {programs.find_scons()}"))
    except ToolMissingError as exc:
        checks.append(Check("SCons for PlatformIO", False, exc.message, exc.hint))
    target = offline_core.core_dir(core)
    if offline_core.is_ready(target):
        checks.append(Check("PlatformIO core dir", True, f"{target} is ready for qemu-m4"))
    else:
        option = f" --core-dir {target}" if core else ""
        checks.append(Check("PlatformIO core dir", False,
                            f"{target} is not prepared for this copy of tinyforge (tool-scons, "
                            "the toolchain or the qemu-m4 platform link missing, or the link "
                            "points at another copy)", f"run `tinyforge setup{option}`"))
        try:
            storage.check_writable(target, what="tinyforge's PlatformIO core dir",
                                   variable=offline_core.ENV_CORE_DIR, option="--core-dir")
        except UnwritableFolderError as exc:  # `setup` would fail: say why instead
            checks[-1] = Check("PlatformIO core dir", False, exc.message, exc.hint)
    return checks
