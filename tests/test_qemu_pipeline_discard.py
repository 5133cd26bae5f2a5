"""REPLAY discard=1 on the emulated Cortex-M4: the keyword firmware drops the first
kAudioDiscardSamples of the stream, as after a reset of the real microphone, and the frames it
computes from the rest are TensorFlow's audio frontend op's on the recording without them; the
credit counts every sample, discarded ones included. The same firmware without discard (a
replay's default) given the recording from its kAudioDiscardSamples-th sample on computes the
same frames: exactly that many were dropped.

(STREAM_DROPPED cannot be provoked on qemu-m4 without faking it; tests/test_pipeline_drops.py
says why and tests that path with the host g++.)

TFLM tier: needs a TFLM library tree ($TINYFORGE_TFLM), arm-none-eabi GCC and QEMU, and
TensorFlow (the host reference of the frontend).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import tone_audio
from qemu_support import require_emulator, seeded_core

from tinyforge.device import emulator, replay
from tinyforge.device.conversation import Conversation, wait_for_boot
from tinyforge.pipeline import audio, load_pipeline

REPO = Path(__file__).resolve().parent.parent
KEYWORD = REPO / "examples" / "keyword"
DISCARD_MS = 250     # 4,000 samples: short, since QEMU's UART moves a few KB/s
DISCARD = DISCARD_MS * 16


@pytest.fixture
def env(cli_env, tmp_path_factory):
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))


def frames_of(events: replay.ReplayEvents) -> np.ndarray:
    rows = sorted(events.features, key=lambda f: f.n)
    assert [f.n for f in rows] == list(range(len(rows)))    # every frame, once, in order
    return np.asarray([f.values for f in rows], dtype=np.int64)


@pytest.mark.slow
@pytest.mark.tflm_tree
@pytest.mark.tensorflow
def test_replay_discard_drops_the_microphones_first_samples(tinyforge, tflm_tree, env,
                                                            tmp_path):
    require_emulator()
    config = tmp_path / "tinyforge.toml"
    config.write_text((KEYWORD / "tinyforge.toml").read_text().replace(
        "discard_ms = 3500", f"discard_ms = {DISCARD_MS}"))
    model = KEYWORD / "keyword_int8.tflite"
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--input", "microphone",
                                 "--model", model, "--labels", KEYWORD / "labels.txt",
                                 "--config", config, "--tflm", tflm_tree, "--arena", "host",
                                 "--project-dir",
                                 tmp_path / "keyword", "--json", env=env, timeout=3600,
                                 check_rc=0).stdout)
    assert built["pipeline"]["microphone"]["discard_ms"] == DISCARD_MS
    front = load_pipeline(config, model=model).microphone.frontend
    # 1.25 s after the discarded part: the frontend's 62 frames, three inferences (49 frames,
    # then one every 5).
    recording = tone_audio(DISCARD_MS / 1000 + 1.25, seed=3)
    kept = recording[DISCARD:DISCARD + 8000]
    host_kept, = audio.frontend([recording[DISCARD:]], front)
    with emulator.launch(built["build"]["firmware"]) as link:
        conversation = Conversation(link)
        boot = wait_for_boot(conversation, ask=False)
        dropped = replay.stream(conversation, "microphone", recording, max_line=boot.max_line,
                                features=True, discard=True, stall_timeout=120)
        # REPLAY again, without discard: a new stream, of what the first one kept.
        undropped = replay.stream(conversation, "microphone", kept, max_line=boot.max_line,
                                  features=True, stall_timeout=120)
        # Compiled with GCC's default fused multiply-adds, the frontend's start-up tables made
        # frame 13 of this half second read 431 in channel 38, where TensorFlow's op gives 432
        # (tinyforge.board.float_code).
        tone = tone_audio(1.5, seed=3)[:8000]
        toned = replay.stream(conversation, "microphone", tone, max_line=boot.max_line,
                              features=True, stall_timeout=120)
    host_tone, = audio.frontend([tone], front)
    assert np.array_equal(frames_of(toned), host_tone)
    assert len(host_kept) == 62
    assert np.array_equal(frames_of(dropped), host_kept)
    # The stream's time starts after the discarded samples: frame k ends at k * 20 + 30 ms.
    assert [r.seq for r in dropped.results] == [0, 1, 2]
    assert [int(r.extra["t"]) for r in dropped.results] == [48 * 20 + 30, 53 * 20 + 30,
                                                            58 * 20 + 30]
    assert len(undropped.features) == 24
    assert np.array_equal(frames_of(undropped), frames_of(dropped)[:24])
