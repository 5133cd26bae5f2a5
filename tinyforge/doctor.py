"""`tinyforge doctor` as a library: what this machine has, what is missing, how to get it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from . import boards, pio, pio_core, proc
from .errors import TinyforgeError
from .pio_core import Check
from .tflm_source import ENV_VAR, resolve_tflm_source

_PIO_VERSION_TIMEOUT_S = 30.0


def run_checks(*, tflm: Path | None = None, network: bool = True) -> list[Check]:
    checks = [_python_package("platformio", "PlatformIO", required=True),
              _python_package("tflite-micro", "host TFLM runtime (tflite-micro)", required=True),
              _python_package("tensorflow-cpu", "TensorFlow (only to convert Keras models)",
                              required=False),
              _pio_runs()]
    checks += pio_core.doctor_checks()
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
    for board in boards.load_all():
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
