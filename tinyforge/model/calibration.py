"""Calibration samples: the float inputs int8 quantization measures its ranges on.

Formats (read without TensorFlow, never unpickled):
- `.npy`: one array, either `[N, *sample_shape]` (N samples) or `[*sample_shape]` (one sample);
- `.npz`: the array under key `x`, or the file's only array when there is no `x`.
`sample_shape` is the model's input shape without its batch dimension (`[32, 3]` for an input
of `[1, 32, 3]`). Values must be floating point and finite; they are returned as float32.

Every problem raises `CalibrationError` naming the file, what was expected and what was found.

The files are untrusted: only regular files are opened, and the array an `.npy` header (or the
header of an `.npz` member) declares is checked against `MAX_DATA_BYTES` and against the bytes
the file really holds before NumPy allocates it, so a 100-byte file claiming 10^12 elements is
refused instead of exhausting memory.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np
from numpy.lib import format as npy_format

from ..errors import CalibrationError
from ..userfiles import GiB, open_regular

__all__ = ["load_array", "load_calibration", "match_input_shape", "read_npy",
           "require_calibration", "sample_shape", "MAX_DATA_BYTES", "MAX_SAMPLES"]

# Conversion and the accuracy report use at most this many samples (the first ones, so the
# choice is deterministic); more makes conversion slow without improving the ranges.
MAX_SAMPLES = 1000
# The largest array read from a data file (1,000 float32 samples of a 96x96x3 image take 110 MB).
MAX_DATA_BYTES = 1 * GiB

_NPY_MAGIC = b"\x93NUMPY"
# Value kinds a data file may hold: booleans, integers, floats. Never objects (pickles),
# strings, dates or structured records.
_NUMERIC_KINDS = "biuf"
# Errors reading a zip archive can raise besides OSError.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
               RuntimeError, NotImplementedError)
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


def load_array(path: Path, *, integers: bool = False) -> np.ndarray:
    """Read the samples array of a `.npy` or `.npz` file and check it holds finite floats.

    The shape is not checked here (see `match_input_shape`); the result is float32.
    `integers=True` also accepts integer arrays, returned as they are (inputs already
    quantized, for `validate`).
    """
    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"calibration file {path} is a directory", hint=_FORMAT_HINT)
    if not path.exists():
        raise CalibrationError(f"calibration file {path} does not exist",
                               hint="check the path given to --calibration")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = read_npy(path, what="calibration file", hint=_FORMAT_HINT)
    elif suffix == ".npz":
        array = _load_npz(path)
    else:
        raise CalibrationError(
            f"calibration file {path} is neither .npy nor .npz (found '{path.suffix or 'no'}' "
            "extension)", hint=_FORMAT_HINT)
    if integers and np.issubdtype(array.dtype, np.integer):
        return _check_samples(array, path)
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
    # Integer samples (see load_array) keep their values and type.
    dtype = batch.dtype if np.issubdtype(batch.dtype, np.integer) else np.float32
    return np.ascontiguousarray(batch, dtype=dtype)


def load_calibration(path: Path, input_shape: Sequence[int | None], *,
                     limit: int | None = MAX_SAMPLES) -> np.ndarray:
    """Load and validate calibration samples for a model input: `[N, *sample_shape]` float32."""
    return match_input_shape(load_array(path), input_shape, Path(path), limit=limit)


def read_npy(path: Path, *, what: str, hint: str,
             check_shape: Callable[[tuple[int, ...]], None] | None = None,
             limit: int = MAX_DATA_BYTES) -> np.ndarray:
    """The numeric array of an `.npy` file, its header checked before anything is allocated.

    `check_shape` may refuse the declared shape (raising) before the values are read.
    """
    with open_regular(path, what=what, limit=limit + _HEADER_ALLOWANCE, error=CalibrationError,
                      hint=hint) as (handle, size):
        try:
            _checked_header(handle, size, path, what=what, limit=limit, check_shape=check_shape)
            handle.seek(0)
            return npy_format.read_array(handle, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise _unreadable(path, exc, what) from None


# An .npy header is at most NumPy's 10,000-byte limit plus its preamble.
_HEADER_ALLOWANCE = 16 * 1024


def _checked_header(stream: BinaryIO, available: int, path: Path, *, what: str, limit: int,
                    check_shape: Callable[[tuple[int, ...]], None] | None = None) -> None:
    """Read an .npy header from `stream` and check the array it declares.

    `available` is how many bytes the stream holds in all, header included; `check_shape` may
    refuse the shape first.
    """
    if stream.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        # Without the NumPy magic, np.load would try (and refuse) to unpickle the file.
        raise CalibrationError(f"{what} {path} is not a valid .npy file (no NumPy header)",
                               hint=_FORMAT_HINT)
    stream.seek(0)
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise CalibrationError(f"{what} {path} uses .npy format version {version[0]}."
                               f"{version[1]}, which only structured arrays need",
                               hint=_FORMAT_HINT)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        raise CalibrationError(f"{what} {path} holds {dtype} values, not numbers",
                               hint=_FORMAT_HINT)
    if any(dim < 0 for dim in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    if check_shape is not None:
        check_shape(tuple(shape))
    declared = math.prod(shape) * dtype.itemsize
    holds = available - stream.tell()
    if declared > limit:
        raise CalibrationError(
            f"{what} {path} declares a {_fmt(shape)} {dtype} array of {declared:,} B, more "
            f"than the {limit:,} B tinyforge reads from a data file; nothing was allocated",
            hint="give fewer or smaller samples (calibration uses at most the first "
                 f"{MAX_SAMPLES})")
    if declared > holds:
        raise CalibrationError(
            f"{what} {path} is truncated or corrupt: its header declares a {_fmt(shape)} "
            f"{dtype} array of {declared:,} B but only {max(holds, 0):,} B follow it",
            hint="save the array again with numpy; if it was copied, compare its size with "
                 "the original")


def _load_npz(path: Path) -> np.ndarray:
    with open_regular(path, what="calibration file", limit=MAX_DATA_BYTES,
                      error=CalibrationError, hint=_FORMAT_HINT) as (handle, _):
        try:
            with zipfile.ZipFile(handle) as archive:
                member = _npz_member(archive, path)
                if member.file_size > MAX_DATA_BYTES:
                    raise CalibrationError(
                        f"calibration file {path}: its array '{_npz_key(member.filename)}' "
                        f"unpacks to {member.file_size:,} B, more than the "
                        f"{MAX_DATA_BYTES:,} B tinyforge reads from a data file",
                        hint=f"give fewer or smaller samples (calibration uses at most the "
                             f"first {MAX_SAMPLES})")
                key = _npz_key(member.filename)
                with archive.open(member) as stream:
                    if stream.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                        # np.load would hand back its bytes, or try to unpickle them.
                        raise CalibrationError(f"calibration file {path} is not a valid .npz "
                                               f"file: its '{key}' is not a NumPy array",
                                               hint=_FORMAT_HINT)
                with archive.open(member) as stream:
                    _checked_header(stream, member.file_size, path,
                                    what=f"array '{key}' of calibration file",
                                    limit=MAX_DATA_BYTES)
                with archive.open(member) as stream:
                    return npy_format.read_array(stream, allow_pickle=False)
        except _ZIP_ERRORS as exc:
            raise _unreadable(path, exc) from None


def _npz_key(member_name: str) -> str:
    return member_name[:-4] if member_name.endswith(".npy") else member_name


def _npz_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The samples member: key `x`, or the archive's only array."""
    members = {_npz_key(info.filename): info for info in archive.infolist()
               if not info.is_dir()}
    if "x" in members:
        return members["x"]
    if len(members) == 1:
        return next(iter(members.values()))
    found = ", ".join(repr(k) for k in members) if members else "no arrays"
    raise CalibrationError(f"calibration file {path} has no array named 'x' (found {found})",
                           hint="store the samples under the key 'x': np.savez(path, x=samples)")


def _unreadable(path: Path, exc: Exception, what: str = "calibration file") -> CalibrationError:
    text = str(exc)
    if "allow_pickle" in text or "Object arrays" in text:
        return CalibrationError(
            f"{what} {path} holds Python objects (a pickled object array); "
            "tinyforge does not unpickle data files",
            hint="save a plain numeric array: np.save(path, np.asarray(samples, np.float32))")
    return CalibrationError(f"{what} {path} is not a valid {path.suffix or 'NumPy'} file "
                            f"({type(exc).__name__}: {text})", hint=_FORMAT_HINT)


def _check_values(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        raise CalibrationError(
            f"calibration file {path} holds {array.dtype} values; expected floating point "
            "(float32)",
            hint="give the float inputs the model sees, after the same scaling/normalisation "
                 "used in training: x.astype(np.float32)")
    _check_samples(array, path)
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


def _check_samples(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 0:
        raise CalibrationError(f"calibration file {path} holds a single number, not samples",
                               hint=_FORMAT_HINT)
    if array.size == 0:
        raise CalibrationError(f"calibration file {path} holds no samples "
                               f"(shape {_fmt(array.shape)})",
                               hint="give at least one sample")
    return array


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"
