"""The self-test firmware project: its contract with the host, and its files.

The self-test firmware (`firmware_templates/selftest/`) has no TFLM: it answers IN with a
stand-in model (`reference_model`) so the whole serial path can be checked on any board.
The constants below are its contract; they are rendered into `src/selftest_config.h`
(docs/protocol.md) and `tinyforge.flows.selftest` checks the firmware against them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import __version__, storage
from ..board.profiles import Board
from ..device import protocol
from ..model.fit import HOST_LINE_BYTES
from . import templates, writer

_TEMPLATES = "selftest"

# The firmware's contract (rendered into src/selftest_config.h; docs/protocol.md).
MAX_LINE_LENGTH = HOST_LINE_BYTES       # host line, without its line end: a model firmware's
MODEL_SHA256 = hashlib.sha256(b"selftest").hexdigest()
INPUT_SHAPE = (1, 16)
OUTPUT_SHAPE = (1, 4)
INPUT_SCALE, INPUT_ZERO_POINT = 0.0625, -1
OUTPUT_SCALE, OUTPUT_ZERO_POINT = 0.25, 3


def reference_model(data: bytes) -> list[int]:
    """The stand-in model: int8[1,16] -> int8[1,4], out[j] = clamp(sum(in[i] for i%4 == j))."""
    values = [b - 256 if b > 127 else b for b in data]
    count = OUTPUT_SHAPE[1]
    return [max(-128, min(127, sum(values[j::count]))) for j in range(count)]


def default_project_dir(board_id: str) -> Path:
    """Where the self-test project lives: a per-user cache, one folder per board (checked
    writable, so a read-only HOME is reported as such)."""
    return storage.require_writable(storage.cache_root() / "selftest" / board_id,
                                    what="the self-test project folder",
                                    variable=storage.CACHE_ENV, option="--project-dir")


def project_files(board: Board) -> dict[str, bytes]:
    """Every file of the self-test project for `board`, keyed by relative path."""
    pio_options = board.platformio
    context = {
        "version": __version__, "board": board, "platform": templates.platform_spec(board),
        "build_flags": list(pio_options.get("build_flags", [])),
        "build_unflags": list(pio_options.get("build_unflags", [])),
        "extra_options": sorted(pio_options.get("extra_options", {}).items()),
        "model_sha256": MODEL_SHA256, "max_line_length": MAX_LINE_LENGTH,
        "input_scale": protocol.format_float(INPUT_SCALE), "input_zero_point": INPUT_ZERO_POINT,
        "output_scale": protocol.format_float(OUTPUT_SCALE),
        "output_zero_point": OUTPUT_ZERO_POINT,
    }
    return templates.render_tree(_TEMPLATES, context, board)


def render_project(project_dir: Path, board: Board) -> writer.RenderPlan:
    """Write the self-test project; files whose bytes did not change are left alone."""
    manifest = {"tinyforge_version": __version__, "board": board.id, "kind": "selftest",
                "environment": board.id}
    # The folder is tinyforge's cache, never the user's work: stale edits are replaced.
    return writer.write(project_dir, project_files(board), manifest, overwrite=True)
