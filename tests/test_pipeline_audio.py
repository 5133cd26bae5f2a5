"""The audio pipeline: TensorFlow's frontend op as the host reference, and TFLM's C frontend.

Default tier (needs TensorFlow, as `make setup` installs): the features of a recording are
the op's frames, mapped and windowed exactly as specified, and the op is a stream (a prefix
of the audio gives a prefix of the frames), which is what makes a chunked device stream
comparable at all.

TFLM tier (TINYFORGE_TFLM): the micro frontend C sources of the board's TFLM library are
compiled with the host gcc and fed real speech made here with espeak-ng, as a continuous
stream through tinyforge's ring buffer (256-sample PDM blocks, read in several chunk sizes):
every frame equals the op's. Fed like the Arduino micro_speech example (overlapping 30 ms
windows every 20 ms), most values differ: the documented trap.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from pipeline_support import (FRONTEND_LIB, frontend_args, frontend_objects, model_info,
                              tone_audio)

from tinyforge import proc
from tinyforge.pipeline import arith, audio, compute, compute_many, load_pipeline, windows

ROOT = Path(__file__).resolve().parents[1]
PARTS_DIR = ROOT / "firmware_templates" / "pipeline"
FRONTEND_HARNESS = ROOT / "tests" / "cpp" / "frontend_harness.cpp"
SPEECH = (  # (words, espeak-ng voice, speed wpm, pitch 0-99)
    ("yes", "en-us", 140, 50), ("no", "en-gb", 170, 30), ("left", "en-us", 120, 75),
    ("tiny forge", "en-gb-scotland", 150, 40), ("stop go", "en-us", 200, 60))
SPEECH_MODEL = model_info((1, 49, 40), "int8", 26 / 256, -128)
# Every test here runs TensorFlow's audio_microfrontend op in a child process.
pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module", autouse=True)
def tensorflow():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (`make setup`): the audio frontend's host "
                    "reference is its audio_microfrontend op")


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


PREFIXES = (480, 481, 5000, 16000, 20000)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One TensorFlow child for every clip of the tests below (it takes seconds to start)."""
    samples = tone_audio(2.5, seed=1)
    wav = write_wav(tmp_path_factory.mktemp("wav") / "tones.wav", samples)
    pipeline = load_pipeline(None, model=SPEECH_MODEL, kind="microphone")
    others = [tone_audio(1.2, seed=s) for s in range(3)]
    sources = [wav, samples, *[samples[:n] for n in PREFIXES], *others]
    return samples, pipeline, compute_many(sources, pipeline)


def test_features_are_the_frontend_frames_mapped_and_windowed(runs):
    samples, pipeline, results = runs
    result = results[0]
    frames = result.frames
    assert frames.dtype == np.uint16
    assert frames.shape == (audio.frame_count(len(samples), pipeline.microphone.frontend), 40)
    assert frames.shape[0] == (len(samples) - 480) // 320 + 1 == 124
    assert len(np.unique(frames)) > 100       # the frontend really ran on sound
    rows = arith.micro_speech_int8(frames)
    ends = windows.window_ends(len(rows), 49, 5)
    assert result.ends.tolist() == ends.tolist() == list(range(48, 124, 5))
    assert np.array_equal(result.inputs, np.stack([rows[e - 48:e + 1] for e in ends]))
    # The stream time of a window is the end of its last frame: frame k ends at 20k + 30 ms.
    assert result.times_ms.tolist() == [20 * int(e) + 30 for e in ends]
    # The WAV reader gave the frontend exactly the samples written.
    assert np.array_equal(results[1].frames, frames)


def test_the_frontend_op_is_a_stream(runs):
    # Frames depend only on the audio before them: a prefix gives a prefix of the frames.
    samples, pipeline, results = runs
    whole = results[1].frames
    for n, part in zip(PREFIXES, results[2:2 + len(PREFIXES)]):
        assert len(part.frames) == audio.frame_count(n, pipeline.microphone.frontend)
        assert np.array_equal(part.frames, whole[:len(part.frames)])


def test_batched_features_are_each_clips_own(runs):
    samples, pipeline, results = runs
    others = results[2 + len(PREFIXES):]
    for run in others:
        assert np.array_equal(run.inputs, audio.from_frames(run.frames, pipeline).inputs)
    # Different clips, different features: nothing leaked from one clip into the next.
    assert not np.array_equal(others[0].frames[:10], others[1].frames[:10])
    assert others[0].frames.shape == (audio.frame_count(len(tone_audio(1.2)),
                                                        pipeline.microphone.frontend), 40)


