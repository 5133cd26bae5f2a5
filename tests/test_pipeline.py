"""The sensor pipeline on the host: tinyforge.toml, defaults from the model, refusals,
readers of untrusted recordings, the IMU reference by hand, decisions, board checks and
the generated device settings. (The C++ twin: test_pipeline_cpp.py; audio: test_pipeline_audio.py.)
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import GESTURE_MODEL, imu_motion, model_info, pipeline_from

from tinyforge.board import profiles
from tinyforge.errors import (
    BoardProfileError,
    PipelineConfigError,
    PipelineShapeError,
    RecordingError,
    SensorUnavailableError,
)
from tinyforge.pipeline import (
    check_pipeline,
    compute,
    features,
    load_pipeline,
    pipeline_for_board,
    read_recording,
    run,
)
from tinyforge.pipeline.config import find_config
from tinyforge.pipeline.derive import DEFAULT_FEATURE_SCALE
from tinyforge.pipeline.settings import settings_files, summary

SPEECH = model_info((1, 49, 40), "int8", 26 / 256, -128)


def error_text(error) -> str:
    return "\n".join(filter(None, [error.message, error.details, error.hint]))


# --- tinyforge.toml -----------------------------------------------------------------------

@pytest.mark.parametrize("text, key, phrase", [
    ("[imu]\nrat_hz = 25\n", "imu.rat_hz", "did you mean 'rate_hz'"),
    ("[imu]\nwindow = '32'\n", "imu.window", "must be an integer"),
    ("[imu]\nwindow = 3.5\n", "imu.window", "must be an integer"),
    ("[imu]\nrate_hz = 0\n", "imu.rate_hz", "out of range"),
    ("[imu]\naxes = ['ax', 'qx']\n", "imu.axes", "unknown axes"),
    ("[imu]\naxes = ['ax', 'ax']\n", "imu.axes", "names an axis twice"),
    ("[imu.trigger]\nthreshold_g = -1.0\n", "imu.trigger.threshold_g", "out of range"),
    ("[decisions]\nthreshold = 1.5\n", "decisions.threshold", "out of range"),
    ("[decisions]\nthreshold = 0\n", "decisions.threshold", "out of range"),
    ("[decisions]\nthreshold = 0.999\n", "decisions.threshold", "out of range"),
    ("[decisions]\nminimum_count = 0\n", "decisions.minimum_count", "out of range"),
    ("[decisions]\nsuppression_ms = -5\n", "decisions.suppression_ms", "out of range"),
    ("[decisions]\nenabled = 1\n", "decisions.enabled", "true or false"),
    ("[microphone]\nfeatures = 'mfcc'\n", "microphone.features", "must be one of"),
    ("[microphone.frontend]\nchannels = 100\n", "microphone.frontend.channels", "out of range"),
    ("[pipeline]\ninput = 'camera'\n", "pipeline.input", "host, imu, microphone"),
    ("imu = 3\n", "imu", "must be a table"),
    ("[sensor]\nx = 1\n", "sensor", "unknown key"),
])
def test_bad_keys_are_refused_naming_file_and_key(tmp_path, text, key, phrase):
    with pytest.raises(PipelineConfigError) as caught:
        pipeline_from(tmp_path, text, GESTURE_MODEL, kind="imu")
    message = error_text(caught.value)
    assert str(tmp_path / "tinyforge.toml") in message and key in message and phrase in message
    assert caught.value.hint


@pytest.mark.parametrize("upper, accepted", [(7999.0, True), (8000.0, False)])
def test_an_upper_band_the_frontend_refuses_at_start_is_refused_now(tmp_path, upper, accepted):
    """FilterbankPopulateState fails when the last channel reaches past the spectrum
    (tests/test_pipeline_ram.py asks the library itself, TFLM tier)."""
    text = f"[microphone.frontend]\nupper_hz = {upper}\n"
    if accepted:
        assert pipeline_from(tmp_path, text, SPEECH, kind="microphone").microphone
        return
    with pytest.raises(PipelineConfigError) as caught:
        pipeline_from(tmp_path, text, SPEECH, kind="microphone")
    message = error_text(caught.value)
    assert "microphone.frontend.upper_hz" in message and "bin 257 of a 257-bin" in message
    assert "below 8000 Hz" in message and caught.value.hint


def test_every_problem_is_listed(tmp_path):
    with pytest.raises(PipelineConfigError) as caught:
        pipeline_from(tmp_path, "[imu]\nwindow = 'x'\nstride = 0\nspeed = 3\n", GESTURE_MODEL)
    assert "3 problems" in caught.value.message
    for key in ("imu.window", "imu.stride", "imu.speed"):
        assert key in caught.value.details


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.toml").write_text("[imu\n")
    with pytest.raises(PipelineConfigError, match="not valid TOML"):
        load_pipeline(tmp_path / "bad.toml")
    with pytest.raises(PipelineConfigError, match="does not exist"):
        load_pipeline(tmp_path / "missing.toml")
    (tmp_path / "big.toml").write_text("# " + "x" * 70000)
    with pytest.raises(PipelineConfigError, match="larger than"):
        load_pipeline(tmp_path / "big.toml")


def test_a_config_beside_the_model_or_in_the_project(tmp_path):
    model_dir, project = tmp_path / "model", tmp_path / "project"
    model_dir.mkdir(), project.mkdir()
    assert find_config(model_dir, project) is None
    (project / "tinyforge.toml").write_text("[pipeline]\ninput = 'imu'\n")
    assert find_config(model_dir, project) == project / "tinyforge.toml"
    (model_dir / "tinyforge.toml").write_text("[pipeline]\ninput = 'imu'\n")
    assert find_config(model_dir, project) == model_dir / "tinyforge.toml"   # same text: fine
    (model_dir / "tinyforge.toml").write_text("[pipeline]\ninput = 'microphone'\n")
    with pytest.raises(PipelineConfigError, match="two different pipeline files"):
        find_config(model_dir, project)


# --- defaults from the model, and models no sensor can feed ----------------------------------

@pytest.mark.parametrize("shape, window, axes", [
    ((1, 119, 6), 119, ("ax", "ay", "az", "gx", "gy", "gz")),
    ((1, 32, 3), 32, ("ax", "ay", "az")),
    ((1, 50, 6, 1), 50, ("ax", "ay", "az", "gx", "gy", "gz")),
])
def test_imu_defaults_from_the_input_shape(shape, window, axes):
    pipeline = load_pipeline(None, model=model_info(shape), kind="imu")
    assert (pipeline.imu.window, pipeline.imu.axes) == (window, axes)
    assert pipeline.imu.stride == max(1, window // 4) and pipeline.imu.rate_hz == 100.0
    assert pipeline.origins["imu.window"] == "model" and pipeline.origins["imu.stride"] == "default"
    assert pipeline.decisions is not None and pipeline.classes == 4


def test_flat_imu_input_needs_the_axes(tmp_path):
    with pytest.raises(PipelineShapeError, match="does not say how many axes"):
        load_pipeline(None, model=model_info((1, 96)), kind="imu")
    pipeline = pipeline_from(tmp_path, "[imu]\naxes = ['gx', 'gy', 'gz']\n", model_info((1, 96)),
                             kind="imu")
    assert (pipeline.imu.window, pipeline.imu.axes) == (32, ("gx", "gy", "gz"))
    with pytest.raises(PipelineShapeError, match="does not guess which"):
        load_pipeline(None, model=model_info((1, 20, 4)), kind="imu")


@pytest.mark.parametrize("kind, shape, expected", [
    ("imu", (1, 96, 96, 1), "[1, N, A], [1, N, A, 1] or [1, N*A]"),
    ("imu", (1, 32, 9), "[1, N, A]"),
    ("imu", (2, 32, 3), "[1, N, A]"),
    ("microphone", (1, 96, 96, 1), "[1, W, C], [1, W, C, 1] or [1, W*C]"),
    ("microphone", (1, 1001), "micro_speech's [1, 49, 40] or [1, 1960]"),
])
def test_inputs_no_sensor_can_produce_are_refused(kind, shape, expected):
    with pytest.raises(PipelineShapeError) as caught:
        load_pipeline(None, model=model_info(shape), kind=kind)
    assert str(list(shape)) in caught.value.message and expected in caught.value.message
    assert "--input host" in caught.value.hint


def test_input_types_the_pipeline_cannot_fill():
    with pytest.raises(PipelineShapeError, match="int16"):
        load_pipeline(None, model=model_info((1, 32, 3), "int16"), kind="imu")
    two_inputs = model_info((1, 32, 3))
    two_inputs.subgraphs[0].inputs.append(two_inputs.inputs[0])
    with pytest.raises(PipelineShapeError, match="2 inputs"):
        load_pipeline(None, model=two_inputs, kind="imu")


@pytest.mark.parametrize("shape", [(1, 49, 40), (1, 1960), (1, 49, 40, 1)])
def test_microphone_defaults_are_micro_speech(shape):
    pipeline = load_pipeline(None, model=model_info(shape, "int8", 26 / 256, -128),
                             kind="microphone")
    mic = pipeline.microphone
    assert (mic.window, mic.stride, mic.features, mic.discard_ms) == (49, 5, "micro_speech", 3500)
    front = mic.frontend
    assert (front.window_ms, front.stride_ms, front.channels, front.lower_hz, front.upper_hz) == \
        (30, 20, 40, 125.0, 7500.0)
    assert (front.smoothing_bits, front.even_smoothing, front.odd_smoothing,
            front.min_signal_remaining) == (10, 0.025, 0.06, 0.05)
    assert (front.pcan, front.pcan_strength, front.pcan_offset, front.gain_bits,
            front.log_scale, front.scale_shift) == (True, 0.95, 80.0, 21, True, 6)
    d = pipeline.decisions
    assert (d.average_ms, d.threshold_steps, d.minimum_count, d.suppression_ms) == \
        (1000, 200, 3, 1500)


def test_feature_mapping_follows_the_input_quantization(tmp_path):
    assert load_pipeline(None, model=model_info((1, 49, 40), "int8", 0.05, -10),
                         kind="microphone").microphone.features == "quantize"
    assert load_pipeline(None, model=model_info((1, 49, 40), "float32"),
                         kind="microphone").microphone.features == "float"
    with pytest.raises(PipelineConfigError, match="assumes an input scale"):
        pipeline_from(tmp_path, "[microphone]\nfeatures = 'micro_speech'\n",
                      model_info((1, 49, 40), "int8", 0.05, -10), kind="microphone")
    with pytest.raises(PipelineConfigError, match="model's input is float32"):
        pipeline_from(tmp_path, "[microphone]\nfeatures = 'quantize'\n",
                      model_info((1, 49, 40), "float32"), kind="microphone")


def test_a_streaming_model_slides_by_its_whole_window():
    model = model_info((1, 3, 40), "int8", 0.1, -128, resource_variables=2)
    assert load_pipeline(None, model=model, kind="microphone").microphone.stride == 3


@pytest.mark.parametrize("text, key", [
    ("[imu]\nwindow = 40\n", "imu.window"),
    ("[imu]\naxes = ['ax', 'ay']\n", "imu.axes"),
    ("[imu]\noffset = [0.0, 1.0]\n", "imu.offset"),
    ("[imu]\nscale = [1.0, 0.0, 1.0]\n", "imu.scale"),
    ("[imu]\nscale = [1e-8, 1.0, 1.0]\n", "imu.scale"),
    ("[imu]\nrate_hz = 99.8401\n", "imu.rate_hz"),
    ("[imu.trigger]\npre_samples = 32\n", "imu.trigger.pre_samples"),
    ("[decisions]\nbackground = 4\n", "decisions.background"),
    ("[decisions]\nminimum_count = 20\n", "decisions.minimum_count"),
    ("[decisions]\naverage_ms = 60000\n", "decisions.average_ms"),
])
def test_values_that_do_not_fit_the_model(tmp_path, text, key):
    with pytest.raises(PipelineConfigError) as caught:
        pipeline_from(tmp_path, "[pipeline]\ninput = 'imu'\n" + text, GESTURE_MODEL)
    assert key in error_text(caught.value)


def test_decisions_need_a_classifier(tmp_path):
    regression = model_info((1, 32, 3), output_shape=(1, 10, 3))
    assert load_pipeline(None, model=regression, kind="imu").decisions is None
    with pytest.raises(PipelineShapeError, match="needs a classifier"):
        pipeline_from(tmp_path, "[decisions]\nthreshold = 0.9\n", regression, kind="imu")
    off = pipeline_from(tmp_path, "[decisions]\nenabled = false\n", GESTURE_MODEL, kind="imu")
    assert off.decisions is None


def test_training_without_a_model_gets_float32_features(tmp_path):
    pipeline = pipeline_from(tmp_path, "[pipeline]\ninput = 'imu'\n[imu]\nwindow = 20\n", None)
    assert pipeline.input.dtype == "float32" and pipeline.input.shape == (1, 20, 6)
    mic = load_pipeline(None, kind="microphone")
    assert mic.input.shape == (1, 49, 40) and mic.microphone.features == "float"
    assert mic.microphone.feature_scale == DEFAULT_FEATURE_SCALE == 0.0390625


# --- the IMU reference, by hand ----------------------------------------------------------------

def test_a_board_at_rest_quantizes_like_the_model_says():
    pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    scale, zero_point = pipeline.input.scale, pipeline.input.zero_point
    rest = np.tile([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], (400, 1))
    x = features(rest, pipeline, rate_hz=119.0)
    # 400 samples at 119 Hz -> 100 Hz: 399 * 100 // 119 + 1 = 336; windows of 32 every 8.
    assert x.shape == ((336 - 32) // 8 + 1, 32, 3)
    assert (x[..., :2] == zero_point).all()
    assert (x[..., 2] == round(1.0 / scale) + zero_point).all() and round(1 / scale) == 57


def test_normalisation_then_float32(tmp_path):
    text = ("[pipeline]\ninput = 'imu'\n[imu]\nrate_hz = 119.0\naxes = ['az', 'gx']\n"
            "offset = [1.0, 100.0]\nscale = [0.5, 250.0]\n")
    pipeline = pipeline_from(tmp_path, text, model_info((1, 10, 2), "float32"))
    values = np.tile([0.0, 0.0, 1.25, 350.0, 0.0, 0.0], (30, 1))
    x = features(values, pipeline, rate_hz=119.0)
    # (1.25 - 1) / 0.5 and (350 - 100) / 250, from counts 10240 and 5734 (350 dps * 16.384).
    assert np.allclose(x[0], [[0.5, 5734 * 125 / 2048 / 250 - 0.4]] * 10, atol=1e-6)
    assert x.dtype == np.float32


def test_motion_trigger_windows_start_before_the_hit(tmp_path):
    text = ("[pipeline]\ninput = 'imu'\n[imu]\nrate_hz = 50.0\n"
            "[imu.trigger]\nthreshold_g = 2.0\npre_samples = 4\n")
    pipeline = pipeline_from(tmp_path, text, model_info((1, 20, 3)))
    values = np.tile([0.0, 0.0, 1.0, 0, 0, 0], (200, 1))
    values[100:105, 0] = 2.5                        # a jolt at samples 100..104
    result = compute(values, pipeline, rate_hz=50.0)
    assert result.ends.tolist() == [100 + 20 - 1 - 4]   # one window: 4 samples before the jolt
    assert result.times_ms.tolist() == [115 * 20]


def test_recordings_need_the_axes_the_pipeline_uses(tmp_path):
    pipeline = load_pipeline(None, model=model_info((1, 32, 6)), kind="imu")
    with pytest.raises(RecordingError, match=r"is \[N, 6\] \(ax, ay, az, gx, gy, gz\); "
                                             r"found \[100, 3\]"):
        features(np.zeros((100, 3)), pipeline, rate_hz=100.0)
    np.savez(tmp_path / "r.npz", imu=np.zeros((100, 3)), axes=np.array(["ax", "ay", "gz"]),
             rate_hz=100.0)
    with pytest.raises(RecordingError, match="no columns az, gx, gy"):
        read_recording(tmp_path / "r.npz", pipeline)


def test_run_with_the_model_gives_outputs_and_decisions():
    pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    values = imu_motion(8, 119.0, seed=4)
    result = run(values, pipeline, model=GESTURE_MODEL, rate_hz=119.0)
    assert result.outputs.shape == (len(result.inputs), 4) and result.outputs.dtype == np.int8
    assert result.scores.tolist() == (result.outputs.astype(int) + 128).tolist()
    assert len(result.steps) == len(result.inputs)
    assert [d.time_ms for d in result.decisions] == [s.time_ms for s in result.steps if s.reported]
    # The same through a scoring function (as training code would pass a Keras model).
    again = run(values, pipeline, scores=lambda x: result.outputs, rate_hz=119.0)
    assert [(d.time_ms, d.label) for d in again.decisions] == \
        [(d.time_ms, d.label) for d in result.decisions]


def test_no_tensorflow_for_imu_features():
    code = ("import sys, numpy as np\n"
            "from tinyforge import pipeline\n"
            f"p = pipeline.load_pipeline(None, model={str(GESTURE_MODEL)!r}, kind='imu')\n"
            "pipeline.features(np.zeros((300, 6)), p, rate_hz=119.0)\n"
            "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- readers: untrusted recordings ---------------------------------------------------------------

def write_wav(path: Path, *, rate=16000, channels=1, width=2, frames=1600) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x01\x00" * (frames * channels * width // 2))
    return path


@pytest.mark.parametrize("options, phrase", [
    ({"rate": 44100}, "44100 Hz (not 16000)"),
    ({"rate": 8000}, "8000 Hz"),
    ({"channels": 2}, "2 channels (not mono)"),
    ({"width": 1}, "8-bit samples"),
    ({"width": 3}, "24-bit samples"),
    ({"rate": 48000, "channels": 2}, "48000 Hz (not 16000), 2 channels"),
])
def test_wavs_of_another_format_are_refused_not_converted(tmp_path, options, phrase):
    path = write_wav(tmp_path / "clip.wav", **options)
    with pytest.raises(RecordingError) as caught:
        read_recording(path, load_pipeline(None, kind="microphone"))
    assert phrase in caught.value.message and "refuses to resample" in caught.value.message
    assert "sox" in caught.value.hint


def test_broken_wavs(tmp_path):
    mic = load_pipeline(None, kind="microphone")
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(RecordingError, match="not a PCM WAV"):
        read_recording(tmp_path / "text.wav", mic)
    path = write_wav(tmp_path / "cut.wav", frames=16000)
    path.write_bytes(path.read_bytes()[:2000])    # header still promises 16000 samples
    with pytest.raises(RecordingError, match="truncated"):
        read_recording(path, mic)
    with pytest.raises(RecordingError, match="does not exist"):
        read_recording(tmp_path / "none.wav", mic)
    with pytest.raises(RecordingError, match="replays .wav"):
        read_recording(tmp_path / "clip.mp3", mic)
    good = read_recording(write_wav(tmp_path / "ok.wav"), mic)
    assert good.samples.dtype == np.int16 and good.samples.tolist() == [1] * 1600


def write_csv(path: Path, header: str, rows: list[list[float]]) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_with_missing_columns_names_them(tmp_path):
    pipeline = load_pipeline(None, model=model_info((1, 32, 6)), kind="imu")
    path = write_csv(tmp_path / "r.csv", "time_s,ax,ay,az,gx", [[0, 0, 0, 1, 0]])
    with pytest.raises(RecordingError) as caught:
        read_recording(path, pipeline)
    assert "no columns gy, gz" in caught.value.message
    assert "found: time_s, ax, ay, az, gx" in caught.value.message
    assert "time_s,ax,ay,az,gx,gy,gz" in caught.value.hint


@pytest.mark.parametrize("header, rows, phrase", [
    ("ax,ay,az", [[0, 0, 1]] * 5, "no time column"),
    ("time_s,ax,ay,az", [[0, 0, 0, 1], [0, 0, 0, 1]], "time does not increase"),
    ("time_s,ax,ay,az", [[0, 0, 0, 1], [0.01, 0, 0, 1], [0.1, 0, 0, 1]], "not steady"),
    ("time_s,ax,ay,az", [[0, "x", 0, 1]], "not a number"),
    ("time_s,ax,ay,az", [[0, "nan", 0, 1]], "NaN or infinite"),
    ("time_s,ax,ay,az", [[0, 0, 1]], "3 values for 4 columns"),
    ("time_s,ax,ay,az", [], "no samples"),
])
def test_bad_csvs(tmp_path, header, rows, phrase):
    pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    with pytest.raises(RecordingError, match=phrase):
        read_recording(write_csv(tmp_path / "r.csv", header, rows), pipeline)


def test_csv_rate_from_the_time_column_or_the_config(tmp_path):
    rows = [[i / 119, 0.1, 0.2, 1.0] for i in range(50)]
    path = write_csv(tmp_path / "r.csv", "time_s,ax,ay,az", rows)
    recording = read_recording(path, load_pipeline(None, model=GESTURE_MODEL, kind="imu"))
    assert (recording.rate_mhz, recording.rate_source) == (119_000, "time column")
    assert recording.counts[0].tolist() == [819, 1638, 8192, 0, 0, 0]
    ms = write_csv(tmp_path / "ms.csv", "time_ms,ax,ay,az",
                   [[i * 10.016, 0, 0, 1] for i in range(50)])
    assert read_recording(ms, load_pipeline(None, model=GESTURE_MODEL, kind="imu")).rate_mhz \
        == 99_840
    configured = pipeline_from(tmp_path, "[imu]\nrecording_rate_hz = 99.84\n", GESTURE_MODEL,
                               kind="imu")
    assert read_recording(path, configured).rate_source == "recording_rate_hz"


def npy_header(shape, dtype="<i2") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_npy_headers_are_bounded_before_anything_is_allocated(tmp_path):
    mic = load_pipeline(None, kind="microphone")
    huge = tmp_path / "huge.npy"
    huge.write_bytes(npy_header((10**12,)) + b"\x00" * 64)
    with pytest.raises(RecordingError, match="more than the 256 MiB"):
        read_recording(huge, mic)
    lying = tmp_path / "lying.npy"
    lying.write_bytes(npy_header((1_000_000,)) + b"\x00" * 64)
    with pytest.raises(RecordingError, match="truncated"):
        read_recording(lying, mic)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match="does not unpickle"):
        read_recording(pickled, mic)


def test_npz_members_are_bounded_too(tmp_path):
    pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    path = tmp_path / "r.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("imu.npy", npy_header((10**9, 6), "<f4") + b"\x00" * 64)
    with pytest.raises(RecordingError, match="more than the 256 MiB"):
        read_recording(path, pipeline)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("imu.npy", npy_header((1000, 3), "<f4") + b"\x00" * 64)
    with pytest.raises(RecordingError, match="truncated"):
        read_recording(path, pipeline)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(RecordingError, match="not a NumPy array"):
        read_recording(path, pipeline)


def test_npy_and_npz_recordings(tmp_path):
    imu_pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    values = imu_motion(2, 119.0)
    np.savez(tmp_path / "r.npz", imu=values.astype(np.float32), rate_hz=119.0)
    recording = read_recording(tmp_path / "r.npz", imu_pipeline)
    assert recording.rate_mhz == 119_000 and recording.counts.shape == (len(values), 6)
    np.save(tmp_path / "r.npy", values)
    with pytest.raises(RecordingError, match="rate is unknown"):
        read_recording(tmp_path / "r.npy", imu_pipeline)
    np.savez(tmp_path / "counts.npz", imu=np.full((10, 3), 40000), rate_hz=100.0)
    with pytest.raises(RecordingError, match="must fit int16"):
        read_recording(tmp_path / "counts.npz", imu_pipeline)
    mic = load_pipeline(None, kind="microphone")
    np.save(tmp_path / "a.npy", np.zeros(100, np.float32))
    with pytest.raises(RecordingError, match="int16 PCM"):
        read_recording(tmp_path / "a.npy", mic)
    np.savez(tmp_path / "a.npz", audio=np.zeros(100, np.int16), rate_hz=8000)
    with pytest.raises(RecordingError, match="does not resample"):
        read_recording(tmp_path / "a.npz", mic)


# --- boards -----------------------------------------------------------------------------------

def test_both_boards_run_both_sensor_pipelines():
    model = model_info((1, 49, 40), "int8", 26 / 256, -128)
    for board_id in ("nano33ble", "qemu-m4"):
        board = profiles.load_board(board_id)
        for kind, m in (("imu", GESTURE_MODEL), ("microphone", model)):
            pipeline = pipeline_for_board(board, m if isinstance(m, Path) else m, kind=kind)
            assert pipeline.kind == kind


def sensorless_board(tmp_path: Path, monkeypatch, inputs: str = "") -> profiles.Board:
    source = profiles.resources.boards_dir() / "qemu-m4.toml"
    text = source.read_text().split("[sensors]")[0] + (f"[sensors]\n{inputs}\n" if inputs else "")
    (tmp_path / "plain-m4.toml").write_text(text.replace('id = "qemu-m4"', 'id = "plain-m4"'))
    monkeypatch.setenv(profiles.BOARDS_PATH_ENV, str(tmp_path))
    return profiles.load_board("plain-m4")


def test_a_board_without_the_sensor_is_refused(tmp_path, monkeypatch):
    board = sensorless_board(tmp_path, monkeypatch)
    mic = load_pipeline(None, model=SPEECH, kind="microphone")
    with pytest.raises(SensorUnavailableError) as caught:
        check_pipeline(mic, board, SPEECH)
    assert "board 'plain-m4' has no microphone" in caught.value.message
    assert "--input host" in caught.value.hint
    check_pipeline(load_pipeline(None, model=SPEECH), board, SPEECH)   # host: always fine


def test_board_inputs_are_their_own_field():
    board = profiles.load_board("nano33ble")
    assert board.inputs == ("imu", "microphone") and set(board.sensors) == {"rev1", "rev2"}
    assert board.summary()["inputs"] == ["imu", "microphone"]


def test_board_profiles_name_only_known_inputs(tmp_path, monkeypatch):
    with pytest.raises(BoardProfileError) as caught:
        sensorless_board(tmp_path, monkeypatch, 'inputs = ["imu", "camera"]')
    assert "camera" in caught.value.details


def test_the_pipeline_must_be_the_models(tmp_path):
    pipeline = load_pipeline(None, model=GESTURE_MODEL, kind="imu")
    other = model_info((1, 40, 3))
    with pytest.raises(PipelineShapeError, match="was derived for an input"):
        check_pipeline(pipeline, profiles.load_board("nano33ble"), other)


# --- generated device settings ---------------------------------------------------------------

def test_settings_are_deterministic_and_state_every_number(tmp_path):
    text = "[pipeline]\ninput = 'imu'\n[imu]\nrate_hz = 25\n[imu.trigger]\nthreshold_g = 2.5\n"
    first = settings_files(pipeline_from(tmp_path, text, GESTURE_MODEL))
    again = settings_files(pipeline_from(tmp_path, text, GESTURE_MODEL))
    assert first == again
    header, source = first["pipeline_settings.h"], first["pipeline_settings.cpp"]
    assert "#define TINYFORGE_PIPELINE_INPUT 1" in header
    assert "constexpr uint32_t kBmi270RateMilliHz = 99840;" in header
    assert "constexpr uint32_t kLsm9ds1RateMilliHz = 119000;" in header
    assert "20480,  // trigger counts (2.5 g)" in source
    # Triggered: one inference per gesture, which decides on its own.
    assert "    0u,  // average_ms" in source and "    1,  // minimum_count" in source
    assert "typedef int8_t PipelineValue;" in header and "kPipelineWindowValues = 96;" in header


def test_device_files_are_the_parts_and_the_settings():
    from tinyforge.pipeline.settings import PARTS, device_files

    files = device_files(load_pipeline(None, model=GESTURE_MODEL, kind="imu"))
    assert sorted(files) == sorted([f"src/{n}" for n in PARTS] +
                                   ["src/pipeline_settings.h", "src/pipeline_settings.cpp"])
    assert all(isinstance(data, bytes) and data for data in files.values())


def test_settings_floats_read_back_exactly():
    from tinyforge.pipeline.settings import _float

    for value in (0.025, 0.06, 80.0, 1 / 3, 16.384, 1e-7, -2.5):
        literal = _float(value)
        assert np.float32(float(literal[:-1])) == np.float32(value), literal


def test_model_names_cannot_break_out_of_generated_comments():
    model = model_info((1, 32, 3), name="evil\n#include <x>\\")
    files = settings_files(load_pipeline(None, model=model, kind="imu"))
    for text in files.values():
        assert "\n#include <x>" not in text and "evil?#include <x>?" in text


def test_summary_for_boot():
    pipeline = load_pipeline(None, model=SPEECH, kind="microphone")
    assert summary(pipeline) == ("input=microphone window=49 stride=5 frame_ms=30/20 "
                                 "channels=40 features=micro_speech average_ms=1000 "
                                 "threshold=200 min_count=3 suppression_ms=1500")


def test_a_differing_feature_row_is_reported_from_its_first_difference():
    from types import SimpleNamespace

    from tinyforge.flows.replay import _feature_mismatch

    host = [list(range(40))]
    device = SimpleNamespace(n=0, values=list(range(30)) + [99] + list(range(31, 40)))
    mismatch = _feature_mismatch(0, device, host, 1)
    assert mismatch["column"] == 30 and mismatch["values"] == [40, 40]
    assert mismatch["device"][0] == 99 and mismatch["host"][0] == 30
    beyond = _feature_mismatch(1, device, host, 1)
    assert beyond["host"] == "none" and beyond["device"] == device.values[:12]
