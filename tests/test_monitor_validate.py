"""monitor, validate and flash end to end against the qemu-m4 self-test firmware (real QEMU,
real pyserial over TCP), and against a real pty for the cases QEMU cannot produce."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_device import FakeDevice
from qemu_support import require_emulator, seeded_core

from tinyforge.board import profiles
from tinyforge.device import protocol
from tinyforge.project import selftest as selftest_files
from tinyforge.toolchain import pio


@pytest.fixture(scope="module")
def selftest_project(tmp_path_factory) -> Path:
    """The self-test firmware, built offline once for these tests."""
    require_emulator()
    core = seeded_core(tmp_path_factory)
    project = tmp_path_factory.mktemp("selftest-project")
    board = profiles.load_board("qemu-m4")
    selftest_files.render_project(project, board)
    pio.build(project, board, core, timeout=600)
    return project


def _qemu_processes() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"qemu-system-arm" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_monitor_shows_boot_and_results_then_stops_at_count(tinyforge, selftest_project):
    result = tinyforge("monitor", "--project-dir", selftest_project, "--count", "2",
                       "--timeout", "20", check_rc=0)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("boot  qemu-m4: ready; model d354caf95d3e"), lines
    demo = [line for line in lines if line.startswith("#")]
    assert len(demo) == 2 and all(" demo " in line for line in demo)
    # The demo input's stand-in model output is [20, -10, 10, -10] -> class 0, (20-3)*0.25.
    assert demo[0].endswith("class 0 4.250")


def test_monitor_json_and_csv(tinyforge, selftest_project, tmp_path):
    log = tmp_path / "results.csv"
    result = tinyforge("monitor", "--project-dir", selftest_project, "--count", "1",
                       "--timeout", "20", "--json", "--csv", log, check_rc=0)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "boot" and events[0]["model_sha256"] == selftest_files.MODEL_SHA256
    results = [e for e in events if e["type"] == "result"]
    assert results == [{"seq": 0, "src": "demo", "us": results[0]["us"],
                        "outputs": [{"q": [20, -10, 10, -10], "f": [4.25, -3.25, 1.75, -3.25]}],
                        "extra": {}, "type": "result"}]
    rows = list(csv.reader(log.open()))
    assert rows[0][:6] == ["seq", "src", "us", "top_index", "top_label", "top_score"]
    assert rows[1][:2] == ["0", "demo"] and rows[1][3] == "0"


def test_monitor_count_not_reached_is_a_device_error(tinyforge, selftest_project):
    result = tinyforge("monitor", "--project-dir", selftest_project, "--count", "50",
                       "--timeout", "2")
    assert result.returncode == 2
    assert "only 0 of 50 results" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_monitor_stopped_by_a_signal_leaves_no_qemu(selftest_project, cli_env, sig, code):
    before = _qemu_processes()
    child = subprocess.Popen([sys.executable, "-m", "tinyforge", "monitor", "--project-dir",
                              str(selftest_project)], env=cli_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (_qemu_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    assert child.returncode == code, err
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not (_qemu_processes() - before), "QEMU outlived the monitor"


def test_validate_against_the_selftest_firmware_passes(tinyforge, selftest_project):
    result = tinyforge("validate", "--project-dir", selftest_project, "--random", "40",
                       "--json", check_rc=0)
    report = json.loads(result.stdout)
    assert report["samples"] == 40 and report["exact_matches"] == 40
    assert report["max_lsb"] == 0 and report["passed"] is True
    assert report["latency_us"]["min"] <= report["latency_us"]["median"] <= \
        report["latency_us"]["max"]
    assert "stand-in model" in report["reference"]


def test_validate_with_data_quantizes_floats(tinyforge, selftest_project, tmp_path):
    data = tmp_path / "inputs.npz"
    values = np.linspace(-4, 4, 10 * 16, dtype=np.float32).reshape(10, 16)
    np.savez(data, x=values)
    report = json.loads(tinyforge("validate", "--project-dir", selftest_project, "--data", data,
                                  "--json", check_rc=0).stdout)
    assert report["samples"] == 10 and report["exact_matches"] == 10


@pytest.mark.parametrize("array, phrase", [
    (np.zeros((5, 3, 7), np.float32), "[5, 3, 7]"),
    (np.full((5, 16), 300, np.int16), "int16 values from 300 to 300"),  # int8 holds no 300
])
def test_validate_data_with_wrong_shape_or_dtype_is_exit_1(tinyforge, selftest_project, tmp_path,
                                                           array, phrase):
    data = tmp_path / "bad.npy"
    np.save(data, array)
    result = tinyforge("validate", "--project-dir", selftest_project, "--data", data)
    assert result.returncode == 1, result.stderr
    assert "bad.npy" in result.stderr and phrase in result.stderr
    assert "Traceback" not in result.stderr


def test_flash_on_the_emulator_checks_the_firmware_boots(tinyforge, selftest_project):
    result = tinyforge("flash", "--project-dir", selftest_project, "--json", check_rc=0)
    assert json.loads(result.stdout)["board"] == "qemu-m4"


# --- a real pty standing in for a USB board: cases QEMU cannot produce ---------------------

def _board_project(tinyforge, tmp_path, models) -> Path:
    project = tmp_path / "nano"
    tinyforge("build", "--model", models / "dense_int8.tflite", "--project-dir", project,
              "--no-compile", check_rc=0)
    return project


def _monitor(project: Path, port: str, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinyforge", "monitor", "--project-dir",
                             str(project), "--port", port, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _res(seq: int) -> bytes:
    return protocol.encode("RES", seq=seq, src="demo", us=5, q0=f"{seq},2", f0=f"{seq},1")


def test_monitor_asks_for_boot_and_warns_about_another_model(tinyforge, tmp_path, models,
                                                             cli_env):
    project = _board_project(tinyforge, tmp_path, models)
    with FakeDevice(tmp_path) as device:
        child = _monitor(project, device.port, cli_env, "--count", "1", "--timeout", "15")
        device.expect("HELLO")  # the board booted long before the monitor opened its port
        device.send_boot(model_sha256="ab" * 32)
        device.send(_res(0))
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "runs a different model" in err
    assert out.splitlines()[0].startswith("boot  nano33ble: ready; model abababababab")


def test_monitor_refuses_another_protocol_version(tinyforge, tmp_path, models, cli_env):
    project = _board_project(tinyforge, tmp_path, models)
    with FakeDevice(tmp_path) as device:
        child = _monitor(project, device.port, cli_env, "--timeout", "15")
        device.expect("HELLO")
        device.send(b"!tf2 BOOT v=2 whatever=1 *00000000\r\n")
        _, err = child.communicate(timeout=30)
    assert child.returncode == 2
    assert "protocol version 2" in err and "Traceback" not in err


@pytest.mark.slow
def test_monitor_reconnects_after_the_board_vanishes(tinyforge, tmp_path, models, cli_env):
    project = _board_project(tinyforge, tmp_path, models)
    link = tmp_path / "ttyBOARD"  # a stable name, as udev gives a board
    with FakeDevice(tmp_path, link=link) as first:
        child = _monitor(project, str(link), cli_env, "--count", "2", "--timeout", "30",
                         "--json")
        first.expect("HELLO")
        first.send(_res(0))
        time.sleep(1.0)
    time.sleep(1.0)  # unplugged for a while
    with FakeDevice(tmp_path, link=link) as second:
        second.expect("HELLO")  # the monitor asks the board that came back
        second.send(_res(1))
        out, err = child.communicate(timeout=40)
    assert child.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events if e["type"] == "result"] == [0, 1]
    assert "went away" in err and "reconnected" in err


@pytest.mark.slow
def test_monitor_gives_up_when_the_board_does_not_come_back(tinyforge, tmp_path, models, cli_env):
    project = _board_project(tinyforge, tmp_path, models)
    link = tmp_path / "ttyBOARD"
    with FakeDevice(tmp_path, link=link) as device:
        child = _monitor(project, str(link), cli_env, "--timeout", "5")
        device.expect("HELLO")
    _, err = child.communicate(timeout=30)
    assert child.returncode == 2, err
    assert "vanished" in err and "Traceback" not in err


def test_busy_port_is_a_device_error_with_a_hint(tinyforge, tmp_path, models):
    import serial
    project = _board_project(tinyforge, tmp_path, models)
    with FakeDevice(tmp_path) as device:
        holder = serial.Serial(device.port, exclusive=True)
        try:
            result = tinyforge("monitor", "--project-dir", project, "--port", device.port,
                               "--timeout", "3")
        finally:
            holder.close()
    assert result.returncode == 2
    assert "busy" in result.stderr and "ModemManager" in result.stderr


def _open_as_nobody(port: str) -> str:
    """Open `port` in a forked child that gave up root: a real EACCES from the kernel."""
    from tinyforge.device import ports
    from tinyforge.errors import DeviceError

    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        ports.open_port(port, 115200).close()
    except DeviceError as error:
        return f"{error.message} | {error.hint}"
    return "opened"


def test_permission_denied_mentions_the_dialout_group(tmp_path):
    from tinyforge.model.isolated import call_isolated
    with FakeDevice(tmp_path) as device:
        os.chmod(device.slave_path, 0o600)
        if os.geteuid() != 0:
            os.chmod(device.slave_path, 0o000)
        outcome = call_isolated(_open_as_nobody, device.port)
    assert outcome.ok, outcome.describe_failure()
    assert "permission denied" in outcome.value and "dialout" in outcome.value


def test_validate_exits_3_when_the_board_differs_beyond_the_tolerance(tinyforge, tmp_path,
                                                                     models, cli_env):
    """A firmware whose int8 outputs are one LSB off (as CMSIS-NN kernels can be)."""
    import threading

    from tinyforge.flows import validate as validate_lib
    from tinyforge.model import host_runtime, reader

    project = _board_project(tinyforge, tmp_path, models)
    model, info = reader.read_model_file(models / "dense_int8.tflite")
    (tensor_in,), (tensor_out,) = info.inputs, info.outputs
    spec = protocol.TensorSpec("int8", tuple(tensor_in.shape), tensor_in.scale,
                               tensor_in.zero_point)
    samples = validate_lib.random_samples(spec, 6, seed=0)
    expected = host_runtime.run_batch(model, [[s.reshape(spec.shape)] for s in samples], 1,
                                      "dense")
    answers = {s.tobytes(): np.clip(e[0].reshape(-1).astype(int) + 1, -128, 127)
               for s, e in zip(samples, expected)}

    def firmware(device: FakeDevice, stop: threading.Event) -> None:
        decoder = protocol.Decoder()
        boot = protocol.encode(
            "BOOT", v=1, fw="0.1.0", board="nano33ble", model=info.sha256, arena=4096,
            used=1000, ops=1, status="ok",
            **{"in": f"int8:1x10:{tensor_in.scale!r}:{tensor_in.zero_point}",
               "out": f"int8:1x2:{tensor_out.scale!r}:{tensor_out.zero_point}"})
        while not stop.is_set():
            for event in decoder.feed(device.read(0.1)):
                if getattr(event, "type", "") == "HELLO":
                    device.send(boot)
                elif getattr(event, "type", "") == "IN":
                    q = answers[bytes.fromhex(event.fields["data"])]
                    f = (q - tensor_out.zero_point) * tensor_out.scale
                    device.send(protocol.encode(
                        "RES", seq=int(event.fields["seq"]), src="host", us=100,
                        q0=",".join(map(str, q)), f0=",".join(f"{v:.7g}" for v in f)))

    for tolerance, code in (("0", 3), ("1", 0)):
        with FakeDevice(tmp_path) as device:
            stop = threading.Event()
            thread = threading.Thread(target=firmware, args=(device, stop), daemon=True)
            thread.start()
            result = subprocess.run(
                [sys.executable, "-m", "tinyforge", "validate", "--project-dir", str(project),
                 "--port", device.port, "--random", "6", "--max-lsb", tolerance, "--json"],
                env=cli_env, capture_output=True, text=True, timeout=60)
            stop.set()
            thread.join()
        assert result.returncode == code, result.stderr
        report = json.loads(result.stdout)
        assert report["max_lsb"] == 1 and report["exact_matches"] == 0
        assert report["passed"] is (code == 0)
        if code == 3:
            assert "6 of 6 samples differ" in result.stderr and "--max-lsb 1" in result.stderr
