"""Run qemu-m4 firmware in QEMU and talk to its UART like a serial port.

    with emulator.launch(elf) as link:
        link.write(b"...")
        data = link.read(256)

QEMU (`mps2-an386`) connects the firmware's UART0 to a TCP server on 127.0.0.1 with a
port chosen at run time (`wait=on`: the guest starts only once we are connected, so no
boot output is lost; `nodelay=on`: a round trip takes ~0.3 ms instead of ~44 ms). The link
is a pyserial `socket://` port, so code written for a board's serial port works unchanged.

Failure is never silent: QEMU exiting, a firmware fault line (see
firmware_templates/runtime/qemu-m4/qemu_m4_startup.cpp) or a timeout in `expect_line`
raise `DeviceError` (exit code 2) carrying the last lines received. QEMU runs in its own
process group and is killed on close, on exceptions and Ctrl-C (the `with` block), and at
interpreter exit.
"""

from __future__ import annotations

import atexit
import collections
import logging
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import serial
from serial.urlhandler import protocol_socket

from .. import proc
from ..errors import DeviceError
from ..system import APT_INSTALL, QEMU_MACHINE, QEMU_PROGRAM

__all__ = ["QemuLink", "launch", "FAULT_PATTERN", "ICOUNT_ARGS", "ICOUNT_SHIFT"]

log = logging.getLogger(__name__)

# Notes (docs/emulator.md): the first line arrives 10-90 ms after start, but both QEMU
# transports show a rare one-off ~1 s stall, so no read waits less than this.
READ_TIMEOUT_S = 3.0
WRITE_TIMEOUT_S = 5.0
# QEMU loads the ELF and opens its TCP server; this bounds how long we try to connect.
CONNECT_TIMEOUT_S = 10.0
CONNECT_POLL_S = 0.02
# After QEMU stops (fault, exit), how long to wait for its exit status.
EXIT_WAIT_S = 2.0
# A port found free may be taken before QEMU binds it; try again with a new one.
BIND_ATTEMPTS = 3
TAIL_LINES = 25
_CHUNK = 65536
# The lines the qemu-m4 runtime prints before it stops QEMU on a fault.
FAULT_PATTERN = re.compile(r"tinyforge: ((HARDFAULT|UNEXPECTED EXCEPTION|ABORT)\b.*)")
_PC = re.compile(r"\bpc=(0x[0-9a-f]+)")
# Deterministic time: QEMU's virtual clock advances 2^ICOUNT_SHIFT ns per executed instruction
# while the CPU runs (and in real time while it sleeps in WFI), so an inference takes the
# same number of instructions in every run, whatever the host's load (docs/emulator.md,
# "Clock"). 128 ns per instruction is 3.2 ticks of the 25 MHz CMSDK timer, fine enough for
# the profiler to recover exact instruction counts (firmware_templates/profile/runtime/
# qemu-m4/board_profile_qemu_m4.cpp, whose kIcountShift must be the same).
ICOUNT_SHIFT = 7
ICOUNT_ARGS = ("-icount", f"shift={ICOUNT_SHIFT}")

_live: set["QemuLink"] = set()
_live_lock = threading.Lock()


def launch(elf: str | Path, *, read_timeout: float = READ_TIMEOUT_S,
           qemu: str = QEMU_PROGRAM, extra_args: tuple[str, ...] = ()) -> "QemuLink":
    """Start QEMU on `elf` and connect to its UART; use the result in a `with` block.

    Raises ToolMissingError when QEMU is not installed, DeviceError when it does not start.
    """
    elf = Path(elf)
    if not elf.is_file():
        raise DeviceError(f"firmware {elf} does not exist", hint="build it first")
    last_failure = None
    for _ in range(BIND_ATTEMPTS):
        port = _free_port()
        argv = [qemu, "-M", QEMU_MACHINE, "-nographic", "-monitor", "none", "-semihosting",
                *ICOUNT_ARGS, "-kernel", str(elf),
                "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on", *extra_args]
        started = time.monotonic()
        child = proc.start(argv, install_hint=APT_INSTALL)
        link = QemuLink(child, port, elf, started, read_timeout)
        try:
            link._connect()
            return link
        except _PortTaken as exc:
            last_failure = exc
            link.close()
        except BaseException:
            link.close()
            raise
    raise DeviceError("QEMU could not open a TCP port for the UART", details=str(last_failure),
                      hint="another program keeps taking the free ports; try again")


class _PortTaken(Exception):
    pass


