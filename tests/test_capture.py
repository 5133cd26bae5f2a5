"""`tinyforge capture` against a faithful model of the capture firmware on a real pty
(tests/capture_board.py): the files it writes are the recordings the pipeline reads, bit for
bit; Ctrl-C finishes the file and exits 130; a broken stream keeps the part before the break;
bad options fail before anything is built or written."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from capture_board import CaptureFirmwareModel
from cli_support import run_in_process
from fake_device import FakeDevice

from tinyforge.device import ports
from tinyforge.device.conversation import Conversation, wait_for_boot
from tinyforge.errors import (
    CaptureFormatError,
    CaptureOutputError,
    CaptureStreamError,
    SensorUnavailableError,
)
from tinyforge.flows import capture
from tinyforge.pipeline import load_pipeline, readers

REPO = Path(__file__).resolve().parents[1]
KEYWORD_WAV = REPO / "examples" / "keyword" / "samples" / "yes.wav"


def _audio() -> np.ndarray:
    if KEYWORD_WAV.is_file():
        return readers.read_wav(KEYWORD_WAV).samples
    return (np.sin(np.arange(48000) / 7.0) * 8000).astype(np.int16)


def _imu(n: int = 600) -> np.ndarray:
    """IMU counts [n, 6]: gravity on z, a wobble, and full-scale values on some samples."""
    rng = np.random.default_rng(7)
    counts = rng.integers(-400, 400, size=(n, 6)).astype(np.int16)
    counts[:, 2] += 8192
    counts[::50] = [32767, -32768, 1, -1, 32767, -32768]
    return counts


def _record(tmp_path, sensor, samples, name, seconds, **model_options):
    """Record from the model over the pty with the library; (stats, model)."""
    with FakeDevice(tmp_path) as device, \
            CaptureFirmwareModel(device, sensor, samples, **model_options) as model:
        link = ports.open_port(device.port, 115200)
        try:
            conversation = Conversation(link)
            wait_for_boot(conversation, ask=True)
            output = tmp_path / name
            fmt = capture.output_format(output, sensor)
            stats = capture.record_to_file(conversation, sensor, output, fmt, seconds=seconds)
        finally:
            link.close()
        return stats, model


def _no_partial_files(folder: Path) -> None:
    assert not list(folder.glob(".*.part")), list(folder.iterdir())


# --- the files are the recordings the pipeline reads ----------------------------------------

def test_audio_capture_is_the_wav_the_pipeline_reads_bit_for_bit(tmp_path):
    audio = _audio()
    stats, model = _record(tmp_path, "microphone", audio, "yes.wav", 1.5, speed=4.0)
    recording = readers.read_wav(tmp_path / "yes.wav")
    assert stats.samples == 24000 == len(recording.samples)
    assert stats.ended == "duration" and stats.part == "pdm" and stats.rate_mhz == 16_000_000
    np.testing.assert_array_equal(recording.samples, model.expected(94)[:24000])
    assert model.stops == 1
    _no_partial_files(tmp_path)


def test_imu_capture_as_csv_gives_back_the_counts_and_the_rate(tmp_path):
    counts = _imu()
    stats, model = _record(tmp_path, "imu", counts, "wave.csv", 2.0, speed=4.0)
    assert stats.samples == 238 and stats.part == "lsm9ds1"
    pipeline = load_pipeline(REPO / "examples" / "gesture" / "tinyforge.toml")
    recording = readers.read_recording(tmp_path / "wave.csv", pipeline)
    assert recording.rate_mhz == 119_000 and recording.rate_source == "time column"
    np.testing.assert_array_equal(recording.counts, model.expected(30)[:238])
    header = (tmp_path / "wave.csv").read_text().splitlines()[0]
    assert header == "time_s,ax,ay,az,gx,gy,gz"


def test_imu_capture_as_npz_of_a_rev2_board(tmp_path):
    counts = _imu()
    stats, model = _record(tmp_path, "imu", counts, "wave.npz", 1.0, part="bmi270", speed=4.0)
    pipeline = load_pipeline(REPO / "examples" / "gesture" / "tinyforge.toml")
    recording = readers.read_recording(tmp_path / "wave.npz", pipeline)
    assert stats.samples == 100 and recording.rate_mhz == 99_840
    np.testing.assert_array_equal(recording.counts, model.expected(13)[:100])
    with np.load(tmp_path / "wave.npz") as data:
        assert data["imu"].dtype == np.int16 and list(data["axes"]) == list(
            ("ax", "ay", "az", "gx", "gy", "gz"))


# --- a broken stream keeps what came before ----------------------------------------------

def test_samples_lost_on_the_board_end_the_capture_and_keep_the_part_before(tmp_path):
    with pytest.raises(CaptureStreamError) as caught:
        _record(tmp_path, "microphone", _audio(), "lost.wav", None, speed=4.0, lose_after=20)
    error = caught.value
    assert "lost 96 values after 5,120 samples" in error.message
    assert "USB" in error.hint
    assert "keeps 5,120 samples" in error.details
    with wave.open(str(tmp_path / "lost.wav")) as kept:
        assert kept.getnframes() == 20 * 256
    _no_partial_files(tmp_path)


def test_a_missing_line_ends_the_capture(tmp_path):
    with pytest.raises(CaptureStreamError) as caught:
        _record(tmp_path, "imu", _imu(), "gap.csv", None, speed=4.0, skip_line=5)
    assert "CAP line 5 did not arrive (got line 6)" in caught.value.message
    lines = (tmp_path / "gap.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 * 8


def test_a_board_whose_sensor_did_not_start_leaves_no_file(tmp_path):
    with pytest.raises(CaptureStreamError) as caught:
        _record(tmp_path, "imu", _imu(), "none.csv", 1.0, no_sensor=True)
    assert "no IMU answered" in caught.value.message
    assert "Sense" in caught.value.hint
    assert not (tmp_path / "none.csv").exists()
    _no_partial_files(tmp_path)


def test_a_board_that_falls_silent_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "SILENCE_TIMEOUT_S", 0.5)
    with pytest.raises(CaptureStreamError) as caught:
        _record(tmp_path, "microphone", _audio(), "quiet.wav", None, speed=4.0,
                fall_silent_after=10)
    assert "sent no samples for 0.5 s" in caught.value.message
    with wave.open(str(tmp_path / "quiet.wav")) as kept:
        assert kept.getnframes() == 10 * 256


# --- the command line: Ctrl-C, exit codes, bad input --------------------------------------

def _cli(tmp_path, *args):
    """`tinyforge capture ARGS` as a child process: Ctrl-C is what it is sent."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.Popen([sys.executable, "-m", "tinyforge", "capture", *map(str, args)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _capture(tmp_path, *args) -> subprocess.CompletedProcess:
    """`tinyforge capture ARGS` in this process (tests/cli_support.py)."""
    return run_in_process(["capture", *args], env=dict(os.environ), cwd=tmp_path)


