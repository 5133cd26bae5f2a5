"""Train tinyforge's bundled example: a 4-gesture classifier for accelerometer windows.

    .venv/bin/python examples/gesture/train.py            # rewrites tinyforge/example/
    .venv/bin/python examples/gesture/train.py --output-dir /tmp/gesture

The data is synthetic but shaped like what the Nano 33 BLE Sense's IMU gives: 32 samples
(25 Hz, 1.28 s) of acceleration (ax, ay, az) in g, gravity included, sensor noise added and
readings rounded to the IMU's resolution. Classes:
- idle:   the board held still at a random tilt, with a slight hand tremor;
- shake:  a fast (4-6 Hz), strong (1-2 g) back-and-forth along one axis;
- wave:   the wrist rocking side to side (1.2-2 Hz): gravity swings between z and x while the
          hand moves sideways;
- circle: the hand drawing a circle (0.8-1.3 Hz) in a plane: x and y in quadrature.

Everything is seeded, so a run gives the same data and (on the same machine) the same
weights. The int8 model is made by tinyforge's own conversion (`tinyforge.model.convert`),
the same code `tinyforge build` uses for a user's .keras file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

SEED = 20240607
LABELS = ("idle", "shake", "wave", "circle")
WINDOW = 32                # samples per window
RATE_HZ = 25.0             # after decimating the IMU's 119 Hz
RESOLUTION_G = 1 / 4096    # LSM9DS1 at +-8 g: 0.244 mg per LSB
RANGE_G = 8.0
NOISE_G = 0.03
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
CALIBRATION_PER_CLASS = 32
EPOCHS = 20


# --- synthetic accelerometer windows ---------------------------------------------------

def _time(n: int = WINDOW, rate_hz: float = RATE_HZ) -> np.ndarray:
    return np.arange(n) / rate_hz


def _rotation(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """A random tilt of the board: rotation about x then y, each within +-max_tilt."""
    ax, ay = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, size=2))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return ry @ rx


def _gravity(rng: np.random.Generator, n: int = WINDOW) -> np.ndarray:
    # Held roughly flat, screen up: gravity reads +1 g on z.
    return np.tile(_rotation(rng, 20) @ np.array([0.0, 0.0, 1.0]), (n, 1))


# Each generator draws `n` samples at `rate_hz`: the model's 32 at 25 Hz for training, or a
# stream at an IMU's own rate for the check through the device pipeline (check_imu_streams).
def _idle(rng: np.random.Generator, n: int = WINDOW, rate_hz: float = RATE_HZ) -> np.ndarray:
    t = _time(n, rate_hz)
    tremor = 0.015 * np.sin(2 * np.pi * rng.uniform(8, 11) * t + rng.uniform(0, 2 * np.pi))
    return _gravity(rng, n) + tremor[:, None] * rng.normal(size=3)


def _shake(rng: np.random.Generator, n: int = WINDOW, rate_hz: float = RATE_HZ) -> np.ndarray:
    t = _time(n, rate_hz)
    axis = _rotation(rng, 25) @ np.array([1.0, 0.0, 0.0])
    f, amp, phase = rng.uniform(4, 6), rng.uniform(1.0, 2.0), rng.uniform(0, 2 * np.pi)
    # A hand shake is not a pure sine: a second harmonic makes the stops sharper.
    motion = amp * (np.sin(2 * np.pi * f * t + phase)
                    + 0.25 * np.sin(4 * np.pi * f * t + 2 * phase))
    return _gravity(rng, n) + motion[:, None] * axis


def _wave(rng: np.random.Generator, n: int = WINDOW, rate_hz: float = RATE_HZ) -> np.ndarray:
    t = _time(n, rate_hz)
    f = rng.uniform(1.2, 2.0)
    tilt = np.radians(rng.uniform(25, 45))
    phase = rng.uniform(0, 2 * np.pi)
    angle = tilt * np.sin(2 * np.pi * f * t + phase)
    base = _rotation(rng, 10)
    gravity = np.stack([np.sin(angle), np.zeros(n), np.cos(angle)], axis=1) @ base.T
    sideways = rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * f * t + phase + np.pi / 2)
    return gravity + sideways[:, None] * (base @ np.array([1.0, 0.0, 0.0]))


def _circle(rng: np.random.Generator, n: int = WINDOW, rate_hz: float = RATE_HZ) -> np.ndarray:
    t = _time(n, rate_hz)
    f, amp, phase = rng.uniform(0.8, 1.3), rng.uniform(0.3, 0.7), rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    angle = 2 * np.pi * f * t * direction + phase
    plane = np.stack([np.cos(angle), np.sin(angle), np.zeros(n)], axis=1)
    return _gravity(rng, n) + amp * plane @ _rotation(rng, 20).T


_GENERATORS = (_idle, _shake, _wave, _circle)


def _sensor(window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the IMU reports: plus noise, clipped to its range, rounded to its resolution."""
    noisy = window + rng.normal(0.0, NOISE_G, size=window.shape)
    clipped = np.clip(noisy, -RANGE_G, RANGE_G)
    return (np.round(clipped / RESOLUTION_G) * RESOLUTION_G).astype(np.float32)


