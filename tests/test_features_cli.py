"""`tinyforge features`: the real command line on real recordings and models.

Every refusal exits 1 with a message naming the input and a hint, and writes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import wave

import numpy as np
import pytest
from pipeline_support import GESTURE_MODEL, imu_motion, tone_audio

LABELS = GESTURE_MODEL.parent / "labels.txt"
IMU_TOML = '[pipeline]\ninput = "imu"\n[imu]\nrate_hz = 25.0\n'


def write_csv(path, values, rate_hz=119.0):
    lines = ["time_s,ax,ay,az,gx,gy,gz"]
    lines += [",".join([f"{i / rate_hz:.6f}"] + [f"{v:.5f}" for v in row])
              for i, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_wav(path, samples, rate=16000, channels=1):
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.asarray(samples, "<i2").tobytes())
    return path


def assert_refused(result, *phrases):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert "hint:" in result.stderr


def test_imu_features_with_the_model_and_decisions(tinyforge, tmp_path):
    recording = write_csv(tmp_path / "shake.csv", imu_motion(8, 119.0, seed=2))
    (tmp_path / "tinyforge.toml").write_text(IMU_TOML)
    out = tmp_path / "features.npz"
    result = tinyforge("features", recording, "--config", tmp_path / "tinyforge.toml",
                       "--model", GESTURE_MODEL, "--labels", LABELS, "--board", "nano33ble",
                       "-o", out, "--json", check_rc=0)
    report = json.loads(result.stdout)
    assert report["input"] == "imu" and report["rate_source"] == "time column"
    assert report["recording_rate_hz"] == 119.0 and report["samples"] == 952
    assert report["shape"][1:] == [32, 3] and report["dtype"] == "int8"
    assert report["pipeline"]["imu"]["rate_hz"] == 25.0
    assert report["pipeline"]["origins"]["imu.rate_hz"] == "file"
    assert all(d["name"] in LABELS.read_text().split() for d in report["decisions"])
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(report["arrays"]) == \
            ["decisions", "ends", "outputs", "resampled", "scores", "times_ms", "x"]
        assert saved["x"].shape == tuple(report["shape"])
        assert saved["times_ms"].tolist() == report["times_ms"]
        assert saved["decisions"].shape == (len(report["decisions"]), 3)


def test_a_config_beside_the_model_is_found_and_npy_holds_the_inputs(tinyforge, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = model_dir / "gesture.tflite"
    model.write_bytes(GESTURE_MODEL.read_bytes())
    (model_dir / "tinyforge.toml").write_text(IMU_TOML)
    recording = write_csv(tmp_path / "r.csv", imu_motion(4, 99.84), rate_hz=99.84)
    result = tinyforge("features", recording, "--model", model, "-o", tmp_path / "x.npy",
                       check_rc=0)
    assert "config " + str(model_dir / "tinyforge.toml") in result.stdout
    assert "99.84 Hz (time column)" in result.stdout
    x = np.load(tmp_path / "x.npy")
    assert x.dtype == np.int8 and x.shape[1:] == (32, 3)


@pytest.mark.tensorflow
def test_audio_features_run_tensorflow_only_in_a_child(cli_env, tmp_path):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (`make setup`)")
    recording = write_wav(tmp_path / "tones.wav", tone_audio(1.5))
    # -X importtime lists what the CLI's own process imports; its children run without it.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinyforge", "features",
                             str(recording), "--input", "microphone", "--json"],
                            capture_output=True, text=True, env=cli_env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["shape"] == [(74 - 49) // 5 + 1, 49, 40] and report["dtype"] == "float32"
    assert report["frames"] == (24000 - 480) // 320 + 1 == 74
    assert report["pipeline"]["microphone"]["features"] == "float"
    assert re.search(r"\|\s+tinyforge\.pipeline\.audio$", result.stderr, re.M)
    assert "tensorflow" not in result.stderr


@pytest.mark.parametrize("rate, channels, phrase", [
    (44100, 1, "44100 Hz (not 16000)"), (16000, 2, "2 channels (not mono)"),
    (8000, 2, "8000 Hz (not 16000), 2 channels")])
def test_wav_of_another_format_is_refused(tinyforge, tmp_path, rate, channels, phrase):
    recording = write_wav(tmp_path / "clip.wav", np.zeros(rate * channels // 4), rate, channels)
    out = tmp_path / "out.npz"
    result = tinyforge("features", recording, "--input", "microphone", "-o", out)
    assert_refused(result, str(recording), phrase, "refuses to resample")
    assert not out.exists() and list(tmp_path.iterdir()) == [recording]


def test_imu_file_with_missing_columns(tinyforge, tmp_path):
    recording = tmp_path / "r.csv"
    recording.write_text("time_s,ax,ay\n0,0,0\n0.01,0,0\n")
    result = tinyforge("features", recording, "--model", GESTURE_MODEL, "--input", "imu",
                       "-o", tmp_path / "out.npz")
    assert_refused(result, "has no column az", "found: time_s, ax, ay")
    assert not (tmp_path / "out.npz").exists()


def test_threshold_out_of_range(tinyforge, tmp_path):
    config = tmp_path / "tinyforge.toml"
    config.write_text(IMU_TOML + "[decisions]\nthreshold = 1.2\n")
    recording = write_csv(tmp_path / "r.csv", imu_motion(2, 119.0))
    result = tinyforge("features", recording, "--config", config, "--model", GESTURE_MODEL,
                       "-o", tmp_path / "out.npz")
    assert_refused(result, str(config), "decisions.threshold", "out of range")
    assert not (tmp_path / "out.npz").exists()


def test_model_input_no_sensor_can_feed(tinyforge, models, tmp_path):
    recording = write_csv(tmp_path / "r.csv", imu_motion(2, 119.0))
    result = tinyforge("features", recording, "--model", models / "big_arena_float.tflite",
                       "--input", "imu", "-o", tmp_path / "out.npz")
    assert_refused(result, "no imu pipeline can produce the model's input [1, 96, 96, 1]",
                   "[1, N, A], [1, N, A, 1] or [1, N*A]", "--input host")
    assert not (tmp_path / "out.npz").exists()


def test_board_without_the_sensor(tinyforge, cli_env, tmp_path):
    boards = tmp_path / "boards"
    boards.mkdir()
    source = (GESTURE_MODEL.parents[2] / "boards" / "qemu-m4.toml").read_text()
    (boards / "bare-m4.toml").write_text(
        source.split("[sensors]")[0].replace('id = "qemu-m4"', 'id = "bare-m4"'))
    recording = write_wav(tmp_path / "clip.wav", np.zeros(16000))
    env = dict(cli_env, TINYFORGE_BOARDS_PATH=str(boards))
    result = tinyforge("features", recording, "--input", "microphone", "--board", "bare-m4",
                       "-o", tmp_path / "out.npz", env=env)
    assert_refused(result, "board 'bare-m4' has no microphone", "--input host")
    assert not (tmp_path / "out.npz").exists()


def test_bad_output_name_is_refused_before_reading(tinyforge, tmp_path):
    result = tinyforge("features", tmp_path / "missing.wav", "--input", "microphone",
                       "-o", tmp_path / "out.txt")
    assert_refused(result, "must end in .npy", ".npz")


def test_the_host_pipeline_has_no_features(tinyforge, tmp_path):
    recording = write_csv(tmp_path / "r.csv", imu_motion(1, 119.0))
    result = tinyforge("features", recording, "--model", GESTURE_MODEL)
    assert_refused(result, "the host pipeline computes no features", "--input imu")


def test_features_is_listed_in_help(tinyforge):
    assert "features" in tinyforge("--help", check_rc=0).stdout
    assert "--output" in tinyforge("features", "--help", check_rc=0).stdout
