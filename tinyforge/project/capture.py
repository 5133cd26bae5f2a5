"""The capture firmware project: its contract with the host, and its files.

The capture firmware (`firmware_templates/capture/`) has no TFLM: it streams one sensor of the
board (the IMU or the microphone, one firmware each) over serial for `tinyforge capture`
(docs/protocol.md, "Capture firmware"). It is made of the board's sensor sources
(`board_sensors.h` and the runtime layer's implementation), the pipeline's ring buffer and axis
maps, and a `pipeline_settings.h` of a minimal pipeline of that input (which holds the parts'
rates, axis maps and counts per unit, and selects what the sensor sources compile).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import __version__, storage
from ..board.profiles import Board
from ..model.fit import HOST_LINE_BYTES
from ..pipeline import settings as pipeline_settings
from ..pipeline.config import ConfigValues
from ..pipeline.derive import Pipeline, derive
from . import templates, writer

_TEMPLATES = "capture"
INPUTS = ("imu", "microphone")

# The firmware's contract (rendered into src/capture_config.h; docs/protocol.md).
MODEL_SHA256 = hashlib.sha256(b"capture").hexdigest()
MAX_LINE_LENGTH = HOST_LINE_BYTES
# Values per CAP line: 8 IMU readings of 6 values (~15 lines/s at 119 Hz), or 256 audio
# samples (one PDM block, 62.5 lines/s at 16 kHz; a 1,060-byte line).
VALUES_PER_LINE = {"imu": 48, "microphone": 256}
VALUES_PER_SAMPLE = {"imu": 6, "microphone": 1}


def default_project_dir(board_id: str, sensor: str) -> Path:
    """Where the capture project lives: a per-user cache, one folder per board and input."""
    return storage.require_writable(storage.cache_root() / "capture" / f"{board_id}-{sensor}",
                                    what="the capture project folder",
                                    variable=storage.CACHE_ENV, option="--project-dir")


def capture_pipeline(sensor: str) -> Pipeline:
    """The smallest pipeline of `sensor`: only its settings header is used (the parts' rates,
    axis maps, counts per unit, the microphone's settling time)."""
    values = {"imu.window": 1, "imu.stride": 1} if sensor == "imu" else {}
    return derive(ConfigValues(values=values), None, sensor)


def project_files(board: Board, sensor: str) -> dict[str, bytes]:
    """Every file of the capture project of `sensor` for `board`, keyed by relative path."""
    if sensor not in INPUTS:
        raise ValueError(f"no capture firmware for input '{sensor}'")
    pio_options = board.platformio
    context = {
        "version": __version__, "board": board, "platform": templates.platform_spec(board),
        "input": sensor, "lib_deps": board.sensor_dependencies(sensor),
        "build_flags": list(pio_options.get("build_flags", [])),
        "build_unflags": list(pio_options.get("build_unflags", [])),
        "extra_options": sorted(pio_options.get("extra_options", {}).items()),
        "model_sha256": MODEL_SHA256, "max_line_length": MAX_LINE_LENGTH,
        "values_per_line": VALUES_PER_LINE[sensor],
    }
    files = templates.render_tree(_TEMPLATES, context, board, sensors=True,
                                  replay=board.emulated)
    files.update(pipeline_settings.device_files(capture_pipeline(sensor)))
    return dict(sorted(files.items()))


def render_project(project_dir: Path, board: Board, sensor: str) -> writer.RenderPlan:
    """Write the capture project; files whose bytes did not change are left alone."""
    manifest = {"tinyforge_version": __version__, "board": board.id, "kind": "capture",
                "input": sensor, "environment": board.id}
    # The folder is tinyforge's cache, never the user's work: stale edits are replaced.
    return writer.write(project_dir, project_files(board, sensor), manifest, overwrite=True)