def test_frontend_config_reaches_the_op(tmp_path):
    # 32 channels and a 25/10 ms frame: the model's shape and the file decide the frames.
    config = tmp_path / "tinyforge.toml"
    config.write_text("[microphone.frontend]\nwindow_ms = 25\nstride_ms = 10\n")
    model = model_info((1, 98, 32), "float32")
    pipeline = load_pipeline(config, model=model, kind="microphone")
    result = compute(tone_audio(1.5, seed=3), pipeline)
    assert result.frames.shape == ((24000 - 400) // 160 + 1, 32)
    assert result.inputs.shape[1:] == (98, 32) and result.inputs.dtype == np.float32
    # float features: value * 10/256, exact in float32.
    expected = result.frames[result.ends[0] - 97:result.ends[0] + 1] * np.float32(10 / 256)
    assert np.array_equal(result.inputs[0], expected.astype(np.float32))


# --- TFLM tier: the board library's C frontend -----------------------------------------------

@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[tuple[str, np.ndarray]]:
    """Words spoken by espeak-ng, converted to 16 kHz mono 16-bit by sox, with silence and a
    little noise around."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        pytest.skip("espeak-ng and sox make the speech for this test "
                    "(Debian: apt-get install espeak-ng sox)")
    work = tmp_path_factory.mktemp("speech")
    clips = []
    for i, (words, voice, speed, pitch) in enumerate(SPEECH):
        raw, converted = work / f"{i}-raw.wav", work / f"{i}.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw),
                        words], check=True, capture_output=True, timeout=60)
        subprocess.run([sox, "-R", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(converted),
                        "pad", "0.3", "0.4"], check=True, capture_output=True, timeout=60)
        with wave.open(str(converted), "rb") as reader:
            samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
        # A microphone's floor of noise: espeak-ng's silence is exact zeros.
        noise = np.random.default_rng(i).normal(0, 40, len(samples))
        clips.append((words, np.clip(samples + noise, -32768, 32767).astype(np.int16)))
    # One longer stream: all the words in a row, as a microphone would hear them.
    clips.append(("all", np.concatenate([c for _, c in clips])))
    return clips


@pytest.fixture(scope="module")
def frontend_harness(tflm_tree, tmp_path_factory) -> Path:
    gcc, gxx = shutil.which("gcc"), shutil.which("g++")
    if gcc is None or gxx is None:
        pytest.skip("gcc/g++ are not installed")
    lib = tflm_tree / FRONTEND_LIB
    if not lib.is_dir():
        pytest.skip(f"{tflm_tree} has no micro frontend ({FRONTEND_LIB})")
    work = tmp_path_factory.mktemp("frontend")
    include = f"-I{tflm_tree / 'src'}"
    objects = frontend_objects(tflm_tree, work, gcc, gxx, optimize="-O2")
    executable = work / "frontend_harness"
    proc.run([gxx, "-std=c++11", "-O2", "-Wall", "-Werror", include, f"-I{PARTS_DIR}",
              FRONTEND_HARNESS, *objects, "-o", executable, "-lm"], timeout=180,
             what="linking the frontend harness")
    return executable


def c_frontend(executable: Path, samples: np.ndarray, front, mode: str, chunk: int,
               work: Path) -> np.ndarray:
    source, output = work / "in.raw", work / f"out-{mode}-{chunk}.raw"
    source.write_bytes(samples.astype("<i2").tobytes())
    proc.run([executable, mode, chunk, source, output, *frontend_args(front)], timeout=120,
             what="frontend harness")
    return np.frombuffer(output.read_bytes(), "<u2").reshape(-1, front.channels)


@pytest.fixture(scope="module")
def speech_frames(speech):
    """The op's frames for every speech clip, in one TensorFlow child."""
    front = load_pipeline(None, model=SPEECH_MODEL, kind="microphone").microphone.frontend
    return audio.frontend([s for _, s in speech], front)


@pytest.mark.tflm_tree
def test_board_frontend_equals_the_tf_op_on_speech(frontend_harness, speech, speech_frames,
                                                   tmp_path):
    front = load_pipeline(None, model=SPEECH_MODEL, kind="microphone").microphone.frontend
    for (words, samples), reference in zip(speech, speech_frames):
        assert len(reference) >= 49, words  # at least one model input of speech
        feeds = [("ring", 256), ("ring", 100), ("ring", 512), ("ring", 4096),
                 ("direct", 1), ("direct", 320), ("direct", 480), ("direct", 1000)]
        for mode, chunk in feeds:
            got = c_frontend(frontend_harness, samples, front, mode, chunk, tmp_path)
            assert got.shape == reference.shape, (words, mode, chunk)
            assert np.array_equal(got, reference), (words, mode, chunk,
                                                    int((got != reference).sum()))


@pytest.mark.tflm_tree
def test_overlapping_feeding_breaks_the_features(frontend_harness, speech, speech_frames,
                                                 tmp_path):
    """micro_speech's Arduino feeding duplicates 10 ms per frame: most features change."""
    pipeline = load_pipeline(None, model=SPEECH_MODEL, kind="microphone")
    front = pipeline.microphone.frontend
    worst = []
    for (words, samples), reference in zip(speech[:-1], speech_frames[:-1]):
        overlapped = c_frontend(frontend_harness, samples, front, "micro_speech", 1, tmp_path)
        assert overlapped.shape == reference.shape
        # The model input holding the word (the one with the most energy): how many of its
        # 1,960 int8 values differ from what the model was trained on.
        good = audio.from_frames(reference, pipeline).inputs
        bad = audio.from_frames(overlapped, pipeline).inputs
        loudest = int(np.argmax(good.reshape(len(good), -1).astype(int).sum(axis=1)))
        differing = int((good[loudest] != bad[loudest]).sum())
        worst.append(differing)
        sound = reference.any(axis=1)  # frames the noise reduction did not silence
        assert (overlapped != reference)[sound].mean() > 0.4, words
    # Measured here: 1,134 to 1,271 of 1,960 values differ in the word's input.
    assert min(worst) > 1960 * 0.4, worst
