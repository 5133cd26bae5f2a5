"""Makes the small .tflite models the tests need, with real TensorFlow.

Run in a child process by tests/conftest.py (TensorFlow is never imported by the tests'
own process): `python make_models.py OUTPUT_DIR`. Fixed seeds; each model is tiny.
"""

import os
import shutil
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


def mixed_io_model():
    # int8 inside, int8 input, uint8 output (as microWakeWord's models): TFLM runs it.
    x = rng.normal(size=(32, 10)).astype("float32")
    model = keras.Sequential([keras.Input((10,), batch_size=1), keras.layers.Dense(8, "relu"),
                              keras.layers.Dense(3), keras.layers.Softmax()])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    converter.representative_dataset = lambda: ([s[None]] for s in x)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.uint8
    save("mixed_uint8_out.tflite", converter.convert())


def streaming_model():
    # A streaming classifier whose state is a tf.Variable updated in a tf.function: the last
    # 6 frames of 4 features, shifted by one frame per call. The converter makes it
    # VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE and CALL_ONCE (the variable's initial
    # value), like microWakeWord's models; int8 in, uint8 out like theirs.
    frames, features = 6, 4
    weights = tf.constant(rng.normal(size=(frames * features, 3)).astype("float32"))
    bias = tf.constant(rng.normal(size=(3,)).astype("float32"))

    class Stream(tf.Module):
        def __init__(self):
            super().__init__()
            self.ring = tf.Variable(tf.zeros([1, frames, features]), trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([1, 1, features], tf.float32)])
        def __call__(self, frame):
            ring = tf.concat([self.ring[:, 1:, :], frame], axis=1)
            self.ring.assign(ring)
            scores = tf.matmul(tf.reshape(ring, [1, frames * features]), weights) + bias
            return tf.nn.softmax(scores)

    module = Stream()
    directory = os.path.join(OUT, "streaming_saved_model")
    tf.saved_model.save(module, directory,
                        signatures=module.__call__.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    converter.experimental_enable_resource_variables = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    samples = rng.uniform(-1, 1, size=(64, 1, 1, features)).astype("float32")
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.uint8
    save("streaming_int8.tflite", converter.convert())
    shutil.rmtree(directory)


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


def gesture_mean_model():
    # A gesture classifier shaped like TFLM's magic_wand example (CONV_2D, MAX_POOL_2D, MEAN,
    # FULLY_CONNECTED, SOFTMAX), trained on synthetic accelerometer windows: four classes of
    # sine strokes at different frequencies. Its MEAN (global average pooling) keeps the
    # input's quantization, the case where Chirale's TFLM 2.0.0 divides with truncation and
    # the 2026 wheel rounds (tests/test_host_reference_tflm.py, docs/reference.md).
    steps = 64
    t = np.linspace(0.0, 1.0, steps)
    windows, labels = [], []
    for i in range(400):
        label = i % 4
        frequency = (1, 2, 3, 5)[label]
        stroke = np.stack([np.sin(2 * np.pi * frequency * t + rng.uniform(0, 6)),
                           np.cos(2 * np.pi * frequency * t) * (label % 2),
                           rng.normal(size=steps) * 0.1], axis=-1)
        windows.append(stroke + rng.normal(size=stroke.shape) * 0.2)
        labels.append(label)
    x = np.asarray(windows, dtype="float32")[:, :, None, :]
    inputs = keras.Input((steps, 1, 3), batch_size=1)
    y = keras.layers.Conv2D(8, (4, 1), padding="same", activation="relu")(inputs)
    y = keras.layers.MaxPooling2D((3, 1))(y)
    y = keras.layers.Conv2D(16, (4, 1), padding="same", activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(16, activation="relu")(y)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(y))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, np.asarray(labels), epochs=10, batch_size=32, verbose=0)
    save("gesture_mean_int8.tflite", int8(model, x[:100]))
    np.save(os.path.join(OUT, "gesture_mean_windows.npy"), x[300:340])


def pool_reshape_dense_model():
    # Three ops whose outputs the tests can compute independently: MAX_POOL_2D (a max),
    # RESHAPE (the same bytes) and FULLY_CONNECTED (integer arithmetic).
    x = rng.normal(size=(32, 4, 4, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4, 4, 2), batch_size=1),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(3, bias_initializer="ones")])
    save("pool_reshape_dense_int8.tflite", int8(model, x))


def mean_fma_model():
    # A lone int8 MEAN over 21 values whose output scale is chosen (by patching the
    # flatbuffer's float) so that, for inputs summing to a found total, Chirale's
    # round(mean * scale + bias) gives another integer when a*b+c is rounded once (the
    # board's VFMA.F32) than when it is rounded twice: the host build must fuse like the
    # board (docs/reference.md). Saves the model and inputs with and without that total.
    # Off-centre calibration data: a non-zero input zero point, so the bias is not 0.
    x = (rng.normal(size=(64, 21, 1, 16)) + 0.7).astype("float32")
    model = keras.Sequential([keras.Input((21, 1, 16), batch_size=1),
                              keras.layers.GlobalAveragePooling2D()])
    data = bytearray(int8(model, x))
    s_in, zp_in, s_out, zp_out = _mean_quantization(bytes(data))
    scale_out, total = _split_rounding_scale(s_in, zp_in, s_out, zp_out, 21)
    old = np.float32(s_out).tobytes()
    assert data.count(old) == 1, "the output scale is not unique in the flatbuffer"
    at = data.find(old)
    data[at:at + 4] = np.float32(scale_out).tobytes()
    save("mean_fma_int8.tflite", bytes(data))
    inputs = rng.integers(-128, 128, size=(8, 21, 1, 16)).astype(np.int8)
    for sample in inputs[:4]:
        # Every channel sums to `total`: all values equal but a few.
        base, extra = divmod(total, 21)
        sample[:, 0, :] = base
        sample[:extra, 0, :] += 1
    np.save(os.path.join(OUT, "mean_fma_inputs.npy"), inputs)


def _mean_quantization(data):
    interpreter = tf.lite.Interpreter(model_content=data)
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    return (*source["quantization"], *result["quantization"])


def _split_rounding_scale(s_in, zp_in, s_out, zp_out, count):
    """An output scale near `s_out` and a sum of `count` int8 values for which rounding
    sum / count * (s_in / s_out) - zp_in * (s_in / s_out) once or twice gives two integers
    (both inside the int8 range once `zp_out` is added, so no clamp hides the difference)."""
    f32 = np.float32
    totals = np.arange(-128 * count, 127 * count + 1)
    mean = (totals.astype(f32) / f32(count)).astype(f32)
    for step in range(20000):
        candidate = f32(s_out * (1 + step * 1e-4))
        scale = f32(s_in) / candidate
        bias = f32(-zp_in) * scale
        twice = ((mean * scale).astype(f32) + bias).astype(f32)
        once = (mean.astype(np.float64) * np.float64(scale) + np.float64(bias)).astype(f32)
        half_up = np.floor(np.abs(twice) + 0.5) * np.sign(twice)
        inside = (half_up + zp_out > -127) & (half_up + zp_out < 126)
        split = np.nonzero((half_up != np.floor(np.abs(once) + 0.5) * np.sign(once))
                           & inside)[0]
        if split.size:
            return float(candidate), int(totals[split[0]])
    raise AssertionError("no output scale splits the rounding")


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
             big_flash_model, big_arena_model, fp16_model, while_forever_model,
             gesture_mean_model, pool_reshape_dense_model, mean_fma_model, mixed_io_model,
             streaming_model):
    make()
print("models written to", OUT)
