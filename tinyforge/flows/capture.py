"""`tinyforge capture`: record a board's sensor stream to a file, like a data forwarder.

`capture()` builds the capture firmware of the sensor (`tinyforge.project.capture`, built and
uploaded like the self-test), then `record_to_file()` asks it for its stream (CAPTURE ->
STREAM, then CAP lines; docs/protocol.md, "Capture firmware") and writes what arrives:

- microphone -> `.wav` (16 kHz mono 16-bit PCM, what `features` and `validate --replay` read);
- imu -> `.csv` (`time_s,ax,ay,az,gx,gy,gz` in g and dps, exact multiples of one count) or
  `.npz` (`imu`: int16 counts [N, 6], `rate_hz`, `axes`), in tinyforge's axes.

The file is written beside its final name and renamed into place when the capture ends: at
the duration asked for, on Ctrl-C (the file holds everything received, then the command exits
130), or when the stream breaks (samples lost on the board, a line missing): then the file
keeps the continuous part before the break and a `CaptureStreamError` says where it broke.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import tempfile
import time
import wave
from pathlib import Path
from typing import Callable

import numpy as np

from .. import proc, units
from ..board.profiles import Board
from ..device import protocol
from ..device.conversation import Conversation, wait_for_boot
from ..errors import (
    CaptureFormatError,
    CaptureOutputError,
    CaptureStreamError,
    DeviceError,
    InputError,
    SensorUnavailableError,
)
from ..pipeline import imu as imu_mod
from ..project import capture as capture_project

__all__ = [
    "FORMATS",
    "CaptureOptions",
    "CaptureStats",
    "capture",
    "output_format",
    "record_to_file",
]

log = logging.getLogger(__name__)

# The formats each sensor is written in; the first is the default.
FORMATS = {"imu": ("csv", "npz"), "microphone": ("wav",)}
STREAM_TIMEOUT_S = 10.0      # CAPTURE -> STREAM: the IMU probe and start take milliseconds
# No CAP line for this long while streaming: the board stopped sending.
SILENCE_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0
PROGRESS_INTERVAL_S = 0.5
MAX_SECONDS = 4 * 3600.0     # the readers' limits: 30 min of audio, 2,000,000 IMU readings


@dataclasses.dataclass
class CaptureOptions:
    board: str
    sensor: str                      # imu | microphone
    output: Path
    format: str | None = None        # from the output's suffix when None
    seconds: float | None = None     # None: until Ctrl-C
    port: str | None = None
    project_dir: Path | None = None
    core_dir: Path | None = None
    upload: bool = True              # False: the board already runs the capture firmware


@dataclasses.dataclass
class CaptureStats:
    """What a capture received; updated as it goes (so an interrupted one still knows)."""

    sensor: str
    output: str
    format: str
    part: str = ""
    rate_mhz: int = 0
    samples: int = 0                 # readings (imu) or audio samples
    lines: int = 0
    ended: str = "running"           # duration | interrupted | stream broke

    @property
    def seconds(self) -> float:
        return self.samples * 1000.0 / self.rate_mhz if self.rate_mhz else 0.0

    def to_json(self) -> dict:
        return {"sensor": self.sensor, "output": self.output, "format": self.format,
                "part": self.part, "rate_hz": self.rate_mhz / 1000.0, "samples": self.samples,
                "seconds": round(self.seconds, 6), "ended": self.ended}


# --- checks before anything is built ------------------------------------------------------

def output_format(output: Path, sensor: str, fmt: str | None = None) -> str:
    """The format to write: `fmt`, else the output's suffix; refused when the sensor's
    stream cannot be written in it."""
    if sensor not in FORMATS:
        raise InputError(f"unknown sensor '{sensor}'", hint="use --input imu or microphone")
    chosen = (fmt or Path(output).suffix.lstrip(".")).lower()
    allowed = FORMATS[sensor]
    if chosen not in allowed:
        known = sorted({f for formats in FORMATS.values() for f in formats})
        what = f"'{chosen}'" if chosen else "no format (the output has no suffix)"
        raise CaptureFormatError(
            f"cannot write the {sensor} stream as {what}",
            hint=f"{sensor} is written as {' or '.join('.' + f for f in allowed)}: name the "
                 f"output e.g. capture.{allowed[0]}, or pass --format {allowed[0]} "
                 f"(formats: {', '.join(known)})")
    return chosen


def check_output(output: Path) -> None:
    """The output can be created: its folder exists and is writable, it is not a folder."""
    output = Path(output)
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise CaptureOutputError(f"the output {output} is a folder",
                                 hint="name a file, e.g. capture.wav")
    if not folder.is_dir():
        raise CaptureOutputError(f"the folder of the output {output} does not exist",
                                 hint=f"create it first (mkdir -p {folder}) or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CaptureOutputError(f"the folder {folder} is not writable",
                                 hint="write the capture to a folder you can write to")


def check_board(board: Board, sensor: str) -> None:
    """SensorUnavailableError unless `board` has the sensor and tinyforge can capture it."""
    if sensor not in board.inputs:
        raise SensorUnavailableError(
            f"board '{board.id}' has no {sensor}",
            hint="capture on a board that has one (its profile lists it under sensors.inputs; "
                 "`tinyforge boards` shows them)")
    if board.emulated:
        raise SensorUnavailableError(
            f"board '{board.id}' is emulated: its {sensor} samples are recordings the host "
            "replays, there is nothing to capture",
            hint="capture on a Nano 33 BLE Sense (--board nano33ble), or use a recording "
                 "you have with `tinyforge features` / `validate --replay`")


def _check_seconds(seconds: float | None) -> None:
    if seconds is not None and not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise InputError(f"a capture of {seconds!r} s makes no sense",
                         hint=f"give --seconds above 0, at most {MAX_SECONDS:g} (leave it out "
                              "to record until Ctrl-C)")


# --- the command --------------------------------------------------------------------------

def capture(options: CaptureOptions, *, ask=None,
            on_build_line: Callable[[str], None] | None = None,
            on_progress: Callable[[CaptureStats], None] | None = None) -> CaptureStats:
    """Build and upload the capture firmware of `options.sensor`, then record to the output."""
    from ..board import profiles
    from ..device import ports

    board = profiles.load_board(options.board)
    check_board(board, options.sensor)
    fmt = output_format(options.output, options.sensor, options.format)
    check_output(options.output)
    _check_seconds(options.seconds)
    if options.upload:
        port = _build_and_upload(board, options, ask, on_build_line)
    else:
        port = ports.choose_port(board, options.port, ask=ask)
    link = ports.open_port(port, board.serial["baud"])
    try:
        conversation = Conversation(link)
        wait_for_boot(conversation, ask=True)
        return record_to_file(conversation, options.sensor, Path(options.output), fmt,
                              seconds=options.seconds, on_progress=on_progress)
    finally:
        link.close()


def _build_and_upload(board: Board, options: CaptureOptions, ask, on_build_line) -> str:
    """Render, build and upload the capture firmware (like the self-test); its port."""
    from ..project import last_build
    from ..toolchain import pio
    from . import flash

    project_dir = Path(options.project_dir or
                       capture_project.default_project_dir(board.id, options.sensor))
    core = pio.core_dir_for(board)
    plan = capture_project.render_project(project_dir, board, options.sensor)
    log.info("capture project %s: %s", project_dir, plan.summary_text())
    pio.check_packages(board, project_dir, core, local_tflm=True)
    log.info("building the %s capture firmware with PlatformIO...", options.sensor)
    report = pio.build(project_dir, board, core, on_line=on_build_line)
    if not report.firmware:
        raise DeviceError(f"the build produced no firmware in {project_dir}",
                          hint="run with --verbose to see PlatformIO's output")
    return flash.upload(last_build.find(project_dir, board.id), options.port, ask=ask).port


def record_to_file(conversation: Conversation, sensor: str, output: Path, fmt: str, *,
                   seconds: float | None = None,
                   on_progress: Callable[[CaptureStats], None] | None = None,
                   stats: CaptureStats | None = None) -> CaptureStats:
    """Record the stream of a capture firmware that has booted to `output` in `fmt`.

    `stats` (optional) is updated as samples arrive, so a caller knows what an interrupted
    capture kept. Ctrl-C finalises the file and propagates; a broken stream keeps the
    continuous part and raises `CaptureStreamError`; any other failure leaves no file.
    """
    output_format(output, sensor, fmt)
    check_output(output)
    _check_seconds(seconds)
    stats = stats or CaptureStats(sensor=sensor, output=str(output), format=fmt)
    sink = _SINKS[fmt](output)
    try:
        _record(conversation, sensor, sink, stats, seconds, on_progress)
    except KeyboardInterrupt:
        stats.ended = "interrupted"
        with proc.signals_deferred():
            _stop(conversation)
            _keep(sink, stats)
        log.info("capture interrupted: %s", _kept(stats))
        raise
    except CaptureStreamError as exc:
        stats.ended = "stream broke"
        _stop(conversation)
        _keep(sink, stats)
        exc.details = "\n".join(filter(None, [exc.details, f"  {_kept(stats)}"]))
        raise
    except BaseException:
        sink.abort()
        raise
    stats.ended = "duration"
    _stop(conversation)
    sink.finish(stats)
    return stats


def _kept(stats: CaptureStats) -> str:
    if stats.samples == 0:
        return "nothing was received, so no file was written"
    return (f"{stats.output} keeps {units.count(stats.samples)} "
            f"{'readings' if stats.sensor == 'imu' else 'samples'} "
            f"({units.seconds(stats.seconds)})")


def _keep(sink, stats: CaptureStats) -> None:
    if stats.samples:
        sink.finish(stats)
    else:
        sink.abort()


def _stop(conversation: Conversation) -> None:
    """Ask the board to stop streaming; a board that went away needs no STOP."""
    try:
        conversation.send(protocol.encode("STOP"))
        conversation.wait_for(lambda e: isinstance(e, protocol.OtherMessage)
                              and e.type == "STOPPED", timeout=STOP_TIMEOUT_S,
                              what="STOPPED message")
    except DeviceError as exc:
        log.debug("stopping the stream: %s", exc.message)


def _record(conversation: Conversation, sensor: str, sink, stats: CaptureStats,
            seconds: float | None, on_progress) -> None:
    stream = _start(conversation, sensor)
    stats.part, stats.rate_mhz = stream["part"], stream["rate_mhz"]
    sink.start(stats)
    width = capture_project.VALUES_PER_SAMPLE[sensor]
    wanted = None if seconds is None else max(1, round(seconds * stats.rate_mhz / 1000.0))
    log.info("capturing the %s (%s at %s Hz)%s...", sensor, stats.part,
             f"{stats.rate_mhz / 1000:g}",
             f" for {units.seconds(seconds)}" if seconds else "; Ctrl-C ends it")
    last_line = last_progress = time.monotonic()
    while wanted is None or stats.samples < wanted:
        events = conversation.poll(0.2)
        now = time.monotonic()
        for event in events:
            if not (isinstance(event, protocol.OtherMessage) and event.type == "CAP"):
                _check_other(event, stats)
                continue
            values = _cap_values(event, stats, width)
            if wanted is not None:
                values = values[:wanted - stats.samples]
            sink.write(values)
            stats.samples += len(values)
            stats.lines += 1
            last_line = now
            if wanted is not None and stats.samples >= wanted:
                break
        if now - last_line > SILENCE_TIMEOUT_S:
            raise CaptureStreamError(
                f"the board sent no samples for {SILENCE_TIMEOUT_S:g} s",
                hint="check the cable and that the capture firmware still runs "
                     "(`tinyforge monitor`); then capture again")
        if on_progress and now - last_progress >= PROGRESS_INTERVAL_S:
            on_progress(stats)
            last_progress = now
    if on_progress:
        on_progress(stats)


def _start(conversation: Conversation, sensor: str) -> dict:
    conversation.send(protocol.encode("CAPTURE"))
    event = conversation.wait_for(
        lambda e: isinstance(e, protocol.OtherMessage) and e.type == "STREAM",
        timeout=STREAM_TIMEOUT_S, what="STREAM message (the answer to CAPTURE)",
        hint="the board runs another firmware: capture builds and uploads its own; run capture "
             "without --no-upload to upload it, or reset the board")
    fields = event.fields
    if fields.get("status") != "ok":
        raise CaptureStreamError(
            f"the board's {sensor} did not start: {fields.get('msg') or 'no reason given'}",
            hint="a Nano 33 BLE (without 'Sense') has no sensors; on a Sense, reset the board "
                 "and try again")
    if fields.get("input") != sensor or fields.get("values") != str(
            capture_project.VALUES_PER_SAMPLE[sensor]):
        raise CaptureStreamError(
            f"the board streams '{fields.get('input')}', not the {sensor}",
            hint=f"upload the {sensor} capture firmware (tinyforge capture --input {sensor})")
    try:
        rate_mhz = int(fields["rate_mhz"])
    except (KeyError, ValueError):
        rate_mhz = 0
    if rate_mhz <= 0:
        raise CaptureStreamError(f"the board's STREAM gives no rate ({fields.get('rate_mhz')})",
                                 hint="upload the capture firmware of this tinyforge again")
    return {"part": fields.get("part", ""), "rate_mhz": rate_mhz}


def _cap_values(event, stats: CaptureStats, width: int) -> np.ndarray:
    fields = event.fields
    try:
        seq, lost, data = int(fields["seq"]), int(fields["lost"]), bytes.fromhex(fields["data"])
    except (KeyError, ValueError):
        raise CaptureStreamError(f"a malformed CAP line after {_at(stats)}",
                                 hint="upload the capture firmware of this tinyforge again") from None
    if lost:
        raise CaptureStreamError(
            f"the board lost {units.count(lost)} values after {_at(stats)}: it could not send "
            "them as fast as the sensor made them",
            hint="keep the host less busy (close other serial monitors, a slow terminal), use "
                 "a direct USB port, then capture again")
    if seq != stats.lines:
        raise CaptureStreamError(
            f"CAP line {stats.lines} did not arrive (got line {seq}) after {_at(stats)}",
            hint="a line was damaged on the way (check the cable), then capture again")
    if len(data) % (2 * width):
        raise CaptureStreamError(f"a CAP line of {len(data)} bytes is not whole samples",
                                 hint="upload the capture firmware of this tinyforge again")
    values = np.frombuffer(data, dtype="<i2").astype(np.int16)
    return values.reshape(-1, width) if width > 1 else values


def _check_other(event, stats: CaptureStats) -> None:
    if isinstance(event, protocol.Corrupt) and stats.lines:
        raise CaptureStreamError(f"a damaged line after {_at(stats)} ({event.reason})",
                                 hint="check the cable, then capture again")
    if isinstance(event, protocol.Boot):
        raise CaptureStreamError(f"the board restarted after {_at(stats)}",
                                 hint="check its power and cable, then capture again")


def _at(stats: CaptureStats) -> str:
    return f"{units.count(stats.samples)} samples ({units.seconds(stats.seconds)})"


# --- writers ------------------------------------------------------------------------------

class _Sink:
    """A file written beside `output` and renamed into place: never a half-written output."""

    def __init__(self, output: Path):
        self.output = Path(output)
        folder = self.output.parent if str(self.output.parent) else Path(".")
        try:
            handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{self.output.name}.",
                                                 suffix=".part", delete=False)
        except OSError as exc:
            raise CaptureOutputError(f"cannot write {self.output}: {exc.strerror}",
                                     hint="write the capture to a folder you can write to") from None
        self.partial = Path(handle.name)
        self.handle = handle

    def start(self, stats: CaptureStats) -> None:
        pass

    def write(self, values: np.ndarray) -> None:
        raise NotImplementedError

    def close(self, stats: CaptureStats) -> None:
        self.handle.close()

    def finish(self, stats: CaptureStats) -> None:
        self.close(stats)
        os.replace(self.partial, self.output)

    def abort(self) -> None:
        try:
            self.handle.close()
        finally:
            self.partial.unlink(missing_ok=True)


class _WavSink(_Sink):
    def start(self, stats: CaptureStats) -> None:
        self.wav = wave.open(self.handle, "wb")
        self.wav.setnchannels(1)
        self.wav.setsampwidth(2)
        self.wav.setframerate(round(stats.rate_mhz / 1000))

    def write(self, values: np.ndarray) -> None:
        self.wav.writeframes(values.astype("<i2").tobytes())

    def close(self, stats: CaptureStats) -> None:
        if hasattr(self, "wav"):
            self.wav.close()   # writes the sizes into the header
        self.handle.close()


class _CsvSink(_Sink):
    COLUMNS = ("time_s",) + imu_mod.AXES

    def start(self, stats: CaptureStats) -> None:
        self.text = io.TextIOWrapper(self.handle, encoding="ascii", newline="")
        self.rows = csv.writer(self.text, lineterminator="\n")
        self.rows.writerow(self.COLUMNS)
        self.rate_mhz = stats.rate_mhz
        self.index = 0
        # One count in g or dps: exact binary fractions, so repr() reads back to the count.
        self.units = [float(imu_mod.UNIT_PER_COUNT[axis[0]]) for axis in imu_mod.AXES]

    def write(self, values: np.ndarray) -> None:
        for reading in values:
            time_s = self.index * 1000.0 / self.rate_mhz
            self.rows.writerow([repr(time_s)] + [repr(int(c) * u)
                                                 for c, u in zip(reading, self.units)])
            self.index += 1

    def close(self, stats: CaptureStats) -> None:
        if hasattr(self, "text"):
            self.text.flush()
            self.text.detach()
        self.handle.close()


class _NpzSink(_Sink):
    def start(self, stats: CaptureStats) -> None:
        self.chunks: list[np.ndarray] = []
        self.rate_mhz = stats.rate_mhz

    def write(self, values: np.ndarray) -> None:
        self.chunks.append(np.array(values, dtype=np.int16))

    def close(self, stats: CaptureStats) -> None:
        readings = (np.concatenate(self.chunks) if self.chunks
                    else np.zeros((0, 6), dtype=np.int16))
        np.savez(self.handle, imu=readings, rate_hz=np.float64(self.rate_mhz / 1000.0),
                 axes=np.array(imu_mod.AXES))
        self.handle.close()


_SINKS = {"wav": _WavSink, "csv": _CsvSink, "npz": _NpzSink}