class QemuLink:
    """A running QEMU whose UART0 reads and writes like a pyserial port."""

    def __init__(self, child: subprocess.Popen, port: int, elf: Path, started: float,
                 read_timeout: float):
        self.port = port
        self.elf = elf
        self.started_at = started
        self.first_byte_at: float | None = None
        self._child = child
        self._serial: serial.SerialBase | None = None
        self._read_timeout = read_timeout
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = bytearray()
        self._qemu_output: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._fault: str | None = None
        self._qemu_fatal: str | None = None
        self._reader = threading.Thread(target=self._drain_qemu_output, daemon=True)
        self._reader.start()
        with _live_lock:
            _live.add(self)

    # --- pyserial-like interface ---------------------------------------------------------

    @property
    def timeout(self) -> float:
        return self._read_timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._read_timeout = value
        if self._serial is not None:
            self._serial.timeout = value

    @property
    def name(self) -> str:
        return f"QEMU's UART (127.0.0.1:{self.port})"

    @property
    def in_waiting(self) -> int:
        return self._call(lambda s: s.in_waiting)

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes, fewer when the read timeout expires (like pyserial)."""
        data = self._call(lambda s: s.read(size))
        self._observe(data)
        return data

    def read_available(self, timeout: float | None = None) -> bytes:
        """Everything received so far, waiting up to `timeout` (default: the read timeout)
        for the first byte; b"" when nothing came. Cheaper than read(n) for streams."""
        wait = self._read_timeout if timeout is None else timeout

        def operation(port):
            try:
                port.timeout = wait
                data = port.read(1)
                if data:
                    port.timeout = 0  # non-blocking: take what is already here
                    data += port.read(_CHUNK)
                return data
            finally:
                port.timeout = self._read_timeout

        data = self._call(operation)
        self._observe(data)
        return data

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        data = self._call(lambda s: s.read_until(expected, size))
        self._observe(data)
        return data

    def readline(self) -> bytes:
        return self.read_until(b"\n")

    def write(self, data: bytes) -> int:
        return self._call(lambda s: s.write(data))

    def flush(self) -> None:
        self._call(lambda s: s.flush())

    def reset_input_buffer(self) -> None:
        self._call(lambda s: s.reset_input_buffer())

    # --- beyond a serial port ------------------------------------------------------------

    def expect_line(self, predicate: Callable[[str], bool], *, timeout: float,
                    what: str) -> str:
        """The next complete line for which `predicate` is true; DeviceError after `timeout`."""
        deadline = time.monotonic() + timeout
        pending = bytearray()
        while True:
            while b"\n" in pending:
                raw, _, rest = bytes(pending).partition(b"\n")
                pending = bytearray(rest)
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceError(f"timed out after {timeout:g} s waiting for {what}",
                                  details=self._details(), hint=_HANG_HINT)
            pending += self.read_available(min(remaining, self._read_timeout))

    def last_lines(self) -> list[str]:
        """The last lines received from the firmware (a partial line last)."""
        lines = list(self._tail)
        if self._partial:
            lines.append(self._partial.decode("utf-8", "replace"))
        return lines

    @property
    def pid(self) -> int:
        """QEMU's process id (also its process group id)."""
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return self._child.poll()

    def wait_exit(self, timeout: float) -> int:
        """QEMU's exit status once the firmware stops it; DeviceError if it keeps running."""
        try:
            return self._child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"QEMU still running {timeout:g} s after the firmware should have "
                              "stopped it", details=self._details(), hint=_HANG_HINT) from None

    def close(self) -> None:
        """Disconnect and stop QEMU (and anything it started); safe to call twice."""
        try:
            if self._serial is not None:
                self._serial.close()
        finally:
            self._serial = None
            proc.stop(self._child)
            with _live_lock:
                _live.discard(self)
            if self._child.stdout:
                self._child.stdout.close()

    def __enter__(self) -> "QemuLink":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------

    def _connect(self) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        url = f"socket://127.0.0.1:{self.port}"
        while True:
            if self._child.poll() is not None:
                self._reader.join(timeout=1.0)
                output = "\n".join(self._qemu_output)
                if "Address already in use" in output:
                    raise _PortTaken(output)
                raise DeviceError(f"QEMU exited at start (status {self._child.returncode})",
                                  details=output or None,
                                  hint="check that the ELF was built for qemu-m4")
            try:
                self._serial = _QemuSocket(url, timeout=self._read_timeout,
                                           write_timeout=WRITE_TIMEOUT_S)
                log.debug("connected to QEMU's UART at %s (pid %d)", url, self._child.pid)
                return
            except serial.SerialException:
                if time.monotonic() > deadline:
                    raise DeviceError(f"could not connect to QEMU's UART at {url} within "
                                      f"{CONNECT_TIMEOUT_S:g} s",
                                      details="\n".join(self._qemu_output) or None,
                                      hint=_HANG_HINT) from None
                time.sleep(CONNECT_POLL_S)

    def _call(self, operation):
        if self._serial is None:
            raise DeviceError("the emulator link is closed", details=self._details(),
                              hint=_CRASH_HINT)
        try:
            return operation(self._serial)
        except serial.SerialTimeoutException:
            raise DeviceError(f"writing to the firmware timed out after {WRITE_TIMEOUT_S:g} s "
                              "(it stopped reading its UART)", details=self._details(),
                              hint=_HANG_HINT) from None
        except (serial.SerialException, OSError) as exc:
            # The socket closes when QEMU exits: report why it exited.
            status = self._exit_status()
            raise DeviceError(self._stopped_message(status), details=self._details(),
                              hint=self._fault_hint() if status else _CRASH_HINT) from exc

    def _observe(self, data: bytes) -> None:
        if not data:
            return
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        self._partial += data
        while True:
            cut = self._partial.find(b"\n")
            if cut < 0:
                break
            line = self._partial[:cut].decode("utf-8", "replace").rstrip("\r")
            del self._partial[:cut + 1]
            self._tail.append(line)
            match = FAULT_PATTERN.search(line)
            if match and self._fault is None:
                self._fault = match.group(1)
        if self._fault:
            status = self._exit_status()
            raise DeviceError(f"the firmware crashed: {self._fault}"
                              + (f" (QEMU exit status {status})" if status is not None else ""),
                              details=self._details(), hint=self._fault_hint())

    def _exit_status(self) -> int | None:
        try:
            return self._child.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return None

    def _stopped_message(self, status: int | None) -> str:
        if status is None:
            return "the connection to QEMU's UART closed while QEMU kept running"
        if self._fault:
            return f"the firmware crashed: {self._fault} (QEMU exit status {status})"
        self._reader.join(timeout=1.0)  # QEMU's last words explain a fatal stop
        if self._qemu_fatal:
            return f"QEMU stopped the emulated CPU: {self._qemu_fatal}"
        if status == 0:
            return "the firmware stopped QEMU (exit status 0) while tinyforge was talking to it"
        if status < 0:
            return f"QEMU was killed by signal {-status}"
        return f"the firmware stopped QEMU with exit status {status}"

    def _fault_hint(self) -> str:
        match = _PC.search(self._fault or "")
        if match:
            return (f"`arm-none-eabi-addr2line -f -e {self.elf} {match.group(1)}` names the "
                    "function that faulted")
        return _CRASH_HINT

    def _details(self) -> str | None:
        parts = []
        lines = [line for line in self.last_lines() if line.strip()]
        if lines:
            parts.append("last lines from the firmware:")
            parts += [f"  | {line}" for line in lines]
        else:
            parts.append("the firmware sent nothing")
        if self._qemu_output:
            parts.append("QEMU said:")
            parts += [f"  | {line}" for line in self._qemu_output]
        return "\n".join(parts)

    def _drain_qemu_output(self) -> None:
        # QEMU's own messages (bind errors, semihosting output); read so its pipe never fills.
        stream = self._child.stdout
        if stream is None:
            return
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("qemu: fatal:") and self._qemu_fatal is None:
                    # e.g. "Lockup: can't escalate 3 to HardFault": a fault in a fault handler
                    # or a bad vector table; the register dump that follows is kept too.
                    self._qemu_fatal = line[len("qemu: fatal:"):].strip()
                log.debug("qemu: %s", line)
                if "QEMU waiting for connection" not in line:  # its normal start-up notice
                    self._qemu_output.append(line)
        except (OSError, ValueError):
            pass  # closed by close()