WAV_HEADER_BYTES = 44


def _wait_until_written(folder: Path, pattern: str, size: int, child, timeout: float = 30):
    """Until a file matching `pattern` holds `size` bytes on disk: what the command has
    written is at least what it has received, whatever the load of the machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob(pattern):
            with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                if path.stat().st_size >= size:
                    return
        assert child.poll() is None, child.communicate()
        time.sleep(0.01)
    raise AssertionError(f"the command never wrote {size} bytes to {pattern}")


def test_ctrl_c_finishes_the_file_and_exits_130(tmp_path):
    audio = _audio()
    lines = 40
    with FakeDevice(tmp_path) as device, \
            CaptureFirmwareModel(device, "microphone", audio) as model:
        child = _cli(tmp_path, "out.wav", "--input", "microphone", "--no-upload",
                     "--port", device.port)
        # Interrupted once 40 lines are in its file (the partial file, written as they come):
        # those at least must be in the finished file.
        _wait_until_written(tmp_path, ".out.wav.*.part", WAV_HEADER_BYTES + lines * 256 * 2,
                            child)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 130, (out, err)
        assert "Traceback" not in err
        assert "capture interrupted" in err and "keeps" in err
        recording = readers.read_wav(tmp_path / "out.wav")
        received = len(recording.samples)
        assert received >= lines * 256 and received % 256 == 0
        assert f"keeps {received:,} samples" in err, err
        np.testing.assert_array_equal(recording.samples, model.expected(received // 256))
        assert model.stops == 1
    _no_partial_files(tmp_path)


def test_a_full_capture_from_the_command_line(tmp_path):
    with FakeDevice(tmp_path) as device, \
            CaptureFirmwareModel(device, "imu", _imu(), speed=4.0) as model:
        result = _capture(tmp_path, "g.npz", "--input", "imu", "--no-upload", "--port",
                          device.port, "--seconds", "1", "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    import json
    report = json.loads(result.stdout)
    assert report["samples"] == 119 and report["part"] == "lsm9ds1"
    assert report["rate_hz"] == 119.0 and report["ended"] == "duration"
    assert model.captures == 1


def test_stream_failures_exit_2(tmp_path):
    with FakeDevice(tmp_path) as device, \
            CaptureFirmwareModel(device, "imu", _imu(), no_sensor=True) as model:
        result = _capture(tmp_path, "g.csv", "--input", "imu", "--no-upload", "--port",
                          device.port)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert model.captures == 1 and not (tmp_path / "g.csv").exists()
    assert "error: the board's imu did not start" in result.stderr
    assert "hint:" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["x.mp3", "--input", "microphone"], "cannot write the microphone stream as 'mp3'"),
    (["x.wav", "--input", "imu"], "cannot write the imu stream as 'wav'"),
    (["x", "--input", "imu"], "no format (the output has no suffix)"),
    (["x.csv", "--input", "imu", "--format", "wav"], "cannot write the imu stream as 'wav'"),
    (["missing/x.wav", "--input", "microphone"], "does not exist"),
    (["x.wav", "--input", "microphone", "--board", "qemu-m4"], "is emulated"),
    (["x.wav", "--input", "microphone", "--board", "nope"], "unknown board 'nope'"),
])
def test_bad_input_fails_before_anything_is_built(tmp_path, args, message):
    result = _capture(tmp_path, *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert message in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_library_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(CaptureFormatError):
        capture.output_format(tmp_path / "x.npz", "microphone")
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(CaptureOutputError, match="is a folder"):
        capture.check_output(tmp_path / "folder.wav")
    (tmp_path / "file").write_text("")
    with pytest.raises(CaptureOutputError, match="does not exist"):
        capture.check_output(tmp_path / "file" / "x.wav")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(CaptureOutputError, match="not writable"):
        capture.check_output(folder / "x.wav")


def test_a_board_without_the_sensor_is_refused(tmp_path, monkeypatch):
    from tinyforge.board import profiles
    text = (REPO / "boards" / "qemu-m4.toml").read_text()
    start = text.index("[sensors]")
    end = text.find("\n[", start + 1)
    rest = text[end + 1:] if end >= 0 else ""
    (tmp_path / "plain-m4.toml").write_text(
        text[:start].replace('id = "qemu-m4"', 'id = "plain-m4"') + rest)
    monkeypatch.setenv(profiles.BOARDS_PATH_ENV, str(tmp_path))
    board = profiles.load_board("plain-m4")
    with pytest.raises(SensorUnavailableError) as caught:
        capture.check_board(board, "microphone")
    assert "has no microphone" in caught.value.message


def test_the_capture_messages_in_the_protocol_document_are_valid_lines():
    from tinyforge.device import protocol
    text = (REPO / "docs" / "protocol.md").read_text()
    start = text.index("## Capture firmware")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    lines = [line.split(": ", 1)[1].strip() for line in section.splitlines()
             if line.startswith(("host:   !tf1", "device: !tf1"))]
    assert len(lines) == 7
    for line in lines:
        [event] = protocol.Decoder().feed(line.encode() + b"\n")
        assert not isinstance(event, (protocol.Corrupt, protocol.DeviceLog)), line
        if isinstance(event, protocol.OtherMessage):
            again = protocol.encode(event.type, eol=b"", **event.fields).decode()
            assert again == line
