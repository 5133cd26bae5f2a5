"""`tinyforge build` and PlatformIO without its registry: fail in seconds, name what is missing."""

from __future__ import annotations

import re

import pytest

from tinyforge.board import profiles
from tinyforge.errors import ChildProcessFailed, PackageUnavailableError, PlatformIOError
from tinyforge.toolchain import pio

NANO = profiles.load_board("nano33ble")


def test_missing_packages_and_no_registry_fail_before_the_build(tinyforge, models, tmp_path):
    if pio.registry_reachable():
        pytest.skip("PlatformIO's registry is reachable here: the build would download")
    result = tinyforge("build", "-v", "--model", models / "dense_int8.tflite", "--project-dir",
                       tmp_path / "p")
    assert result.returncode == 1, result.stderr
    # It never starts the build that would wait on the registry (-v logs every child's argv:
    # the project check's, unless this platformio.ini passed it before in this session).
    assert re.search(r"^run: .* -m platformio project config |^PlatformIO project check: "
                     r"this platformio.ini passed before", result.stderr, re.M), result.stderr
    assert not re.search(r"^run: .* -m platformio run ", result.stderr, re.M), result.stderr
    for package in ("platforms/nordicnrf52", "packages/framework-arduino-mbed",
                    "packages/toolchain-gccarmnoneeabi", "Chirale_TensorFlowLite"):
        assert package in result.stderr
    assert "registry cannot be reached" in result.stderr
    assert "--no-compile" in result.stderr and "qemu-m4" in result.stderr
    assert (tmp_path / "p" / "platformio.ini").is_file(), "the project itself is rendered"


# What `pio run` prints when a package download stalls and fails (offline-platformio.md).
STALLED_OUTPUT = """\
Processing nano33ble (platform: nordicnrf52@10.11.0; board: nano33ble; framework: arduino)
--------------------------------------------------------------------------------
Platform Manager: Installing nordicnrf52 @ 10.11.0
Tool Manager: Installing platformio/toolchain-gccarmnoneeabi @ ~1.70201.0
HTTPClientError:
========================= [FAILED] Took 61.32 seconds =========================
"""


def test_a_stalled_download_is_explained_with_the_package_name():
    watcher = pio._OutputWatcher(pio.BuildReport(seconds=0), None)
    for line in STALLED_OUTPUT.splitlines():
        watcher(line)
    error = pio._explain_failure(ChildProcessFailed("x", returncode=1), watcher, NANO)
    assert isinstance(error, PackageUnavailableError)
    assert "platformio/toolchain-gccarmnoneeabi" in error.message
    assert "--no-compile" in error.hint


def test_a_compile_error_keeps_platformios_exit_status_and_its_error_lines():
    watcher = pio._OutputWatcher(pio.BuildReport(seconds=0), None)
    for line in ("Compiling .pio/build/nano33ble/src/main.cpp.o",
                 "src/main.cpp:12:3: error: 'foo' was not declared in this scope",
                 "*** [.pio/build/nano33ble/src/main.cpp.o] Error 1"):
        watcher(line)
    error = pio._explain_failure(ChildProcessFailed("x", returncode=1), watcher, NANO)
    assert isinstance(error, PlatformIOError) and error.exit_code == 1
    assert "'foo' was not declared" in error.details


def test_usage_lines_are_read_from_platformios_report():
    report = pio.BuildReport(seconds=0)
    watcher = pio._OutputWatcher(report, None)
    watcher("RAM:   [=         ]   7.5% (used 19660 bytes from 262144 bytes)")
    watcher("Flash: [=         ]  14.0% (used 137624 bytes from 983040 bytes)")
    assert (report.ram_used, report.ram_total) == (19660, 262144)
    assert (report.flash_used, report.flash_total) == (137624, 983040)


def test_platformios_own_lines_stay_behind_verbose(caplog):
    on_line = pio.progress_logger("build")
    lines = [f"Compiling .pio/build/x/src/f{i}.cpp.o" for i in range(pio.PROGRESS_EVERY_FILES)]
    lines += ["Linking .pio/build/qemu-m4/firmware.elf",
              "RAM:   [========= ]  91.8% (used 240756 bytes from 262144 bytes)",
              "Flash: [=         ]   8.9% (used 87376 bytes from 983040 bytes)",
              "src/main.cpp:3:1: error: something"]
    with caplog.at_level("DEBUG", logger="tinyforge"):
        for line in lines:
            on_line(line)
    shown = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert shown == [f"  build: {pio.PROGRESS_EVERY_FILES} files compiled..."]
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "DEBUG")
    assert "91.8%" in debug and "Linking" in debug       # all of it with -v
