"""`tinyforge monitor` as a library: a live view of what the firmware reports.

Protocol messages become a human view (or one JSON object per message, or CSV rows of
results); every other line is the device's own log and passes through. The monitor warns
when the board runs another model or protocol than the last build, says so when the firmware
waits for host input (built without a demo input) or sends nothing, survives a reset or an
unplug (on a read or a send) by waiting for the port to come back, and stops after `count`
results or `timeout`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .. import jsonout, units
from ..device import protocol
from ..device.conversation import BOOT_TIMEOUT_S, Conversation
from ..device.sources import LinkSource
from ..errors import DeviceError, InputError, LinkLostError

log = logging.getLogger(__name__)

# Ask for the BOOT message again when the board says nothing for this long after opening:
# on USB boards the monitor usually opens the port long after the board booted.
HELLO_AFTER_S = 0.5
DEFAULT_RECONNECT_S = 30.0
POLL_S = 0.2


@dataclass
class MonitorOptions:
    json: bool = False
    csv: Path | None = None
    count: int | None = None        # stop after this many results
    timeout: float | None = None    # stop after this many seconds
    expected_sha256: str | None = None
    labels: list[str] = field(default_factory=list)
    reconnect_timeout: float = DEFAULT_RECONNECT_S
    # Whether the firmware runs a built-in input on its own (the manifest's demo_input);
    # None when unknown (no build to compare with, or the self-test firmware).
    demo_input: bool | None = None

    def __post_init__(self):
        # 0, a negative or NaN would mean "no limit" or "stop at once" by accident.
        for name in ("timeout", "reconnect_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"monitor {name} must be a number of seconds above 0, not "
                                 f"{value!r}", hint="leave --timeout out to wait without a limit")
        if self.count is not None and self.count < 1:
            raise InputError(f"monitor count must be at least 1, not {self.count!r}",
                             hint="leave --count out to show every result")


@dataclass
class MonitorSummary:
    results: int = 0
    errors: int = 0
    boots: int = 0
    corrupt: int = 0
    decisions: int = 0
    reconnects: int = 0
    seconds: float = 0.0


def run(source: LinkSource, options: MonitorOptions, out: TextIO | None = None, *,
        conversation: Conversation | None = None) -> MonitorSummary:
    """Monitor until `count`/`timeout` (or Ctrl-C, which propagates after the port is closed).

    `out`: where the view goes, sys.stdout at the time of the call by default (not the one
    of import time, so a caller's redirection holds). `conversation`: one already talking to
    the device over `source` (`flash --monitor`); what it holds and has not shown yet comes
    first, in order.
    """
    view = _View(options, sys.stdout if out is None else out)
    summary = view.summary
    started = time.monotonic()
    deadline = started + options.timeout if options.timeout else None
    session = None
    try:
        session = _Session(conversation or Conversation(source.open()), summary)
        while not view.done():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                for event in session.conversation.poll(POLL_S):
                    view.show(event)
                session.ask_for_boot_if_silent()
            except LinkLostError as error:
                source.close(session.conversation.link)
                session = _Session(Conversation(_reconnect(source, error, options, deadline)),
                                   summary)
                summary.reconnects += 1
    finally:
        if session is not None:
            source.close(session.conversation.link)
        view.close()
    summary.seconds = time.monotonic() - started
    if options.count is not None and summary.results < options.count:
        raise DeviceError(f"only {summary.results} of {options.count} results arrived within "
                          f"{options.timeout:g} s",
                          hint="is the firmware running inferences? `tinyforge monitor` "
                               "without --count shows what it sends")
    return summary


class _Session:
    """One connection to the device: asks for BOOT when it is silent, warns when it stays so."""

    def __init__(self, conversation: Conversation, summary: MonitorSummary):
        self.conversation = conversation
        self.summary = summary
        self.opened = time.monotonic()
        self.boots_before = summary.boots
        self.asked_at: float | None = None
        self.warned = False

    def ask_for_boot_if_silent(self) -> None:
        if self.summary.boots > self.boots_before:
            return
        now = time.monotonic()
        if self.asked_at is None and now - self.opened >= HELLO_AFTER_S:
            self.asked_at = now
            self.conversation.send(protocol.encode_hello())
        elif self.asked_at is not None and not self.warned and \
                now - self.asked_at >= BOOT_TIMEOUT_S:
            self.warned = True
            log.warning("no BOOT message %g s after asking for it (HELLO): the device may not "
                        "run tinyforge firmware, or its model hangs at start; still listening "
                        "(`tinyforge flash` puts the last build on it)", BOOT_TIMEOUT_S)


def _reconnect(source: LinkSource, error: LinkLostError, options: MonitorOptions,
               deadline: float | None):
    wait = options.reconnect_timeout
    if deadline is not None:
        wait = min(wait, max(0.0, deadline - time.monotonic()))
    log.warning("the board went away (%s); waiting up to %g s for it to come back",
                error.message, wait)
    new_link = source.reopen(time.monotonic() + wait)
    if new_link is None:
        raise DeviceError(f"the board vanished and did not come back within {wait:g} s",
                          details=f"  {error.message}",
                          hint="check the cable; after a crash, double-tap reset and run "
                               "`tinyforge flash` again")
    log.warning("reconnected")
    return new_link


class _View:
    """Renders events as text, JSON lines or CSV rows, and keeps the counts."""

    def __init__(self, options: MonitorOptions, out: TextIO):
        self.options = options
        self.out = out
        self.summary = MonitorSummary()
        self.csv_file: _CsvLog | None = None
        self.csv_rows = 0
        self.said_waiting = False
        if options.csv:
            self.csv_file = _CsvLog(Path(options.csv))
            self._write_csv(["seq", "src", "us", "top_index", "top_label", "top_score",
                             "outputs"])
            self.csv_rows = 0  # the header is no result

    def done(self) -> bool:
        return self.options.count is not None and self.summary.results >= self.options.count

    def close(self) -> None:
        if self.csv_file:
            self.csv_file.close()

    def show(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.UnsupportedVersion):
            raise DeviceError(
                f"the firmware speaks protocol version {event.version}; this tinyforge speaks "
                f"version {protocol.VERSION}",
                hint="rebuild and flash the firmware with this tinyforge (`tinyforge build` "
                     "then `tinyforge flash`), or use the tinyforge that built it")
        if self.done():
            return
        counter = {protocol.Boot: "boots", protocol.Result: "results",
                   protocol.DeviceErrorMessage: "errors", protocol.Corrupt: "corrupt",
                   protocol.Decision: "decisions"}
        name = counter.get(type(event))
        if name:
            setattr(self.summary, name, getattr(self.summary, name) + 1)
        if isinstance(event, protocol.Boot):
            self._check_boot(event)
        if isinstance(event, protocol.Result) and self.csv_file:
            self._csv_row(event)
        if self.options.json:
            jsonout.emit(to_json(event), lines=True, out=self.out)
        else:
            text = self._text(event)
            if text is not None:
                print(text, file=self.out, flush=True)

    def _check_boot(self, boot: protocol.Boot) -> None:
        expected = self.options.expected_sha256
        if expected and boot.model_sha256 != expected:
            log.warning("warning: the board runs a different model (sha256 %s…) than the last "
                        "build (%s…); run `tinyforge flash` to update it",
                        boot.model_sha256[:12], expected[:12])
            return
        if boot.ok and self.options.demo_input is False and not self.said_waiting:
            self.said_waiting = True
            log.info("the firmware waits for host input: it was built without a demo "
                        "input, so it sends results only for inputs it is sent. Send some "
                        "with `tinyforge validate`, or rebuild with `tinyforge build "
                        "--demo-input FILE.npy` to have it run one on its own")

    def _text(self, event: protocol.Event) -> str | None:
        if isinstance(event, protocol.Boot):
            status = "ready" if event.ok else "FAILED TO START"
            tensors = ", ".join(f"{t.dtype}[{'x'.join(map(str, t.shape))}]"
                                for t in event.inputs + event.outputs)
            return (f"boot  {event.board}: {status}; model {event.model_sha256[:12]}…, arena "
                    f"{units.size(event.arena_bytes)} (used {units.size(event.arena_used_bytes)}"
                    f")" + (f", plan {event.memory_plan}" if event.memory_plan else "")
                    + f", {event.ops} ops"
                    + (f", {tensors}" if tensors else "") + f", firmware {event.firmware}"
                    + (f"; pipeline {event.extra['pipeline']}" if "pipeline" in event.extra
                       else ""))
        if isinstance(event, protocol.Result):
            return (f"#{event.seq:<5} {event.src:<4} {units.micros(event.us):>11}  "
                    f"{self._outputs(event)}")
        if isinstance(event, protocol.Decision):
            # The device's own verdict, what a user watches for: set apart from the results.
            name = event.label or self._label(event.cls)
            return (f">>> DECISION {name} (class {event.cls}) score {event.score}/256 "
                    f"= {event.score / 256:.3f} at t={event.t} ms (inference #{event.seq})")
        if isinstance(event, protocol.DeviceErrorMessage):
            seq = "-" if event.seq is None else event.seq
            return f"ERROR #{seq} {event.code} (status {event.status}): {event.msg}"
        if isinstance(event, protocol.DeviceLog):
            return f"| {event.text}"
        if isinstance(event, protocol.Corrupt):
            log.warning("dropped a corrupted line (%s)", event.reason)
            return None
        if isinstance(event, protocol.Echo):
            return f"echo  #{event.seq} {units.size(len(event.data))}"
        if isinstance(event, protocol.OtherMessage):
            return f"{event.type.lower():<5} " + " ".join(f"{k}={v}" for k, v in event.fields.items())
        return None

    def _label(self, index: int) -> str:
        labels = self.options.labels
        return labels[index] if 0 <= index < len(labels) else f"class {index}"

    def _outputs(self, result: protocol.Result) -> str:
        top = top_class(result, self.options.labels)
        if top is not None:
            index, label, score = top
            return f"{label} {score:.3f}"
        values = [", ".join(f"{v:.4g}" for v in output.f[:8]) + (" …" if len(output.f) > 8 else "")
                  for output in result.outputs]
        return "  ".join(f"[{v}]" for v in values)

    def _csv_row(self, result: protocol.Result) -> None:
        top = top_class(result, self.options.labels)
        index, label, score = top if top else ("", "", "")
        flat = " ".join(",".join(repr(v) for v in output.f) for output in result.outputs)
        self._write_csv([result.seq, result.src, result.us, index, label, score, flat])

    def _write_csv(self, row: list) -> None:
        try:
            self.csv_file.write_row(row)
        except OSError as exc:
            raise InputError(f"cannot write the CSV log {self.options.csv}: "
                             f"{exc.strerror or exc}",
                             details=f"it holds the {units.count(self.csv_rows)} result(s) "
                                     "written before",
                             hint="give --csv a file on a disk with free space") from None
        self.csv_rows += 1


class _CsvLog:
    """The --csv log: one row at a time, written straight to the file.

    Each row is complete on disk as soon as it is shown, so the log holds every result up to
    the last however the monitor ends (Ctrl-C, a lost board) and can be followed while it
    grows. A row that cannot be written whole (a full disk) is taken back: the file never
    ends in half a row.
    """

    def __init__(self, path: Path):
        # Never a FIFO or a device: opening one could block, or write to a board.
        if path.exists() and not path.is_file():
            raise InputError(f"the CSV log {path} exists and is not a regular file",
                             hint="give --csv the path of a new or regular file")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as exc:
            raise InputError(f"cannot write the CSV log {path}: {exc.strerror or exc}",
                             hint="give --csv a path in a writable folder") from None
        self.size = 0

    def write_row(self, row: list) -> None:
        text = io.StringIO()
        csv.writer(text).writerow(row)
        data = text.getvalue().encode("utf-8")
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
                os.lseek(self.fd, self.size, os.SEEK_SET)
            raise
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def top_class(result: protocol.Result, labels: list[str]) -> tuple[int, str, float] | None:
    """(index, label, score) when the result is one class vector, else None."""
    if len(result.outputs) != 1 or len(result.outputs[0].f) < 2:
        return None
    scores = result.outputs[0].f
    index = max(range(len(scores)), key=scores.__getitem__)
    label = labels[index] if index < len(labels) else f"class {index}"
    return index, label, scores[index]


def to_json(event: protocol.Event) -> dict:
    data = dataclasses.asdict(event)
    data["type"] = {protocol.Boot: "boot", protocol.Result: "result",
                    protocol.DeviceErrorMessage: "error", protocol.Echo: "echo",
                    protocol.DeviceLog: "log", protocol.Corrupt: "corrupt",
                    protocol.OtherMessage: "message", protocol.Decision: "decision",
                    protocol.Credit: "credit", protocol.Features: "features",
                    }.get(type(event), type(event).__name__)
    if isinstance(event, protocol.Decision):
        data["class"] = data.pop("cls")
    if isinstance(event, protocol.Echo):
        data["data"] = event.data.hex()
    return data


