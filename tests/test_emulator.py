"""tinyforge.device.emulator with real firmware in real QEMU over a real TCP socket (pyserial).

One firmware, built once through the qemu_m4 platform, does on command what a broken
firmware does by accident: fault, hang, exit, abort. Every test also checks that no QEMU
process outlives it (a /proc scan).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qemu_support import (
    DEAD_PROXY,
    build,
    qemu_processes_for,
    require_emulator,
    seeded_core,
    write_project,
)

from tinyforge.device import emulator
from tinyforge.errors import EXIT_DEVICE_ERROR, DeviceError, ToolMissingError

pytestmark = pytest.mark.emulator

# Letters that make the firmware misbehave; everything else is echoed.
SKETCH = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "board_runtime.h"

static void Say(const char* text) { BoardSerialWrite(text, strlen(text)); }

void setup() {
  BoardSerialBegin(115200);
  Say("ready\r\n");
}

void loop() {
  int c = BoardSerialRead();
  if (c < 0) return;
  switch (c) {
    case 'F': Say("about to fault\r\n"); __builtin_trap();
    case 'H': Say("hanging\r\n"); for (;;) {}
    case 'X': Say("exiting\r\n"); exit(7);
    case 'A': Say("aborting\r\n"); abort();
    case 'T': printf("us=%lu\r\n", (unsigned long)BoardMicros()); break;
    // Moves the runtime's timer (CMSDK timer 0) to 1 s before its wrap, which otherwise
    // comes after 171.8 s, so a test can watch BoardMicros() across it.
    case 'W': *(volatile uint32_t*)0x40000004 = 25000000u; Say("wrap soon\r\n"); break;
    default: { char byte = (char)c; BoardSerialWrite(&byte, 1); }
  }
}
"""
COMMANDS = b"FHXATW"


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> Path:
    require_emulator()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("http_proxy", "https_proxy"):
            patch.setenv(name, DEAD_PROXY)
        project = tmp_path_factory.mktemp("emulator-fw")
        write_project(project, SKETCH)
        report = build(project, seeded_core(tmp_path_factory))
    return Path(report.firmware)


@pytest.fixture(autouse=True)
def no_orphans(request):
    yield
    if "firmware" in request.fixturenames:
        elf = request.getfixturevalue("firmware")
        deadline = time.monotonic() + 5
        while qemu_processes_for(elf) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_processes_for(elf) == [], "a QEMU process outlived the test"


