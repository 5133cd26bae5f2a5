"""Protocol v1 over any pyserial-like link: a board's serial port or QEMU's TCP socket.

`Conversation` turns bytes into protocol events (tinyforge.device.protocol) and waits for the
answer to a request with a deadline; on a timeout the error carries the last lines the
device sent, because "no answer" alone is never enough to act on. Its state (events not yet
looked at, a line half received) belongs to the link, not to a command: `flash --monitor`
hands the same Conversation to the monitor, so nothing is lost between them.

Every read and write goes through here, and every way they can fail becomes a DeviceError
(`ports.io_failure`): `LinkLostError` when the device vanished.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Callable

from ..errors import DeviceError
from . import ports, protocol

TAIL_LINES = 15
_READ_CHUNK = 65536
# The one wait for a BOOT message: QEMU starts the guest in ~0.1 s and a model's
# AllocateTensors takes milliseconds, but QEMU shows rare ~1 s stalls and a USB board may be
# finishing its own start (the sketch waits for the port) when it is asked.
BOOT_TIMEOUT_S = 15.0


class Conversation:
    def __init__(self, link, *, on_event: Callable[[protocol.Event], None] | None = None):
        self.link = link
        self.decoder = protocol.Decoder()
        self.pending: collections.deque = collections.deque()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        # Sees every event as it is decoded, including those a wait_for() skips.
        self.on_event = on_event

    def send(self, data: bytes) -> None:
        try:
            self.link.write(data)
            self.link.flush()
        except _io_errors() as exc:
            raise ports.io_failure(self.link, exc, "write to") from exc

    def poll(self, timeout: float) -> list[protocol.Event]:
        """Events decoded from whatever arrives within `timeout` (maybe none)."""
        if self.pending:
            events = list(self.pending)
            self.pending.clear()
            return events
        deadline = time.monotonic() + timeout
        while True:
            data = self._read()
            if data:
                events = self.decoder.feed(data)
                for event in events:
                    self._remember(event)
                if events:
                    return events
            if time.monotonic() >= deadline:
                return []

    def wait_for(self, predicate: Callable[[protocol.Event], bool], *, timeout: float,
                 what: str, keep: bool = False, hint: str | None = None) -> protocol.Event:
        """The first event matching `predicate`; others are kept for later `poll()`s.

        With `keep`, the matching event stays too, in its place: a later poll() sees every
        event in the order it came (how `flash --monitor` shows the BOOT flash waited for).
        """
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while time.monotonic() < deadline:
                batch = self.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                for index, event in enumerate(batch):
                    if predicate(event):
                        skipped.extend(batch[index if keep else index + 1:])  # in order
                        return event
                    skipped.append(event)
            raise DeviceError(f"no {what} from the device within {timeout:g} s",
                              details=self.describe_tail(),
                              hint=hint or "check the firmware runs (tinyforge monitor shows "
                                           "its output) and that it was built from the last "
                                           "build")
        finally:
            self.pending.extend(skipped)

    def describe_tail(self) -> str | None:
        if not self.tail:
            return "  (the device sent nothing)"
        return "\n".join(f"  | {line}" for line in self.tail)

    def _read(self) -> bytes:
        try:
            reader = getattr(self.link, "read_available", None)
            if reader is not None:  # QEMU's link returns whatever is there within its timeout
                return reader(0.2)
            return self.link.read(max(1, min(_READ_CHUNK, self.link.in_waiting)))
        except _io_errors() as exc:
            raise ports.io_failure(self.link, exc, "read from") from exc

    def _remember(self, event: protocol.Event) -> None:
        self.tail.append(describe(event))
        if self.on_event:
            self.on_event(event)


def wait_for_boot(conversation: Conversation, *, ask: bool, timeout: float = BOOT_TIMEOUT_S,
                  keep: bool = False) -> protocol.Boot:
    """The device's BOOT message, whatever its status (see `require_started`).

    `ask` sends HELLO first, for a board that booted before its port was opened; QEMU's
    guest starts only once tinyforge is connected, so its BOOT comes unasked. `keep` leaves
    the BOOT for a later poll() (Conversation.wait_for). A device speaking another protocol
    version is a DeviceError, as is no BOOT within `timeout` seconds.
    """
    if ask:
        conversation.send(protocol.encode_hello())
    event = conversation.wait_for(
        lambda e: isinstance(e, (protocol.Boot, protocol.UnsupportedVersion)), timeout=timeout,
        what="BOOT message", keep=keep,
        hint="check that the device runs tinyforge firmware (`tinyforge monitor` shows what it "
             "prints; `tinyforge flash` puts the last build on it); a board may need a reset")
    if isinstance(event, protocol.UnsupportedVersion):
        raise DeviceError(f"the firmware speaks protocol version {event.version}, this "
                          f"tinyforge speaks {protocol.VERSION}",
                          hint="rebuild and flash the firmware with this tinyforge "
                               "(`tinyforge build`, then `tinyforge flash`)")
    return event


def require_started(boot: protocol.Boot, conversation: Conversation) -> None:
    """DeviceError unless BOOT says the model started (status=ok)."""
    if not boot.ok:
        raise DeviceError("the firmware runs but could not start its model (BOOT status=error)",
                          details=conversation.describe_tail(),
                          hint="`tinyforge monitor` shows the firmware's ERR message")


@functools.cache
def _io_errors() -> tuple[type[BaseException], ...]:
    return ports.io_errors()


def describe(event: protocol.Event) -> str:
    """A one-line description of an event for error messages."""
    if isinstance(event, protocol.DeviceLog):
        return event.text
    if isinstance(event, protocol.Corrupt):
        return f"(corrupt: {event.reason}) {event.line}"
    name = type(event).__name__
    return f"{name} " + " ".join(f"{k}={v}" for k, v in _fields(event).items())


def _fields(event) -> dict:
    names = getattr(event, "__dataclass_fields__", {})
    return {name: getattr(event, name) for name in names if name not in ("extra", "outputs")}
