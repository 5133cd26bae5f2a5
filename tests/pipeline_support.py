"""Helpers for the pipeline tests: model descriptions, pipelines, synthetic signals.

`model_info` describes a model's tensors the way `tinyforge.model.reader` reads them from a
.tflite; the pipeline only ever looks at the tensors, so tests can state the shapes and
quantizations they need without converting a model for each one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyforge import proc
from tinyforge.board.float_code import NO_CONTRACTION
from tinyforge.model.reader import ModelInfo, SubgraphInfo, TensorInfo
from tinyforge.pipeline import audio, load_pipeline

REPO = Path(__file__).resolve().parents[1]
# TFLM's micro frontend inside a library tree (Chirale_TensorFlowLite ships it).
FRONTEND_LIB = Path("src/tensorflow/lite/experimental/microfrontend/lib")
# The order the C harnesses of tests/cpp take the frontend's settings in.
_FRONTEND_ARGS = ("window_ms", "stride_ms", "channels", "lower_hz", "upper_hz", "smoothing_bits",
                  "even_smoothing", "odd_smoothing", "min_signal_remaining", "pcan",
                  "pcan_strength", "pcan_offset", "gain_bits", "log_scale", "scale_shift")
GESTURE_MODEL = REPO / "tinyforge" / "example" / "gesture_int8.tflite"


def tensor(shape, dtype="int8", scale=None, zero_point=None, name="t") -> TensorInfo:
    info = TensorInfo(index=0, name=name, shape=list(shape), dtype=dtype)
    if scale is not None:
        info.scales, info.zero_points = [float(scale)], [int(zero_point)]
    return info


def model_info(input_shape, dtype="int8", scale=0.05, zero_point=0, *, output_shape=(1, 4),
               output_dtype=None, output_scale=1 / 256, output_zero_point=-128,
               resource_variables=0, name="test.tflite") -> ModelInfo:
    quantized = dtype == "int8"
    inputs = [tensor(input_shape, dtype, scale if quantized else None,
                     zero_point if quantized else None, "input")]
    output_dtype = output_dtype or dtype
    outputs = [tensor(output_shape, output_dtype,
                      output_scale if output_dtype in ("int8", "uint8") else None,
                      output_zero_point if output_dtype in ("int8", "uint8") else None,
                      "output")]
    subgraph = SubgraphInfo("main", 2, 1, inputs, outputs, sorted({dtype, output_dtype}))
    counts = {"VAR_HANDLE": resource_variables} if resource_variables else {}
    return ModelInfo(name=name, size=1000, sha256="0" * 64, schema_version=3, description="",
                     ops=[], subgraphs=[subgraph], operator_counts=counts)


def pipeline_from(tmp_path: Path, text: str | None, model=None, kind=None, name="tinyforge.toml"):
    path = None
    if text is not None:
        path = tmp_path / name
        path.write_text(text)
    return load_pipeline(path, model=model, kind=kind)


def imu_motion(seconds: float, rate_hz: float, seed: int = 0) -> np.ndarray:
    """Plausible IMU readings [N, 6] in g and dps: gravity, slow tilts, bursts of shaking."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    accel = np.stack([0.3 * np.sin(0.7 * t), 0.2 * np.cos(0.5 * t), np.ones(n)], axis=1)
    burst = (np.sin(2 * np.pi * 0.25 * t) > 0.7)[:, None]
    accel = accel + burst * 2.0 * np.sin(2 * np.pi * 6 * t)[:, None] * rng.uniform(0.5, 1, 3)
    gyro = 150 * np.sin(np.outer(t, [1.1, 0.9, 1.7])) + burst * 900 * rng.uniform(-1, 1, (n, 3))
    values = np.concatenate([accel, gyro], axis=1) + rng.normal(0, 0.01, (n, 6))
    return np.clip(values, [-3.99] * 3 + [-1999] * 3, [3.99] * 3 + [1999] * 3)


def tone_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """int16 audio at 16 kHz: chirps, tones and noise, loud enough to move every stage."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t)
    tones = np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 1.3 * t) > 0)
    signal = 6000 * chirp + 4000 * tones + rng.normal(0, 800, len(t))
    return np.clip(signal, -32768, 32767).astype(np.int16)


def frontend_objects(tree: Path, work: Path, gcc: str, gxx: str, *, optimize: str) -> list[Path]:
    """The micro frontend of `tree` compiled for the host, in place (TFLM sources are never
    copied into tinyforge), without fused multiply-adds like the firmware
    (tinyforge.board.float_code)."""
    include = f"-I{Path(tree) / 'src'}"
    objects = []
    lib = Path(tree) / FRONTEND_LIB
    for source in sorted(lib.glob("*.c")) + sorted(lib.glob("*.cpp")):
        obj = work / f"{source.name}.o"
        proc.run([gcc if source.suffix == ".c" else gxx, optimize, *NO_CONTRACTION, include,
                  "-c", source, "-o", obj], timeout=180, what=f"compiling {source.name}")
        objects.append(obj)
    return objects


def frontend_args(front) -> list[str]:
    """`front`'s settings as the C harnesses read them from their command line."""
    options = audio.front_options(front)
    return [str(int(options[k]) if isinstance(options[k], bool) else options[k])
            for k in _FRONTEND_ARGS]
