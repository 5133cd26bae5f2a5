"""A faithful model of a Nano 33 BLE Sense running tinyforge's capture firmware, on a real pty.

No board can be plugged in here, so `CaptureFirmwareModel` plays
`firmware_templates/capture/src/capture.cpp` on the master side of a pseudo-terminal (the
host opens the slave with pyserial like /dev/ttyACM0): HELLO -> BOOT with the capture
firmware's model hash; CAPTURE -> STREAM (the part, its rate) then CAP lines of
`VALUES_PER_LINE` values at the sensor's real pace (or `speed` times faster), with `seq`
counting lines and `lost` the values the board could not keep; STOP -> STOPPED. The samples
are a recording it replays: int16 audio, or IMU counts [N, 6] in tinyforge's axes.

Faults a board can show are switches: `lose_after` (the ring overflowed: `lost` > 0 from that
line on), `skip_line` (a line that never arrived), `no_sensor` (STREAM status=error),
`fall_silent_after` (the firmware stops sending).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from fake_device import FakeDevice

from tinyforge.device import protocol
from tinyforge.project import capture as capture_project

PARTS = {"lsm9ds1": 119_000, "bmi270": 99_840, "pdm": 16_000_000}


class CaptureFirmwareModel:
    def __init__(self, device: FakeDevice, sensor: str, samples: np.ndarray, *,
                 part: str | None = None, speed: float = 1.0, lose_after: int | None = None,
                 skip_line: int | None = None, no_sensor: bool = False,
                 fall_silent_after: int | None = None):
        self.device = device
        self.sensor = sensor
        self.part = part or ("lsm9ds1" if sensor == "imu" else "pdm")
        self.rate_mhz = PARTS[self.part]
        self.values = np.asarray(samples, dtype=np.int16).reshape(-1)
        self.per_line = capture_project.VALUES_PER_LINE[sensor]
        self.width = capture_project.VALUES_PER_SAMPLE[sensor]
        self.speed = speed
        self.lose_after = lose_after
        self.skip_line = skip_line
        self.no_sensor = no_sensor
        self.fall_silent_after = fall_silent_after
        self.lines_sent = 0          # CAP lines written to the port in the last capture
        self.captures = 0
        self.stops = 0
        self._streaming = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # --- what the firmware sends --------------------------------------------------------

    def boot(self) -> bytes:
        return protocol.encode(
            "BOOT", v=1, fw="0.1.0", board="nano33ble", model=capture_project.MODEL_SHA256,
            arena=0, used=0, ops=0, **{"in": "", "out": ""}, status="ok",
            max_line=capture_project.MAX_LINE_LENGTH, eol=protocol.DEVICE_EOL)

    def stream(self) -> bytes:
        fields = {"input": self.sensor, "part": "none" if self.no_sensor else self.part,
                  "rate_mhz": 0 if self.no_sensor else self.rate_mhz, "values": self.width,
                  "status": "error" if self.no_sensor else "ok"}
        if self.no_sensor:
            fields["msg"] = ("no IMU answered (LSM9DS1, BMI270)" if self.sensor == "imu"
                             else "the microphone did not start")
        return protocol.encode("STREAM", eol=protocol.DEVICE_EOL, **fields)

    def line_values(self, index: int) -> np.ndarray:
        """The values of CAP line `index` (the recording, repeated as needed)."""
        start = (index * self.per_line) % len(self.values)
        chunk = np.take(self.values, range(start, start + self.per_line), mode="wrap")
        return chunk.astype(np.int16)

    def expected(self, lines: int) -> np.ndarray:
        """What the first `lines` CAP lines carry, as samples ([N] audio, [N, 6] IMU)."""
        values = np.concatenate([self.line_values(i) for i in range(lines)]) if lines else \
            np.zeros(0, dtype=np.int16)
        return values.reshape(-1, self.width) if self.width > 1 else values

    # --- the thread -----------------------------------------------------------------------

    def __enter__(self) -> "CaptureFirmwareModel":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        decoder = protocol.Decoder()
        period = self.per_line / self.width * 1000.0 / self.rate_mhz / self.speed
        seq = next_at = 0
        lost = 0
        while not self._stop.is_set():
            try:
                data = self.device.read(0.002)
            except OSError:  # unplugged
                return
            for event in decoder.feed(data):
                kind = getattr(event, "type", None)
                if kind == "HELLO":
                    self.device.send(self.boot())
                elif kind == "CAPTURE":
                    self.captures += 1
                    self.device.send(self.stream())
                    if not self.no_sensor:
                        seq, lost, self.lines_sent = 0, 0, 0
                        next_at = time.monotonic() + period
                        self._streaming.set()
                elif kind == "STOP":
                    self.stops += 1
                    self._streaming.clear()
                    self.device.send(protocol.encode(
                        "STOPPED", lines=seq, values=seq * self.per_line, lost=lost,
                        eol=protocol.DEVICE_EOL))
            if not self._streaming.is_set() or time.monotonic() < next_at:
                continue
            next_at += period
            if self.fall_silent_after is not None and seq >= self.fall_silent_after:
                continue
            if self.lose_after is not None and seq >= self.lose_after:
                lost = 96
            line = protocol.encode("CAP", seq=seq, lost=lost,
                                   data=self.line_values(seq).astype("<i2").tobytes(),
                                   eol=protocol.DEVICE_EOL)
            if seq != self.skip_line:
                try:
                    self.device.send(line)
                except OSError:
                    return
                self.lines_sent += 1
            seq += 1

    def wait_lines(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.lines_sent < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the model sent only {self.lines_sent} of {count} lines")
            time.sleep(0.01)
