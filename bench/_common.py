"""Helpers shared by the benchmark scripts: timing, and models made once with TensorFlow."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
REPO = Path(__file__).resolve().parent.parent

_MAKE_300K = r'''
import sys, numpy as np, tensorflow as tf, keras
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype("float32")
model = keras.Sequential([keras.Input((32, 32, 3), batch_size=1),
    keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
c = tf.lite.TFLiteConverter.from_keras_model(model)
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.representative_dataset = lambda: ([s[None]] for s in x)
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = c.inference_output_type = tf.int8
open(sys.argv[1], "wb").write(c.convert())
'''


def model_300k() -> Path:
    """An int8 CNN of about 300 KB, made once with TensorFlow and cached in bench/.cache."""
    path = CACHE / "cnn_300k_int8.tflite"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", _MAKE_300K, str(path)], check=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True)
    return path


_MAKE_SMALL_CNN = r'''
import sys, numpy as np, tensorflow as tf, keras
keras.utils.set_random_seed(1)
x = np.random.default_rng(1).normal(size=(16, 24, 24, 1)).astype("float32")
model = keras.Sequential([keras.Input((24, 24, 1), batch_size=1),
    keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.AveragePooling2D(2),
    keras.layers.DepthwiseConv2D(3, activation="relu"), keras.layers.Flatten(),
    keras.layers.Dense(4), keras.layers.Softmax()])
c = tf.lite.TFLiteConverter.from_keras_model(model)
c.optimizations = [tf.lite.Optimize.DEFAULT]
# Per-tensor dense weights: the boards' TFLM (Chirale 2.0.0) predates per-channel ones.
c._experimental_disable_per_channel_quantization_for_dense_layers = True
c.representative_dataset = lambda: ([s[None]] for s in x)
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = c.inference_output_type = tf.int8
open(sys.argv[1], "wb").write(c.convert())
'''


def model_small_cnn() -> Path:
    """A small int8 CNN (other ops than the bundled example), made once with TensorFlow and
    cached in bench/.cache."""
    path = CACHE / "cnn_small_int8.tflite"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", _MAKE_SMALL_CNN, str(path)], check=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True)
    return path


def time_command(argv: list[str], runs: int = 5) -> tuple[float, float]:
    """(median, best) wall time of a command, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def report(name: str, seconds: float, target: float | None = None, extra: str = "") -> None:
    verdict = "" if target is None else ("  ok" if seconds < target else "  OVER TARGET")
    goal = f"  (target < {target:g} s)" if target is not None else ""
    print(f"{name:<40} {seconds * 1000:9.1f} ms{goal}{verdict}{extra}")