def _read_exactly(link, size: int, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size and time.monotonic() < deadline:
        data += link.read_available(0.5)
    return data


def test_boot_output_is_not_lost_and_bytes_round_trip(firmware):
    with emulator.launch(firmware) as link:
        # wait=on: the guest starts only once we are connected, so this is the first byte.
        assert _read_exactly(link, 7) == b"ready\r\n"
        assert link.first_byte_at - link.started_at < emulator.READ_TIMEOUT_S
        rng = random.Random(1)
        payload = bytes(b for b in rng.randbytes(4000) if b not in COMMANDS)
        for start in range(0, len(payload), 256):
            chunk = payload[start:start + 256]
            link.write(chunk)
            assert _read_exactly(link, len(chunk)) == chunk


def test_the_first_byte_the_host_sends_is_not_stalled(firmware):
    """QEMU 7.2 used to sit ~1 s on the host's first byte; the runtime's UART start avoids it.

    The stall hit every launch, while a loaded machine delays only some: so the fastest of
    five first echoes must come back well within the stall.
    """
    echoes = []
    for _ in range(5):
        with emulator.launch(firmware) as link:
            assert _read_exactly(link, 7) == b"ready\r\n"
            sent = time.monotonic()
            link.write(b"z")
            assert _read_exactly(link, 1) == b"z"
            echoes.append(time.monotonic() - sent)
    assert min(echoes) < 0.5, f"every first byte stalled: {echoes}"


def test_two_emulators_run_side_by_side_on_their_own_ports(firmware):
    with emulator.launch(firmware) as first, emulator.launch(firmware) as second:
        assert first.port != second.port
        assert _read_exactly(first, 7) == _read_exactly(second, 7) == b"ready\r\n"
        first.write(b"1")
        second.write(b"2")
        assert (_read_exactly(first, 1), _read_exactly(second, 1)) == (b"1", b"2")


def test_timer_follows_the_wall_clock(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        readings = []
        for _ in range(2):
            link.write(b"T")
            line = link.expect_line(lambda text: text.startswith("us="), timeout=10, what="us=")
            readings.append((int(line[3:]), time.monotonic()))
            time.sleep(1.0)
        device = (readings[1][0] - readings[0][0]) / 1e6
        host = readings[1][1] - readings[0][1]
        assert 0.75 * host < device < 1.25 * host


def test_timer_counts_across_the_hardware_counter_wrap(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        link.write(b"W")
        link.expect_line(lambda line: line == "wrap soon", timeout=10, what="wrap soon")
        readings = []
        for pause in (2.0, 0.5, 0):  # the wrap comes 1 s after W, during the first pause
            link.write(b"T")
            line = link.expect_line(lambda text: text.startswith("us="), timeout=10, what="us=")
            readings.append((int(line[3:]), time.monotonic()))
            time.sleep(pause)
        for (us0, t0), (us1, t1) in zip(readings, readings[1:]):
            device, host = (us1 - us0) / 1e6, t1 - t0
            assert 0.75 * host < device < 1.25 * host, (device, host)


def test_hardfault_is_a_device_error_with_the_last_lines(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        link.write(b"F")
        with pytest.raises(DeviceError) as caught:
            link.expect_line(lambda line: False, timeout=10, what="anything")
        error = caught.value
        assert error.exit_code == EXIT_DEVICE_ERROR == 2
        assert "HARDFAULT pc=0x" in error.message
        assert "cfsr=0x00010000" in error.message  # UNDEFINSTR: the trap instruction
        assert "about to fault" in error.details
        assert f"addr2line -f -e {firmware} 0x" in error.hint
        assert link.wait_exit(5) == 3  # qemu_m4::kExitFault


def test_hang_times_out_with_the_last_lines(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        link.write(b"H")
        started = time.monotonic()
        with pytest.raises(DeviceError) as caught:
            link.expect_line(lambda line: line == "never", timeout=2, what="an answer")
        assert time.monotonic() - started >= 2  # not earlier than asked; the hint says when
        assert caught.value.exit_code == 2
        assert "timed out after 2 s waiting for an answer" in caught.value.message
        assert "hanging" in caught.value.details


def test_exit_status_of_the_firmware_is_reported(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        link.write(b"X")
        with pytest.raises(DeviceError) as caught:
            link.expect_line(lambda line: False, timeout=10, what="anything")
        assert "exit status 7" in caught.value.message
        assert "exiting" in caught.value.details


def test_abort_is_reported_as_a_crash(firmware):
    with emulator.launch(firmware) as link:
        link.expect_line(lambda line: line == "ready", timeout=10, what="ready")
        link.write(b"A")
        with pytest.raises(DeviceError) as caught:
            link.expect_line(lambda line: False, timeout=10, what="anything")
        assert "crashed: ABORT" in caught.value.message


def test_an_exception_inside_the_block_stops_qemu(firmware):
    with pytest.raises(KeyboardInterrupt):
        with emulator.launch(firmware) as link:
            pid = link.pid
            assert qemu_processes_for(firmware) == [pid]
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
    assert qemu_processes_for(firmware) == []


CHILD = """
import sys
from tinyforge.device import emulator
link = emulator.launch(sys.argv[1])  # no `with`: only Ctrl-C handling or atexit can stop it
print(link.pid, flush=True)
sys.stdin.readline()
if sys.argv[2] == "exception-exit":
    raise RuntimeError("an uncaught error ends the program")
with link:
    while True:
        link.read_available(0.2)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "exception-exit"])
def test_no_orphan_qemu_when_the_host_process_is_interrupted_or_exits(firmware, how):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(firmware), how],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True,
                             cwd=Path(__file__).parent.parent)
    try:
        qemu_pid = int(child.stdout.readline())
        assert qemu_processes_for(firmware) == [qemu_pid]
        child.stdin.write("go\n")
        child.stdin.flush()
        if how == "ctrl-c":
            time.sleep(0.5)
            child.send_signal(signal.SIGINT)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    deadline = time.monotonic() + 5
    while qemu_processes_for(firmware) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert qemu_processes_for(firmware) == []


def test_missing_qemu_is_a_tool_error_with_the_apt_command(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    with pytest.raises(ToolMissingError) as caught:
        emulator.launch(elf, qemu="qemu-system-arm-not-installed")
    assert "apt-get install --no-install-recommends" in caught.value.hint


def test_a_file_that_is_not_firmware_is_a_device_error(tmp_path):
    require_emulator()
    garbage = tmp_path / "garbage.elf"
    garbage.write_bytes(b"\xff" * 3000)  # every vector points nowhere: QEMU locks up
    with pytest.raises(DeviceError) as caught:
        with emulator.launch(garbage) as link:
            link.expect_line(lambda line: False, timeout=10, what="anything")
    assert "QEMU stopped the emulated CPU: Lockup" in caught.value.message
    assert qemu_processes_for(garbage) == []


def test_missing_firmware_file(tmp_path):
    with pytest.raises(DeviceError, match="does not exist"):
        emulator.launch(tmp_path / "nothing.elf")


def test_first_byte_arrives_well_within_the_read_timeout(firmware):
    """QEMU start to the firmware's first byte (docs/emulator.md: 40-130 ms)."""
    for _ in range(5):
        with emulator.launch(firmware) as link:
            assert _read_exactly(link, 7) == b"ready\r\n"
            assert link.first_byte_at - link.started_at < emulator.READ_TIMEOUT_S


def test_environment_is_not_modified(firmware):
    before = dict(os.environ)
    with emulator.launch(firmware) as link:
        _read_exactly(link, 7)
    assert dict(os.environ) == before
