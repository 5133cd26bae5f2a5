"""Make the keyword example's data on this machine, offline, and train its int8 model.

    .venv/bin/python examples/keyword/train.py                 # rewrites examples/keyword/
    .venv/bin/python examples/keyword/train.py --output-dir /tmp/keyword

Words are spoken by Debian's espeak-ng (`apt install espeak-ng sox`) with many voices and
variants, speeds and pitches, resampled to 16 kHz by sox, placed at a random point of a one
second clip at a random level, and mixed with generated noise (white, pink, brown, mains hum)
at a random signal-to-noise ratio. Nothing is downloaded. Classes, in output order:

- silence: noise alone, from nearly nothing to loud;
- unknown: other words;
- yes, no: the keywords.

The clips go through tinyforge's own audio pipeline (`tinyforge.pipeline.features_many`,
the TensorFlow `audio_microfrontend` op with micro_speech's recipe, as in `tinyforge.toml`),
so the model is trained on exactly what the board computes from its microphone. The voices
of the test set are not used for training. Everything is seeded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SEED = 20261201
LABELS = ("silence", "unknown", "yes", "no")
KEYWORDS = {"yes": 2, "no": 3}
UNKNOWN_WORDS = ("up", "down", "left", "right", "go", "stop", "on", "off", "wow", "six",
                 "seven", "bird", "cat", "dog", "house", "tree", "bed", "happy", "yellow",
                 "nine", "zero", "yet", "less", "new", "four")
# (language voice, variant) pairs; the test set uses voices training never heard.
TRAIN_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "klatt", "klatt2",
                  "adam", "andy", "linda", "steph", "john", "max", "annie")
TEST_LANGUAGES = ("en-gb-x-gbclan", "en-gb-x-gbcwmd")
TEST_VARIANTS = ("m7", "f4", "f5", "klatt3", "benjamin", "belinda")
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE          # one second: 49 frames of the micro_speech recipe
TRAIN_PER_CLASS = 700
TEST_PER_CLASS = 60
CALIBRATION_SAMPLES = 64
EPOCHS = 40
TOOL_TIMEOUT_S = 30.0


# --- speech and noise --------------------------------------------------------------------

def speak(word: str, voice: str, speed: int, pitch: int, workdir: Path) -> np.ndarray:
    """`word` spoken by espeak-ng, as int16 samples at 16 kHz (sox resamples its 22,050 Hz)."""
    from tinyforge import proc

    raw, resampled = workdir / "raw.wav", workdir / "16k.wav"
    proc.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw),
              word], timeout=TOOL_TIMEOUT_S, what="espeak-ng",
             install_hint="apt install espeak-ng")
    # -R: repeatable (sox seeds its dither from the clock otherwise).
    proc.run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)],
             timeout=TOOL_TIMEOUT_S, what="sox", install_hint="apt install sox")
    with wave.open(str(resampled), "rb") as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").copy()


def trim_silence(samples: np.ndarray, threshold: int = 300) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    return samples[loud[0]:loud[-1] + 1] if len(loud) else samples[:0]


def noise(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of one kind, float64."""
    if kind == "hum":
        t = np.arange(count) / SAMPLE_RATE
        mains = rng.choice([50.0, 60.0])
        signal = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3))
                     for k in (1, 2, 3, 5))
        signal = signal + 0.3 * rng.normal(size=count)
    else:
        spectrum = np.fft.rfft(rng.normal(size=count))
        freqs = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
        freqs[0] = freqs[1]
        exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind]
        signal = np.fft.irfft(spectrum / freqs ** exponent, n=count)
    return signal / (np.sqrt(np.mean(signal ** 2)) + 1e-12)


NOISES = ("white", "pink", "brown", "hum")


