"""The microphone's path from the ring buffer to the frontend in the firmware's loop
(`tfpipe::DrainAudio` in firmware_templates/pipeline/pipeline_audio.h), compiled with the host
g++ (ASan, UBSan) and driven the way the board drives it: the PDM interrupt writes blocks of
256 samples whenever they arrive, the loop drains the ring when it gets to it.

Two protocol paths depend on it: REPLAY `discard=1` (the first kAudioDiscardSamples never reach
the frontend; on qemu-m4 in tests/test_qemu_pipeline_discard.py) and ERR STREAM_DROPPED (audio
faster than the loop: the firmware reports it and restarts). STREAM_DROPPED cannot happen on
qemu-m4: there the replay writes into the ring from the loop itself, and only what its credit
left room for (more is REPLAY_OVERRUN), so the ring never drops; on the Nano 33 BLE Sense the
PDM interrupt does not wait for the loop, and this is the code that notices.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyforge import proc
from tinyforge.pipeline.settings import REQUIRED_FLAGS

ROOT = Path(__file__).resolve().parents[1]
PARTS_DIR = ROOT / "firmware_templates" / "pipeline"
HARNESS = ROOT / "tests" / "cpp" / "audio_drain_harness.cpp"
RING = 4096
BLOCK = 256


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the pipeline's C++ cannot be built here")
    executable = tmp_path_factory.mktemp("drain") / "audio_drain_harness"
    proc.run([compiler, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *REQUIRED_FLAGS,
              f"-I{PARTS_DIR}", HARNESS, "-o", executable], timeout=180,
             what="g++ build of the audio drain harness")
    return executable


def run(harness: Path, discard: int, script: list[str]) -> list[tuple[int, int, int, list]]:
    result = subprocess.run([str(harness), str(discard)], input="\n".join(script) + "\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    turns = []
    for line in result.stdout.splitlines():
        head, fed = line.split(" fed=")
        fields = dict(word.split("=") for word in head.split())
        turns.append((int(fields["taken"]), int(fields["broken"]), int(fields["discard_left"]),
                      [int(v) for v in fed.split()]))
    return turns


def reference(discard: int, script: list[str]) -> list[tuple[int, int, int, list]]:
    """What the loop must do: every sample the ring kept reaches the frontend once, in order,
    but the first `discard`; a full ring loses what the interrupt still delivers, and the
    next turn says so and starts again from an empty ring."""
    ring: list[int] = []
    lost, produced, turns = 0, 0, []
    for line in script:
        if line.startswith("w"):
            for _ in range(int(line.split()[1])):
                if len(ring) < RING:
                    ring.append(produced % 30000)
                else:
                    lost += 1
                produced += 1
            continue
        taken, ring = ring, []
        skipped = min(discard, len(taken))
        discard -= skipped
        broken = lost > 0
        lost = 0
        turns.append((len(taken), int(broken), discard, taken[skipped:]))
    return turns


def test_the_microphones_first_samples_never_reach_the_frontend(harness):
    # discard=1 with 1,000 samples to drop, arriving in PDM blocks: two blocks and a bit.
    script = ["w 256", "d", "w 512", "d", "w 512", "d"]
    turns = run(harness, 1000, script)
    assert turns == reference(1000, script)
    assert [t[3] for t in turns[:2]] == [[], []]            # 768 samples: all dropped
    assert turns[2][3] == list(range(1000, 1280))           # from sample 1,000 on, each once
    assert [t[2] for t in turns] == [744, 232, 0]
    # Without discard (a replay's default) the first sample is the stream's first.
    assert run(harness, 0, ["w 10", "d"])[0][3] == list(range(10))


def test_audio_faster_than_the_loop_breaks_the_stream_and_it_restarts(harness):
    # The loop was busy (an inference) while 17 PDM blocks arrived: the ring holds 16.
    script = ["w 4352", "d", "w 256", "d", "w 256", "d"]
    turns = run(harness, 0, script)
    assert turns == reference(0, script)
    taken, broken, _, fed = turns[0]
    assert (taken, broken) == (4096, 1)                     # STREAM_DROPPED, then a restart
    assert fed == list(range(4096))                         # what was kept was fed once
    # After the restart the stream goes on from an empty ring; the lost block never arrives.
    assert turns[1][:2] == (256, 0) and turns[1][3] == list(range(4352, 4608))
    assert turns[2][:2] == (256, 0)
    # A ring filled exactly to the brim loses nothing.
    assert run(harness, 0, ["w 4096", "d"])[0][:2] == (4096, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(discard=st.integers(0, 6000),
       script=st.lists(st.one_of(st.integers(0, 3000).map(lambda n: f"w {n}"), st.just("d")),
                       max_size=25))
def test_any_interleaving_matches_the_reference(harness, discard, script):
    assert run(harness, discard, script + ["d"]) == reference(discard, script + ["d"])
