"""Where the device is: a board's serial port, or the firmware running in QEMU.

`monitor`, `validate` and `flash --monitor` talk to a `LinkSource`: it opens the link and,
for a real board, waits for the port to come back after a reset or an unplug.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..board.profiles import Board
from ..errors import DeviceError
from . import ports

log = logging.getLogger(__name__)


class LinkSource:
    """Opens the link to the device; `reopen()` waits for a vanished device to come back."""

    def open(self):
        raise NotImplementedError

    def reopen(self, deadline: float):
        """A new link once the device is back, or None at `deadline`. Default: never."""
        return None

    def close(self, link) -> None:
        try:
            link.close()
        except Exception:  # noqa: BLE001 - closing a vanished port may fail in many ways
            pass


class SerialSource(LinkSource):
    """A real board's serial port: `--port`, or found by the board's USB ids."""

    def __init__(self, board: Board, port: str | None = None, *, baud: int | None = None,
                 ask=None):
        self.board = board
        self.explicit = port
        self.baud = baud or board.serial["baud"]
        self.ask = ask
        self.device: str | None = None

    def open(self):
        self.device = ports.choose_port(self.board, self.explicit, ask=self.ask)
        return ports.open_port(self.device, self.baud)

    def reopen(self, deadline: float):
        while time.monotonic() < deadline:
            device = self.explicit or ports.wait_for_port(
                self.board, ("app",), max(0.0, deadline - time.monotonic()))
            if device is None:
                return None
            try:
                self.device = device
                return ports.open_port(device, self.baud)
            except DeviceError:  # enumerated but not ready yet
                time.sleep(ports.REDISCOVER_INTERVAL_S)
        return None


class QemuSource(LinkSource):
    """The firmware running in QEMU; it cannot come back once QEMU has stopped."""

    def __init__(self, elf: Path, link=None):
        self.elf = Path(elf)
        self.link = link

    def open(self):
        if self.link is None:
            from . import emulator
            self.link = emulator.launch(self.elf)
        return self.link


def source_for(board: Board, elf: Path | None, port: str | None, *, ask=None) -> LinkSource:
    if board.emulated:
        if port:
            raise DeviceError(f"--port makes no sense for the emulated board '{board.id}'",
                              hint="drop --port: tinyforge starts QEMU itself")
        if elf is None or not Path(elf).is_file():
            raise DeviceError(f"no firmware to run in QEMU ({elf})",
                              hint=f"build it: `tinyforge build --board {board.id}`")
        return QemuSource(elf)
    return SerialSource(board, port, ask=ask)
