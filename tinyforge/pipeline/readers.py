"""Recordings the pipeline replays: WAV for audio; CSV, NPY or NPZ for the IMU (and audio).

Recordings are untrusted input: every read is bounded (no allocation sized by a header that
was not checked against a limit and the file's real size), nothing is unpickled, and every
problem is a `RecordingError` naming the file, what was expected and how to fix it.

- WAV: 16 kHz, mono, 16-bit PCM only. Another rate, channel count or sample width is
  refused, not converted: the board's microphone delivers exactly that, and a silent
  conversion would train or validate on audio the device never hears (`sox` converts).
- IMU CSV: a header naming the columns (ax, ay, az in g; gx, gy, gz in dps; optionally a
  time column time_s, time_ms or time_us); the rate is `imu.recording_rate_hz` when set,
  else the time column's mean rate.
- NPY/NPZ: audio as int16 PCM [N]; IMU as [N, A] floats in g/dps or integer sensor counts.
"""

from __future__ import annotations

import csv
import math
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RecordingError
from . import arith, imu as imu_mod
from .audio import SAMPLE_RATE

MAX_AUDIO_SECONDS = 1800
MAX_AUDIO_SAMPLES = MAX_AUDIO_SECONDS * SAMPLE_RATE
MAX_IMU_SAMPLES = 2_000_000          # 4.6 hours at 119 Hz
MAX_CSV_BYTES = 256 * 1024 * 1024
MAX_CSV_LINE = 4096
MAX_ARRAY_BYTES = 256 * 1024 * 1024
# A time column whose steps stray further from their mean than this is not a steady stream.
MAX_TIME_JITTER = 0.5
TIME_COLUMNS = {"time_s": 1.0, "t": 1.0, "time": 1.0, "time_ms": 1e-3, "time_us": 1e-6}
_SOX_HINT = "convert it first, e.g. `sox IN.wav -r 16000 -c 1 -b 16 OUT.wav`"
_CSV_HINT = ("the first line must name the columns, e.g. `time_s,ax,ay,az,gx,gy,gz` "
             "(accelerometer in g, gyroscope in dps)")


@dataclass(frozen=True)
class AudioRecording:
    samples: np.ndarray          # int16 [N] at 16 kHz
    path: Path | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class ImuRecording:
    counts: np.ndarray           # int16 [N, 6] in tinyforge's axes; absent axes are 0
    rate_mhz: int
    axes: tuple[str, ...]        # the axes the recording holds
    rate_source: str             # "time column", "recording_rate_hz", "file"
    path: Path | None = None

    @property
    def seconds(self) -> float:
        return len(self.counts) * 1000 / self.rate_mhz


