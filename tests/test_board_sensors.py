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
def test_the_sensor_sources_compile_for_the_nano(tmp_path, model, config):
    files = _project(model, config)
    for path, data in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    libdeps = tmp_path / ".pio" / "libdeps" / "nano33ble"
    libdeps.mkdir(parents=True)
    tflm = os.environ.get("TINYFORGE_TFLM")
    if not tflm:
        pytest.skip("needs TINYFORGE_TFLM (Chirale_TensorFlowLite) for the frontend headers")
    (libdeps / "Chirale_TensorFlowLite").symlink_to(tflm)
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
