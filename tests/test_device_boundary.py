"""The device boundary (issue 7): serial failures on a send or a read, validate against BOOT's
output specs, the last-build record, Ctrl-C at any moment (start-up included), bounded waits,
and the flash -> monitor handover.

A USB board is the one boundary that cannot exist here: it is modelled by a real pty
(tests/fake_device.py), opened with real pyserial. QEMU, PlatformIO, TensorFlow and the host
TFLM runtime are the real ones. Every command runs with an environment that carries a marker,
so a /proc scan finds anything it left running, forked or spawned, even once reparented to
init: in this process through `cli.main` (tests/cli_support.py, whose watchdog also ends a
command that blocks) where the command's behaviour is the point, as a real child process where
the process is (Ctrl-C, start-up, a file size limit).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest
import serial
from cli_support import handlers_installed, run_in_process, sigint_blocked
from fake_device import UNPLUG, FakeDevice, FakeFirmware, boot_line, result_line
from qemu_support import (
    DEAD_PROXY,
    build,
    descendants,
    processes_marked,
    require_emulator,
    seeded_core,
    write_project,
)

from tinyforge import resources
from tinyforge.board import profiles
from tinyforge.device import ports, protocol
from tinyforge.device.conversation import Conversation
from tinyforge.errors import EXIT_DEVICE_ERROR, DeviceError, LinkLostError
from tinyforge.project import selftest as selftest_files
from tinyforge.toolchain import pio

EXAMPLE = resources.example_dir()


# --- running the real CLI and checking what it leaves behind ------------------------------

@pytest.fixture
def marked_env(cli_env):
    """The CLI's environment with a fresh marker; after the test, nothing may carry it."""
    marker = uuid.uuid4().hex
    env = dict(cli_env, TINYFORGE_TEST_MARK=marker)
    yield env
    assert_nothing_left(marker)


