"""Cost of the sensor pipeline on the emulated Cortex-M4 (qemu-m4), and its static RAM.

Needs two firmware projects built for qemu-m4 (TFLM tier), e.g.

    tinyforge build --board qemu-m4 --input imu --tflm TREE --project-dir build/bench-imu
    tinyforge build --board qemu-m4 --input microphone --model KEYWORD.tflite --tflm TREE \
        --project-dir build/bench-mic

and runs each in QEMU with `-icount shift=0`: every guest instruction advances the virtual
clock by 1 ns, so the firmware's BoardMicros() counts thousands of instructions, whatever the
host's load. Replayed: 20 s of IMU readings at 119 Hz (resampled to the model's rate), and
4 s of audio (chirps, tones, noise at 16 kHz). Reported, in thousands of instructions
(kinstr; the Cortex-M4F at 64 MHz runs about 64 per microsecond at 1 instruction per cycle,
an upper bound of the real speed, docs/emulator.md):

- the pipeline outside inferences (the firmware's CREDIT us=: resampling/windows/quantisation
  for the IMU, the TFLM micro frontend and windows for audio) per IMU window / per second of
  audio;
- Invoke (RES us=) per inference, and per second of audio at the pipeline's stride;
- static RAM of the pipeline: the sizes of its objects in the ELF (arm-none-eabi-nm), and
  the frontend's heap (FrontendPopulateState mallocs it once; not a static).

Run: .venv/bin/python bench/bench_pipeline_device.py build/bench-imu build/bench-mic
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
from pipeline_support import imu_motion, tone_audio  # noqa: E402

from tinyforge.device import emulator, replay  # noqa: E402
from tinyforge.device.conversation import Conversation, wait_for_boot  # noqa: E402
from tinyforge.pipeline.readers import imu_counts  # noqa: E402
from tinyforge.pipeline.imu import AXES  # noqa: E402

ICOUNT = ("-icount", "shift=0")
AUDIO_STRIDE_MS = 100   # the microphone pipeline's default: 5 frames of 20 ms
# Short: QEMU moves ~1-10 KB/s from the host (load-dependent), and the figures are per unit.
IMU_SECONDS, AUDIO_SECONDS = 20.0, 4.0
# The pipeline's statics in the sketch and the sensor source (C++ names, demangled): the
# parts of the fit estimate's ram_pipeline_parts but the frontend's heap
# (tests/test_qemu_pipeline_ram.py checks them one by one).
PIPELINE_SYMBOLS = ("window_storage", "imu_pipeline", "audio_ring", "audio_ring_storage",
                    "audio_pipeline", "frontend", "decision_filter", "result_scores",
                    "result_times", "sample_values", "imu_storage", "imu_ring", "imu_rate_mhz",
                    "imu_kind", "discard_left", "frame_index", "pipeline_us", "inference_us",
                    "replay_read", "replay_active", "credit_due", "credit_seq",
                    "sensor_failure", "pipeline_running", "pipeline_seq", "result_time_ms",
                    "send_features")


def run(elf: Path, kind: str, values: np.ndarray, rate_mhz: int | None):
    with emulator.launch(elf, extra_args=ICOUNT) as link:
        conversation = Conversation(link)
        boot = wait_for_boot(conversation, ask=False)
        return replay.stream(conversation, kind, values, max_line=boot.max_line,
                             rate_mhz=rate_mhz, stall_timeout=60)


def static_ram(elf: Path) -> tuple[int, list[tuple[str, int]]]:
    out = subprocess.run(["arm-none-eabi-nm", "-C", "-S", "--size-sort", str(elf)],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[2] in "bBdD":
            name = parts[3].split("::")[-1]
            if name in PIPELINE_SYMBOLS:
                found.append((parts[3], int(parts[1], 16)))
    return sum(size for _, size in found), sorted(found, key=lambda item: -item[1])


def report(name: str, events, per: float, unit: str, elf: Path) -> None:
    invokes = [r.us for r in events.results]
    print(f"{name}: {len(invokes)} inferences, {events.lines} SAMPLES lines in "
          f"{events.seconds:.1f} s of wall time")
    print(f"  pipeline outside inferences: {events.pipeline_us / per:,.1f} kinstr per {unit} "
          f"({events.pipeline_us:,} kinstr in all)")
    print(f"  Invoke: median {statistics.median(invokes):,.0f} kinstr per inference "
          f"(min {min(invokes):,}, max {max(invokes):,})")
    total, symbols = static_ram(elf)
    print(f"  static RAM of the pipeline: {total:,} B: " +
          ", ".join(f"{n} {s:,}" for n, s in symbols[:8]))


def main() -> None:
    imu_project, mic_project = map(Path, sys.argv[1:3])
    imu_elf = imu_project / ".pio/build/qemu-m4/firmware.elf"
    mic_elf = mic_project / ".pio/build/qemu-m4/firmware.elf"
    counts = imu_counts(imu_motion(IMU_SECONDS, 119.0), AXES, None)
    events = run(imu_elf, "imu", counts.reshape(-1), 119_000)
    report("IMU (20 s at 119 Hz)", events, len(events.results), "IMU window", imu_elf)
    audio = tone_audio(AUDIO_SECONDS)
    events = run(mic_elf, "microphone", audio, None)
    report("audio (4 s at 16 kHz)", events, AUDIO_SECONDS, "second of audio", mic_elf)
    # At the steady rate, once the first window is full: one inference per stride.
    per_second = 1000 / AUDIO_STRIDE_MS
    invoke = statistics.median(r.us for r in events.results)
    print(f"  at a steady {per_second:.0f} inferences per second (micro_speech's stride): "
          f"{events.pipeline_us / AUDIO_SECONDS + per_second * invoke:,.0f} kinstr per second "
          "of audio in all (pipeline + Invoke)")
    print("  plus the frontend's heap, allocated once at start (not a static; 11,352 B for "
          "micro_speech's recipe, docs/pipeline.md \"RAM\")")


if __name__ == "__main__":
    main()
