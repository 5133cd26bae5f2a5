"""A pseudo-terminal standing in for a USB board's serial port, for what QEMU cannot show:
a port that vanishes and comes back, a busy port, a firmware speaking another protocol, a
board that stops reading, a firmware whose results are malformed.

The port is a real pty (the monitor opens it with pyserial like any /dev/ttyACM0); the test
plays the firmware on the master side, writing protocol lines with tinyforge's encoder.
`FakeFirmware` plays a model firmware's side of protocol v1 in a thread (HELLO -> BOOT,
IN -> RES from a function of the input bytes), and can unplug the board at a given input.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from pathlib import Path
from typing import Callable

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
        self.reading = True

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

    def stop_reading(self) -> int:
        """Act as a board that stopped reading its port: fill the kernel's buffers for what
        the host sends, so the host's next write blocks (until its write timeout, or an
        unplug). Returns how many bytes it took."""
        extra = os.open(self.slave_path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        filled = 0
        try:
            # The kernel moves bytes on to the master's line discipline in the background,
            # which makes room again: full means a round that, after a pause, takes nothing.
            while True:
                before = filled
                for chunk in (4096, 1):
                    filled += _write_until_full(extra, b"\0" * chunk)
                if filled == before:
                    break
                time.sleep(0.05)
        finally:
            os.close(extra)
        self.reading = False
        return filled

    def close(self) -> None:
        """Unplug: the port's reads and writes fail, and its name disappears."""
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


def _write_until_full(fd: int, chunk: bytes) -> int:
    written = 0
    while True:
        try:
            written += os.write(fd, chunk)
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            return written


UNPLUG = object()


def boot_line(*, model_sha256: str, inputs: str, outputs: str, board: str = "nano33ble",
              status: str = "ok") -> bytes:
    """A BOOT message as a model firmware sends it (with its CRLF)."""
    return protocol.encode(
        "BOOT", v=1, fw="0.1.0", board=board, model=model_sha256, arena=4096, used=2000,
        ops=2, **{"in": inputs, "out": outputs}, status=status, eol=protocol.DEVICE_EOL)


def result_line(seq: int, outputs: list[tuple[list[int] | None, list[float]]], *,
                src: str = "host", us: int = 120) -> bytes:
    """A RES message: `outputs` holds (q values or None, f values) per output."""
    fields: dict = {}
    for index, (q, f) in enumerate(outputs):
        if q is not None:
            fields[f"q{index}"] = list(q)
        fields[f"f{index}"] = [float(v) for v in f]
    return protocol.encode("RES", seq=seq, src=src, us=us, eol=protocol.DEVICE_EOL, **fields)


class FakeFirmware:
    """A model firmware's side of the protocol on a FakeDevice, in a thread.

    HELLO is answered with `boot`; IN with what `answer(seq, data)` returns: the bytes to
    send, None to stay silent, or UNPLUG to close the port there and then (the board
    vanishes while the host waits for that answer).
    """

    def __init__(self, device: FakeDevice, boot: bytes,
                 answer: Callable[[int, bytes], object]):
        self.device = device
        self.boot = boot
        self.answer = answer
        self.inputs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "FakeFirmware":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        decoder = protocol.Decoder()
        while not self._stop.is_set():
            if not self.device.reading:
                time.sleep(0.05)
                continue
            try:
                data = self.device.read(0.05)
            except OSError:  # unplugged
                return
            for event in decoder.feed(data):
                kind = getattr(event, "type", None)
                if kind == "HELLO":
                    self.device.send(self.boot)
                elif kind == "IN":
                    self.inputs += 1
                    reply = self.answer(int(event.fields["seq"]),
                                        bytes.fromhex(event.fields["data"]))
                    if reply is UNPLUG:
                        self.device.close()
                        return
                    if reply:
                        self.device.send(reply)
