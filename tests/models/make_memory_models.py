"""Makes int8 models with branches for the memory planner's tests, with real TensorFlow.

Run in a child process (TensorFlow is never imported by the tests' own process):
`python make_memory_models.py OUTPUT_DIR`. Fixed seeds; every model is small. Branches are
where TFLM's greedy plan leaves room on the table: tensors that live across a block.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = sys.argv[1]
rng = np.random.default_rng(4321)
keras.utils.set_random_seed(4321)
L = keras.layers


def int8(model, shape):
    samples = rng.normal(size=(16, *shape)).astype("float32")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def save(name, model, shape):
    with open(os.path.join(OUT, name), "wb") as handle:
        handle.write(int8(model, shape))


def residual():
    # Two residual blocks: the block's input stays alive while the block computes.
    inputs = keras.Input((16, 16, 4), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    for _ in range(2):
        y = L.Conv2D(16, 3, padding="same", activation="relu")(x)
        y = L.Conv2D(8, 1, padding="same")(y)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    save("residual_int8.tflite", keras.Model(inputs, L.Dense(4)(x)), (16, 16, 4))


def concat():
    # An inception-like block: three branches of different sizes, concatenated.
    inputs = keras.Input((12, 12, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    a = L.Conv2D(4, 1, activation="relu")(x)
    b = L.Conv2D(12, 3, padding="same", activation="relu")(L.Conv2D(6, 1)(x))
    c = L.Conv2D(6, 5, padding="same", activation="relu")(x)
    x = L.Concatenate()([a, b, c])
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    save("concat_int8.tflite", keras.Model(inputs, L.Dense(3)(x)), (12, 12, 3))


def mean():
    # MEAN asks for scratch buffers in Prepare, on the host's kernels and the board's.
    inputs = keras.Input((8, 8, 6), batch_size=1)
    x = L.Conv2D(10, 3, padding="same", activation="relu")(inputs)
    x = L.Lambda(lambda t: tf.reduce_mean(t, axis=[1, 2]))(x)
    save("mean_int8.tflite", keras.Model(inputs, L.Dense(2)(x)), (8, 8, 6))


def unet():
    # Skip connections across a down/up path: long-lived tensors of different sizes.
    inputs = keras.Input((16, 16, 2), batch_size=1)
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    e2 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(e1)
    e3 = L.Conv2D(24, 3, strides=2, padding="same", activation="relu")(e2)
    # Nearest-neighbour resizing: UpSampling2D becomes TILE, which TFLM has no kernel for.
    def up(t):
        return L.Lambda(lambda v: tf.image.resize(v, (v.shape[1] * 2, v.shape[2] * 2),
                                                  method="nearest"))(t)

    d2 = L.Concatenate()([up(e3), e2])
    d2 = L.Conv2D(16, 3, padding="same", activation="relu")(d2)
    d1 = L.Concatenate()([up(d2), e1])
    d1 = L.Conv2D(4, 3, padding="same")(d1)
    save("unet_int8.tflite", keras.Model(inputs, d1), (16, 16, 2))


def conv1d():
    # A plain chain (no branches) where TFLM's greedy plan still leaves a gap: on the board
    # 1,920 B against a lower bound of 1,536 B (the pooled tensor and CMSIS-NN's im2col
    # scratch buffers of the second convolution).
    inputs = keras.Input((96, 3), batch_size=1)
    x = L.Conv1D(8, 5, padding="same", activation="relu")(inputs)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 5, padding="same", activation="relu")(x)
    x = L.Dense(8, activation="relu")(L.Flatten()(x))
    save("conv1d_int8.tflite", keras.Model(inputs, L.Dense(4, activation="softmax")(x)), (96, 3))


if __name__ == "__main__":
    residual()
    concat()
    mean()
    unet()
    conv1d()