def make_dataset(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` windows of each gesture, classes interleaved: x [N, 32, 3], y [N]."""
    x, y = [], []
    for _ in range(per_class):
        for label, generate in enumerate(_GENERATORS):
            x.append(_sensor(generate(rng), rng))
            y.append(label)
    return np.stack(x), np.array(y, dtype=np.int64)


# --- through the device pipeline ------------------------------------------------------

PIPELINE_CONFIG = Path(__file__).resolve().with_name("tinyforge.toml")
IMU_RATES_HZ = {"rev1 LSM9DS1": 119.0, "rev2 BMI270": 99.84}
STREAMS_PER_CLASS = 50
STREAM_SECONDS = 1.6


def device_windows(x: np.ndarray) -> np.ndarray:
    """The windows the board's pipeline computes from readings at the model's rate: the
    readings as IMU counts (8192 per g), then the training normalisation of tinyforge.toml
    (none here). With these generators that is the same float32 data, bit for bit (no
    reading beyond the IMU's +-4 g), which `main` checks."""
    from tinyforge import pipeline

    config = pipeline.load_pipeline(PIPELINE_CONFIG)
    return np.stack([pipeline.features(window, config, rate_hz=RATE_HZ)[0] for window in x])


def check_imu_streams(model_path: Path, rng: np.random.Generator) -> dict[str, float]:
    """Accuracy of the int8 model (host TFLM) on what the board computes from each IMU:
    streams of every gesture at the part's own rate, resampled to 25 Hz, windowed and
    quantised by the device pipeline (`tinyforge.pipeline`), the first window of each."""
    from tinyforge import pipeline
    from tinyforge.model.host_runtime import run_batch

    config = pipeline.load_pipeline(PIPELINE_CONFIG, model=model_path)
    data = model_path.read_bytes()
    accuracy = {}
    for part, rate_hz in IMU_RATES_HZ.items():
        n = int(STREAM_SECONDS * rate_hz)
        inputs, labels = [], []
        for _ in range(STREAMS_PER_CLASS):
            for label, generate in enumerate(_GENERATORS):
                stream = _sensor(generate(rng, n, rate_hz), rng)
                window = pipeline.features(stream, config, rate_hz=rate_hz)[0]
                inputs.append([window[None]])
                labels.append(label)
        outputs = run_batch(data, inputs, 1, model_path.name)
        predicted = np.array([int(np.argmax(o[0])) for o in outputs])
        accuracy[part] = float(np.mean(predicted == np.array(labels)))
    return accuracy


# --- model -----------------------------------------------------------------------------

def build_model(keras, batch_size: int | None):
    """Conv1D feature extractor and a small dense head; ~2.2k parameters."""
    inputs = keras.Input((WINDOW, 3), batch_size=batch_size, name="accel")
    x = keras.layers.Conv1D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling1D(2, name="pool1")(x)
    x = keras.layers.Conv1D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling1D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="gesture")(x)
    return keras.Model(inputs, outputs, name="gesture")


def train(x: np.ndarray, y: np.ndarray):
    """Train with a dynamic batch (fast), then copy the weights into the batch-1 model."""
    import keras

    keras.utils.set_random_seed(SEED)
    trainer = build_model(keras, None)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(x, y, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0)
    # The device runs one window at a time; a fixed batch of 1 keeps SHAPE/PACK ops out.
    model = build_model(keras, 1)
    model.set_weights(trainer.get_weights())
    return model


def predict(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(len(x))])


# --- outputs ---------------------------------------------------------------------------

def pick_demo(model, rng: np.random.Generator) -> np.ndarray:
    """A clear "shake" window for the firmware's built-in demo: [1, 32, 3] float32."""
    shake = LABELS.index("shake")
    for _ in range(100):
        window = _sensor(_shake(rng), rng)[None]
        if predict(model, window)[0, shake] > 0.95:
            return window
    raise RuntimeError("no confidently classified shake window; the model is undertrained")


def write_readme(out: Path, facts: dict) -> None:
    text = f"""# tinyforge's bundled example: gesture classifier

Generated by `examples/gesture/train.py`; do not edit. Re-make everything in this folder with

    .venv/bin/python examples/gesture/train.py

(seed {SEED}; under a minute on 2 cores).
`tinyforge build` uses this model when no `--model` is given.

## What it is
A classifier of 1.28 s accelerometer windows into {', '.join(LABELS)}: input float32
`[1, {WINDOW}, 3]` ({WINDOW} samples at {RATE_HZ:g} Hz of ax, ay, az in g, gravity included), output
the probabilities of the {len(LABELS)} classes (softmax). The Nano 33 BLE Sense's IMU (LSM9DS1 on
rev1, BMI270 on rev2) gives such windows. Conv1D(8) - MaxPool - Conv1D(16) - MaxPool - Dense(16) -
Dense({len(LABELS)}): {facts['params']} parameters, batch fixed to 1.

The training data is synthetic (see the generators in `train.py`): gravity at a random tilt,
each gesture's motion, {NOISE_G} g of sensor noise, readings rounded to {RESOLUTION_G * 1000:.3f} mg.
Float model accuracy on {facts['test_samples']} held-out windows: {100 * facts['float_accuracy']:.1f}%.

## Files
| file | what |
|---|---|
| `gesture.keras` | the trained Keras 3 model (float32, batch 1) |
| `gesture_int8.tflite` | full-integer int8 model (int8 input and output), {facts['tflite_bytes']:,} bytes, made by `tinyforge.model.convert` |
| `calibration.npz` | `x`: float32 `[{facts['calibration_samples']}, {WINDOW}, 3]` calibration windows ({CALIBRATION_PER_CLASS} per class, not used in training); `y`: their labels (int8, index into `labels.txt`) |
| `labels.txt` | one class name per line, in output order |
| `demo_input.npy` | one float32 `[1, {WINDOW}, 3]` "shake" window the firmware embeds as its built-in demo input |

## Quantization
int8 model (host TFLM) vs float model on the {facts['calibration_samples']} calibration windows:
max abs error {facts['max_abs_error']:.4f}, mean abs error {facts['mean_abs_error']:.4f} (probabilities;
the output step is 1/256 = 0.0039), top-1 agreement {100 * facts['top1_agreement']:.1f}%.

## From the IMU
`examples/gesture/tinyforge.toml` is the pipeline that feeds the model on the board
(`tinyforge build --input imu`): the IMU at its own rate, resampled to {RATE_HZ:g} Hz, windows
of {WINDOW} samples of ax, ay, az in g (no normalisation: the model was trained on g), an
inference every 8 samples, decisions over about a second. The training windows went through
that pipeline (`tinyforge.pipeline.features`; bit-identical to the generated ones). int8 model
(host TFLM) on {STREAMS_PER_CLASS} streams per gesture at each part's own rate, through the
device pipeline (resampling, windowing, quantisation), first window of each:
{_imu_lines(facts['from_imu'])}
"""
    (out / "README.md").write_text(text)


def _imu_lines(from_imu: dict[str, float]) -> str:
    return "\n".join(f"- {part} ({IMU_RATES_HZ[part]:g} Hz): {100 * value:.1f}%"
                     for part, value in from_imu.items())


def main(argv: list[str] | None = None) -> int:
    # Before TensorFlow loads: oneDNN's reordered float sums would make weights differ by machine.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tinyforge.board.profiles import load_board
    from tinyforge.model.accuracy import compare
    from tinyforge.model.compat import per_channel_fc_supported
    from tinyforge.model.convert import convert
    from tinyforge.resources import example_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=example_dir())
    out = parser.parse_args(argv).output_dir
    out.mkdir(parents=True, exist_ok=True)

    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    x_train, y_train = make_dataset(TRAIN_PER_CLASS, rng)
    x_test, y_test = make_dataset(TEST_PER_CLASS, rng)
    x_cal, y_cal = make_dataset(CALIBRATION_PER_CLASS, rng)
    # Trained on what the device pipeline computes from these readings.
    device = device_windows(x_train)
    if not np.array_equal(device, x_train):
        raise RuntimeError("the device pipeline changes the training windows (a reading "
                           "beyond the IMU's range?): train on device_windows() instead")
    x_train = device

    started = time.monotonic()
    model = train(x_train, y_train)
    train_seconds = time.monotonic() - started
    float_accuracy = float(np.mean(np.argmax(predict(model, x_test), axis=1) == y_test))
    print(f"trained in {train_seconds:.1f} s; float accuracy on {len(x_test)} held-out "
          f"windows: {100 * float_accuracy:.1f}%")

    model.save(out / "gesture.keras")
    np.savez_compressed(out / "calibration.npz", x=x_cal, y=y_cal.astype(np.int8))
    (out / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    np.save(out / "demo_input.npy", pick_demo(model, rng))

    # Converted for the example's board: its TFLM needs dense layers quantized per tensor.
    board = load_board("nano33ble")
    result = convert(out / "gesture.keras", calibration=out / "calibration.npz",
                     quantize="int8", output=out / "gesture_int8.tflite",
                     per_channel_dense=per_channel_fc_supported(board))
    report = compare(result.output.read_bytes(), result.reference,
                     model_name=result.output.name)
    print(f"converted: {result.model_bytes} bytes in {result.seconds:.1f} s "
          f"(converter {result.convert_seconds:.2f} s)")
    print(report.summary())
    from_imu = check_imu_streams(result.output, np.random.default_rng(SEED + 1))
    for part, value in from_imu.items():
        print(f"int8 accuracy through the device pipeline, {part}: {100 * value:.1f}%")
    # No timings in the README: it is committed, and a re-run should not change it.
    write_readme(out, {"params": model.count_params(),
                       "test_samples": len(x_test), "float_accuracy": float_accuracy,
                       "tflite_bytes": result.model_bytes,
                       "calibration_samples": report.samples,
                       "max_abs_error": report.max_abs_error,
                       "mean_abs_error": report.mean_abs_error,
                       "top1_agreement": report.top1_agreement, "from_imu": from_imu})
    return 0


if __name__ == "__main__":
    sys.exit(main())
