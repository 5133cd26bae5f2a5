"""Streaming a recording to a firmware's sensor pipeline over serial (docs/protocol.md 3.5).

REPLAY starts a stream; SAMPLES lines carry int16 values (IMU readings of 6 counts, or PCM)
into the buffer the sensor's interrupt fills on a real board; CREDIT says how many values
the pipeline has taken, so the host never sends more than the buffer holds (credit-based flow
control: values sent - values read <= capacity). Everything the pipeline computes on the way
comes back as RES (src= the input), DEC and, when asked, FEAT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence

from ..errors import DeviceError
from . import protocol
from .conversation import Conversation

# No progress (no CREDIT, no result) for this long means the firmware stopped: an inference
# takes milliseconds, a SAMPLES line ~50 ms over QEMU's UART.
STALL_TIMEOUT_S = 20.0


@dataclass
class ReplayEvents:
    """What the firmware answered while a recording streamed through its pipeline."""

    results: list[protocol.Result] = field(default_factory=list)
    decisions: list[protocol.Decision] = field(default_factory=list)
    features: list[protocol.Features] = field(default_factory=list)
    capacity: int = 0
    lines: int = 0
    seconds: float = 0.0
    # The firmware's own count of BoardMicros() in the pipeline outside inferences (CREDIT us=).
    pipeline_us: int | None = None


class CreditWindow:
    """The host's side of the flow control: what may be sent now (a faithful model of the
    firmware's buffer, tested against the rule the firmware enforces)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.sent = 0
        self.read = 0

    def allows(self, count: int) -> bool:
        return self.sent + count - self.read <= self.capacity

    def on_sent(self, count: int) -> None:
        if not self.allows(count):
            raise ValueError(f"{count} values exceed the credit "
                             f"({self.capacity - (self.sent - self.read)} left)")
        self.sent += count

    def on_credit(self, read: int) -> None:
        if not self.read <= read <= self.sent:
            raise ValueError(f"the device read {read} values; {self.read}..{self.sent} "
                             "were possible")
        self.read = read


def stream(conversation: Conversation, input_kind: str, values: Sequence[int], *,
           max_line: int | None, rate_mhz: int | None = None, features: bool = False,
           discard: bool = False, on_progress: Callable[[int, int], None] | None = None,
           stall_timeout: float = STALL_TIMEOUT_S) -> ReplayEvents:
    """Send `values` (flat int16: readings of 6 for the IMU) through the firmware's pipeline
    and collect what it computed. Raises DeviceError when it refuses or stops answering."""
    started = time.monotonic()
    unit = protocol.REPLAY_UNIT[input_kind]
    if len(values) % unit:
        raise ValueError(f"{len(values)} values are not whole readings of {unit}")
    conversation.send(protocol.encode_replay(input_kind, rate_mhz=rate_mhz, features=features,
                                             discard=discard))
    answer = conversation.wait_for(
        lambda e: isinstance(e, protocol.Credit) and e.seq is None
        or isinstance(e, protocol.DeviceErrorMessage), timeout=stall_timeout,
        what="answer to REPLAY")
    if isinstance(answer, protocol.DeviceErrorMessage):
        raise _refused("REPLAY", answer, conversation)
    window = CreditWindow(answer.capacity)
    per_line = min(protocol.samples_per_line(max_line or 512, unit), answer.capacity // unit * unit)
    if per_line < unit:
        raise DeviceError(f"the firmware's replay buffer holds {answer.capacity} values, less "
                          "than one reading", hint="rebuild the firmware with this tinyforge")
    events = ReplayEvents(capacity=answer.capacity)
    total, seq, last_progress = len(values), 0, time.monotonic()
    while window.read < total:
        while window.sent < total:
            count = min(per_line, total - window.sent)
            if not window.allows(count):
                break
            conversation.send(protocol.encode_samples(
                seq, values[window.sent:window.sent + count]))
            window.on_sent(count)
            seq += 1
        batch = conversation.poll(0.5)
        for event in batch:
            if _take(event, input_kind, window, events, conversation):
                last_progress = time.monotonic()
        if on_progress is not None and batch:
            on_progress(window.read, total)
        if time.monotonic() - last_progress > stall_timeout:
            raise DeviceError(f"the firmware stopped taking replayed samples after "
                              f"{window.read:,} of {total:,} values", details=
                              conversation.describe_tail(),
                              hint="`tinyforge monitor` shows what the firmware prints")
    events.lines, events.seconds = seq, time.monotonic() - started
    return events


def _take(event, input_kind: str, window: CreditWindow, events: ReplayEvents,
          conversation: Conversation) -> bool:
    """File one event; True when it shows progress."""
    if isinstance(event, protocol.Credit) and event.seq is not None:
        window.on_credit(event.read)
        if event.extra.get("us", "").isdigit():
            events.pipeline_us = int(event.extra["us"])
        return True
    if isinstance(event, protocol.Result) and event.src == input_kind:
        events.results.append(event)
        return True
    if isinstance(event, protocol.Decision):
        events.decisions.append(event)
    elif isinstance(event, protocol.Features):
        events.features.append(event)
    elif isinstance(event, protocol.DeviceErrorMessage):
        raise _refused("SAMPLES", event, conversation)
    return False


def _refused(what: str, error: protocol.DeviceErrorMessage, conversation) -> DeviceError:
    return DeviceError(f"the firmware refused {what}: {error.code} ({error.msg})",
                       details=conversation.describe_tail(),
                       hint="rebuild the firmware for this pipeline (`tinyforge build --input "
                            "...`); docs/protocol.md section 3.5 explains the code")