class _QemuSocket(protocol_socket.Serial):
    """pyserial's `socket://` port (what serial.serial_for_url builds) without the input flush
    in its open(): QEMU starts the guest the moment we connect, and that flush threw away
    the boot message about one time in fifteen."""

    _opening = False

    def open(self) -> None:
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False
        local, peer = self._socket.getsockname(), self._socket.getpeername()
        if local == peer:
            # Linux "self-connect": polling a port nobody listens on yet can connect the
            # socket to itself when the kernel picks that same port as the source.
            self.close()
            raise serial.SerialException(f"connected to itself on {local}")

    def reset_input_buffer(self) -> None:
        if not self._opening:
            super().reset_input_buffer()

    def close(self) -> None:
        # pyserial's close() then sleeps 0.3 s "in case of quick reconnects"; QEMU is
        # stopped right after, and every run uses a new port.
        if self.is_open and self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._socket.close()
            self._socket = None
        self.is_open = False


_HANG_HINT = ("the firmware may be stuck; run with --verbose to see QEMU's command line, "
              "or try `pio run -t upload` in the project to watch its UART")
_CRASH_HINT = ("run the firmware by hand with `pio run -t upload` in its project to watch its "
               "UART; `tinyforge selftest` checks the board runtime on its own")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@atexit.register
def _stop_all() -> None:
    """Interpreter exit with a link still open (an uncaught error): no orphan QEMU."""
    with _live_lock:
        links = list(_live)
    for link in links:
        link.close()

