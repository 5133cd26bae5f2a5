"""The fit estimate's sensor pipeline against real qemu-m4 firmware: every part's bytes are
the bytes of its variables in the linker map, the frontend's heap is what the running
firmware took from `_sbrk` (read from the emulated RAM through QEMU's monitor), and the whole
RAM estimate is within a stated margin of what the firmware really uses (the map's RAM, the
stack reserve and the heap).

TFLM tier: needs a TFLM library tree ($TINYFORGE_TFLM), arm-none-eabi GCC and QEMU.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from qemu_support import require_emulator, seeded_core

from tinyforge.board import profiles
from tinyforge.device import emulator
from tinyforge.device.conversation import Conversation, wait_for_boot
from tinyforge.flows import fit_learning
from tinyforge.toolchain import linkmap

REPO = Path(__file__).resolve().parent.parent
KEYWORD = REPO / "examples" / "keyword"
# The fit's pipeline parts and the variables that make them: (object, name) as the map lists
# them. Whatever else main.o keeps is the sketch's (counted by fit.sketch_ram).
PART_SYMBOLS = {
    "window": {("main", "window_storage")},
    "pipeline_state": {("main", n) for n in (
        "imu_pipeline", "audio_pipeline", "imu_kind", "discard_left", "frame_index",
        "sensor_failure", "pipeline_running", "pipeline_seq", "result_time_ms",
        "send_features")},
    "audio_ring": {("main", "audio_ring"), ("main", "audio_ring_storage")},
    "frontend": {("main", "frontend")},
    "decisions": {("main", n) for n in ("decision_filter", "result_scores", "result_times")},
    "replay": {("main", n) for n in ("sample_values", "replay_read", "pipeline_us",
                                      "inference_us", "replay_active", "credit_due",
                                      "credit_seq")}
              | {("qemu_m4_sensors", n) for n in ("imu_storage", "imu_ring", "imu_rate_mhz",
                                                  "audio_ring")},
}
SKETCH_SYMBOLS = {"tensor_arena", "interpreter_storage", "interpreter", "model", "resolver",
                  "memory_planner", "line_buffer", "parser", "input_views", "output_views",
                  "input_buffers", "assembler", "ready", "arena_used_bytes", "startup_failure",
                  "host_sent_input", "demo_seq", "last_demo_us"}
# What the estimate does not see: TFLM's own statics (8 B), newlib's and libgcc's, fill.
TOTAL_MARGIN = 0.01


@pytest.fixture
def env(cli_env, tmp_path_factory):
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))


def statics(map_path: Path) -> dict[tuple[str, str], int]:
    """{(object stem, variable): bytes} of every variable the sketch's objects keep in RAM,
    from the linker map's .data and .bss input sections (one per variable with
    -fdata-sections)."""
    parsed = linkmap.read_map(map_path)
    found = {}
    for output in (".data", ".bss"):
        for entry in parsed.section(output).inputs:
            if "/src/" not in entry.origin or not entry.size:
                continue
            obj = Path(entry.origin).name.removesuffix(".o").removesuffix(".cpp")
            mangled = entry.name.split(".", 2)[-1]
            name = re.fullmatch(r"_ZN12_GLOBAL__N_1(\d+)(\w+)E", mangled)
            found[(obj, name[2] if name else mangled)] = entry.size
    return found


def heap_used(elf: Path) -> int:
    """The bytes the firmware's `_sbrk` handed out since reset, read once it sent BOOT (after
    setup(), where the frontend allocates its tables): its `heap_end` minus `__HeapBase`."""
    symbols = {}
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3:
            symbols[fields[2]] = fields[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monitor = ("-monitor", f"tcp:127.0.0.1:{port},server=on,wait=off")
    with emulator.launch(elf, extra_args=monitor) as link:
        wait_for_boot(Conversation(link), ask=False)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as hmp:
            hmp.sendall(f"xp /1xw 0x{symbols['_ZZ5_sbrkE8heap_end']}\n".encode())
            answer, deadline = b"", time.monotonic() + 10
            while not re.search(rb": 0x([0-9a-f]{8})", answer) and time.monotonic() < deadline:
                answer += hmp.recv(4096)
    heap_end = int(re.search(rb": 0x([0-9a-f]{8})", answer)[1], 16)
    return heap_end - int(symbols["__HeapBase"], 16)


def build(tinyforge, env, project: Path, *args) -> dict:
    # The host's arena: the device measurement would build and probe another firmware, and
    # the arena is the estimate's and the map's alike either way.
    return json.loads(tinyforge("build", "--board", "qemu-m4", *args, "--arena", "host",
                                "--project-dir", project, "--json", env=env, timeout=3600,
                                check_rc=0).stdout)


def check_parts(built: dict) -> dict[str, int]:
    """Each pipeline part of the estimate against the map; returns the parts."""
    parts = built["fit"]["ram_pipeline_parts"]
    elf = Path(built["build"]["firmware"])
    # The sketch, the pipeline's parts and the board's sensor source (the runtime layer's other
    # objects are the framework's).
    found = {key: size for key, size in statics(elf.with_suffix(".map")).items()
             if key[0] in ("main", "qemu_m4_sensors") or key[0].startswith("pipeline_")}
    for part, symbols in PART_SYMBOLS.items():
        linked = sum(size for key, size in found.items() if key in symbols)
        assert parts.get(part, 0) == linked, (part, parts, found)
    # Nothing the sketch's objects keep is left uncounted: the rest is the sketch's own.
    counted = set().union(*PART_SYMBOLS.values())
    rest = {key for key in found if key not in counted}
    assert {name for obj, name in rest} <= SKETCH_SYMBOLS, rest
    assert all(obj == "main" for obj, _ in rest), rest
    return parts


def real_ram(built: dict) -> tuple[int, int]:
    """(RAM the firmware uses: the map's RAM, the stack reserve and the heap; the heap)."""
    elf = Path(built["build"]["firmware"])
    result = linkmap.breakdown(linkmap.read_map(elf.with_suffix(".map")), "tinyforge:qemu_m4")
    heap = heap_used(elf)
    return result.ram.total + result.ram_not_counted["._stack_reserve"] + heap, heap


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_the_pipeline_ram_estimate_is_what_imu_and_keyword_firmware_take(tinyforge, tflm_tree,
                                                                         env, tmp_path):
    require_emulator()
    board = profiles.load_board("qemu-m4")
    imu = build(tinyforge, env, tmp_path / "imu", "--input", "imu", "--tflm", tflm_tree)
    parts = check_parts(imu)
    assert sorted(parts) == ["decisions", "pipeline_state", "replay", "window"]
    assert parts["replay"] == 256 + 22 + 28 + 2048          # the IMU replay buffer is there
    total, heap = real_ram(imu)
    assert heap == 0                                        # the IMU pipeline mallocs nothing
    # With the framework figure its own map gives (what the next estimate uses).
    framework = fit_learning.measure(board, Path(imu["build"]["firmware"]).with_suffix(".map"))[1]
    estimate = imu["fit"]["ram_total"] - imu["fit"]["ram_framework"] + framework
    assert abs(estimate - total) <= TOTAL_MARGIN * total, (estimate, total)

    # The keyword firmware's estimate uses the framework learned from the IMU build's map.
    mic = build(tinyforge, env, tmp_path / "keyword", "--input", "microphone", "--model",
                KEYWORD / "keyword_int8.tflite", "--labels", KEYWORD / "labels.txt",
                "--tflm", tflm_tree)
    assert mic["fit"]["framework_measured"] is not None
    parts = check_parts(mic)
    assert parts["replay"] == 256 + 22 + 28                 # no IMU replay buffer
    total, heap = real_ram(mic)
    assert heap == parts["frontend_heap"] == 11_352, (heap, parts)
    assert abs(mic["fit"]["ram_total"] - total) <= TOTAL_MARGIN * total, \
        (mic["fit"]["ram_total"], total)
