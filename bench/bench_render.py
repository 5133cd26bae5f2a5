"""Render time of a project for a ~300 KB model (target < 0.2 s), checks and arena excluded;
then PlatformIO's project check of it, first and again."""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import model_300k, report  # noqa: E402

from tinyforge.board import profiles
from tinyforge.model import arena, checks, reader  # noqa: E402
from tinyforge.project import firmware, writer
from tinyforge.toolchain import pio


def main() -> None:
    data = model_300k().read_bytes()
    board = profiles.load_board("nano33ble")
    info = reader.inspect_bytes(data, "cnn_300k_int8.tflite")
    table = checks.resolver_table(board, None)
    ops, _ = checks.compat.resolve_ops(info, table)
    plan = arena.plan_from_host(arena.ArenaMeasurement(40000, 40000, 1, 0.0, "host"))
    inputs = firmware.FirmwareInputs(board, data, info, ops, table, plan, [], None, None)
    with tempfile.TemporaryDirectory() as directory:
        for label in ("first render (writes every file)", "second render (all identical)"):
            started = time.perf_counter()
            writer.write(Path(directory), firmware.project_files(inputs),
                         firmware.manifest(inputs))
            report(label, time.perf_counter() - started, target=0.2,
                   extra=f"  {len(data) // 1024} KB model")
        # PlatformIO's check of the rendered platformio.ini, then the same file again (the
        # verdict is remembered, in a cache folder of this run only).
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache
            core = pio.core_dir_for(board)
            for label in ("pio project config (first check)", "pio project config (same file)"):
                started = time.perf_counter()
                pio.validate_project(Path(directory), core)
                report(label, time.perf_counter() - started)


if __name__ == "__main__":
    main()
