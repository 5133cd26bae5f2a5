"""The sensor pipeline in the model firmware, proven on the emulated Cortex-M4: recordings
replayed over serial (REPLAY/SAMPLES with credit flow control) into the same ring buffers a
board's sensor interrupts fill, through the same pipeline code, TFLM and the decision filter,
compared by `tinyforge validate --replay` with the host reference of the whole pipeline
(TensorFlow's audio frontend op, the resampler and quantisers in numpy, the board's TFLM
compiled for the host, the decisions in Python).

TFLM tier: needs a TFLM library tree ($TINYFORGE_TFLM), arm-none-eabi GCC and QEMU; the audio
test also needs espeak-ng and sox (the spoken keyword is made here) and TensorFlow (its model
is trained here on features the pipeline computes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import imu_motion
from qemu_support import require_emulator, seeded_core

REPO = Path(__file__).resolve().parent.parent
KEYWORD_SCRIPT = REPO / "tests" / "models" / "make_keyword_model.py"
WORDS = [("yes", "en", 150, 50), ("go", "en-us", 140, 40), ("stop", "en", 170, 60),
         ("yes", "en-us", 120, 30)]


@pytest.fixture
def env(cli_env, tmp_path_factory):
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_replayed_imu_recording_gives_the_hosts_outputs_and_decisions(tinyforge, tflm_tree,
                                                                         env, tmp_path):
    require_emulator()
    project = tmp_path / "imu"
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--input", "imu", "--tflm",
                                 tflm_tree, "--project-dir", project, "--json", env=env,
                                 timeout=3600, check_rc=0).stdout)
    assert built["pipeline"]["input"] == "imu"
    # 20 s at the LSM9DS1's 119 Hz, resampled to the model's 100 Hz on the device.
    values = imu_motion(20.0, 119.0, seed=5)
    recording = tmp_path / "motion.csv"
    rows = [f"{i / 119.0:.6f}," + ",".join(f"{v:.5f}" for v in row)
            for i, row in enumerate(values)]
    recording.write_text("time_s,ax,ay,az,gx,gy,gz\n" + "\n".join(rows) + "\n")
    run = tinyforge("validate", "--project-dir", project, "--replay", recording, "--features",
                    "--json", env=env, timeout=600)
    assert run.returncode == 0, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["reference"].startswith("host build of Chirale_TensorFlowLite 2.0.0 at ")
    assert report["inferences"] == report["host_inferences"] == report["exact_outputs"] > 200
    assert report["same_times"] == report["inferences"]
    assert report["feature_rows"] == report["exact_feature_rows"] == report["inferences"]
    assert report["same_decisions"] and report["passed"]
    # The BOOT announces the pipeline; monitor shows it.
    monitor = tinyforge("monitor", "--project-dir", project, "--count", "1", "--timeout", "20",
                        env=env)
    assert "pipeline input=imu rate_mhz=100000" in monitor.stdout, monitor.stdout


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """The words of WORDS spoken by espeak-ng, as 16 kHz mono 16-bit WAVs (sox)."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        pytest.skip("espeak-ng and sox make the spoken keyword (apt-get install espeak-ng sox)")
    work = tmp_path_factory.mktemp("spoken")
    for i, (word, voice, speed, pitch) in enumerate(WORDS):
        raw = work / f"raw{i}.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw),
                        word], check=True, capture_output=True, timeout=60)
        # -R: sox dithers with a seed of the clock otherwise, and each run heard other audio.
        subprocess.run([sox, "-R", str(raw), "-r", "16000", "-c", "1", "-b", "16",
                        str(work / f"clip{i}.wav"), "pad", "0.5", "0.5"], check=True,
                       capture_output=True, timeout=60)
    return work


def keyword_recording(spoken: Path, path: Path) -> Path:
    """0.5 s of a microphone's noise, "yes", 1 s of noise, "go", noise: what the board hears
    (each clip has 0.5 s of silence around its word)."""
    rng = np.random.default_rng(11)
    parts = []
    for name in ("clip0.wav", "clip1.wav"):
        with wave.open(str(spoken / name), "rb") as reader:
            parts += [np.zeros(8000 if not parts else 16000),
                      np.frombuffer(reader.readframes(reader.getnframes()), "<i2")]
    parts.append(np.zeros(4800))
    audio = np.concatenate(parts)
    audio = np.clip(audio + rng.normal(0, 40, len(audio)), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(audio.tobytes())
    return path


@pytest.mark.slow
@pytest.mark.tflm_tree
@pytest.mark.tensorflow
def test_a_replayed_spoken_keyword_gives_the_hosts_features_outputs_and_decisions(
        tinyforge, tflm_tree, env, spoken, tmp_path):
    require_emulator()
    models = tmp_path / "model"
    models.mkdir()
    subprocess.run([sys.executable, str(KEYWORD_SCRIPT), str(models),
                    *map(str, sorted(spoken.glob("clip*.wav")))], check=True, env=env,
                   capture_output=True, timeout=1200)
    project = tmp_path / "keyword"
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--input", "microphone",
                                 "--model", models / "keyword_int8.tflite", "--labels",
                                 models / "labels.txt", "--tflm", tflm_tree, "--project-dir",
                                 project, "--json", env=env, timeout=3600, check_rc=0).stdout)
    assert built["pipeline"]["summary"].startswith("input=microphone window=49 stride=5")
    recording = keyword_recording(spoken, tmp_path / "keyword.wav")
    run = tinyforge("validate", "--project-dir", project, "--replay", recording, "--features",
                    "--json", env=env, timeout=900)
    report = json.loads(run.stdout)
    assert run.returncode == 0, (report.get("mismatches"), run.stderr)
    # Every frontend frame of the stream (20 ms each), every inference (every 100 ms).
    assert report["host_feature_rows"] == report["exact_feature_rows"] == \
        report["feature_rows"] > 200
    # (one every 20 ms of about 5.4 s of audio)
    assert report["inferences"] == report["host_inferences"] == report["exact_outputs"] > 30
    assert report["same_times"] == report["inferences"]
    assert report["same_decisions"] and report["passed"]
    assert [d["label"] for d in report["decisions"]] == ["speech", "speech"], report["decisions"]
