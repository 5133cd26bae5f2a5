"""The sensor pipeline in the model firmware, without TFLM: `build --input` renders (and
refuses) what it should, the replay and decision messages parse, and the host's flow control
never overruns a firmware's buffer (against a faithful model of the firmware's side).
The firmware itself on QEMU: tests/test_qemu_pipeline.py (TFLM tier).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tinyforge.board import profiles
from tinyforge.device import protocol, replay
from tinyforge.device.conversation import Conversation
from tinyforge.errors import DeviceError, PipelineShapeError, SensorUnavailableError
from tinyforge.flows import build
from tinyforge.pipeline.settings import PARTS, REQUIRED_FLAGS

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "firmware_templates"
SENSOR_FILES = {"src/board_sensors.h", "src/board_replay.h", "src/qemu_m4_sensors.cpp",
                "src/pipeline_settings.h", "src/pipeline_settings.cpp",
                *(f"src/{name}" for name in PARTS)}


def render(tmp_path: Path, board: str, kind: str | None, **options) -> Path:
    project = tmp_path / f"{board}-{kind}"
    build.build(build.BuildOptions(board=board, input=kind, project_dir=project, compile=False,
                                   arena="host", **options))
    return project


def files_of(project: Path) -> set[str]:
    return {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}


def manifest_of(project: Path) -> dict:
    return json.loads((project / ".tinyforge" / "manifest.json").read_text())


# --- rendering ------------------------------------------------------------------------------

def test_a_host_build_renders_nothing_of_the_sensor_pipeline(in_process, tmp_path):
    project = render(tmp_path, "qemu-m4", None)
    assert not files_of(project) & SENSOR_FILES
    main = (project / "src" / "main.cpp").read_text()
    assert "pipeline" not in main.lower().replace("the pipeline", "")
    # Float code rounds as on the host in every firmware, the TFLM library's included.
    ini = (project / "platformio.ini").read_text()
    assert "build_flags =\n    " + REQUIRED_FLAGS[0] + "\n" in ini
    assert manifest_of(project)["pipeline"] == {"input": "host"}


def test_an_imu_build_for_qemu_renders_the_pipeline_and_its_replay_source(in_process, tmp_path):
    project = render(tmp_path, "qemu-m4", "imu")
    assert SENSOR_FILES <= files_of(project)
    # The interface the boards' runtime layers implement, as it is in the templates.
    assert (project / "src/board_sensors.h").read_bytes() == \
        (TEMPLATES / "common/board_sensors.h").read_bytes()
    ini = (project / "platformio.ini").read_text()
    assert "build_flags =\n    " + REQUIRED_FLAGS[0] + "\n" in ini and "build_src_flags" not in ini
    main = (project / "src/main.cpp").read_text()
    for needle in ("ImuPipeline<PipelineValue>", "tfsensors::ReadImu", "AnswerReplay",
                   "DecisionFilter", 'Begin("DEC")', "AddPipelineFields"):
        assert needle in main
    assert "FrontendProcessSamples" not in main
    pipeline = manifest_of(project)["pipeline"]
    assert pipeline["input"] == "imu" and pipeline["replay"] is True
    assert pipeline["summary"].startswith("input=imu rate_mhz=100000 window=32 stride=8")


def test_a_board_that_does_not_replay_gets_no_replay_code(in_process, tmp_path):
    project = render(tmp_path, "nano33ble", "imu")
    present = files_of(project)
    assert "src/board_sensors.h" in present and "src/pipeline_imu.h" in present
    assert "src/board_replay.h" not in present and "src/qemu_m4_sensors.cpp" not in present
    assert "AnswerReplay" not in (project / "src/main.cpp").read_text()


def test_the_pipeline_comes_from_the_tinyforge_toml_beside_the_model(in_process, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = model_dir / "gesture_int8.tflite"
    model.write_bytes((REPO / "tinyforge/example/gesture_int8.tflite").read_bytes())
    (model_dir / "tinyforge.toml").write_text(
        '[pipeline]\ninput = "imu"\n[imu]\nrate_hz = 25.0\nstride = 4\n')
    project = render(tmp_path, "qemu-m4", None, model=model)
    assert manifest_of(project)["pipeline"]["summary"].startswith(
        "input=imu rate_mhz=25000 window=32 stride=4")
    # Kept in the project: `validate --replay` derives the same pipeline from it.
    assert (project / ".tinyforge/pipeline.toml").read_text().startswith("[pipeline]")
    # --input wins over the file.
    project = render(tmp_path / "host", "qemu-m4", "host", model=model)
    assert manifest_of(project)["pipeline"] == {"input": "host"}


def test_microphone_on_a_board_without_one_is_refused_before_anything_is_written(
        in_process, tmp_path, monkeypatch):
    real = profiles.load_board

    def imu_only(board_id):
        return dataclasses.replace(real(board_id), inputs=("imu",))

    monkeypatch.setattr(profiles, "load_board", imu_only)
    with pytest.raises(SensorUnavailableError) as caught:
        render(tmp_path, "qemu-m4", "microphone")
    assert "has no microphone" in caught.value.message and caught.value.hint
    assert not (tmp_path / "qemu-m4-microphone").exists()


def test_a_model_input_no_sensor_can_feed_is_refused_by_the_cli(tinyforge, models, tmp_path):
    project = tmp_path / "project"
    run = tinyforge("build", "--board", "qemu-m4", "--input", "imu", "--model",
                    models / "image96_int8.tflite", "--project-dir", project, "--no-compile",
                    "--arena", "host")
    assert run.returncode == 1, run.stderr
    assert "no imu pipeline can produce the model's input [1, 96, 96, 1]" in run.stderr
    assert "hint:" in run.stderr.lower()
    assert not project.exists()


def test_the_pipelines_refusal_is_a_pipeline_shape_error(in_process, models, tmp_path):
    with pytest.raises(PipelineShapeError):
        render(tmp_path, "qemu-m4", "microphone", model=models / "image96_int8.tflite")


# --- messages -------------------------------------------------------------------------------

def device_line(message_type: str, **fields) -> bytes:
    return protocol.encode(message_type, eol=protocol.DEVICE_EOL, **fields)


def test_decision_credit_and_feature_messages_decode():
    events = protocol.Decoder().feed(
        device_line("DEC", seq=41, **{"class": 2}, label="wing", score=231, t=4140)
        + device_line("CREDIT", seq="-", read=0, capacity=1024)
        + device_line("CREDIT", seq=7, read=912, capacity=1024)
        + device_line("FEAT", n=3, v=[0, 65535, 12])
        + device_line("FEAT", n=0, v=[0.25, -1.5])
        + device_line("RES", seq=0, src="imu", us=120, q0=[-128, 127], f0=[0.0, 0.99],
                      t=1280))
    assert events == [
        protocol.Decision(41, 2, "wing", 231, 4140), protocol.Credit(None, 0, 1024),
        protocol.Credit(7, 912, 1024), protocol.Features(3, [0, 65535, 12]),
        protocol.Features(0, [0.25, -1.5]),
        protocol.Result(0, "imu", 120, [protocol.OutputValues([-128, 127], [0.0, 0.99])],
                        {"t": "1280"})]


@pytest.mark.parametrize("line", [
    device_line("DEC", seq=1, **{"class": 0}, label="", score=256, t=0),
    device_line("DEC", seq=1, **{"class": 0}, score=3, t=0),
    device_line("CREDIT", seq=1, read=-1, capacity=8),
    device_line("FEAT", n=1, v="1,x"),
])
def test_malformed_pipeline_messages_are_corrupt(line):
    [event] = protocol.Decoder().feed(line)
    assert isinstance(event, protocol.Corrupt)


def test_host_lines_of_a_replay():
    assert protocol.encode_replay("imu", rate_mhz=119000, features=True) == \
        b"!tf1 REPLAY input=imu rate_mhz=119000 features=1 *b1a9ec86\n"
    assert protocol.encode_samples(3, [1, -2, 3, 4, 5, 32767]) == \
        b"!tf1 SAMPLES seq=3 data=0100feff030004000500ff7f *0d8ce1a1\n"
    for unit in (1, 6):
        count = protocol.samples_per_line(512, unit)
        assert count % unit == 0
        longest = protocol.encode_samples(4294967295, [-32768] * count)
        assert len(longest) - 1 <= 512 < len(protocol.encode_samples(4294967295,
                                                                    [0] * (count + unit))) - 1
    with pytest.raises(ValueError):
        protocol.encode_replay("imu")
    with pytest.raises(ValueError):
        protocol.encode_replay("camera")


# --- flow control ---------------------------------------------------------------------------

class ReplayingFirmwareModel:
    """A faithful model of the firmware's replay side (main.cpp.j2 AnswerReplay/AnswerSamples
    and its loop): a buffer of `capacity` values that refuses more than its free room
    (REPLAY_OVERRUN), a pipeline that takes at most `drain` values per loop turn, a RES every
    `window` values and a CREDIT after the loop took what a SAMPLES brought."""

    def __init__(self, capacity: int, drain: int, window: int):
        self.capacity, self.drain, self.window = capacity, drain, window
        self.decoder = protocol.Decoder()
        self.buffered = self.read = self.taken = 0
        self.out = bytearray()
        self.overruns = 0
        self.received: list[int] = []
        self.credit_due: int | None = None
        self.inferences = 0

    # the link, as Conversation uses it
    def write(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            assert isinstance(event, protocol.OtherMessage), event
            if event.type == "REPLAY":
                self.out += device_line("CREDIT", seq="-", read=0, capacity=self.capacity)
            else:
                values = np.frombuffer(bytes.fromhex(event.fields["data"]), "<i2")
                if len(values) > self.capacity - self.buffered:
                    self.overruns += 1
                    self.out += device_line("ERR", seq=int(event.fields["seq"]),
                                            code="REPLAY_OVERRUN", status=0, msg="")
                    continue
                self.received.extend(values.tolist())
                self.buffered += len(values)
                self.credit_due = int(event.fields["seq"])

    def flush(self) -> None:
        pass

    def read_available(self, timeout: float) -> bytes:
        take = min(self.drain, self.buffered)       # one loop turn of the pipeline
        self.buffered -= take
        self.read += take
        for _ in range(take):
            self.taken += 1
            if self.taken % self.window == 0:
                self.out += device_line("RES", seq=self.inferences, src="microphone", us=1,
                                        f0=[0.5], t=self.inferences)
                self.inferences += 1
        if self.credit_due is not None and self.buffered == 0:
            self.out += device_line("CREDIT", seq=self.credit_due, read=self.read,
                                    capacity=self.capacity)
            self.credit_due = None
        data, self.out = bytes(self.out), bytearray()
        return data


@pytest.mark.parametrize("capacity, drain", [(4096, 4096), (1024, 100), (300, 7)])
def test_the_host_never_sends_more_than_the_firmware_can_hold(capacity, drain):
    firmware = ReplayingFirmwareModel(capacity, drain, window=320)
    samples = np.random.default_rng(3).integers(-32768, 32767, 16000, dtype=np.int16)
    events = replay.stream(Conversation(firmware), "microphone", samples, max_line=512,
                           stall_timeout=5)
    assert firmware.overruns == 0
    assert firmware.received == samples.tolist()
    assert len(events.results) == 16000 // 320
    assert events.capacity == capacity


def test_credit_window_is_the_firmwares_rule():
    window = replay.CreditWindow(10)
    assert window.allows(10) and not window.allows(11)
    window.on_sent(6)
    assert not window.allows(5)
    window.on_credit(6)
    assert window.allows(10)
    with pytest.raises(ValueError):
        window.on_credit(7)           # read more than was sent: a broken device
    with pytest.raises(ValueError):
        window.on_sent(11)


def test_a_refused_replay_is_a_device_error():
    class Refusing(ReplayingFirmwareModel):
        def write(self, data):
            self.out += device_line("ERR", seq="-", code="BAD_MESSAGE", status=0,
                                    msg="REPLAY needs input=imu rate_mhz=N")

    with pytest.raises(DeviceError) as caught:
        replay.stream(Conversation(Refusing(64, 64, 6)), "imu", [0] * 12, max_line=512,
                      rate_mhz=119000, stall_timeout=2)
    assert "BAD_MESSAGE" in caught.value.message


# --- validate --replay refusals (before any device is opened) --------------------------------

def test_validate_replay_refuses_bad_recordings_before_opening_the_device(tinyforge, tmp_path):
    import wave
    project = tmp_path / "imu"
    tinyforge("build", "--board", "qemu-m4", "--input", "imu", "--project-dir", project,
              "--no-compile", "--arena", "host", check_rc=0)
    missing = tmp_path / "no-az.csv"
    missing.write_text("time_s,ax,ay\n0.0,0.1,0.2\n0.01,0.1,0.2\n")
    run = tinyforge("validate", "--project-dir", project, "--replay", missing)
    assert run.returncode == 1, run.stderr
    assert "az" in run.stderr and "hint:" in run.stderr.lower()
    # The firmware was never built: nothing got as far as QEMU.
    assert not (project / ".pio").exists()

    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(b"\0\0" * 3200)
    mic = tmp_path / "mic"
    tinyforge("build", "--board", "qemu-m4", "--input", "microphone", "--model",
              REPO / "tinyforge/example/gesture_int8.tflite", "--project-dir", mic,
              "--no-compile", "--arena", "host", check_rc=0)
    run = tinyforge("validate", "--project-dir", mic, "--replay", stereo)
    assert run.returncode == 1 and "sox" in run.stderr, run.stderr


def test_validate_replay_needs_a_sensor_pipeline(tinyforge, tmp_path):
    project = tmp_path / "host"
    tinyforge("build", "--board", "qemu-m4", "--project-dir", project, "--no-compile",
              "--arena", "host", check_rc=0)
    recording = tmp_path / "r.csv"
    recording.write_text("time_s,ax,ay,az\n0.0,0,0,1\n0.01,0,0,1\n")
    run = tinyforge("validate", "--project-dir", project, "--replay", recording)
    assert run.returncode == 1
    assert "has no sensor pipeline" in run.stderr and "--input imu" in run.stderr


def test_monitor_shows_decisions_apart_and_emits_them_as_json(tmp_path):
    import io

    from tinyforge.flows import monitor

    out = io.StringIO()
    view = monitor._View(monitor.MonitorOptions(labels=["silence", "speech"]), out)
    view.show(protocol.Decision(17, 1, "", 201, 2690))
    assert out.getvalue() == (">>> DECISION speech (class 1) score 201/256 = 0.785 at "
                              "t=2690 ms (inference #17)\n")
    assert view.summary.decisions == 1
    assert monitor.to_json(protocol.Decision(17, 1, "speech", 201, 2690)) == {
        "type": "decision", "seq": 17, "class": 1, "label": "speech", "score": 201,
        "t": 2690, "extra": {}}