def assert_nothing_left(marker: str, wait: float = 5.0) -> None:
    deadline = time.monotonic() + wait
    while (left := processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "processes outlived the command:\n" + "\n".join(p.describe() for p in left)


def cli(env: dict, *args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`tinyforge ARGS` in this process (tests/cli_support.py) with `env` as its whole
    environment: whatever it starts inherits the marker, so the /proc scan still finds it."""
    return run_in_process(args, env=env, cwd=cwd, timeout=timeout)


def start_cli(env: dict, *args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinyforge", *map(str, args)], env=env,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def refused(result, code: int, *phrases: str) -> None:
    """Exit `code`, no traceback, an error and a hint, and the phrases in stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr and "\nhint: " in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


def files_under(root: Path, *, leave_out: tuple[Path, ...] = ()) -> dict[str, int]:
    """Every file under `root` (but `leave_out`) with its modification time."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not any(path.is_relative_to(p) for p in leave_out):
            found[str(path.relative_to(root))] = path.stat().st_mtime_ns
    return found


@pytest.fixture(scope="module")
def module_env(pio_core) -> dict:
    env = dict(os.environ, PLATFORMIO_CORE_DIR=str(pio_core), PYTHONDONTWRITEBYTECODE="1",
               TINYFORGE_PIO_CORE_DIR=str(pio_core.parent / "tinyforge-pio-core"))
    env.pop("TINYFORGE_TFLM", None)
    env.pop("TINYFORGE_BOARDS_PATH", None)
    return env


@pytest.fixture(scope="module")
def nano_project(tmp_path_factory, module_env) -> Path:
    """A nano33ble project of the bundled example (rendered, not compiled: no board here)."""
    where = tmp_path_factory.mktemp("nano")
    result = cli(module_env, "build", "--project-dir", where / "project", "--no-compile",
                 cwd=where)
    assert result.returncode == 0, result.stderr
    return where / "project"


# --- a firmware on the fake port: the self-test's stand-in model, so validate's reference
# is tinyforge's own pure-Python one and no TFLM or TensorFlow is needed ---------------------

IN_SPEC = f"int8:1x{selftest_files.INPUT_SHAPE[1]}:{selftest_files.INPUT_SCALE!r}:" \
          f"{selftest_files.INPUT_ZERO_POINT}"
OUT_SPEC = f"int8:1x{selftest_files.OUTPUT_SHAPE[1]}:{selftest_files.OUTPUT_SCALE!r}:" \
           f"{selftest_files.OUTPUT_ZERO_POINT}"
SELFTEST_BOOT = boot_line(model_sha256=selftest_files.MODEL_SHA256, inputs=IN_SPEC,
                          outputs=OUT_SPEC)


def stand_in_outputs(data: bytes) -> tuple[list[int], list[float]]:
    q = selftest_files.reference_model(data)
    return q, [(v - selftest_files.OUTPUT_ZERO_POINT) * selftest_files.OUTPUT_SCALE for v in q]


def correct_answer(seq: int, data: bytes) -> bytes:
    return result_line(seq, [stand_in_outputs(data)])


# --- serial failures after opening, on a real pty ------------------------------------------

def _open(device: FakeDevice) -> Conversation:
    return Conversation(ports.open_port(device.port, 115200))


def _link_lost(caught, operation: str, cause: type) -> None:
    error = caught.value
    assert isinstance(error, LinkLostError) and error.exit_code == EXIT_DEVICE_ERROR
    assert f"could not {operation}" in error.message and error.hint
    assert isinstance(error.__cause__, cause), repr(error.__cause__)


def test_a_read_from_a_vanished_port_is_a_device_error(tmp_path):
    with FakeDevice(tmp_path) as device:
        talk = _open(device)
        device.close()
        with pytest.raises(DeviceError) as caught:
            talk.poll(1.0)
        talk.link.close()
    _link_lost(caught, "read from", OSError)  # in_waiting: a bare OSError, not pyserial's


def test_a_send_to_a_vanished_port_is_a_device_error(tmp_path):
    with FakeDevice(tmp_path) as device:
        talk = _open(device)
        device.close()
        with pytest.raises(DeviceError) as caught:
            talk.send(protocol.encode_hello())
        talk.link.close()
    _link_lost(caught, "write to", serial.SerialException)


def test_a_flush_on_a_vanished_port_is_a_device_error(tmp_path):
    with FakeDevice(tmp_path) as device:
        talk = _open(device)
        device.close()
        with pytest.raises(DeviceError) as caught:
            talk.send(b"")  # nothing to write: pyserial goes straight to tcdrain()
        talk.link.close()
    _link_lost(caught, "write to", termios.error)


def test_a_board_that_stopped_reading_is_a_write_timeout(tmp_path, monkeypatch):
    # The named timeout, shortened: what is checked is that the write gives up after it and
    # says so, not its length (a blocked write on a pty also spins pyserial on the CPU).
    monkeypatch.setattr(ports, "WRITE_TIMEOUT_S", 1.0)
    with FakeDevice(tmp_path) as device:
        talk = _open(device)
        device.stop_reading()
        started = time.monotonic()
        with pytest.raises(DeviceError) as caught:
            talk.send(protocol.encode_hello())
        waited = time.monotonic() - started
        talk.link.close()
    assert not isinstance(caught.value, LinkLostError)  # the board is there, it is stuck
    assert f"timed out after {ports.WRITE_TIMEOUT_S:g} s" in caught.value.message
    assert caught.value.hint and caught.value.exit_code == EXIT_DEVICE_ERROR
    assert ports.WRITE_TIMEOUT_S - 0.5 <= waited <= ports.WRITE_TIMEOUT_S + 3


def test_unplug_mid_validate_is_exit_2_with_a_hint(nano_project, marked_env, tmp_path):
    def answer(seq, data):
        return UNPLUG if seq == 5 else correct_answer(seq, data)

    before = files_under(tmp_path)
    with FakeDevice(tmp_path) as device, FakeFirmware(device, SELFTEST_BOOT, answer) as firmware:
        result = cli(marked_env, "validate", "--project-dir", nano_project, "--port",
                     device.port, "--random", "20", cwd=tmp_path)
    assert firmware.inputs == 6
    # The host may be writing the next input or waiting for the answer when the port goes.
    refused(result, 2, "unplugged")
    assert (f"could not read from {device.port}" in result.stderr
            or f"could not write to {device.port}" in result.stderr), result.stderr
    assert files_under(tmp_path) == before


def test_a_send_that_fails_mid_validate_is_exit_2_with_a_hint(nano_project, marked_env,
                                                               tmp_path):
    """The board stops reading after input #3 and vanishes while validate is writing #4."""
    def answer(seq, data):
        if seq == 3:
            device.stop_reading()
            threading.Timer(2.0, device.close).start()
        return correct_answer(seq, data)

    before = files_under(tmp_path)
    with FakeDevice(tmp_path) as device, FakeFirmware(device, SELFTEST_BOOT, answer):
        result = cli(marked_env, "validate", "--project-dir", nano_project, "--port",
                     device.port, "--random", "20", cwd=tmp_path)
    refused(result, 2, f"could not write to {device.port}")
    assert files_under(tmp_path) == before


def _wait_until_open(child: subprocess.Popen, path: str, timeout: float = 30) -> None:
    """Until `child` has `path` open (its /proc fd table), so a test knows it is talking."""
    target = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(os.path.realpath(f"/proc/{child.pid}/fd/{fd}") == target
                   for fd in os.listdir(f"/proc/{child.pid}/fd")):
                return
        except OSError:
            pass
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    raise AssertionError(f"the command never opened {path}")


def _writes(child: subprocess.Popen) -> int:
    """How many write system calls `child` has made (/proc/PID/io)."""
    for line in Path(f"/proc/{child.pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/PID/io")


def _wait_until_writing(child: subprocess.Popen, since: int, timeout: float = 30) -> None:
    """Until `child` has made a write system call since it had made `since` of them: the
    monitor writes nothing but HELLO before BOOT, so its HELLO has started (and, on a board
    that stopped reading, cannot finish before the write timeout)."""
    deadline = time.monotonic() + timeout
    while _writes(child) <= since:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the monitor never sent its HELLO"
        time.sleep(0.01)


def test_monitor_reconnects_when_a_send_fails(nano_project, marked_env, tmp_path):
    """The monitor's HELLO blocks on a board that stopped reading; it is unplugged during
    that write; it comes back: the monitor carries on as after a failed read."""
    link = tmp_path / "ttyBOARD"
    with FakeDevice(tmp_path, link=link) as first:
        first.stop_reading()
        child = start_cli(marked_env, "monitor", "--project-dir", nano_project, "--port",
                          link, "--count", "1", "--timeout", "40", "--json", cwd=tmp_path)
        _wait_until_open(child, first.slave_path)
        # HELLO goes out 0.5 s after opening and blocks for up to ports.WRITE_TIMEOUT_S:
        # unplugged once it is under way, whatever the load of the machine.
        _wait_until_writing(child, since=_writes(child))
        time.sleep(0.2)
    time.sleep(0.5)
    with FakeDevice(tmp_path, link=link) as second:
        second.expect("HELLO")
        second.send(result_line(0, [([1, 2], [0.5, 1.0])], src="demo"))
        out, err = child.communicate(timeout=40)
    assert child.returncode == 0, err
    assert "went away (could not write to" in err and "reconnected" in err, err
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["result"]


# --- validate checks each result against BOOT's output specs -------------------------------

def _short(seq, data):
    q, f = stand_in_outputs(data)
    return result_line(seq, [(q[:3], f[:3])])


def _missing(seq, data):
    return result_line(seq, [])


def _extra(seq, data):
    return result_line(seq, [stand_in_outputs(data), stand_in_outputs(data)])


def _no_raw_values(seq, data):
    return result_line(seq, [(None, stand_in_outputs(data)[1])])


def _long(seq, data):
    q, f = stand_in_outputs(data)
    return result_line(seq, [(q + [0], f + [-0.75])])


@pytest.mark.parametrize("answer, problem", [
    (_short, "output 0 has 3 values, BOOT says 4"),
    (_missing, "0 outputs, BOOT says 1"),
    (_extra, "2 outputs, BOOT says 1"),
    (_no_raw_values, "no raw int8 values"),
    (_long, "output 0 has 5 values, BOOT says 4"),
])
def test_results_with_missing_or_short_outputs_fail_validate(nano_project, marked_env, tmp_path,
                                                             answer, problem):
    before = files_under(tmp_path)
    with FakeDevice(tmp_path) as device, FakeFirmware(device, SELFTEST_BOOT, answer):
        result = cli(marked_env, "validate", "--project-dir", nano_project, "--port",
                     device.port, "--random", "4", "--json", cwd=tmp_path)
    refused(result, 3, "4 of 4 results have missing or short outputs")
    assert files_under(tmp_path) == before
    report = json.loads(result.stdout)
    assert report["malformed"] == 4 and report["exact_matches"] == 0
    assert report["passed"] is False
    first = report["mismatches"][0]
    assert first["sample"] == 0 and problem in first["problem"], first


def test_well_formed_results_from_the_fake_firmware_pass(nano_project, marked_env, tmp_path):
    """The control for the test above: the same firmware, answering correctly, passes."""
    with FakeDevice(tmp_path) as device, FakeFirmware(device, SELFTEST_BOOT, correct_answer):
        result = cli(marked_env, "validate", "--project-dir", nano_project, "--port",
                     device.port, "--random", "4", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exact_matches"] == 4 and report["malformed"] == 0


def test_a_boot_with_another_output_count_is_refused_before_sending(nano_project, marked_env,
                                                                    tmp_path):
    boot = boot_line(model_sha256=selftest_files.MODEL_SHA256, inputs=IN_SPEC,
                     outputs=f"{OUT_SPEC},{OUT_SPEC}")
    with FakeDevice(tmp_path) as device, FakeFirmware(device, boot, correct_answer) as firmware:
        result = cli(marked_env, "validate", "--project-dir", nano_project, "--port",
                     device.port, "--random", "4", cwd=tmp_path)
    refused(result, 2, "BOOT lists 2 outputs, the model has 1", "tinyforge flash")
    assert firmware.inputs == 0


# --- the last build is recorded, not guessed from file times --------------------------------

@pytest.mark.slow  # three CLI builds in a row
def test_the_last_build_is_recorded_across_boards(marked_env, tmp_path):
    for board in ("nano33ble", "qemu-m4", "nano33ble"):
        result = cli(marked_env, "build", "--board", board, "--no-compile", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    manifests = {board: tmp_path / "build" / board / ".tinyforge" / "manifest.json"
                 for board in ("nano33ble", "qemu-m4")}
    # The third build changed no file: by file times, qemu-m4 would be the last build.
    assert manifests["nano33ble"].stat().st_mtime_ns < manifests["qemu-m4"].stat().st_mtime_ns
    record = json.loads((tmp_path / "build" / "last-build.json").read_text())
    assert record["projects"] == ["nano33ble", "qemu-m4"]
    for command in ("flash", "validate", "monitor"):
        result = cli(marked_env, command, cwd=tmp_path)
        if command == "flash":
            refused(result, 1, "build/nano33ble has no firmware yet")
        else:  # a real board is looked for, not QEMU started
            refused(result, 2, "no Arduino Nano 33 BLE Sense found")
    refused(cli(marked_env, "flash", "--board", "qemu-m4", cwd=tmp_path), 1,
            "build/qemu-m4 has no firmware yet")


@pytest.mark.slow  # several CLI builds
def test_projects_without_a_record_are_not_guessed(marked_env, tmp_path):
    for board in ("nano33ble", "qemu-m4"):
        assert cli(marked_env, "build", "--board", board, "--no-compile",
                   cwd=tmp_path).returncode == 0
    (tmp_path / "build" / "last-build.json").unlink()  # as left by an older tinyforge
    refused(cli(marked_env, "flash", cwd=tmp_path), 1, "refusing to guess", "build/nano33ble",
            "build/qemu-m4", "--project-dir")
    # One project for the board asked for is no guess.
    refused(cli(marked_env, "flash", "--board", "qemu-m4", cwd=tmp_path), 1,
            "build/qemu-m4 has no firmware yet")


def test_a_project_outside_build_is_not_recorded(marked_env, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = cli(marked_env, "build", "--no-compile", "--project-dir", tmp_path / "elsewhere",
                 cwd=work)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []  # nothing written outside the project


def test_a_corrupt_record_is_ignored_with_a_warning(marked_env, tmp_path):
    assert cli(marked_env, "build", "--no-compile", cwd=tmp_path).returncode == 0
    (tmp_path / "build" / "last-build.json").write_text('{"projects": ["../../etc"]}')
    result = cli(marked_env, "flash", cwd=tmp_path)
    refused(result, 1, "build/nano33ble has no firmware yet")  # the one project there


# --- bad options: timeouts and counts -------------------------------------------------------

@pytest.mark.parametrize("args, phrase", [
    (("monitor", "--timeout", "0"), "'0' is not a timeout"),
    (("monitor", "--timeout", "-5"), "'-5' is not a timeout"),
    (("monitor", "--timeout", "nan"), "'nan' is not a timeout"),
    (("monitor", "--timeout", "inf"), "'inf' is not a timeout"),
    (("monitor", "--timeout", "1e9"), "'1e9' is not a timeout"),
    (("monitor", "--timeout", "soon"), "'soon' is not a number of seconds"),
    (("monitor", "--count", "0"), "'0' must be at least 1"),
    (("monitor", "--count", "-2"), "'-2' must be at least 1"),
    (("monitor", "--baud", "0"), "'0' must be at least 1"),
    (("flash", "--timeout", "nan"), "'nan' is not a timeout"),
    (("flash", "--count", "0"), "'0' must be at least 1"),
    (("validate", "--random", "0"), "'0' must be at least 1"),
    (("validate", "--max-abs", "nan"), "'nan' must be a finite number"),
    (("validate", "--max-abs", "-1"), "'-1' must be a finite number"),
    (("validate", "--max-lsb", "-1"), "'-1' must be 0 or more"),
    (("selftest", "--frames", "0"), "'0' must be at least 1"),
])
def test_bad_timeouts_and_counts_are_refused(marked_env, tmp_path, args, phrase):
    result = cli(marked_env, *args, cwd=tmp_path)
    refused(result, 1, phrase)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_csv_log_is_refused_before_the_port_is_opened(marked_env, tmp_path):
    with FakeDevice(tmp_path) as device:
        result = cli(marked_env, "monitor", "--board", "nano33ble", "--port", device.port,
                     "--csv", tmp_path / "no-such-folder" / "log.csv", cwd=tmp_path)
    refused(result, 1, "cannot write the CSV log", "--csv")
    assert not (tmp_path / "no-such-folder").exists()


def test_a_csv_log_that_is_a_fifo_is_refused_without_blocking(marked_env, tmp_path):
    fifo = tmp_path / "log.csv"
    os.mkfifo(fifo)  # opening it for writing would wait for a reader forever
    with FakeDevice(tmp_path) as device:
        result = cli(marked_env, "monitor", "--board", "nano33ble", "--port", device.port,
                     "--csv", fifo, cwd=tmp_path, timeout=60)
    refused(result, 1, "is not a regular file", "--csv")


def test_a_csv_log_that_cannot_grow_keeps_its_whole_rows(marked_env, tmp_path):
    """The disk fills up mid-stream (a file size limit: writes past it fail with EFBIG)."""
    import resource

    log, limit = tmp_path / "log.csv", 600

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with FakeDevice(tmp_path) as device:
        child = subprocess.Popen(
            [sys.executable, "-m", "tinyforge", "monitor", "--board", "nano33ble", "--port",
             device.port, "--csv", str(log), "--timeout", "60"], env=marked_env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=small_files)
        device.expect("HELLO", timeout=60)
        device.send(boot_line(model_sha256="ab" * 32, inputs="int8:1x10:0.1:0",
                              outputs="int8:1x2:0.5:0"))
        for seq in range(40):  # ~40 bytes a row: the log is full long before the last
            device.send(result_line(seq, [([1, -2], [0.5, -1.0])], src="demo"))
        out, err = child.communicate(timeout=60)
    result = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    refused(result, 1, "cannot write the CSV log", "File too large", "free space")
    text = log.read_text()
    assert 0 < len(text) <= limit and text.endswith("\n"), text
    rows = text.splitlines()
    assert rows[0].startswith("seq,src,us,")
    assert [row.split(",")[0] for row in rows[1:]] == [str(n) for n in range(len(rows) - 1)]
    assert f"holds the {len(rows) - 1} result(s)" in err, err


# --- the monitor says why it is silent --------------------------------------------------------

def test_monitor_says_when_the_firmware_waits_for_host_input(tmp_path, marked_env):
    model = EXAMPLE / "gesture_int8.tflite"
    boots = {}
    # A firmware with a demo input runs it right after BOOT: its first result ends the monitor
    # (--count 1). One without waits silently, so only the timeout ends that monitor.
    demo_result = result_line(0, [([1, 2, 3, 4], [0.0, 0.25, 0.5, 0.75])], src="demo")
    for name, extra, after_boot, until in (
            ("without", (), b"", ("--timeout", "2")),
            ("with", ("--demo-input", EXAMPLE / "demo_input.npy"), demo_result,
             ("--count", "1", "--timeout", "60"))):
        project = tmp_path / name
        result = cli(marked_env, "build", "--model", model, "--project-dir", project,
                     "--no-compile", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # The firmware's model: the example with its offline memory plan (--memory-plan auto).
        sha = hashlib.sha256((project / ".tinyforge" / "model.tflite").read_bytes()).hexdigest()
        boot = boot_line(model_sha256=sha, inputs="int8:1x32x3:0.1:0",
                         outputs="int8:1x4:0.00390625:-128")
        with FakeDevice(tmp_path) as device, \
                FakeFirmware(device, boot + after_boot, lambda *_: None):
            boots[name] = cli(marked_env, "monitor", "--project-dir", project, "--port",
                              device.port, *until, cwd=tmp_path)
    for result in boots.values():
        assert result.returncode == 0 and "boot  nano33ble: ready" in result.stdout
    said = boots["without"].stderr
    assert "waits for host input" in said and "tinyforge validate" in said
    assert "--demo-input" in said
    assert "waits for host input" not in boots["with"].stderr


# --- host runs are bounded, and said so ------------------------------------------------------

@pytest.fixture(scope="module")
def while_forever(models) -> Path:
    """A real model whose WHILE loop never ends (tests/models/make_while_model.py)."""
    return models / "while_forever.tflite"


def test_a_model_that_loops_forever_is_stopped_and_reported(while_forever, marked_env,
                                                            tmp_path, monkeypatch):
    from tinyforge.model import host_runtime

    # The named limit, shortened (10 s of a spinning child otherwise): what is checked is that
    # the run is stopped at the limit, once, and reported, not the limit's length.
    monkeypatch.setattr(host_runtime, "HOST_RUN_TIMEOUT_S", 2.0)
    HOST_RUN_TIMEOUT_S = host_runtime.HOST_RUN_TIMEOUT_S
    project = tmp_path / "p"
    started = time.monotonic()
    result = cli(marked_env, "build", "--model", while_forever, "--quantize", "float32",
                 "--no-compile", "--project-dir", project, cwd=tmp_path)
    seconds = time.monotonic() - started
    refused(result, 1, f"for {HOST_RUN_TIMEOUT_S:g} s without finishing and was stopped",
            "loops", "tinyforge inspect")
    # Stopped once, at the first run: not once per probe of the arena search (~15 of them),
    # which a bound this loose tells apart however loaded the machine is.
    assert seconds < 5 * HOST_RUN_TIMEOUT_S, seconds
    assert not project.exists()


# --- Ctrl-C at any moment ---------------------------------------------------------------------

class Interrupted:
    """One run of the CLI interrupted with SIGINT, and what was going on at that moment."""

    def __init__(self, env: dict, args, cwd: Path, *, delay: float, after=None,
                 timeout: float = 120):
        child = start_cli(env, *args, cwd=cwd)
        if after is not None:  # wait for a moment worth interrupting, then the delay
            deadline = time.monotonic() + timeout
            while not after(child) and time.monotonic() < deadline:
                assert child.poll() is None, child.communicate()
                time.sleep(0.02)
        time.sleep(delay)
        self.armed = handlers_installed(child.pid)
        self.running = [p.describe() for p in descendants(child.pid)]
        ended = child.poll() is not None
        child.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        # Read before the reap: a zombie keeps its signal mask.
        over = sigint_blocked(child.pid)
        self.out, self.err = child.communicate(timeout=timeout)
        self.seconds_to_exit = time.monotonic() - signalled
        self.returncode = child.returncode
        # The command had finished (or was exiting, its children gone) when the signal came:
        # it keeps its own status.
        self.finished_before = ended or (over and self.returncode == 0
                                         and "interrupted" not in self.err)

    def check(self) -> None:
        assert not self.finished_before, "the command ended before the signal: test too slow"
        if self.armed:  # tinyforge's own code runs: the contract holds exactly
            assert self.returncode == 130, (self.returncode, self.err)
            assert "Traceback" not in self.err, self.err
            assert self.err.rstrip().endswith("tinyforge: interrupted"), self.err
        else:  # Python's own start-up, before tinyforge's first line (docs/cli.md)
            assert self.returncode in (130, 1, -signal.SIGINT), (self.returncode, self.err)
            package = f"{os.sep}tinyforge{os.sep}"
            frames = [line.strip() for line in self.err.splitlines()
                      if line.strip().startswith("File ") and package in line]
            # At most the entry module's first instructions, before its `try`.
            assert all(f"{os.sep}tinyforge{os.sep}__main__.py" in line for line in frames), \
                self.err


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_start_up_and_serial_talk(marked_env, tmp_path):
    """From a millisecond after exec (Python starting, tinyforge importing, argparse) to the
    monitor talking to a (silent) board."""
    delays = [0.001, 0.003, 0.006, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1,
              0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.3, 1.7, 2.2]
    runs = []
    with FakeDevice(tmp_path) as device:
        for delay in delays:
            run = Interrupted(marked_env, ("monitor", "--board", "nano33ble", "--port",
                                           device.port), tmp_path, delay=delay)
            run.check()
            runs.append(run)
            assert_nothing_left(marked_env["TINYFORGE_TEST_MARK"])
    armed = [run for run in runs if run.armed]
    assert len(armed) >= 8, [(d, r.armed, r.returncode) for d, r in zip(delays, runs)]
    print(f"{len(armed)} of {len(runs)} signals came after tinyforge's handlers were in place; "
          f"the rest hit Python's own start-up: "
          f"{[(d, r.returncode) for d, r in zip(delays, runs) if not r.armed]}")


@pytest.mark.slow
def test_ctrl_c_while_building_with_forked_host_probes(marked_env, tmp_path):
    """`build` of the bundled example: the host TFLM dry run and arena search fork children."""
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.9, 2.4, 3.0):
        run = Interrupted(marked_env, ("build", "--no-compile", "--project-dir",
                                       tmp_path / "p"), tmp_path, delay=delay)
        if run.finished_before:
            break  # the build was faster than the delay: the later ones would be too
        run.check()
        assert_nothing_left(marked_env["TINYFORGE_TEST_MARK"])


def test_ctrl_c_kills_a_hung_host_probe(while_forever, marked_env, tmp_path):
    """A forked host-TFLM child that would run 10 s more is killed and reaped at once."""
    def probing(child):  # a fork of the CLI: same command line, one level down
        return any(p.cmdline == Path(f"/proc/{child.pid}/cmdline").read_bytes()
                   for p in descendants(child.pid))

    from tinyforge.model.host_runtime import HOST_RUN_TIMEOUT_S

    run = Interrupted(marked_env, ("build", "--model", while_forever, "--quantize", "float32",
                                   "--no-compile", "--project-dir", tmp_path / "p"), tmp_path,
                      delay=0.5, after=probing)
    run.check()
    assert run.armed and run.running, "no probe child was running at the signal"
    # Not left to run into its own timeout: killed on the signal (the start-up, which a
    # loaded machine slows down, is not counted).
    assert run.seconds_to_exit < HOST_RUN_TIMEOUT_S, run.seconds_to_exit


EXITING_COMMAND = """
import os, signal, sys
from tinyforge import cli
def command():
    if sys.argv[1] == "before":  # pending at the OS level when the command ends
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        os.kill(os.getpid(), signal.SIGINT)
    if sys.argv[1] == "writing":  # held while the project's files are renamed in place
        from tinyforge.project import writer
        files = {f"f{n}": b"x" for n in range(3)}
        real_write = writer._atomic_write
        def write(path, data):
            real_write(path, data)
            os.kill(os.getpid(), signal.SIGINT)
        writer._atomic_write = write
        writer.write("project", files, {})
        assert all(os.path.exists(f"project/{name}") for name in files), "cut in half"
    return 0
cli.main = command
class ShutDown:  # freed with __main__'s globals, once Python put back SIG_DFL
    def __del__(self, kill=os.kill, pid=os.getpid(), signum=signal.SIGINT):
        kill(pid, signum)
if sys.argv[1] == "after":
    late = ShutDown()
cli.run_module()
"""


@pytest.mark.parametrize("moment, status, said", [("before", 130, "tinyforge: interrupted"),
                                                  ("writing", 130, "tinyforge: interrupted"),
                                                  ("after", 0, "")])
def test_ctrl_c_as_the_command_ends(moment, status, said, cli_env, tmp_path):
    """A Ctrl-C not yet handled when the command returns still counts, and so does one held
    while the project's files are renamed (exit 130 and the message, as anywhere else); one
    while Python shuts down is too late to change anything and must not kill the process by
    signal (-2)."""
    result = subprocess.run([sys.executable, "-c", EXITING_COMMAND, moment], env=cli_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (status, said), result.stderr


@pytest.mark.tensorflow
def test_ctrl_c_during_a_tensorflow_conversion(marked_env, tmp_path):
    if subprocess.run([sys.executable, "-c", "import tensorflow"],
                      capture_output=True).returncode:
        pytest.skip("TensorFlow is not installed (run `make setup`)")

    def converting(child):
        return any(b"_convert_child" in p.cmdline for p in descendants(child.pid))

    run = Interrupted(marked_env, ("build", "--model", EXAMPLE / "gesture.keras",
                                   "--calibration", EXAMPLE / "calibration.npz", "--no-compile",
                                   "--project-dir", tmp_path / "p"), tmp_path, delay=1.0,
                      after=converting)
    run.check()
    assert any("_convert_child" in line for line in run.running)
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def selftest_project(tmp_path_factory) -> Path:
    """The self-test firmware, built offline once for this module."""
    require_emulator()
    core = seeded_core(tmp_path_factory)
    project = tmp_path_factory.mktemp("selftest-project")
    board = profiles.load_board("qemu-m4")
    selftest_files.render_project(project, board)
    pio.build(project, board, core, timeout=600)
    return project


def test_ctrl_c_while_talking_to_qemu(selftest_project, marked_env, tmp_path):
    def qemu_runs(child):
        return any(b"qemu-system-arm" in p.cmdline for p in descendants(child.pid))

    for delay in (0.0, 0.2, 0.5, 1.0, 2.0, 3.5):
        run = Interrupted(marked_env, ("monitor", "--project-dir", selftest_project),
                          tmp_path, delay=delay, after=qemu_runs)
        run.check()
        assert any("qemu-system-arm" in line for line in run.running)
        assert_nothing_left(marked_env["TINYFORGE_TEST_MARK"])


@pytest.mark.slow
def test_ctrl_c_during_a_platformio_build(tmp_path_factory, marked_env, tmp_path):
    require_emulator()
    seeded_core(tmp_path_factory)  # the core dir the CLI uses (conftest's cli_env)

    def compiling(child):
        return any(b"arm-none-eabi" in p.cmdline for p in descendants(child.pid))

    run = Interrupted(marked_env, ("selftest", "--board", "qemu-m4", "--project-dir",
                                   tmp_path / "selftest"), tmp_path, delay=0.5,
                      after=compiling, timeout=300)
    run.check()
    assert run.armed and any("scons" in line for line in run.running)


# --- flash hands its conversation to monitor: nothing lost, nothing out of order ----------------

HANDOVER_BOOT = protocol.encode(
    "BOOT", v=1, fw="0.1.0", board="qemu-m4", model="cd" * 32, arena=2048, used=1000, ops=1,
    **{"in": "int8:1x4:0.5:0", "out": "int8:1x2:0.5:0"}, status="ok", eol=b"")
HANDOVER_RESULTS = [protocol.encode("RES", seq=seq, src="demo", us=10, q0=[seq, 1],
                                    f0=[seq * 0.5, 0.5], eol=b"") for seq in range(3)]


def _c_string(line: bytes) -> str:
    return '"' + line.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '\\r\\n"'


# BOOT and the start of the first result leave in one burst, so when flash has its BOOT the
# rest of that line is still on its way.
HANDOVER_SKETCH = """
#include <string.h>
#include "board_runtime.h"

static void Say(const char* text) { BoardSerialWrite(text, strlen(text)); }

void setup() {
  BoardSerialBegin(115200);
  Say("handover firmware starting\\r\\n");
  Say(BOOT);
  Say("HEAD");
  uint32_t start = BoardMicros();
  while (BoardMicros() - start < 500000u) {}
  Say(TAIL);
  Say(SECOND);
  Say(THIRD);
}

void loop() {}
"""
for _name, _text in (("BOOT", _c_string(HANDOVER_BOOT)),
                     ("HEAD", HANDOVER_RESULTS[0][:6].decode()),
                     ("TAIL", _c_string(HANDOVER_RESULTS[0][6:])),
                     ("SECOND", _c_string(HANDOVER_RESULTS[1])),
                     ("THIRD", _c_string(HANDOVER_RESULTS[2]))):
    HANDOVER_SKETCH = HANDOVER_SKETCH.replace(_name, _text)


@pytest.fixture(scope="module")
def handover_project(tmp_path_factory) -> Path:
    require_emulator()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("http_proxy", "https_proxy"):
            patch.setenv(name, DEAD_PROXY)
        project = tmp_path_factory.mktemp("handover")
        write_project(project, HANDOVER_SKETCH)
        build(project, seeded_core(tmp_path_factory))
    manifest = {"board": "qemu-m4", "environment": "qemu-m4", "demo_input": True}
    (project / ".tinyforge").mkdir()
    (project / ".tinyforge" / "manifest.json").write_text(json.dumps(manifest))
    return project


def test_flash_hands_everything_to_monitor_in_order(handover_project, marked_env, tmp_path):
    assert HANDOVER_RESULTS[0][:6] == b"!tf1 R"
    result = cli(marked_env, "flash", "--project-dir", handover_project, "--monitor", "--json",
                 "--count", "3", "--timeout", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # One JSON object per line: flash's own result first, then everything the firmware sent.
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["flash", "log", "boot", "result", "result",
                                           "result"], events
    assert events[1]["text"] == "handover firmware starting"
    assert [e["seq"] for e in events[3:]] == [0, 1, 2]
