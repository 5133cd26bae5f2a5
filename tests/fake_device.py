"""A pseudo-terminal standing in for a USB board's serial port, for what QEMU cannot show:
a port that vanishes and comes back, a busy port, a firmware speaking another protocol.

The port is a real pty (the monitor opens it with pyserial like any /dev/ttyACM0); the test
plays the firmware on the master side, writing protocol lines with tinyforge's encoder.
"""

from __future__ import annotations

import os
import select
import time
import tty
from pathlib import Path

from tinyforge.device import protocol


class FakeDevice:
    def __init__(self, directory: Path, *, link: Path | None = None):
        self.master, slave = os.openpty()
        tty.setraw(slave)  # as a USB CDC port: no echo, no line editing
        self.slave_path = os.ttyname(slave)
        self._slave = slave  # kept open so the raw settings stay while the test runs
        self.link = link
        if link is not None:
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(self.slave_path)
        self.port = str(link) if link is not None else self.slave_path

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        """What the host sent, waiting up to `timeout` (b"" if nothing)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if ready else b""

    def expect(self, message_type: str, timeout: float = 15.0) -> None:
        """Wait until the host sends a message of this type (e.g. the monitor's HELLO)."""
        decoder = protocol.Decoder()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            for event in decoder.feed(os.read(self.master, 4096)):
                if getattr(event, "type", None) == message_type:
                    return
        raise AssertionError(f"the host sent no {message_type} within {timeout} s")

    def send_boot(self, *, model_sha256: str) -> None:
        self.send(protocol.encode(
            "BOOT", v=1, fw="0.1.0", board="nano33ble", model=model_sha256, arena=4096,
            used=2000, ops=2, **{"in": "int8:1x10:0.1:0", "out": "int8:1x2:0.5:0"},
            status="ok").replace(b"\n", b"\r\n"))

    def close(self) -> None:
        """Unplug: the port's reads fail, and its name disappears."""
        for fd in (self._slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> "FakeDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
