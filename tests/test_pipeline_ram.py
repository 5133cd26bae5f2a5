"""The sensor pipeline's RAM in the fit estimate (tinyforge.pipeline.ram): the parts follow the
pipeline's settings and the sources' declarations; the device objects' sizes are the
Cortex-M4 compiler's; the audio frontend's heap is what the TFLM library's own code allocates
(TFLM tier). The comparison with the linker map and the heap of real qemu-m4 firmware is
tests/test_qemu_pipeline_ram.py."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pipeline_support import (FRONTEND_LIB, GESTURE_MODEL, frontend_args, frontend_objects,
                              pipeline_from)

from tinyforge import proc
from tinyforge.board import profiles
from tinyforge.model import fit, reader
from tinyforge.pipeline import filterbank, load_pipeline, ram
from tinyforge.pipeline.derive import FrontendSettings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "firmware_templates"
KEYWORD = ROOT / "examples" / "keyword"
ALLOC_HARNESS = ROOT / "tests" / "cpp" / "frontend_alloc_harness.cpp"


def keyword_pipeline():
    return load_pipeline(KEYWORD / "tinyforge.toml", model=KEYWORD / "keyword_int8.tflite")


def test_a_host_pipeline_takes_no_ram(tmp_path):
    host = pipeline_from(tmp_path, None, model=GESTURE_MODEL)
    assert host.kind == "host"
    assert ram.static_ram(host, replays=True) == {}


def test_imu_parts_follow_the_settings(tmp_path):
    imu = pipeline_from(tmp_path, '[pipeline]\ninput = "imu"\n', model=GESTURE_MODEL)
    live = ram.static_ram(imu, replays=False)
    assert list(live) == ["window", "pipeline_state", "decisions"]
    assert live["window"] == imu.imu.window * len(imu.imu.axes)    # int8 values
    assert live["decisions"] == (ram.DECISION_FILTER_BYTES
                                 + imu.result_capacity * (imu.classes + 4))
    # A replaying board adds the SAMPLES values, the credit's state and its IMU ring.
    replayed = ram.static_ram(imu, replays=True)
    assert replayed["replay"] == 256 + ram.REPLAY_STATE_BYTES + ram.REPLAY_SENSOR_BYTES + 2048
    assert {k: v for k, v in replayed.items() if k != "replay"} == live
    # A longer window of float32 values: four bytes a value.
    longer = pipeline_from(tmp_path, '[pipeline]\ninput = "imu"\n[imu]\nwindow = 64\n'
                           'axes = ["ax", "ay", "az", "gx", "gy", "gz"]\n')
    assert longer.input.dtype == "float32"
    assert ram.static_ram(longer, replays=False)["window"] == 64 * 6 * 4


def test_microphone_parts_follow_the_settings():
    mic = keyword_pipeline()
    parts = ram.static_ram(mic, replays=True)
    assert list(parts) == ["window", "pipeline_state", "audio_ring", "frontend",
                           "frontend_heap", "decisions", "replay"]
    assert parts["window"] == 49 * 40
    assert parts["audio_ring"] == 4096 * 2 + ram.RING_BUFFER_BYTES
    assert parts["frontend_heap"] == ram.frontend_heap_bytes(mic.microphone.frontend)
    # No IMU replay buffer in an audio firmware (qemu_m4_sensors.cpp compiles it for the IMU).
    assert parts["replay"] == 256 + ram.REPLAY_STATE_BYTES + ram.REPLAY_SENSOR_BYTES
    # More channels, a longer window: more frontend tables.
    bigger = dataclasses.replace(mic.microphone.frontend, channels=64, window_ms=64)
    assert ram.frontend_heap_bytes(bigger) > parts["frontend_heap"] + 4000
    no_pcan = dataclasses.replace(mic.microphone.frontend, pcan=False)
    assert ram.frontend_heap_bytes(no_pcan) == parts["frontend_heap"] - (252 + 8)
    # kissfft's configuration holds three pointers: a 64-bit board's are 12 B longer.
    assert ram.static_ram(mic, replays=True, pointer_bytes=8)["frontend_heap"] == \
        parts["frontend_heap"] + 12


def test_the_constants_are_the_sources_declarations():
    sketch = (TEMPLATES / "project" / "src" / "main.cpp.j2").read_text()
    assert re.search(r"constexpr uint32_t kAudioRingSamples = (\d+);", sketch)[1] == \
        str(ram.AUDIO_RING_SAMPLES)
    assert "int16_t sample_values[kMaxLineLength / 4];" in sketch
    sensors = (TEMPLATES / "runtime" / "qemu-m4" / "qemu_m4_sensors.cpp").read_text()
    assert re.search(r"constexpr uint32_t kImuRingValues = (\d+);", sensors)[1] == \
        str(ram.REPLAY_IMU_VALUES)
    pcan = "#define kWideDynamicFunctionBits 32"   # the LUT of 4 * 32 - 3 int16 values
    assert ram._PCAN_GAIN_LUT_VALUES == 125 and pcan


def test_the_device_objects_have_the_sizes_counted(tmp_path):
    gxx = shutil.which("arm-none-eabi-g++")
    if gxx is None:
        pytest.skip("needs arm-none-eabi-g++ (apt-get install gcc-arm-none-eabi)")
    checks = {"tfpipe::ImuPipeline<int8_t>": ram.IMU_PIPELINE_BYTES,
              "tfpipe::ImuPipeline<float>": ram.IMU_PIPELINE_BYTES,
              "tfpipe::AudioPipeline<int8_t>": ram.AUDIO_PIPELINE_BYTES,
              "tfpipe::AudioPipeline<float>": ram.AUDIO_PIPELINE_BYTES,
              "tfpipe::DecisionFilter": ram.DECISION_FILTER_BYTES,
              "tfpipe::RingBuffer<int16_t>": ram.RING_BUFFER_BYTES}
    source = tmp_path / "sizes.cpp"
    source.write_text('#include "pipeline_audio.h"\n#include "pipeline_decisions.h"\n'
                      '#include "pipeline_imu.h"\n#include "pipeline_ring.h"\n'
                      + "".join(f'static_assert(sizeof({t}) == {n}, "{t}");\n'
                                for t, n in checks.items()))
    result = subprocess.run([gxx, "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
                             "-mfloat-abi=hard", "-std=gnu++14", "-fsyntax-only",
                             f"-I{TEMPLATES / 'pipeline'}", str(source)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_fit_shows_the_pipeline_part_by_part():
    board = profiles.load_board("qemu-m4")
    info = reader.inspect_bytes((KEYWORD / "keyword_int8.tflite").read_bytes(), "keyword")
    parts = ram.static_ram(keyword_pipeline(), replays=True)
    without = fit.estimate(board, info, op_count=5, arena_bytes=8192)
    report = fit.estimate(board, info, op_count=5, arena_bytes=8192, pipeline_ram=parts)
    assert report.ram_total == without.ram_total + sum(parts.values())
    assert report.to_json()["ram_pipeline_parts"] == parts
    assert report.to_json()["ram_pipeline"] == sum(parts.values())
    assert without.to_json()["ram_pipeline_parts"] == {}
    line = report.lines()[1]
    assert f"pipeline {sum(parts.values()):,} B (window 1,960 B," in line
    assert f"frontend heap {parts['frontend_heap']:,} B" in line
    assert "pipeline" not in without.lines()[1]


# --- the frontend's heap, against the library's own code (TFLM tier) -------------------------

FRONTENDS = {
    "micro_speech": FrontendSettings(),
    "64_channels_64ms": FrontendSettings(window_ms=64, stride_ms=32, channels=64),
    "10_channels_no_pcan": FrontendSettings(channels=10, pcan=False, lower_hz=300.0,
                                            upper_hz=4000.0),
    "25ms_narrow_band": FrontendSettings(window_ms=25, stride_ms=10, channels=32,
                                         lower_hz=20.0, upper_hz=7800.0),
    "one_channel": FrontendSettings(channels=1, window_ms=10, stride_ms=10),
}


@pytest.fixture(scope="module")
def alloc_harness(tflm_tree, tmp_path_factory) -> Path:
    gcc, gxx = shutil.which("gcc"), shutil.which("g++")
    if gcc is None or gxx is None:
        pytest.skip("gcc/g++ are not installed")
    lib = tflm_tree / FRONTEND_LIB
    if not lib.is_dir():
        pytest.skip(f"{tflm_tree} has no micro frontend ({FRONTEND_LIB})")
    work = tmp_path_factory.mktemp("frontend-alloc")
    include = f"-I{tflm_tree / 'src'}"
    objects = frontend_objects(tflm_tree, work, gcc, gxx, optimize="-O1")
    executable = work / "frontend_alloc_harness"
    proc.run([gxx, "-std=c++11", "-O1", "-Wall", "-Werror", include, ALLOC_HARNESS, *objects,
              "-Wl,--wrap=malloc,--wrap=calloc", "-o", executable, "-lm"], timeout=180,
             what="linking the frontend allocation harness")
    return executable


def populate(alloc_harness: Path, front: FrontendSettings) -> tuple[list[str], str]:
    """The library's FrontendPopulateState on `front`: its requests, and "populated=0|1"."""
    result = subprocess.run([str(alloc_harness), *frontend_args(front)],
                            capture_output=True, text=True, timeout=60, check=True)
    *sizes, status = result.stdout.split()
    return sizes, status


@pytest.mark.tflm_tree
@pytest.mark.parametrize("front", [FrontendSettings(upper_hz=7999.0),
                                   FrontendSettings(upper_hz=8000.0),
                                   FrontendSettings(window_ms=64, stride_ms=32, upper_hz=7999.9),
                                   FrontendSettings(window_ms=25, channels=64, upper_hz=8000.0)])
def test_which_upper_bands_the_library_accepts(alloc_harness, front):
    """tinyforge refuses what FilterbankPopulateState would refuse at the firmware's start."""
    _, status = populate(alloc_harness, front)
    assert status == f"populated={int(filterbank.layout(front).accepted)}"


@pytest.mark.tflm_tree
@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontend_allocations_are_the_librarys(alloc_harness, name):
    front = FRONTENDS[name]
    sizes, status = populate(alloc_harness, front)
    assert status == "populated=1"
    # The host is 64-bit: kissfft's configuration holds three 8-byte pointers there.
    assert [int(s) for s in sizes] == ram.frontend_allocations(front, pointer_bytes=8)
