"""The IMU half of the pipeline: sensor counts -> resampled -> triggered/slid -> model input.

The sample every source delivers (the board's IMU, a replayed recording) is six int16 counts in
tinyforge's axis convention (docs/pipeline.md): ax, ay, az at 8192 counts per g (±4 g) and
gx, gy, gz at 16.384 counts per dps (±2000 dps), the full-scale units of both Nano 33 BLE
Sense IMUs at their Arduino libraries' default ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import arith, windows

AXES = ("ax", "ay", "az", "gx", "gy", "gz")
ACCEL_AXES = AXES[:3]
COUNTS_PER_G = 8192
COUNTS_PER_DPS = 16.384
# Exact sizes of one count in the axis's unit (16.384 = 2048/125).
UNIT_PER_COUNT = {"a": Fraction(1, 8192), "g": Fraction(125, 2048)}
UNIT_NAMES = {"a": "g", "g": "dps"}


@dataclass(frozen=True)
class ImuPart:
    """One IMU the boards carry, as the firmware reads it through its Arduino library."""

    name: str
    revision: str
    library: str
    rate_mhz: int
    # tinyforge axis i = sign[i] * library output axis[index[i]] (a signed permutation,
    # applied to accel and gyro alike). Identity for both parts: see docs/pipeline.md.
    axis_index: tuple[int, int, int] = (0, 1, 2)
    axis_sign: tuple[int, int, int] = (1, 1, 1)


IMU_PARTS = (
    # LSM9DS1 at the library's 119 Hz ODR, ±4 g, 2000 dps.
    ImuPart("LSM9DS1", "rev1", "Arduino_LSM9DS1", 119_000),
    # BMI270 at ODR 100 Hz, which its library reports as 99.84 Hz; ±4 g, ±2000 dps.
    ImuPart("BMI270", "rev2", "Arduino_BMI270_BMM150", 99_840),
)


def counts_per_unit(axis: str) -> float:
    return COUNTS_PER_G if axis.startswith("a") else COUNTS_PER_DPS


def unit_of(axis: str) -> str:
    return UNIT_NAMES[axis[0]]


@dataclass(frozen=True)
class ImuResult:
    """What the device pipeline computes from one IMU stream."""

    resampled: np.ndarray   # int16 [M, 6] at the model's rate
    rows: np.ndarray        # [M, len(axes)] model-input values, one per resampled sample
    ends: np.ndarray        # resampled-sample index at which each window is complete
    times_ms: np.ndarray    # uint32 stream time of each window's last sample
    inputs: np.ndarray      # [len(ends), window, len(axes)] in the input's dtype


def run(counts: np.ndarray, rate_mhz: int, pipeline) -> ImuResult:
    """The device pipeline on `counts` (int16 [N, 6]) recorded at `rate_mhz`."""
    imu = pipeline.imu
    ratio = arith.Ratio.of(rate_mhz, imu.rate_mhz)
    resampled = arith.resample(np.asarray(counts, dtype=np.int16), ratio)
    columns = [AXES.index(axis) for axis in imu.axes]
    rows = convert(resampled[:, columns], pipeline)
    if imu.trigger is not None:
        hits = trigger_hits(resampled, imu.trigger.threshold_counts)
        ends = windows.triggered_ends(hits, imu.window, imu.trigger.pre_samples)
    else:
        ends = windows.window_ends(len(rows), imu.window, imu.stride)
    return ImuResult(resampled=resampled, rows=rows, ends=ends,
                     times_ms=arith.stream_time_ms(ends, imu.rate_mhz),
                     inputs=windows.gather(rows, ends, imu.window))


def trigger_hits(resampled: np.ndarray, threshold_counts: int) -> np.ndarray:
    """|ax| + |ay| + |az| >= threshold, in counts, for every resampled sample."""
    magnitude = np.abs(resampled[:, :3].astype(np.int32)).sum(axis=1)
    return magnitude >= threshold_counts


def convert(columns: np.ndarray, pipeline) -> np.ndarray:
    """Counts of the chosen axes -> model-input values, column by column."""
    if len(columns) == 0:
        dtype = np.int8 if pipeline.input.dtype == "int8" else np.float32
        return np.zeros((0, columns.shape[1]), dtype=dtype)
    return np.stack([column_map.apply(columns[:, i])
                     for i, column_map in enumerate(column_maps(pipeline))], axis=1)


def column_maps(pipeline) -> list:
    """The affine map of each chosen axis: counts -> normalised -> the model input's values.

    normalised = (count * unit_per_count - offset) / scale, as in training; then quantised with
    the input's scale and zero point (int8) or kept as float32.
    """
    imu = pipeline.imu
    maps = []
    for axis, offset, scale in zip(imu.axes, imu.offset, imu.scale):
        per_count = UNIT_PER_COUNT[axis[0]] / Fraction(scale)
        at_zero = -Fraction(offset) / Fraction(scale)
        if pipeline.input.dtype == "int8":
            maps.append(arith.AffineQuantizer.from_real(
                per_count, at_zero, pipeline.input.scale, pipeline.input.zero_point))
        else:
            maps.append(arith.FloatAffine.from_real(float(per_count), float(at_zero)))
    return maps