def make_clip(label: int, voices: tuple, rng: np.random.Generator, workdir: Path) -> np.ndarray:
    """One second of int16 audio of class `label`."""
    background = noise(NOISES[rng.integers(len(NOISES))], CLIP_SAMPLES, rng)
    if label == 0:
        level = 32768 * 10 ** rng.uniform(-4.0, -1.2)   # about -80 to -24 dBFS RMS
        clip = background * level
    else:
        word = (LABELS[label] if label >= 2
                else UNKNOWN_WORDS[rng.integers(len(UNKNOWN_WORDS))])
        language, variant = voices[rng.integers(len(voices))]
        speech = trim_silence(speak(word, f"{language}+{variant}", int(rng.integers(120, 210)),
                                    int(rng.integers(20, 80)), workdir))
        speech = speech[:CLIP_SAMPLES - 800].astype(np.float64)
        peak = np.max(np.abs(speech)) if len(speech) else 1.0
        speech *= 32767 * rng.uniform(0.15, 0.9) / max(peak, 1.0)
        # Anywhere in the second, up to a fifth of the word past either edge: in a stream
        # the model sees the word at every position as it slides by (an inference every
        # 100 ms), and the decision filter averages those.
        cut = len(speech) // 5
        start = int(rng.integers(-cut, CLIP_SAMPLES - len(speech) + cut + 1))
        clip = np.zeros(CLIP_SAMPLES)
        first, last = max(start, 0), min(start + len(speech), CLIP_SAMPLES)
        clip[first:last] = speech[first - start:last - start]
        rms = np.sqrt(np.mean(speech ** 2)) if len(speech) else 1.0
        snr_db = rng.uniform(5.0, 35.0)
        clip += background * rms / 10 ** (snr_db / 20)
    return np.clip(np.round(clip), -32768, 32767).astype(np.int16)


def make_clips(per_class: int, voices: tuple, rng: np.random.Generator,
               workdir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    clips, labels = [], []
    for _ in range(per_class):
        for label in range(len(LABELS)):
            clips.append(make_clip(label, voices, rng, workdir))
            labels.append(label)
    return clips, np.array(labels, dtype=np.int64)


def voice_pairs(languages: tuple, variants: tuple) -> tuple:
    return tuple((language, variant) for language in languages for variant in variants)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples.astype("<i2").tobytes())


# --- model ---------------------------------------------------------------------------------

