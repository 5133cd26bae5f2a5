"""Calibration samples: the float inputs int8 quantization measures its ranges on.

Formats (read without TensorFlow, never unpickled):
- `.npy`: one array, either `[N, *sample_shape]` (N samples) or `[*sample_shape]` (one sample);
- `.npz`: the array under key `x`, or the file's only array when there is no `x`.
`sample_shape` is the model's input shape without its batch dimension (`[32, 3]` for an input
of `[1, 32, 3]`). Values must be floating point and finite; they are returned as float32.

Every problem raises `CalibrationError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CalibrationError

__all__ = ["load_array", "load_calibration", "match_input_shape", "require_calibration",
           "sample_shape", "MAX_SAMPLES"]

# Conversion and the accuracy report use at most this many samples (the first ones, so the
# choice is deterministic); more makes conversion slow without improving the ranges.
MAX_SAMPLES = 1000

_NPY_MAGIC = b"\x93NUMPY"
_FORMAT_HINT = ("save the samples with numpy: np.save('samples.npy', x) with x of shape "
                "[N, *input_shape] and dtype float32, or np.savez('samples.npz', x=x)")


def require_calibration(path: Path | None, *, quantize: str) -> Path:
    """The calibration path, or a `CalibrationError` when int8 conversion has none.

    Quantization without real samples would measure meaningless ranges, so tinyforge never
    falls back to random data.
    """
    if path is None:
        raise CalibrationError(
            f"{quantize} quantization needs calibration samples and none were given",
            hint="pass --calibration FILE.npz (a few hundred typical inputs, key 'x', shape "
                 "[N, *input_shape], float32), or use --quantize float32 to skip quantization")
    return Path(path)


def load_array(path: Path) -> np.ndarray:
    """Read the samples array of a `.npy` or `.npz` file and check it holds finite floats.

    The shape is not checked here (see `match_input_shape`); the result is float32.
    """
    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"calibration file {path} is a directory", hint=_FORMAT_HINT)
    if not path.exists():
        raise CalibrationError(f"calibration file {path} does not exist",
                               hint="check the path given to --calibration")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array = _load_npz(path)
    else:
        raise CalibrationError(
            f"calibration file {path} is neither .npy nor .npz (found '{path.suffix or 'no'}' "
            "extension)", hint=_FORMAT_HINT)
    return _check_values(array, path)


def sample_shape(input_shape: Sequence[int | None]) -> tuple[int, ...]:
    """The shape of one sample: the model's input shape without its leading batch dimension."""
    shape = tuple(input_shape)
    if not shape:
        raise CalibrationError("the model's input is a scalar; calibration samples need a "
                               "batch dimension", hint="give the model an input of shape [1, ...]")
    if any(dim is None or dim < 0 for dim in shape[1:]):
        raise CalibrationError(
            f"the model's input shape {_fmt(shape)} has unknown dimensions besides the batch",
            hint="fix every input dimension when building the model (keras.Input(shape=...))")
    return tuple(int(dim) for dim in shape[1:])


def match_input_shape(array: np.ndarray, input_shape: Sequence[int | None], path: Path,
                      *, limit: int | None = MAX_SAMPLES) -> np.ndarray:
    """`array` as `[N, *sample_shape]` float32 for a model whose input shape is `input_shape`.

    Accepts a batch of samples or a single sample; keeps at most `limit` samples.
    """
    wanted = sample_shape(input_shape)
    found = tuple(array.shape)
    if found == wanted:
        batch = array[None]
    elif len(found) == len(wanted) + 1 and found[1:] == wanted:
        batch = array
    else:
        raise CalibrationError(
            f"calibration file {path} has shape {_fmt(found)}, but the model's input is "
            f"{_fmt(input_shape)}: expected [N, {_fmt(wanted)[1:-1]}] or {_fmt(wanted)}",
            hint="give samples shaped like the model input (N samples stacked on the first "
                 "axis), with the same preprocessing used in training")
    if batch.shape[0] < 1:
        raise CalibrationError(f"calibration file {path} holds no samples (shape {_fmt(found)})",
                               hint="give at least one sample; a few hundred typical inputs "
                                    "give the best int8 ranges")
    if limit is not None and batch.shape[0] > limit:
        batch = batch[:limit]
    return np.ascontiguousarray(batch, dtype=np.float32)


def load_calibration(path: Path, input_shape: Sequence[int | None], *,
                     limit: int | None = MAX_SAMPLES) -> np.ndarray:
    """Load and validate calibration samples for a model input: `[N, *sample_shape]` float32."""
    return match_input_shape(load_array(path), input_shape, Path(path), limit=limit)


def _load_npy(path: Path) -> np.ndarray:
    try:
        with path.open("rb") as handle:
            # Without the NumPy magic, np.load would try (and refuse) to unpickle the file.
            if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise CalibrationError(f"calibration file {path} is not a valid .npy file "
                                       "(no NumPy header)", hint=_FORMAT_HINT)
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    except ValueError as exc:
        raise _unreadable(path, exc) from None
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}",
                               hint=_FORMAT_HINT) from None


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "x" in keys:
                key = "x"
            elif len(keys) == 1:
                key = keys[0]
            else:
                found = ", ".join(repr(k) for k in keys) if keys else "no arrays"
                raise CalibrationError(
                    f"calibration file {path} has no array named 'x' (found {found})",
                    hint="store the samples under the key 'x': np.savez(path, x=samples)")
            array = archive[key]
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _unreadable(path, exc) from None
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}",
                               hint=_FORMAT_HINT) from None
    if not isinstance(array, np.ndarray):  # a member without a NumPy header comes back as bytes
        raise CalibrationError(f"calibration file {path} is not a valid .npz file: its "
                               f"'{key}' is not a NumPy array", hint=_FORMAT_HINT)
    return array


def _unreadable(path: Path, exc: Exception) -> CalibrationError:
    text = str(exc)
    if "allow_pickle" in text or "Object arrays" in text:
        return CalibrationError(
            f"calibration file {path} holds Python objects (a pickled object array); "
            "tinyforge does not unpickle data files",
            hint="save a plain numeric array: np.save(path, np.asarray(samples, np.float32))")
    return CalibrationError(f"calibration file {path} is not a valid {path.suffix} file "
                            f"({type(exc).__name__}: {text})", hint=_FORMAT_HINT)


def _check_values(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        raise CalibrationError(
            f"calibration file {path} holds {array.dtype} values; expected floating point "
            "(float32)",
            hint="give the float inputs the model sees, after the same scaling/normalisation "
                 "used in training: x.astype(np.float32)")
    if array.ndim == 0:
        raise CalibrationError(f"calibration file {path} holds a single number, not samples",
                               hint=_FORMAT_HINT)
    if array.size == 0:
        raise CalibrationError(f"calibration file {path} holds no samples "
                               f"(shape {_fmt(array.shape)})",
                               hint="give at least one sample")
    # Cast first: float64 values beyond float32's range become infinite, and must be refused too.
    with np.errstate(over="ignore"):
        values = array.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise CalibrationError(
            f"calibration file {path} has {bad} NaN or infinite float32 value(s) of {values.size}",
            hint="remove or repair those samples; quantization ranges must come from real values")
    return values


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"
