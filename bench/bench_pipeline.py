"""Cost of the host pipeline (tinyforge.pipeline): IMU windows and audio features per second.

- IMU: 10 minutes of 6-axis readings at 119 Hz (rev1) through the gesture example's pipeline
  (resampled to 25 Hz, windows of 32 every 8, quantised): microseconds per model input and
  per source sample; the same with the motion trigger.
- Audio: TensorFlow's audio_microfrontend op (micro_speech's recipe) in this process, then the
  int8 map and the windows: milliseconds per second of audio; and `features()` the way the CLI
  runs it, in a child process, TensorFlow's start included.
No targets: the host reference is not on any device's hot path. The cost on qemu-m4 comes
with the firmware.

Run: .venv/bin/python bench/bench_pipeline.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pipeline_support import GESTURE_MODEL, imu_motion, model_info, tone_audio  # noqa: E402

from tinyforge.pipeline import audio, compute, features, load_pipeline  # noqa: E402

REPEATS = 3


def best_cpu(fn) -> tuple[float, object]:
    """(best CPU seconds of REPEATS runs, the last result): CPU time, as the machine is shared."""
    best, result = float("inf"), None
    for _ in range(REPEATS):
        started = time.process_time()
        result = fn()
        best = min(best, time.process_time() - started)
    return best, result


def bench_imu() -> None:
    values = imu_motion(600, 119.0, seed=1)
    with tempfile.TemporaryDirectory() as work:
        sliding = Path(work) / "sliding.toml"
        sliding.write_text('[pipeline]\ninput = "imu"\n[imu]\nrate_hz = 25.0\n')
        triggered = Path(work) / "triggered.toml"
        triggered.write_text(sliding.read_text() + "[imu.trigger]\nthreshold_g = 2.0\n")
        for name, config in (("sliding", sliding), ("triggered", triggered)):
            pipeline = load_pipeline(config, model=GESTURE_MODEL)
            seconds, x = best_cpu(lambda: features(values, pipeline, rate_hz=119.0))
            print(f"imu {name:<10} {len(values):,} samples -> {len(x):,} inputs "
                  f"{list(x.shape[1:])}: {seconds * 1000:7.1f} ms CPU, "
                  f"{seconds / max(1, len(x)) * 1e6:6.1f} us per input, "
                  f"{seconds / len(values) * 1e6:5.2f} us per sample")


def bench_audio() -> None:
    try:
        import tensorflow  # noqa: F401  (imported here, once, so the op runs in this process)
    except ImportError:
        print("audio: TensorFlow is not installed; skipped")
        return
    pipeline = load_pipeline(None, model=model_info((1, 49, 40), "int8", 26 / 256, -128),
                             kind="microphone")
    clip = tone_audio(60.0, seed=2)
    audio.frontend([clip[:16000]], pipeline.microphone.frontend, in_process=True)  # warm up
    op_s, frames = best_cpu(lambda: audio.frontend([clip], pipeline.microphone.frontend,
                                                   in_process=True)[0])
    rest_s, result = best_cpu(lambda: audio.from_frames(frames, pipeline))
    seconds = len(clip) / 16000
    print(f"audio frontend op   {seconds:.0f} s of audio -> {len(frames):,} frames: "
          f"{op_s / seconds * 1000:6.2f} ms CPU per second of audio")
    print(f"audio map + windows {len(result.inputs):,} inputs [49, 40]: "
          f"{rest_s / seconds * 1000:6.2f} ms CPU per second of audio")
    started = time.perf_counter()
    compute(clip[: 16000 * 5], pipeline, in_process=False)
    print(f"audio in a child    5 s of audio, TensorFlow's start included: "
          f"{time.perf_counter() - started:6.2f} s wall")


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    bench_imu()
    bench_audio()
    return 0


if __name__ == "__main__":
    sys.exit(main())
