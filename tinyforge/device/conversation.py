"""Protocol v1 over any pyserial-like link: a board's serial port or QEMU's TCP socket.

`Conversation` turns bytes into protocol events (tinyforge.device.protocol) and waits for the
answer to a request with a deadline; on a timeout the error carries the last lines the
device sent, because "no answer" alone is never enough to act on.
"""

from __future__ import annotations

import collections
import time
from typing import Callable

from ..errors import DeviceError
from . import protocol

TAIL_LINES = 15
_READ_CHUNK = 65536


class Conversation:
    def __init__(self, link, *, on_event: Callable[[protocol.Event], None] | None = None):
        self.link = link
        self.decoder = protocol.Decoder()
        self.pending: collections.deque = collections.deque()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        # Sees every event as it is decoded, including those a wait_for() skips.
        self.on_event = on_event

    def send(self, data: bytes) -> None:
        self.link.write(data)
        self.link.flush()

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
                 what: str) -> protocol.Event:
        """The first event matching `predicate`; others are kept for later `poll()`s."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while time.monotonic() < deadline:
                batch = self.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                for index, event in enumerate(batch):
                    if predicate(event):
                        skipped.extend(batch[index + 1:])  # later events stay, in order
                        return event
                    skipped.append(event)
            raise DeviceError(f"no {what} from the device within {timeout:g} s",
                              details=self.describe_tail(),
                              hint="check the firmware runs (tinyforge monitor shows its "
                                   "output) and that it was built from the last build")
        finally:
            self.pending.extend(skipped)

    def describe_tail(self) -> str | None:
        if not self.tail:
            return "  (the device sent nothing)"
        return "\n".join(f"  | {line}" for line in self.tail)

    def _read(self) -> bytes:
        reader = getattr(self.link, "read_available", None)
        if reader is not None:  # QEMU's link returns whatever is there within its timeout
            return reader(0.2)
        return self.link.read(max(1, min(_READ_CHUNK, self.link.in_waiting)))

    def _remember(self, event: protocol.Event) -> None:
        self.tail.append(describe(event))
        if self.on_event:
            self.on_event(event)


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
