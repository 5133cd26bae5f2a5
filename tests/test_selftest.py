"""The self-test firmware (firmware_templates/selftest) and tinyforge.flows.selftest.

Rendering is checked on its own; the rest builds the firmware with real `pio run` (offline:
dead proxy), runs it in real QEMU and talks to it through pyserial over TCP. A firmware with
a deliberately wrong "model" shows the checks can fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import pytest
from qemu_support import block_network, require_emulator, seeded_core

from tinyforge import __version__
from tinyforge.board import profiles
from tinyforge.commands import selftest as selftest_command
from tinyforge.device import emulator, protocol
from tinyforge.errors import PackageUnavailableError
from tinyforge.flows import selftest
from tinyforge.project import selftest as selftest_project
from tinyforge.toolchain import pio


@pytest.fixture(scope="module")
def board():
    return profiles.load_board("qemu-m4")


# --- the documented stand-in model -----------------------------------------------------------

def test_reference_model_sums_every_fourth_input_and_clamps():
    data = bytes(range(16))  # in[i] = i
    assert selftest_project.reference_model(data) == [0 + 4 + 8 + 12, 1 + 5 + 9 + 13, 2 + 6 + 10 + 14,
                                              3 + 7 + 11 + 15]
    assert selftest_project.reference_model(bytes([0x7F] * 16)) == [127] * 4
    assert selftest_project.reference_model(bytes([0x80] * 16)) == [-128] * 4
    assert selftest_project.reference_model(bytes([0xFF, 2] + [0] * 14)) == [-1, 2, 0, 0]


def test_model_hash_is_the_sha256_of_the_word_selftest():
    assert selftest_project.MODEL_SHA256 == hashlib.sha256(b"selftest").hexdigest()


# --- rendering -------------------------------------------------------------------------------

def test_rendering_is_deterministic_and_complete(board, tmp_path):
    first = selftest_project.project_files(board)
    assert first == selftest_project.project_files(board)
    for needed in ("platformio.ini", "src/selftest.cpp", "src/selftest_config.h",
                   "src/board_runtime.h", "src/tf_protocol.cpp", "src/qemu_m4_startup.cpp"):
        assert needed in first
    config = first["src/selftest_config.h"].decode()
    assert selftest_project.MODEL_SHA256 in config
    assert f"kMaxLineLength = {selftest_project.MAX_LINE_LENGTH};" in config
    ini = first["platformio.ini"].decode()
    assert "platform = tinyforge-qemu-m4\n" in ini and "board = qemu-m4" in ini
    assert str(Path(__file__).resolve().parent.parent) not in ini, "a path of this machine"
    assert "lib_deps" not in ini  # no TFLM

    plan = selftest_project.render_project(tmp_path / "p", board)
    assert set(plan.actions.values()) == {"create"}
    again = selftest_project.render_project(tmp_path / "p", board)
    assert set(again.actions.values()) == {"identical"}


class _ChildrenStarted(logging.Handler):
    """The command lines tinyforge.proc logs for the children it runs (its debug log)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.argv: list[str] = []
        self.logger = logging.getLogger("tinyforge.proc")

    def emit(self, record):
        if record.getMessage().startswith("run: "):
            self.argv.append(record.getMessage())

    def __enter__(self):
        self.saved_level = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        return self.argv

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.saved_level)


def test_selftest_on_a_real_board_needs_its_packages_and_says_so_first(tmp_path, monkeypatch):
    if pio.registry_reachable():
        pytest.skip("PlatformIO's registry is reachable here: the build would download")
    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(tmp_path / "empty-core"))
    with _ChildrenStarted() as children, pytest.raises(PackageUnavailableError) as caught:
        selftest.run_selftest(profiles.load_board("nano33ble"), project_dir=tmp_path / "p")
    # Said before the build that would wait on the registry ever starts.
    assert not any(" -m platformio run " in c for c in children), children
    assert "platforms/nordicnrf52" in caught.value.details
    assert (tmp_path / "p" / "src" / "board_runtime_arduino.cpp").is_file()


# --- the real thing --------------------------------------------------------------------------

