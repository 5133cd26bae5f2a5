"""How float code is compiled for every board, so that a host computes the same numbers.

GCC contracts a float `a * b + c` into one fused multiply-add, rounded once, wherever the
target has the instruction (`-ffp-contract=fast` is its default): the Cortex-M4F's `vfma.f32`.
numpy, TensorFlow's audio frontend op and a host compiler without `-mfma` round twice. Fused
on the board, the audio frontend's tables (computed in float at start) and Chirale's int8 MEAN
(`mean * scale + bias`) differ from the host by 1 in rare values. tinyforge therefore
compiles every firmware, TFLM library included, and its host build of the board's TFLM
without contraction: the same expressions round the same way on the board and on any host,
with or without FMA. The cost is one `vmla.f32` (multiply, round, add, round) where the board
had a `vfma.f32` (docs/reference.md).
"""

NO_CONTRACTION = ("-ffp-contract=off",)