def read_recording(path: Path, pipeline) -> AudioRecording | ImuRecording:
    """Read `path` for `pipeline` (its kind picks the reader; the suffix the format)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if pipeline.kind == "microphone":
        if suffix == ".wav":
            return read_wav(path)
        if suffix in (".npy", ".npz"):
            return audio_from_arrays(read_arrays(path), path)
        raise RecordingError(f"{path}: the microphone pipeline replays .wav, .npy or .npz "
                             f"recordings, not '{path.suffix or 'no extension'}'",
                             hint="give a 16 kHz mono 16-bit WAV file")
    if pipeline.kind == "imu":
        if suffix == ".csv":
            return read_imu_csv(path, pipeline)
        if suffix in (".npy", ".npz"):
            return imu_from_arrays(read_arrays(path), path, pipeline)
        raise RecordingError(f"{path}: the imu pipeline replays .csv, .npy or .npz "
                             f"recordings, not '{path.suffix or 'no extension'}'", hint=_CSV_HINT)
    raise RecordingError(f"the {pipeline.kind} pipeline has no recordings to read",
                         hint="choose the imu or microphone pipeline (--input or "
                              "pipeline.input in tinyforge.toml)")


# --- WAV -----------------------------------------------------------------------------------

def read_wav(path: Path) -> AudioRecording:
    """16 kHz mono 16-bit PCM samples of a WAV file; anything else is refused."""
    path = Path(path)
    size = _file_size(path)
    try:
        with wave.open(str(path), "rb") as reader:
            rate, channels = reader.getframerate(), reader.getnchannels()
            width, frames = reader.getsampwidth(), reader.getnframes()
            problems = []
            if rate != SAMPLE_RATE:
                problems.append(f"{rate} Hz (not {SAMPLE_RATE})")
            if channels != 1:
                problems.append(f"{channels} channels (not mono)")
            if width != 2:
                problems.append(f"{8 * width}-bit samples (not 16-bit)")
            if problems:
                raise RecordingError(
                    f"{path} is {', '.join(problems)}: the microphone pipeline takes 16 kHz "
                    "mono 16-bit PCM, and tinyforge refuses to resample or mix down audio "
                    "(the board's microphone never hears the converted sound)", hint=_SOX_HINT)
            if frames > MAX_AUDIO_SAMPLES:
                raise RecordingError(f"{path} holds {frames / SAMPLE_RATE:.0f} s of audio, more "
                                     f"than the {MAX_AUDIO_SECONDS} s tinyforge reads",
                                     hint="split it into shorter recordings")
            if frames * 2 > size:
                raise RecordingError(f"{path} is truncated: its header promises {frames} "
                                     f"samples, but the file has {size} bytes",
                                     hint="record or export the file again")
            data = reader.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise RecordingError(f"{path} is not a PCM WAV file tinyforge can read ({exc})",
                             hint=f"give a 16 kHz mono 16-bit PCM WAV; {_SOX_HINT}") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the file exists and is readable by you") from None
    if len(data) != frames * 2:
        raise RecordingError(f"{path} is truncated: {len(data) // 2} of {frames} samples",
                             hint="record or export the file again")
    return AudioRecording(np.frombuffer(data, dtype="<i2").astype(np.int16), path)


# --- CSV -----------------------------------------------------------------------------------

def read_imu_csv(path: Path, pipeline) -> ImuRecording:
    """An IMU recording from a CSV file with a header line naming its columns."""
    path = Path(path)
    if _file_size(path) > MAX_CSV_BYTES:
        raise RecordingError(f"{path} is larger than {MAX_CSV_BYTES >> 20} MiB",
                             hint="split it into shorter recordings")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RecordingError(f"{path} is not UTF-8 text", hint=_CSV_HINT) from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the file exists and is readable by you") from None
    lines = iter(text.splitlines())
    header = next(lines, "")
    names = [n.strip().lower() for n in next(csv.reader([header]), [])]
    axes = tuple(a for a in imu_mod.AXES if a in names)
    _require_axes(path, axes, pipeline, found=[n for n in names if n])
    time_column = next((n for n in TIME_COLUMNS if n in names), None)
    wanted = list(axes) + ([time_column] if time_column else [])
    index = [names.index(n) for n in wanted]
    values = _csv_values(path, lines, index, len(names))
    counts = np.zeros((len(values), len(imu_mod.AXES)), dtype=np.int16)
    for i, axis in enumerate(axes):
        column = imu_mod.AXES.index(axis)
        counts[:, column] = arith.counts_from_units(values[:, i],
                                                    imu_mod.counts_per_unit(axis))
    times = values[:, -1] * TIME_COLUMNS[time_column] if time_column else None
    rate_mhz, source = _imu_rate(path, pipeline, times)
    return ImuRecording(counts, rate_mhz, axes, source, path)


def _csv_values(path: Path, lines, index: list[int], width: int) -> np.ndarray:
    rows = []
    for line_number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        if len(line) > MAX_CSV_LINE:
            raise RecordingError(f"{path}:{line_number}: line longer than {MAX_CSV_LINE} "
                                 "characters", hint=_CSV_HINT)
        if len(rows) >= MAX_IMU_SAMPLES:
            raise RecordingError(f"{path} has more than {MAX_IMU_SAMPLES} samples",
                                 hint="split it into shorter recordings")
        cells = next(csv.reader([line]))
        if len(cells) != width:
            raise RecordingError(f"{path}:{line_number}: {len(cells)} values for {width} "
                                 "columns", hint=_CSV_HINT)
        try:
            row = [float(cells[i]) for i in index]
        except ValueError:
            raise RecordingError(f"{path}:{line_number}: a value is not a number "
                                 f"({', '.join(cells[i] for i in index)})",
                                 hint=_CSV_HINT) from None
        if not all(math.isfinite(v) for v in row):
            raise RecordingError(f"{path}:{line_number}: NaN or infinite value",
                                 hint="remove or repair that sample")
        rows.append(row)
    if not rows:
        raise RecordingError(f"{path} has a header but no samples", hint=_CSV_HINT)
    return np.asarray(rows, dtype=np.float64)


def _require_axes(path: Path, axes: tuple[str, ...], pipeline, *, found: list[str]) -> None:
    needed = list(pipeline.imu.axes)
    if pipeline.imu.trigger is not None:
        needed += [a for a in imu_mod.ACCEL_AXES if a not in needed]
    missing = [a for a in needed if a not in axes]
    if missing:
        why = " (the motion trigger needs ax, ay, az)" if pipeline.imu.trigger else ""
        raise RecordingError(
            f"{path} has no column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            f"{why}; found: {', '.join(found) or 'no header'}", hint=_CSV_HINT)


def _imu_rate(path: Path, pipeline, times: np.ndarray | None) -> tuple[int, str]:
    configured = pipeline.imu.recording_rate_mhz
    if configured is not None:
        return configured, "recording_rate_hz"
    if times is None:
        raise RecordingError(
            f"{path} has no time column and tinyforge.toml sets no imu.recording_rate_hz, so "
            "the recording's rate is unknown",
            hint="add a time_s (or time_ms, time_us) column, or set imu.recording_rate_hz "
                 "(119 for rev1 boards, 99.84 for rev2)")
    return rate_from_times(path, times), "time column"


def rate_from_times(path: Path, times: np.ndarray) -> int:
    """The mean rate of a steady time column, in millihertz."""
    if len(times) < 2:
        raise RecordingError(f"{path} has a single sample: its rate cannot be measured",
                             hint="set imu.recording_rate_hz")
    steps = np.diff(times)
    if np.any(steps <= 0):
        row = int(np.argmax(steps <= 0)) + 3  # header line, 1-based, the later sample
        raise RecordingError(f"{path}:{row}: time does not increase",
                             hint="give samples in time order, without duplicates")
    mean = float(times[-1] - times[0]) / (len(times) - 1)
    if np.max(np.abs(steps - mean)) > MAX_TIME_JITTER * mean:
        raise RecordingError(
            f"{path}: the time column is not steady (steps from {steps.min():g} to "
            f"{steps.max():g} s around a mean of {mean:g} s): samples were lost",
            hint="record again without gaps, or set imu.recording_rate_hz to ignore the "
                 "time column")
    rate_mhz = round(1000 / mean)
    if not 1000 <= rate_mhz <= 10_000_000:
        raise RecordingError(f"{path}: the time column gives {rate_mhz / 1000:g} Hz, outside "
                             "1 Hz..10 kHz", hint="check the time column's unit "
                                                   "(time_s, time_ms, time_us)")
    return rate_mhz


# --- NPY / NPZ -----------------------------------------------------------------------------

def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npy (under 'x') or .npz file, each checked against the limits first."""
    path = Path(path)
    size = _file_size(path)
    if path.suffix.lower() == ".npy":
        try:
            with path.open("rb") as handle:
                return {"x": _bounded_array(handle, size, path)}
        except OSError as exc:
            raise RecordingError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the file exists and is readable by you") from None
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise RecordingError(f"{path}: member '{info.filename}' is not a NumPy "
                                         "array", hint="save it with np.savez")
                if info.file_size > MAX_ARRAY_BYTES:
                    raise _too_large(path, info.file_size)
                with archive.open(info) as member:
                    arrays[info.filename[:-4]] = _bounded_array(member, info.file_size, path)
            return arrays
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise RecordingError(f"{path} is not a valid .npz file ({exc})",
                             hint="save it with np.savez") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the file exists and is readable by you") from None


