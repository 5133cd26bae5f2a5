"""Finding and opening a board's serial port.

`--port` always wins. Otherwise the board profile's USB ids (the sketch's and the
bootloader's) pick the port among pyserial's `list_ports`; tinyforge refuses to guess when
several boards match (or asks, on a terminal) and lists what is connected when none does.
Opening maps the usual OS failures to errors with a fix: permission denied (the dialout
group), busy (another monitor, ModemManager), vanished. After opening, every failure of a
read or a write, whatever pyserial or the OS raises for it, becomes a `LinkLostError` (or a
`DeviceError` for a write that timed out) in one place: `io_failure()`.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ..board.profiles import Board
from ..errors import DeviceError, LinkLostError

log = logging.getLogger(__name__)

# Every serial timeout is named. A read returns after this long without data, so loops can
# check their own deadlines; a write that blocks this long means the board stopped reading.
READ_TIMEOUT_S = 0.2
WRITE_TIMEOUT_S = 5.0
# How often to look for a port that went away (re-enumeration after upload or reset).
REDISCOVER_INTERVAL_S = 0.25


@dataclass(frozen=True)
class PortMatch:
    device: str
    role: str            # "app" or "bootloader"
    description: str
    serial_number: str | None

    def describe(self) -> str:
        serial = f", serial {self.serial_number}" if self.serial_number else ""
        kind = "sketch" if self.role == "app" else "bootloader"
        return f"{self.device} ({self.description}; {kind}{serial})"


def list_ports():
    from serial.tools import list_ports as pyserial_list_ports
    return list(pyserial_list_ports.comports())


def matching_ports(board: Board, ports: Iterable | None = None,
                   roles: tuple[str, ...] = ("app", "bootloader")) -> list[PortMatch]:
    """Ports whose USB VID:PID is one of the board's, sorted by device name."""
    wanted = {(vid, pid): role for vid, pid, role in board.usb_ids() if role in roles}
    matches = []
    for port in (list_ports() if ports is None else ports):
        role = wanted.get((port.vid, port.pid))
        if role:
            matches.append(PortMatch(port.device, role, port.description or "",
                                     port.serial_number))
    return sorted(matches, key=lambda m: m.device)


def choose_port(board: Board, explicit: str | None = None, *, ports: Iterable | None = None,
                ask: Callable[[list[PortMatch]], PortMatch] | None = None) -> str:
    """The port to use for `board`: `explicit`, else the one matching port.

    `ask` (given when stdin is a terminal) picks among several matches; without it several
    matches are an error, because guessing could flash the wrong board.
    """
    if explicit:
        return explicit
    ports = list_ports() if ports is None else list(ports)
    matches = matching_ports(board, ports)
    if len(matches) == 1:
        log.info("using %s", matches[0].describe())
        return matches[0].device
    if not matches:
        raise DeviceError(
            f"no {board.name} found on any serial port",
            details=_connected(ports),
            hint=f"plug the board in (a data cable, not a charge-only one) or give --port; "
                 f"if it is plugged in but missing, double-tap its reset button to start the "
                 f"bootloader ({_usb_ids(board)})")
    if ask is not None:
        return ask(matches).device
    raise DeviceError(
        f"{len(matches)} boards match {board.name}; refusing to guess which one to use:",
        details="\n".join(f"  - {m.describe()}" for m in matches),
        hint="choose one with --port")


def wait_for_port(board: Board, roles: tuple[str, ...], timeout: float,
                  list_function: Callable[[], list] = list_ports) -> str | None:
    """Poll until a port with one of `roles` appears; its device, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        matches = matching_ports(board, list_function(), roles)
        if matches:
            return matches[0].device
        if time.monotonic() >= deadline:
            return None
        time.sleep(REDISCOVER_INTERVAL_S)


def open_port(device: str, baud: int):
    """Open a serial port (or a pyserial URL such as socket://) exclusively, with timeouts."""
    import serial

    try:
        if "://" in device:
            return serial.serial_for_url(device, baudrate=baud, timeout=READ_TIMEOUT_S,
                                         write_timeout=WRITE_TIMEOUT_S)
        return serial.Serial(device, baudrate=baud, timeout=READ_TIMEOUT_S,
                             write_timeout=WRITE_TIMEOUT_S, exclusive=True)
    except io_errors() as exc:
        raise port_error(device, exc) from None


def io_errors() -> tuple[type[BaseException], ...]:
    """What reading, writing or configuring a serial port can raise: pyserial wraps most OS
    errors in SerialException, but not all (`in_waiting` raises OSError, `flush` and
    `reset_input_buffer` termios.error)."""
    import serial

    return (OSError, serial.SerialException, *_termios_error())


def _termios_error() -> tuple[type[BaseException], ...]:
    try:
        import termios
    except ImportError:  # Windows
        return ()
    return (termios.error,)


def io_failure(link, exc: BaseException, operation: str) -> DeviceError:
    """The error for a failed `operation` ("read from", "write to") on an open link."""
    import serial

    name = getattr(link, "name", None)
    name = name if isinstance(name, str) and name else "the device"
    if isinstance(exc, serial.SerialTimeoutException):
        return DeviceError(
            f"writing to {name} timed out after {WRITE_TIMEOUT_S:g} s: the board stopped "
            "reading its serial port",
            hint="the firmware may be stuck: press reset (or unplug and plug the board), "
                 "then run the command again; `tinyforge monitor` shows what it prints")
    reason = _reason(exc)
    return LinkLostError(
        f"could not {operation} {name}: {reason} (the board was unplugged, reset or crashed)",
        hint="check the cable and that the board is still powered, then run the command "
             "again; `tinyforge monitor` waits for a board that comes back")


def _reason(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if isinstance(exc, _termios_error()) and len(args) == 2:  # (errno, text), not an OSError
        return f"[Errno {args[0]}] {args[1]}"
    return str(exc) or type(exc).__name__


def port_error(device: str, exc: Exception) -> DeviceError:
    """A `DeviceError` with the fix for why `device` could not be opened or used."""
    number = getattr(exc, "errno", None)
    text = str(exc)
    if number in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return DeviceError(f"permission denied opening {device}",
                           hint="add yourself to the serial port's group, then log in again: "
                                "`sudo usermod -aG dialout $USER` (Arch: uucp)")
    if number == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower():
        return DeviceError(f"{device} is busy: another program has it open",
                           hint="close other serial monitors (Arduino IDE, screen, pio device "
                                "monitor); on Linux, ModemManager may be probing the port: "
                                "`sudo systemctl stop ModemManager`")
    if number in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return DeviceError(f"{device} does not exist (the board is unplugged or re-enumerated)",
                           hint="check the cable; `tinyforge monitor` without --port finds "
                                "the board by its USB id")
    if "Connection refused" in text:
        return DeviceError(f"nothing is listening at {device}",
                           hint="is the emulator running? `tinyforge flash --board qemu-m4` "
                                "starts it")
    return DeviceError(f"cannot use {device}: {_reason(exc)}",
                       hint="check the port name (`tinyforge monitor` without --port finds the "
                            "board by its USB id) and that the board is plugged in")


def _connected(ports) -> str:
    if not ports:
        return "  (no serial ports at all)"
    return "\n".join(
        f"  - {p.device}: {p.description or 'no description'}"
        + (f" [{p.vid:04x}:{p.pid:04x}]" if p.vid is not None and p.pid is not None else "")
        for p in ports)


def _usb_ids(board: Board) -> str:
    return ", ".join(f"{role} {vid:04x}:{pid:04x}" for vid, pid, role in board.usb_ids())
