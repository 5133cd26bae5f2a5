"""Makes the small .tflite models the tests need, with real TensorFlow.

Run in a child process by tests/conftest.py (TensorFlow is never imported by the tests'
own process): `python make_models.py OUTPUT_DIR`. Fixed seeds; each model is tiny.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = sys.argv[1]
rng = np.random.default_rng(1234)
keras.utils.set_random_seed(1234)


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as handle:
        handle.write(data)


def int8(model, samples, *, per_channel_dense=False):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Per-tensor dense weights, as tinyforge converts for the boards' TFLM (see compat.py).
    converter._experimental_disable_per_channel_quantization_for_dense_layers = (
        not per_channel_dense)
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def float32(model, **options):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    for key, value in options.items():
        setattr(converter, key, value)
    return converter.convert()


def conv_model():
    x = rng.normal(size=(32, 16, 16, 1)).astype("float32")
    model = keras.Sequential([
        keras.Input((16, 16, 1), batch_size=1),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
        keras.layers.Softmax()])
    save("conv_int8.tflite", int8(model, x))
    np.save(os.path.join(OUT, "conv_demo.npy"), x[0])


def image96_model():
    # A 96x96x1 int8 input, 9,216 bytes: 18 KB of hex, far more than one 512-byte line of the
    # firmware, so it reaches the device in IN chunks. The same ops as conv_model.
    x = rng.normal(size=(16, 96, 96, 1)).astype("float32")
    model = keras.Sequential([
        keras.Input((96, 96, 1), batch_size=1),
        keras.layers.Conv2D(2, 5, strides=4, activation="relu"),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
        keras.layers.Softmax()])
    save("image96_int8.tflite", int8(model, x))


def dense_model():
    x = rng.normal(size=(32, 10)).astype("float32")
    model = keras.Sequential([keras.Input((10,), batch_size=1), keras.layers.Dense(8, "relu"),
                              keras.layers.Dense(2)])
    save("dense_int8.tflite", int8(model, x))
    # TensorFlow's default: dense weights quantized per output channel.
    save("dense_per_channel_int8.tflite", int8(model, x, per_channel_dense=True))


def unsupported_ops_model():
    # GELU and a cumulative product: TFLite builtins that Chirale's TFLM 2.0.0 has no kernel for.
    inputs = keras.Input((8,), batch_size=1)
    y = keras.layers.Dense(8)(inputs)
    y = keras.layers.Activation("gelu")(y)
    y = keras.layers.Lambda(lambda t: tf.math.top_k(t, k=2).values)(y)
    y = keras.layers.Lambda(lambda t: tf.math.atan2(t, t + 1.0))(y)
    save("unsupported_float.tflite", float32(keras.Model(inputs, y)))


def custom_op_model():
    # TensorFlow ops with no TFLite builtin become custom ops (Erfinv, MatrixDeterminant).
    inputs = keras.Input((4,), batch_size=1)
    y = keras.layers.Lambda(lambda t: tf.math.erfinv(t))(inputs)
    y = keras.layers.Lambda(lambda t: tf.linalg.det(tf.reshape(t, (1, 2, 2))))(y)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, y))
    converter.allow_custom_ops = True
    save("custom_op.tflite", converter.convert())


def big_flash_model():
    # ~1.1 MB of float32 weights: more than the board's 960 KB of application flash.
    model = keras.Sequential([keras.Input((520,), batch_size=1), keras.layers.Dense(520)])
    save("big_flash_float.tflite", float32(model))


def big_arena_model():
    # Activations of 96x96x8 float32 (~295 KB) twice over: more than the board's 256 KB RAM.
    model = keras.Sequential([keras.Input((96, 96, 1), batch_size=1),
                              keras.layers.Conv2D(8, 3, padding="same"),
                              keras.layers.Conv2D(8, 3, padding="same")])
    save("big_arena_float.tflite", float32(model))


def fp16_model():
    model = keras.Sequential([keras.Input((8,), batch_size=1), keras.layers.Dense(4)])
    save("fp16.tflite", float32(model, optimizations=[tf.lite.Optimize.DEFAULT],
                                target_spec=_fp16_spec()))


def _fp16_spec():
    spec = tf.lite.TargetSpec()
    spec.supported_types = [tf.float16]
    return spec


def while_forever_model():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_while_model  # a pathological model, shared with its own script

    make_while_model.main(os.path.join(OUT, "while_forever.tflite"))


for make in (conv_model, image96_model, dense_model, unsupported_ops_model, custom_op_model,
             big_flash_model, big_arena_model, fp16_model, while_forever_model):
    make()
print("models written to", OUT)