def _bounded_array(handle, available: int, path: Path) -> np.ndarray:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise RecordingError(f"{path} is not a valid NumPy file ({exc})",
                             hint="save it with np.save / np.savez") from None
    if dtype.hasobject:
        raise RecordingError(f"{path} holds Python objects; tinyforge does not unpickle data",
                             hint="save a plain numeric array")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise _too_large(path, nbytes)
    if nbytes > available:
        raise RecordingError(f"{path} is truncated: its header promises {nbytes} bytes of "
                             f"data, the file has at most {available}",
                             hint="save the array again")
    data = handle.read(nbytes)
    if len(data) != nbytes:
        raise RecordingError(f"{path} is truncated ({len(data)} of {nbytes} bytes)",
                             hint="save the array again")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _too_large(path: Path, nbytes: int) -> RecordingError:
    return RecordingError(f"{path} holds {nbytes >> 20} MiB of data, more than the "
                          f"{MAX_ARRAY_BYTES >> 20} MiB tinyforge reads",
                          hint="split it into shorter recordings")


def _pick(arrays: dict[str, np.ndarray], path: Path, names: tuple[str, ...]) -> np.ndarray:
    for name in names:
        if name in arrays:
            return arrays[name]
    data = [k for k in arrays if k not in ("rate_hz", "axes")]
    if len(data) == 1:
        return arrays[data[0]]
    raise RecordingError(f"{path} has no array named {' or '.join(repr(n) for n in names)} "
                         f"(found {', '.join(sorted(arrays)) or 'none'})",
                         hint=f"store the recording under '{names[0]}'")


