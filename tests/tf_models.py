"""Tiny TensorFlow models for the conversion tests, built by real TensorFlow in a child.

`python tests/tf_models.py DIR` writes the models below into DIR. The tests call `models()`,
which runs that once per test session: TensorFlow is never imported into the pytest process
(tinyforge's host TFLM runs fork it, and forking a process with TensorFlow's threads is unsafe).

Every model takes float32 [batch, 16, 2] and returns 3 softmax probabilities.
"""

from __future__ import annotations

import sys
from pathlib import Path

INPUT_SHAPE = (16, 2)
CLASSES = 3
SAMPLES = 40
_built: dict[str, Path] = {}


def models(tmp_path_factory) -> dict[str, Path]:
    """Paths of the test models (built on first use in this session)."""
    if not _built:
        from tinyforge import proc

        directory = tmp_path_factory.mktemp("tf_models")
        proc.run([sys.executable, __file__, str(directory)], timeout=300,
                 what="building the test models")
        _built.update({name: directory / name for name in (
            "fixed.keras", "dynamic.keras", "dynamic.h5", "dynamic_saved_model",
            "fixed_saved_model", "two_outputs.keras", "unsupported_saved_model",
            "calibration.npy")})
    return dict(_built)


def _build(directory: Path) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(1)

    def classifier(batch_size):
        inputs = keras.Input(INPUT_SHAPE, batch_size=batch_size)
        x = keras.layers.Conv1D(4, 3, activation="relu")(inputs)
        x = keras.layers.Flatten()(x)  # with a dynamic batch: SHAPE, STRIDED_SLICE, PACK
        return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))

    fixed = classifier(1)
    fixed.save(directory / "fixed.keras")
    # Keras exports a dynamic batch unless told otherwise.
    fixed.export(str(directory / "fixed_saved_model"), verbose=False,
                 input_signature=[tf.TensorSpec([1, *INPUT_SHAPE], tf.float32)])
    dynamic = classifier(None)
    dynamic.save(directory / "dynamic.keras")
    dynamic.save(directory / "dynamic.h5")
    dynamic.export(str(directory / "dynamic_saved_model"), verbose=False)

    # Two heads of different sizes, declared in the opposite order of their names: the
    # converter orders the .tflite's outputs its own way, and the float reference must follow.
    inputs = keras.Input(INPUT_SHAPE, batch_size=1)
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(inputs))
    heads = [keras.layers.Dense(CLASSES, activation="softmax", name="zeta")(hidden),
             keras.layers.Dense(1, name="alpha")(hidden)]
    keras.Model(inputs, heads).save(directory / "two_outputs.keras")

    class Unsupported(tf.Module):
        # MatrixDeterminant has no TFLite builtin: conversion must fail with its name.
        @tf.function(input_signature=[tf.TensorSpec([1, *INPUT_SHAPE], tf.float32)])
        def serve(self, x):
            return {"det": tf.linalg.det(tf.reshape(x, [1, 2, 4, 4]))}

    module = Unsupported()
    tf.saved_model.save(module, str(directory / "unsupported_saved_model"),
                        signatures={"serving_default": module.serve.get_concrete_function()})
    rng = np.random.default_rng(2)
    np.save(directory / "calibration.npy",
            rng.normal(size=(SAMPLES, *INPUT_SHAPE)).astype(np.float32))


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
