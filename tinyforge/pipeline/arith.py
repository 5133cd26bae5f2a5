"""The arithmetic the device pipeline does, specified so numpy and a Cortex-M4F agree bit for bit.

Everything after the sensor is integer, except float32 model inputs:

- resampling: linear interpolation at exact rational positions, rounded half up, in 64-bit
  integers (`resample_positions`, `interpolate`);
- quantisation into an int8 input: one affine map per column, from sensor counts to the int8
  value, with a 32-bit fixed-point multiplier and offset computed here, on the host, once
  (`AffineQuantizer`); the device only multiplies, adds and shifts;
- float32 inputs: `float32(count) * mul + add`, two float32 roundings. A fused multiply-add
  rounds once, so the firmware must be compiled with `-ffp-contract=off` (docs/pipeline.md);
- stream time: milliseconds as uint32 that wrap, differences taken modulo 2**32.

Rounding is never left to the language: C's `/` truncates and numpy's `//` floors, so every
division here has a non-negative numerator, where the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# The fixed-point shift of `AffineQuantizer`: int8 values are exact to 2**-32 of a step.
QUANT_SHIFT = 32
# Bounds that keep A*count + B inside int64 for any int16 or uint16 count.
_MAX_MULTIPLIER = 1 << 46
_MAX_OFFSET = 1 << 61
# Samples are shifted to unsigned before interpolation, so every numerator is >= 0.
_UNSIGNED_BIAS = 32768
UINT32 = 1 << 32


@dataclass(frozen=True)
class Ratio:
    """A sample-rate ratio in_mhz : out_mhz, reduced; both in millihertz."""

    in_step: int
    out_step: int

    @classmethod
    def of(cls, in_mhz: int, out_mhz: int) -> "Ratio":
        divisor = math.gcd(in_mhz, out_mhz)
        return cls(in_mhz // divisor, out_mhz // divisor)


def output_count(input_count: int, ratio: Ratio) -> int:
    """How many resampled samples `input_count` input samples give (output k sits at input
    position k * in/out and needs every input up to ceil of that position)."""
    if input_count <= 0:
        return 0
    return (input_count - 1) * ratio.out_step // ratio.in_step + 1


def resample(samples: np.ndarray, ratio: Ratio) -> np.ndarray:
    """Linear interpolation of int16 `samples` [N, axes] at the output rate, rounded half up.

    Output k is at input position p = k * in_step / out_step, between samples L = floor(p) and
    L + 1 with remainder r = (k * in_step) mod out_step:
        y = ((x[L] + 32768) * (out_step - r) + (x[L+1] + 32768) * r + out_step // 2)
            // out_step - 32768
    """
    samples = np.asarray(samples)
    count = output_count(len(samples), ratio)
    k = np.arange(count, dtype=np.int64)
    position = k * ratio.in_step
    left = position // ratio.out_step
    rem = (position % ratio.out_step)[:, None]
    right = np.minimum(left + 1, len(samples) - 1)  # unused (weight 0) when rem == 0
    u = samples.astype(np.int64) + _UNSIGNED_BIAS
    total = u[left] * (ratio.out_step - rem) + u[right] * rem + ratio.out_step // 2
    return (total // ratio.out_step - _UNSIGNED_BIAS).astype(np.int16)


@dataclass(frozen=True)
class AffineQuantizer:
    """q = clamp(zero_point + floor((multiplier * count + offset) / 2**32), lo, hi).

    `offset` already holds the 2**31 that turns the floor into round-half-up.
    """

    multiplier: int
    offset: int
    zero_point: int
    lo: int = -128
    hi: int = 127

    @classmethod
    def from_real(cls, per_count: Fraction, at_zero: Fraction, scale: float, zero_point: int,
                  *, lo: int = -128, hi: int = 127) -> "AffineQuantizer":
        """The quantizer of real value `per_count * count + at_zero` with (scale, zero_point).

        Raises ValueError when the map does not fit the integer bounds (a normalisation
        that turns one count into more than 2**14 steps).
        """
        step = Fraction(scale)
        a = per_count / step * (1 << QUANT_SHIFT)
        b = at_zero / step * (1 << QUANT_SHIFT) + (1 << (QUANT_SHIFT - 1))
        multiplier, offset = round(a), round(b)
        if abs(multiplier) >= _MAX_MULTIPLIER or abs(offset) >= _MAX_OFFSET:
            raise ValueError("the normalisation and quantisation scale are out of range")
        return cls(multiplier, offset, int(zero_point), lo, hi)

    def apply(self, counts: np.ndarray) -> np.ndarray:
        # Python ints are exact; int64 is enough by the bounds above and much faster.
        value = np.asarray(counts, dtype=np.int64) * self.multiplier + self.offset
        q = (value >> QUANT_SHIFT) + self.zero_point
        return np.clip(q, self.lo, self.hi).astype(np.int8)


@dataclass(frozen=True)
class FloatAffine:
    """x = float32(float32(count) * mul) + add, each operation rounded to float32."""

    mul: float
    add: float

    @classmethod
    def from_real(cls, per_count: float, at_zero: float) -> "FloatAffine":
        return cls(float(np.float32(per_count)), float(np.float32(at_zero)))

    def apply(self, counts: np.ndarray) -> np.ndarray:
        product = np.asarray(counts).astype(np.float32) * np.float32(self.mul)
        return (product + np.float32(self.add)).astype(np.float32)


def micro_speech_int8(values: np.ndarray) -> np.ndarray:
    """micro_speech's integer map of frontend values to int8: ((v*256 + 333) / 666) - 128."""
    v = np.asarray(values, dtype=np.int64)
    return np.clip((v * 256 + 333) // 666 - 128, -128, 127).astype(np.int8)


def stream_time_ms(sample_index: np.ndarray | int, rate_mhz: int) -> np.ndarray:
    """The uint32 millisecond time of sample `index` at `rate_mhz` (sample 0 at 0 ms)."""
    index = np.asarray(sample_index, dtype=np.int64)
    return ((index * 1_000_000) // rate_mhz % UINT32).astype(np.uint32)


def to_millihertz(rate_hz: float) -> int | None:
    """`rate_hz` in whole millihertz, or None when it is not a whole number of them."""
    mhz = Fraction(rate_hz) * 1000
    rounded = round(mhz)
    if abs(mhz - rounded) > Fraction(1, 10**6):
        return None
    return int(rounded)


def counts_from_units(values: np.ndarray, counts_per_unit: float) -> np.ndarray:
    """Physical readings (g, dps) as int16 sensor counts: nearest, ties to even, saturated."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * counts_per_unit)
    return np.clip(scaled, -32768, 32767).astype(np.int16)
