"""`tinyforge capture`: record a board's IMU or microphone to a file (a data forwarder)."""

from __future__ import annotations

import sys
from pathlib import Path

from ._device import seconds


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "capture", parents=parents, help="record a board's IMU or microphone to a file",
        description="Build and upload a capture firmware for the sensor (like the self-test), "
                    "then record what the board streams: the microphone to .wav (16 kHz mono "
                    "16-bit), the IMU to .csv (time_s, ax..gz in g and dps) or .npz (int16 "
                    "counts), in the files `tinyforge features` and `validate --replay` read. "
                    "Records for --seconds, or until Ctrl-C (the file is finished, exit 130). "
                    "Exit 1 for bad options or an output that cannot be written, 2 when the "
                    "board or its stream fails (what arrived intact is kept).")
    parser.add_argument("output", type=Path, help="the file to write: .wav, .csv or .npz")
    parser.add_argument("--input", required=True, choices=("imu", "microphone"),
                        help="the sensor to record")
    parser.add_argument("--board", default="nano33ble", help="board id (default: nano33ble)")
    parser.add_argument("--format", choices=("wav", "csv", "npz"),
                        help="the file format (default: the output's suffix)")
    parser.add_argument("--seconds", type=seconds, metavar="S",
                        help="stop after S seconds of samples (default: until Ctrl-C)")
    parser.add_argument("--port", help="the board's serial port (default: found by USB id)")
    parser.add_argument("--no-upload", dest="upload", action="store_false",
                        help="the board already runs the capture firmware of this sensor")
    parser.add_argument("--project-dir", type=Path, metavar="DIR",
                        help="where to render the capture project (default: "
                             "~/.cache/tinyforge/capture/BOARD-INPUT)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout, units
    from ..flows import capture
    from ..toolchain import pio
    from ._device import port_chooser

    options = capture.CaptureOptions(board=args.board, sensor=args.input, output=args.output,
                                     format=args.format, seconds=args.seconds, port=args.port,
                                     project_dir=args.project_dir, upload=args.upload)
    progress = _Progress(sys.stderr)
    try:
        stats = capture.capture(options, ask=port_chooser(),
                                on_build_line=pio.progress_logger("capture build"),
                                on_progress=progress.show)
    finally:
        progress.end()
    if args.json:
        jsonout.emit(stats.to_json())
    else:
        what = "readings" if stats.sensor == "imu" else "samples"
        print(f"wrote {stats.output}: {units.count(stats.samples)} {what}, "
              f"{units.seconds(stats.seconds)} of the {stats.sensor} ({stats.part}, "
              f"{stats.rate_mhz / 1000:g} Hz)")
    return 0


class _Progress:
    """One line on a terminal, rewritten in place; a line every 5 s elsewhere."""

    LOG_EVERY_S = 5.0

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False
        self.last_logged = -self.LOG_EVERY_S

    def show(self, stats) -> None:
        from .. import units
        text = (f"capturing the {stats.sensor}: {units.seconds(stats.seconds)}, "
                f"{units.count(stats.samples)} {'readings' if stats.sensor == 'imu' else 'samples'}")
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self.shown = True
        elif stats.seconds - self.last_logged >= self.LOG_EVERY_S:
            self.stream.write(text + "\n")
            self.last_logged = stats.seconds

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
