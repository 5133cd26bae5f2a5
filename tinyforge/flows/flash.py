"""`tinyforge flash` as a library: put the last build on the board.

A real board: find its port (the sketch's or the bootloader's USB id), run PlatformIO's
upload in the rendered project (`pio run -t upload --upload-port PORT`: the 1200-baud touch
and bossac are the board definition's business), then wait for the sketch's port to come
back after the bootloader. An emulated board: "flashing" is starting the firmware in QEMU
and checking it boots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .. import proc, units
from ..device import ports
from ..errors import ChildProcessFailed, DeviceError, InputError, PlatformIOError
from ..project.last_build import LastBuild
from ..toolchain import pio

log = logging.getLogger(__name__)

# bossac writes the Nano 33 BLE's 1 MB flash in well under a minute; longer means it hangs
# (the board is not in its bootloader, or the port went away).
UPLOAD_TIMEOUT_S = 120.0


@dataclass
class FlashResult:
    board: str
    firmware: str
    port: str | None
    seconds: float

    def to_json(self) -> dict:
        return {"board": self.board, "firmware": self.firmware, "port": self.port,
                "seconds": round(self.seconds, 2)}


def check_built(build: LastBuild) -> None:
    if not build.elf.is_file():
        raise InputError(f"{build.project_dir} has no firmware yet ({build.elf} is missing)",
                         hint="build it: `tinyforge build` (without --no-compile)")


def upload(build: LastBuild, port: str | None = None, *, ask=None) -> FlashResult:
    """Upload to a real board and wait until its sketch's port is back."""
    check_built(build)
    board = build.board
    core = pio.core_dir_for(board)
    pio.require_core_dir(core)  # an unwritable one is named, not reported as a failed upload
    started = time.monotonic()
    device = ports.choose_port(board, port, ask=ask)
    log.info("uploading %s to %s on %s (at most %g s; --verbose shows PlatformIO's output)...",
             build.elf.name, board.name, device, UPLOAD_TIMEOUT_S)
    try:
        proc.run(pio.pio_argv("run", "-d", str(build.project_dir), "-e", build.environment,
                              "-t", "upload", "--upload-port", device),
                 timeout=UPLOAD_TIMEOUT_S, env=pio.environment(core), what="PlatformIO upload",
                 on_line=lambda line: log.debug("  pio: %s", line))
    except ChildProcessFailed as failure:  # keep PlatformIO's exit status
        raise PlatformIOError(
            f"uploading to {device} failed", returncode=failure.returncode,
            details=failure.details,
            hint="double-tap the reset button to start the bootloader (its LED pulses), then "
                 "run `tinyforge flash` again, or name the port with --port") from None
    app = ports.wait_for_port(board, ("app",),
                                    float(board.serial.get("reenumerate_timeout_s", 10)))
    if app is None:
        raise DeviceError(
            f"the upload finished but {board.name}'s sketch port did not come back",
            hint="the sketch may crash at start: double-tap reset to get the bootloader, then "
                 "flash a known-good build (e.g. `tinyforge selftest`)")
    return FlashResult(board.id, str(build.elf), app, time.monotonic() - started)


def run_in_emulator(build: LastBuild):
    """Start the firmware in QEMU and check it boots; returns (result, source, conversation).

    The caller owns the running QEMU (close it through the source). The conversation still
    holds the BOOT and everything after it, a partial line included: hand it to
    `monitor.run` to show them.
    """
    from ..device.conversation import Conversation, require_started, wait_for_boot
    from ..device.sources import QemuSource

    check_built(build)
    started = time.monotonic()
    source = QemuSource(build.elf)
    link = source.open()
    try:
        conversation = Conversation(link)
        boot = wait_for_boot(conversation, ask=False, keep=True)
        require_started(boot, conversation)
        if build.model_sha256 and boot.model_sha256 != build.model_sha256:
            raise DeviceError("QEMU runs firmware with another model than the last build",
                              hint="rebuild: `tinyforge build --board qemu-m4`")
    except BaseException:
        source.close(link)
        raise
    log.info("QEMU runs %s: %s ready, arena %s (used %s)", build.elf.name, boot.board,
             units.size(boot.arena_bytes), units.size(boot.arena_used_bytes))
    result = FlashResult(build.board.id, str(build.elf), None, time.monotonic() - started)
    return result, source, conversation
