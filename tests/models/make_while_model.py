"""A pathological model for the host-run limit: a WHILE loop whose condition never turns false.

Usage: python make_while_model.py OUT.tflite (needs TensorFlow; run in a child process).
The loop counter is multiplied by 1.0 each turn, so `i < 1.0` holds forever whatever the
input: the host TFLM interpreter never returns from Invoke().
"""

import sys

import tensorflow as tf


class WhileForever(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def __call__(self, x):
        limit = tf.reduce_sum(x) * 0.0 + 1.0  # from the input, so it is not folded away
        _, y = tf.while_loop(lambda i, y: tf.less(i, limit),
                             lambda i, y: (i * 1.0, y + 1.0), [tf.constant(0.0), x])
        return y


def main(out: str) -> None:
    module = WhileForever()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module)
    with open(out, "wb") as handle:
        handle.write(converter.convert())


if __name__ == "__main__":
    main(sys.argv[1])