def _rate_hz(arrays: dict[str, np.ndarray], path: Path) -> float | None:
    if "rate_hz" not in arrays:
        return None
    rate = arrays["rate_hz"]
    if rate.size != 1 or not np.issubdtype(rate.dtype, np.number):
        raise RecordingError(f"{path}: 'rate_hz' must be one number",
                             hint="np.savez(path, ..., rate_hz=119.0)")
    return float(rate.reshape(-1)[0])


def audio_from_arrays(arrays: dict[str, np.ndarray], path: Path) -> AudioRecording:
    samples = _pick(arrays, path, ("audio", "x"))
    rate = _rate_hz(arrays, path)
    if rate is not None and rate != SAMPLE_RATE:
        raise RecordingError(f"{path}: rate_hz is {rate:g}; the microphone pipeline takes "
                             f"{SAMPLE_RATE} Hz and tinyforge does not resample audio",
                             hint="resample it to 16 kHz before saving")
    if samples.dtype != np.int16 or samples.ndim not in (1, 2) or \
            (samples.ndim == 2 and samples.shape[1] != 1):
        raise RecordingError(f"{path}: audio must be int16 PCM of shape [N] (found "
                             f"{samples.dtype} {list(samples.shape)})",
                             hint="np.save(path, pcm.astype(np.int16)) with mono 16 kHz samples")
    if samples.size > MAX_AUDIO_SAMPLES:
        raise RecordingError(f"{path} holds more than {MAX_AUDIO_SECONDS} s of audio",
                             hint="split it into shorter recordings")
    return AudioRecording(np.ascontiguousarray(samples.reshape(-1), dtype=np.int16), path)


def imu_from_arrays(arrays: dict[str, np.ndarray], path: Path, pipeline
                    ) -> ImuRecording:
    """An IMU recording from arrays: [N, 6] (ax..gz) or [N, len(imu.axes)] (those axes)."""
    values = _pick(arrays, path, ("imu", "x"))
    axes = _array_axes(arrays, values, path, pipeline)
    _require_axes(path, axes, pipeline, found=list(axes))
    counts = imu_counts(values, axes, path)
    rate = _rate_hz(arrays, path)
    if pipeline.imu.recording_rate_mhz is not None:
        return ImuRecording(counts, pipeline.imu.recording_rate_mhz, axes,
                            "recording_rate_hz", path)
    if rate is None:
        raise RecordingError(f"{path or 'the array'}: the recording's rate is unknown",
                             hint="save it with rate_hz (np.savez(path, imu=x, rate_hz=119.0)) "
                                  "or set imu.recording_rate_hz")
    rate_mhz = arith.to_millihertz(rate)
    if rate_mhz is None or not 1000 <= rate_mhz <= 10_000_000:
        raise RecordingError(f"{path}: rate_hz {rate:g} is not a whole number of millihertz "
                             "between 1 Hz and 10 kHz", hint="give the IMU's rate, e.g. 119.0")
    return ImuRecording(counts, rate_mhz, axes, "file", path)


