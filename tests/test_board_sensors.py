"""The board side of the sensors: the profile's pinned IMU libraries, what a sensor project
renders, and (with the real Arduino mbed core at hand) the sensor sources compiled for it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyforge import pipeline as tfpipeline
from tinyforge.board import profiles
from tinyforge.errors import BoardProfileError
from tinyforge.model import checks
from tinyforge.project import firmware

REPO = Path(__file__).resolve().parents[1]
GESTURE = REPO / "tinyforge" / "example" / "gesture_int8.tflite"
GESTURE_CONFIG = REPO / "examples" / "gesture" / "tinyforge.toml"
KEYWORD = REPO / "examples" / "keyword" / "keyword_int8.tflite"
KEYWORD_CONFIG = REPO / "examples" / "keyword" / "tinyforge.toml"
SENSOR_SOURCE = "src/board_sensors_arduino.cpp"
SKETCH = REPO / "tests" / "cpp" / "board_sensors_sketch.cpp"


def _project(model: Path, config: Path | None, board_id: str = "nano33ble",
             kind: str | None = None) -> dict[str, bytes]:
    board = profiles.load_board(board_id)
    data = model.read_bytes()
    prepared = checks.prepare(data, model.name, board, quantize="int8", tflm_root=None,
                              strict=True, force=False)
    pipeline = tfpipeline.load_pipeline(config, model=model, kind=kind)
    labels = [f"c{i}" for i in range(prepared.info.outputs[0].shape[-1])]
    return firmware.project_files(firmware.FirmwareInputs(
        board=board, model=data, info=prepared.info, ops=prepared.ops,
        resolver=prepared.resolver, arena=prepared.arena, labels=labels, demo_input=None,
        tflm_source=None, pipeline=pipeline))


def _lib_deps(files: dict[str, bytes]) -> list[str]:
    ini = files["platformio.ini"].decode()
    deps = []
    for line in ini.split("lib_deps =\n", 1)[1].splitlines():
        if not line.startswith("    "):
            break
        deps.append(line.strip())
    return deps


# --- the profile ------------------------------------------------------------------------------

def test_nano33ble_pins_both_imu_libraries_to_commits():
    board = profiles.load_board("nano33ble")
    deps = board.sensor_dependencies("imu")
    assert [d.split("=", 1)[0] for d in deps] == ["Arduino_LSM9DS1", "Arduino_BMI270_BMM150"]
    for dep in deps:
        assert re.fullmatch(r"[A-Za-z0-9_]+=https://github\.com/arduino-libraries/"
                            r"[A-Za-z0-9_]+\.git#[0-9a-f]{40}", dep), dep
    # The PDM library ships with the core; the host pipeline needs nothing.
    assert board.sensor_dependencies("microphone") == []
    assert board.sensor_dependencies("host") == []
    assert profiles.load_board("qemu-m4").sensor_dependencies("imu") == []


def _profile_with(tmp_path: Path, monkeypatch, libraries: str) -> Path:
    text = (REPO / "boards" / "nano33ble.toml").read_text()
    start = text.index("[[sensors.libraries]]")
    end = text.index("[power]")
    path = tmp_path / "nano33ble.toml"
    path.write_text(text[:start] + libraries + "\n" + text[end:])
    monkeypatch.setenv(profiles.BOARDS_PATH_ENV, str(tmp_path))
    return path


@pytest.mark.parametrize("entry, problem", [
    ('input = "imu"\nname = "X"\nversion = "1"\n', "missing: source"),
    ('input = "imu"\nname = "X"\nversion = "1"\nsource = "x@1"\nextra = "y"\n', "unknown: extra"),
    ('input = "camera"\nname = "X"\nversion = "1"\nsource = "x@1"\n', "'camera' is not one of"),
    ('input = "imu"\nname = "X Y"\nversion = "1"\nsource = "x@1"\n', "name 'X Y'"),
    ('input = "imu"\nname = "X"\nversion = "1"\nsource = "file:///home/me/lib"\n',
     "not a local one"),
    ('input = "imu"\nname = "X"\nversion = "1"\nsource = "x/../../lib"\n', "not a path"),
    ('input = "imu"\nname = "X"\nversion = "1"\nsource = "x@1 ; rm"\n', "not a package spec"),
    ('input = "imu"\nname = "X"\nversion = "1\\n[env]"\nsource = "x@1"\n', "control character"),
    ('input = "imu"\nname = "X"\nversion = 1\nsource = "x@1"\n', "exactly the string fields"),
])
def test_bad_sensor_libraries_are_refused_on_load(tmp_path, monkeypatch, entry, problem):
    _profile_with(tmp_path, monkeypatch, "[[sensors.libraries]]\n" + entry)
    with pytest.raises(BoardProfileError) as caught:
        profiles.load_board("nano33ble")
    assert problem in caught.value.details
    assert "docs/boards.md" in caught.value.hint


def test_sensor_libraries_must_be_an_array_of_tables(tmp_path, monkeypatch):
    path = _profile_with(tmp_path, monkeypatch, "")
    text = path.read_text().replace('inputs = ["imu", "microphone"]',
                                    'inputs = ["imu", "microphone"]\nlibraries = ["x"]')
    path.write_text(text)
    with pytest.raises(BoardProfileError) as caught:
        profiles.load_board("nano33ble")
    assert "array of tables" in caught.value.details


# --- rendering --------------------------------------------------------------------------------

def test_an_imu_project_gets_the_imu_libraries_and_the_sensor_sources():
    files = _project(GESTURE, GESTURE_CONFIG)
    deps = _lib_deps(files)
    assert deps[0].startswith("Chirale_TensorFlowLite=")
    assert deps[1:] == profiles.load_board("nano33ble").sensor_dependencies("imu")
    assert SENSOR_SOURCE in files and "src/board_sensors.h" in files
    assert files["src/board_sensors.h"] == (REPO / "firmware_templates" / "common" /
                                            "board_sensors.h").read_bytes()


def test_a_microphone_project_gets_no_imu_library():
    files = _project(KEYWORD, KEYWORD_CONFIG)
    assert [d.split("=", 1)[0] for d in _lib_deps(files)] == ["Chirale_TensorFlowLite"]
    assert SENSOR_SOURCE in files


def test_a_host_project_has_no_sensor_source_or_library():
    files = _project(GESTURE, None, kind="host")
    assert [d.split("=", 1)[0] for d in _lib_deps(files)] == ["Chirale_TensorFlowLite"]
    assert not [p for p in files if "sensors" in p]


def test_the_arduino_sensor_source_stays_out_of_qemu_projects():
    files = _project(GESTURE, GESTURE_CONFIG, board_id="qemu-m4")
    assert SENSOR_SOURCE not in files
    assert "Arduino_LSM9DS1" not in files["platformio.ini"].decode()


# --- compiled against the real framework (local tier) -----------------------------------------

NANO_OFFLINE = os.environ.get("TINYFORGE_NANO_OFFLINE")      # /work/ext/nano-offline
NANO_LIBS = os.environ.get("TINYFORGE_NANO_LIBS")            # checkouts of the two IMU libraries


def _nano_command() -> list[str]:
    text = (Path(NANO_OFFLINE) / "main-compile.sh").read_text().strip()
    words = text.split()
    # `arm-none-eabi-g++ -o OUT -c FLAGS... src/main.cpp`: keep the flags.
    flags = words[4:-1] if words[-1] == "src/main.cpp" else words[4:]
    return [w.replace('\\"', '"') for w in flags]


@pytest.mark.skipif(not (NANO_OFFLINE and NANO_LIBS and shutil.which("arm-none-eabi-g++")),
                    reason="needs the real Arduino mbed core set up for offline compiles "
                           "(TINYFORGE_NANO_OFFLINE, ../shared/notes/nano33ble-compile-offline.md) "
                           "and the IMU libraries' sources (TINYFORGE_NANO_LIBS)")
@pytest.mark.parametrize("model, config", [(GESTURE, GESTURE_CONFIG), (KEYWORD, KEYWORD_CONFIG)],
                         ids=["imu", "microphone"])
def test_the_sensor_sources_compile_for_the_nano(tmp_path, tflm_tree, model, config):
    files = _project(model, config)
    for path, data in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    libdeps = tmp_path / ".pio" / "libdeps" / "nano33ble"
    libdeps.mkdir(parents=True)
    (libdeps / "Chirale_TensorFlowLite").symlink_to(tflm_tree)  # the frontend's headers
    framework = Path(NANO_OFFLINE) / "core" / "packages" / "framework-arduino-mbed"
    includes = [f"-I{Path(NANO_LIBS) / 'Arduino_LSM9DS1' / 'src'}",
                f"-I{Path(NANO_LIBS) / 'Arduino_BMI270_BMM150' / 'src'}",
                f"-I{framework / 'libraries' / 'PDM' / 'src'}"]
    for source in (tmp_path / SENSOR_SOURCE, SKETCH):
        result = subprocess.run(
            ["arm-none-eabi-g++", "-o", str(tmp_path / (source.name + ".o")), "-c",
             *_nano_command(), "-ffp-contract=off", *includes, str(source)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "warning:" not in result.stderr, result.stderr[-3000:]


# --- the sensor source against a model of the core and the libraries (host g++) ---------------

MODEL_DIR = REPO / "tests" / "cpp" / "arduino_model"
DRIVER = REPO / "tests" / "cpp" / "board_sensors_model.cpp"


def _model_binary(tmp_path: Path, model: Path, config: Path, host_builds) -> Path:
    from tinyforge.pipeline import settings
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("needs g++")
    p = tfpipeline.load_pipeline(config, model=model)
    for name, data in settings.device_files(p, folder="").items():
        (tmp_path / name.lstrip("/")).write_bytes(data)
    shutil.copy(REPO / "firmware_templates" / "common" / "board_sensors.h", tmp_path)
    binary = tmp_path / "driver"
    sources = [REPO / "firmware_templates" / "runtime" / "arduino" / "board_sensors_arduino.cpp",
               DRIVER, tmp_path / "pipeline_math.cpp"]
    argv = [gxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-g",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{tmp_path}",
            f"-I{MODEL_DIR}", *map(str, sources), "-o", str(binary)]

    def compile_it() -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    host_builds.build(argv, binary, compile_it)
    return binary


def _run(binary: Path, scenario: str) -> list[str]:
    result = subprocess.run([str(binary), scenario], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (scenario, result.stdout, result.stderr[-2000:])
    return result.stdout.splitlines()


RAW = [[0, 8192, -8192, 0, 16384, -16384], [32767, -32768, 1, -1, 32767, -32768],
       [123, -4567, 8191, 2048, -2049, 7], [-1, 2, -3, 4, -5, 6]]


def test_the_imu_of_either_revision_is_found_by_its_identity_register(tmp_path, host_builds):
    binary = _model_binary(tmp_path, GESTURE, GESTURE_CONFIG, host_builds)
    counts = [f"counts={','.join(map(str, r))}" for r in RAW]
    # rev1: only the LSM9DS1 library is started; readings come back as the same counts.
    assert _run(binary, "lsm9ds1") == [
        "kind=1 rate=119000 lsm_begins=1 bmi_begins=0 bmi_config=-1", *counts, "microphone=0"]
    # rev2: only the BMI270 library, accelerometer and gyroscope only (no magnetometer).
    assert _run(binary, "bmi270") == [
        "kind=2 rate=99840 lsm_begins=0 bmi_begins=1 bmi_config=0", *counts, "microphone=0"]
    # Nothing answers (a Nano 33 BLE without "Sense"): no library is started at all.
    assert _run(binary, "none") == [
        "kind=0 rate=0 lsm_begins=0 bmi_begins=0 bmi_config=-1", "microphone=0"]
    # Something else at 0x68 is not a BMI270.
    assert _run(binary, "other-chip-at-0x68") == [
        "kind=0 rate=0 lsm_begins=0 bmi_begins=0 bmi_config=-1", "microphone=0"]
    # An LSM9DS1 whose library start fails (its magnetometer missing) counts as no IMU.
    assert _run(binary, "lsm9ds1-no-magnetometer") == [
        "kind=0 rate=0 lsm_begins=1 bmi_begins=0 bmi_config=-1", "microphone=0"]


def test_pdm_blocks_reach_the_ring_in_order_and_the_overflow_is_counted(tmp_path,
                                                                       host_builds):
    binary = _model_binary(tmp_path, KEYWORD, KEYWORD_CONFIG, host_builds)
    # Mono at 16 kHz; every block is taken whole (the library would stop otherwise); what the
    # ring has no room for is counted as dropped, never written over older samples.
    assert _run(binary, "pdm") == ["started=1 channels=1 rate=16000 imu=0",
                                   "read=1024 dropped=256 in_order=1 running=1 overflow=0"]
    assert _run(binary, "bad") == ["null=0 odd=0 rate8000=0"]
