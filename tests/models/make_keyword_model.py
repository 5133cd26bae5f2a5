"""A small int8 keyword model for the microphone pipeline's replay test, made with real
TensorFlow on features the pipeline itself computes (micro_speech's recipe: [1, 49, 40]).

`python make_keyword_model.py OUTPUT_DIR CLIP.wav...`: the clips are 16 kHz speech made with
espeak-ng by the test; the model learns "speech" (any window holding one of them) against
"silence" (windows of low noise). Tiny and quickly trained: it only has to be confident on
this speech so the firmware's decisions have something to decide; the replay's point is that
the device computes exactly what the host does. Writes keyword_int8.tflite and labels.txt.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinyforge import pipeline  # noqa: E402

OUT, CLIPS = sys.argv[1], sys.argv[2:]
rng = np.random.default_rng(7)
keras.utils.set_random_seed(7)

config = pipeline.load_pipeline(None, kind="microphone")   # float32 features, [1, 49, 40]


def noisy(samples):
    """A microphone's floor of noise (espeak-ng's silence is exact zeros)."""
    noise = rng.normal(0, NOISE, len(samples))
    return np.clip(samples + noise, -32768, 32767).astype(np.int16)


NOISE = 40
speech = [noisy(pipeline.read_recording(Path(c), config).samples) for c in CLIPS]
silence = [noisy(np.zeros(32000)) for _ in range(2 * len(CLIPS))]
windows = pipeline.features_many(speech + silence, config)
x = np.concatenate(windows)
# Every 1 s window of a speech clip holds part of its word (the clips are ~1.8 s).
y = np.concatenate([np.full(len(w), 1 if i < len(speech) else 0)
                    for i, w in enumerate(windows)])

model = keras.Sequential([
    keras.Input((49, 40), batch_size=1),
    keras.layers.Reshape((49, 40, 1)),
    keras.layers.Conv2D(4, (5, 5), strides=(2, 2), activation="relu"),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(2),
    keras.layers.Softmax()])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=30, batch_size=16, verbose=0)

converter = tf.lite.TFLiteConverter.from_keras_model(model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
# Per-tensor dense weights, as tinyforge converts for the boards' TFLM (see compat.py).
converter._experimental_disable_per_channel_quantization_for_dense_layers = True
converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in x)
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
with open(os.path.join(OUT, "keyword_int8.tflite"), "wb") as handle:
    handle.write(converter.convert())
with open(os.path.join(OUT, "labels.txt"), "w") as handle:
    handle.write("silence\nspeech\n")
print("accuracy", float((model.predict(x, verbose=0).argmax(1) == y).mean()),
      "speech windows", int(y.sum()), "of", len(y))