def _array_axes(arrays, values: np.ndarray, path, pipeline) -> tuple[str, ...]:
    if "axes" in arrays:
        names = tuple(str(a) for a in arrays["axes"].reshape(-1))
    elif values.ndim == 2 and values.shape[1] == len(imu_mod.AXES):
        names = imu_mod.AXES
    elif values.ndim == 2 and values.shape[1] == len(pipeline.imu.axes):
        names = pipeline.imu.axes
    else:
        shapes = "[N, 6] (ax, ay, az, gx, gy, gz)"
        if len(pipeline.imu.axes) != len(imu_mod.AXES):
            shapes += f" or [N, {len(pipeline.imu.axes)}] ({', '.join(pipeline.imu.axes)})"
        raise RecordingError(f"{path}: an IMU recording for this pipeline is {shapes}; found "
                             f"{list(values.shape)}",
                             hint="or save the column names under 'axes' in an .npz")
    unknown = [a for a in names if a not in imu_mod.AXES]
    if unknown or len(set(names)) != len(names) or values.ndim != 2 or \
            values.shape[1] != len(names):
        raise RecordingError(f"{path}: 'axes' {list(names)} does not name the "
                             f"{values.shape[-1]} columns with distinct axes of "
                             f"{', '.join(imu_mod.AXES)}", hint="fix the 'axes' array")
    return names


def imu_counts(values: np.ndarray, axes: tuple[str, ...], path: Path | None) -> np.ndarray:
    """[N, len(axes)] floats (g, dps) or integer counts -> int16 counts [N, 6]."""
    if len(values) > MAX_IMU_SAMPLES:
        raise RecordingError(f"{path or 'the array'} has more than {MAX_IMU_SAMPLES} samples",
                             hint="split it into shorter recordings")
    counts = np.zeros((len(values), len(imu_mod.AXES)), dtype=np.int16)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < -32768 or values.max() > 32767):
            raise RecordingError(f"{path or 'the array'}: integer IMU values are sensor counts "
                                 "and must fit int16", hint="give floats in g and dps instead")
        for i, axis in enumerate(axes):
            counts[:, imu_mod.AXES.index(axis)] = values[:, i]
        return counts
    if not np.issubdtype(values.dtype, np.floating):
        raise RecordingError(f"{path or 'the array'}: IMU values must be floats (g, dps) or "
                             f"int16 counts, not {values.dtype}", hint="x.astype(np.float32)")
    if not np.all(np.isfinite(values)):
        raise RecordingError(f"{path or 'the array'} has NaN or infinite values",
                             hint="remove or repair those samples")
    for i, axis in enumerate(axes):
        counts[:, imu_mod.AXES.index(axis)] = arith.counts_from_units(
            values[:, i], imu_mod.counts_per_unit(axis))
    return counts


def _file_size(path: Path) -> int:
    try:
        if path.is_dir():
            raise RecordingError(f"{path} is a directory, not a recording",
                                 hint="give a .wav, .csv, .npy or .npz file")
        return path.stat().st_size
    except FileNotFoundError:
        raise RecordingError(f"recording {path} does not exist",
                             hint="check the path") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the file exists and is readable by you") from None


def as_recording(source: Any, pipeline, *, rate_hz: float | None = None):
    """A recording from a path, a recording, or an array (training code's convenience).

    Arrays: audio int16 [N] at 16 kHz; IMU [N, 6] or [N, len(imu.axes)] (floats in g/dps, or
    integer counts) at `rate_hz` (or imu.recording_rate_hz).
    """
    if isinstance(source, (AudioRecording, ImuRecording)):
        return source
    if isinstance(source, (str, Path)):
        return read_recording(Path(source), pipeline)
    array = np.asarray(source)
    if pipeline.kind == "microphone":
        return audio_from_arrays({"audio": array}, Path("<array>"))
    if pipeline.kind == "imu":
        arrays: dict[str, np.ndarray] = {"x": array}
        if rate_hz is not None:
            arrays["rate_hz"] = np.asarray(rate_hz)
        return imu_from_arrays(arrays, Path("<array>"), pipeline)
    raise RecordingError("the host pipeline computes no features",
                         hint="choose the imu or microphone pipeline")


__all__ = ["AudioRecording", "ImuRecording", "read_recording", "read_wav", "read_imu_csv",
           "read_arrays", "as_recording"]