@pytest.mark.emulator
@pytest.mark.slow
def test_selftest_builds_offline_runs_in_qemu_and_passes(board, tmp_path_factory, tmp_path,
                                                         monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    core = seeded_core(tmp_path_factory)
    lines: list[str] = []
    report = selftest.run_selftest(board, project_dir=tmp_path / "p", core_dir=core,
                                   echo_frames=200, on_build_line=lines.append)
    failed = [(s.name, s.detail) for s in report.steps if not s.ok]
    assert report.passed, failed
    assert [s.name for s in report.steps] == ["boot", "hello", "echo", "errors", "timer",
                                              "inference", "chunks"]
    assert not [line for line in lines if "Installing" in line]
    assert report.build["flash_used"] < board.flash_bytes
    figures = {s.name: s.figures for s in report.steps}
    assert figures["echo"]["frames"] == 200
    assert figures["echo"]["max_payload_bytes"] > 200
    assert 0.75 < figures["timer"]["rate"] < 1.25

    # A second run renders identical files and compiles nothing.
    again = selftest.run_selftest(board, project_dir=tmp_path / "p", core_dir=core,
                                  echo_frames=20)
    assert again.passed
    assert again.build["compiled_files"] == 0
    _check_documented_examples(Path(report.build["firmware"]))


def _documented_lines() -> list[bytes]:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## Self-test firmware"):]
    return [line.split(": ", 1)[-1].strip().encode() for line in section.splitlines()
            if "!tf1 " in line]


def _check_documented_examples(elf: Path) -> None:
    """The example lines in docs/protocol.md are what the firmware really sends."""
    boot_line, in_line, res_line, time_line, _ = _documented_lines()
    decode = lambda line: protocol.Decoder().feed(line + b"\r\n")[0]  # noqa: E731
    documented_boot = decode(boot_line)
    documented_boot.firmware = __version__
    with emulator.launch(elf) as link:
        assert decode(link.read_until(b"\n").rstrip()) == documented_boot
        link.write(in_line + b"\n")
        result, expected = decode(link.read_until(b"\n").rstrip()), decode(res_line)
        result.us = expected.us  # the one value that varies
        assert result == expected
        link.write(time_line + b"\n")
        assert decode(link.read_until(b"\n").rstrip()).type == "TIME"


@pytest.mark.emulator
@pytest.mark.slow
def test_a_firmware_with_a_wrong_model_fails_the_inference_check(board, tmp_path_factory,
                                                                 tmp_path, monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    project = tmp_path / "p"
    selftest_project.render_project(project, board)
    sketch = project / "src" / "selftest.cpp"
    text = sketch.read_text()
    broken = text.replace("int32_t sum = 0;", "int32_t sum = 1;")
    assert broken != text
    sketch.write_text(broken)
    report = pio.build(project, board, seeded_core(tmp_path_factory))
    with emulator.launch(report.firmware) as link:
        steps = {s.name: s for s in selftest.exercise(link, board, echo_frames=10)}
    assert steps["echo"].ok and steps["boot"].ok
    assert not steps["inference"].ok
    assert "expected" in steps["inference"].detail


@pytest.mark.emulator
@pytest.mark.slow
def test_selftest_command_prints_a_json_report(board, tmp_path_factory, tmp_path, monkeypatch,
                                               capsys):
    require_emulator()
    block_network(monkeypatch)
    parser = argparse.ArgumentParser()
    selftest_command.register(parser.add_subparsers(), parents=[])
    args = parser.parse_args(["selftest", "--board", "qemu-m4", "--json", "--frames", "30",
                              "--core-dir", str(seeded_core(tmp_path_factory)),
                              "--project-dir", str(tmp_path / "p")])
    assert args.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and report["board"] == "qemu-m4"
    assert {s["name"] for s in report["steps"]} >= {"echo", "timer", "inference"}
    assert report["build"]["firmware"].endswith("firmware.elf")


def test_protocol_lines_the_selftest_sends_fit_the_firmware_limit():
    longest = protocol.encode_echo(0xFFFFFFFF, b"\xff" * selftest._max_echo_payload())
    assert len(longest) - len(protocol.HOST_EOL) <= selftest_project.MAX_LINE_LENGTH
    too_long = protocol.encode_echo(0xFFFFFFFF, b"\xff" * (selftest._max_echo_payload() + 1))
    assert len(too_long) - len(protocol.HOST_EOL) > selftest_project.MAX_LINE_LENGTH