def build_model(keras, batch_size: int | None, frames: int, channels: int):
    """Two strided convolutions and a dense layer: ~8k parameters."""
    inputs = keras.Input((frames, channels, 1), batch_size=batch_size, name="features")
    x = keras.layers.Conv2D(8, (10, 8), strides=(2, 2), padding="same", activation="relu",
                            name="conv1")(inputs)
    x = keras.layers.Conv2D(16, (5, 5), strides=(2, 2), padding="same", activation="relu",
                            name="conv2")(x)
    x = keras.layers.Dropout(0.25, name="dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="keyword")(x)
    return keras.Model(inputs, outputs, name="keyword")


def train(x: np.ndarray, y: np.ndarray):
    import keras

    keras.utils.set_random_seed(SEED)
    frames, channels = x.shape[1], x.shape[2]
    trainer = build_model(keras, None, frames, channels)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(x, y, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0)
    model = build_model(keras, 1, frames, channels)
    model.set_weights(trainer.get_weights())
    return model


def features(clips: list[np.ndarray], pipeline) -> np.ndarray:
    """[N, 49, 40, 1] float32: what the board's pipeline computes from each clip."""
    from tinyforge import pipeline as tfpipeline

    windows = tfpipeline.features_many(clips, pipeline)
    return np.stack([w[0] for w in windows])[..., None].astype(np.float32)


def int8_accuracy(model_path: Path, clips: list[np.ndarray], y: np.ndarray, config: Path
                  ) -> tuple[float, np.ndarray]:
    """Accuracy of the int8 model in the host TFLM on the int8 inputs the device computes."""
    from tinyforge import pipeline as tfpipeline

    p = tfpipeline.load_pipeline(config, model=model_path)
    windows = tfpipeline.features_many(clips, p)
    from tinyforge.model.host_runtime import run_batch

    data = model_path.read_bytes()
    results = run_batch(data, [[w[0:1].reshape(1, *p.input.shape[1:])] for w in windows], 1,
                        model_path.name)
    predicted = np.array([int(np.argmax(r[0])) for r in results])
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for truth, guess in zip(y, predicted):
        confusion[truth, guess] += 1
    return float(np.mean(predicted == y)), confusion


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tinyforge import pipeline as tfpipeline
    from tinyforge.board.profiles import load_board
    from tinyforge.model.compat import per_channel_fc_supported
    from tinyforge.model.convert import convert

    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=here)
    parser.add_argument("--per-class", type=int, default=TRAIN_PER_CLASS)
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    args = parser.parse_args(argv)
    out = args.output_dir
    (out / "samples").mkdir(parents=True, exist_ok=True)
    config = here / "tinyforge.toml"

    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        train_voices = voice_pairs(TRAIN_LANGUAGES, TRAIN_VARIANTS)
        test_voices = voice_pairs(TEST_LANGUAGES, TEST_VARIANTS)
        train_clips, y_train = make_clips(args.per_class, train_voices, rng, workdir)
        test_clips, y_test = make_clips(args.test_per_class, test_voices, rng, workdir)
    print(f"{len(train_clips) + len(test_clips)} clips made in "
          f"{time.monotonic() - started:.1f} s")

    float_pipeline = tfpipeline.load_pipeline(config)
    x_train = features(train_clips, float_pipeline)
    x_test = features(test_clips, float_pipeline)
    started = time.monotonic()
    model = train(x_train, y_train)
    print(f"trained in {time.monotonic() - started:.1f} s")
    float_accuracy = float(np.mean(np.argmax(model.predict(x_test, batch_size=1, verbose=0),
                                             axis=1) == y_test))
    print(f"float accuracy on {len(x_test)} clips of unheard voices: {100 * float_accuracy:.1f}%")

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "keyword.keras"
        calibration = Path(tmp) / "calibration.npz"
        model.save(keras_path)
        pick = np.random.default_rng(SEED + 1).permutation(len(x_train))[:CALIBRATION_SAMPLES]
        np.savez(calibration, x=x_train[pick])
        board = load_board("nano33ble")
        result = convert(keras_path, calibration=calibration, quantize="int8",
                         output=out / "keyword_int8.tflite",
                         per_channel_dense=per_channel_fc_supported(board))
    accuracy, confusion = int8_accuracy(out / "keyword_int8.tflite", test_clips, y_test, config)
    print(f"int8 accuracy (host TFLM, device pipeline): {100 * accuracy:.1f}%")
    (out / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    # Recordings for `validate --replay` and `features`: one clip of each keyword, from the
    # test voices, with two seconds of quiet before it so the decision filter sees a start.
    replay_rng = np.random.default_rng(SEED + 2)
    with tempfile.TemporaryDirectory() as tmp:
        for word in KEYWORDS:
            clip = make_clip(KEYWORDS[word], test_voices, replay_rng, Path(tmp))
            quiet = make_clip(0, test_voices, replay_rng, Path(tmp))
            write_wav(out / "samples" / f"{word}.wav", np.concatenate([quiet, clip, quiet]))
    write_readme(out, {"stream": stream_section(out, config),
                       "tflite_bytes": result.model_bytes, "params": model.count_params(),
                       "train": len(train_clips), "test": len(test_clips),
                       "float_accuracy": float_accuracy, "int8_accuracy": accuracy,
                       "confusion": confusion})
    return 0


def stream_section(out: Path, config: Path) -> str:
    """What the whole device pipeline (frontend, windows every 100 ms, int8 model in the host
    TFLM, decisions) makes of the sample recordings."""
    from tinyforge import pipeline as tfpipeline

    model = out / "keyword_int8.tflite"
    p = tfpipeline.load_pipeline(config, model=model)
    lines = []
    for word in KEYWORDS:
        run = tfpipeline.run(out / "samples" / f"{word}.wav", p, model=model)
        top = [LABELS[int(i)] for i in np.argmax(run.scores, axis=1)]
        said = ", ".join(f"{LABELS[d.label]} at {d.time_ms} ms (score {d.score})"
                         for d in run.decisions) or "nothing"
        lines.append(f"- `samples/{word}.wav`: decisions: {said}; top class of the "
                     f"{len(top)} windows: {' '.join(top)}")
    return "\n".join(lines)


def write_readme(out: Path, facts: dict) -> None:
    header = "| truth \\ predicted | " + " | ".join(LABELS) + " |"
    rows = [header, "|---" * (len(LABELS) + 1) + "|"]
    for label, row in zip(LABELS, facts["confusion"]):
        rows.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    table = "\n".join(rows)
    text = f"""# Keyword example: "yes" and "no" from the microphone

Generated by `examples/keyword/train.py`; do not edit. Re-make the model, the labels, the
sample recordings and this file, offline, with

    apt install espeak-ng sox
    .venv/bin/python examples/keyword/train.py

(seed {SEED}; a few minutes on 2 cores: most of it is espeak-ng and sox, once per clip).

## What it is
A micro_speech-style keyword spotter: classes {', '.join(LABELS)}. Input int8 `[1, 49, 40, 1]`:
one second of audio as 49 frames of 40 channels of TFLM's micro frontend with micro_speech's
recipe (`tinyforge.toml`), computed on the board from the PDM microphone
(`tinyforge build --input microphone`). Conv2D(8, 10x8, stride 2) - Conv2D(16, 5x5, stride 2) -
Dense({len(LABELS)}), {facts['params']:,} parameters; `keyword_int8.tflite` is
{facts['tflite_bytes']:,} bytes, made by `tinyforge.model.convert` with per-tensor dense
weights (the board's TFLM).

## The data, made here
Words spoken by espeak-ng with {len(TRAIN_LANGUAGES)} English voices x {len(TRAIN_VARIANTS)}
variants for training and {len(TEST_LANGUAGES)} other voices x {len(TEST_VARIANTS)} other
variants for testing, speeds 120-210 words per minute, pitch 20-80, resampled to 16 kHz by
sox, placed at a random point of a 1 s clip (up to a fifth of the word past an edge) at a
random level, mixed with white, pink, brown
noise or mains hum at 5-35 dB SNR; silence is noise alone at -80 to -24 dBFS. "unknown" is
{len(UNKNOWN_WORDS)} other words, some close to the keywords ("yet", "new"; never a homophone such as "know").
{facts['train']} training clips, {facts['test']} test clips (balanced classes).

The features come from `tinyforge.pipeline.features_many()`: the same stream, frontend and
int8 mapping the firmware computes, bit for bit.

## Accuracy on the test voices
- float model: {100 * facts['float_accuracy']:.1f}%
- int8 model in the host TFLM, on the int8 inputs the device computes:
  {100 * facts['int8_accuracy']:.1f}%

{table}

## From a stream
The same recordings as the board hears them, through the whole pipeline (an inference every
100 ms, the decision filter of `tinyforge.toml`):
{facts['stream']}

The weak point is streaming: trained on one-second clips holding the whole word (up to a fifth
past an edge), the model calls a word "unknown" in the windows where it is sliding in or out,
so a keyword is recognised only when its own windows outnumber those; micro_speech's 1 s
average with a 0.78 threshold never fires for it, hence 400 ms and 0.6.

Synthetic voices are not people: expect lower accuracy from a real microphone, and record
your own words with `tinyforge capture --input microphone` to train on them.

## Files
| file | what |
|---|---|
| `train.py` | makes the data and the model (this page too) |
| `tinyforge.toml` | the pipeline: microphone, micro_speech frontend, RecognizeCommands decisions |
| `keyword_int8.tflite` | the int8 model |
| `labels.txt` | class names in output order |
| `samples/yes.wav`, `samples/no.wav` | 16 kHz mono recordings (1 s of quiet, the word, 1 s of quiet) from the test voices, for `tinyforge features` and `tinyforge validate --replay` |

## Use

    tinyforge build --model examples/keyword/keyword_int8.tflite --labels examples/keyword/labels.txt \\
        --input microphone --board nano33ble
    tinyforge features examples/keyword/samples/yes.wav --config examples/keyword/tinyforge.toml \\
        --model examples/keyword/keyword_int8.tflite
"""
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
