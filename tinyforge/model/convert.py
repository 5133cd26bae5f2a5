"""Converting Keras (`.keras`, `.h5`) and SavedModel inputs to a TFLite model for TFLM.

TensorFlow runs only in a child process (`_convert_child`): importing it costs seconds and
hundreds of MB, its C++ logging would go straight to the user's terminal, and a bad model
can crash it. Here, in the parent, the inputs are checked without TensorFlow, the child's
output is streamed to a callback and the debug log, and the child's result is turned into a
`ConversionResult` or a `TinyforgeError` the user can act on.

- int8: full-integer quantization, int8 input and output tensors, ranges from the
  calibration samples, `TFLITE_BUILTINS_INT8` only (no float fallback TFLM would choke on);
- float32: a plain conversion.
Either way the batch dimension is fixed to 1 (a dynamic batch adds SHAPE/STRIDED_SLICE/PACK
ops and arena). When calibration samples are given, the child also runs the float model on
them; `ConversionResult.reference` feeds `tinyforge.model.accuracy.compare`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import proc, units
from ..errors import (
    ChildTimeoutError,
    ConversionError,
    ModelFileError,
    TinyforgeError,
    ToolMissingError,
)
from ..userfiles import GiB, regular_size
from . import calibration as calib
from ._convert_child import EXIT_REPORTED
from .accuracy import FloatReference

__all__ = ["ConversionResult", "QUANTIZE_MODES", "convert", "source_kind",
           "without_tensorflow_logs"]

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "float32")
# TensorFlow's import alone takes ~3 s; a small model converts in about a second. Large
# models with many calibration samples take minutes, hence the generous limit.
CONVERSION_TIMEOUT_S = 900.0
# TensorFlow's C++ INFO lines are noise even in --verbose output; warnings stay.
_CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1", "PYTHONUNBUFFERED": "1",
              "TF_ENABLE_ONEDNN_OPTS": "0"}
# TensorFlow's C++ (absl) log lines, e.g. "W0000 00:00:1796156001.905745   24961 x.cc:364] ...",
# and absl's notice before them: noise for the user, shown with -v (the debug log) only.
# (absl writes the seconds since the epoch where the seconds of the minute would be.)
_TF_LOG_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                          r"|WARNING: All log messages before absl::InitializeLog\(\)")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the signature; it is then at one of these offsets.
_HDF5_OFFSETS = (0, 512, 1024, 2048)
_SOURCE_HINT = "give a .keras or .h5 file, or a SavedModel directory (with saved_model.pb)"
# TensorFlow reads the whole source. Its float weights take 4 bytes where the int8 model takes
# 1, and a Keras file may also hold the optimizer's state (Adam: two more copies), so a source
# up to this many times the board's flash can still become a model that fits; a larger one
# cannot, and is refused before TensorFlow reads it.
SOURCE_FLASH_MULTIPLE = 16
# Without a board to compare with (a direct library call).
MAX_SOURCE_BYTES = 4 * GiB
# A SavedModel holds a few files; walking a huge tree would only waste time.
_SAVED_MODEL_MAX_FILES = 10_000


@dataclass
class ConversionResult:
    source: Path
    source_kind: str            # "keras", "h5" or "saved_model"
    output: Path
    quantize: str
    model_bytes: int
    sha256: str
    input_shape: list[int | None]   # as the source declared it (batch may be None)
    batch_was_fixed: bool       # the source's batch was not 1 and was re-exported as 1
    calibration: Path | None
    calibration_samples: int
    seconds: float              # the whole child run, TensorFlow's import included
    convert_seconds: float      # TFLiteConverter.convert() alone
    tensorflow_version: str
    reference: FloatReference | None = field(default=None, repr=False)
    log_lines: list[str] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"source": str(self.source), "source_kind": self.source_kind,
                "output": str(self.output), "quantize": self.quantize,
                "model_bytes": self.model_bytes, "sha256": self.sha256,
                "input_shape": self.input_shape, "batch_was_fixed": self.batch_was_fixed,
                "calibration": str(self.calibration) if self.calibration else None,
                "calibration_samples": self.calibration_samples,
                "seconds": round(self.seconds, 2), "convert_seconds": self.convert_seconds,
                "tensorflow_version": self.tensorflow_version}


def source_kind(source: Path, *, flash_bytes: int | None = None) -> str:
    """"keras", "h5" or "saved_model", after a quick check that the file looks like one.

    The source must be regular files (a FIFO would block TensorFlow forever) and, given the
    board's flash, no larger than `SOURCE_FLASH_MULTIPLE` times it.
    """
    source = Path(source)
    limit, too_large = _source_limit(flash_bytes)
    if source.is_dir():
        if (source / "saved_model.pb").is_file() or (source / "saved_model.pbtxt").is_file():
            _check_saved_model_files(source, limit, too_large)
            return "saved_model"
        raise ModelFileError(f"{source} is a directory without saved_model.pb, so not a "
                             "SavedModel", hint=_SOURCE_HINT)
    regular_size(source, what="model", limit=limit, error=ModelFileError,
                 hint="check the path given to --model", too_large=too_large)
    suffix = source.suffix.lower()
    if suffix == ".tflite":
        raise ConversionError(f"{source} is already a TFLite model and is not converted",
                              hint="use it as it is: it must already be quantized the way "
                                   "the board needs")
    if suffix == ".keras":
        if not zipfile.is_zipfile(source):
            raise ModelFileError(f"{source} is not a Keras archive (a .keras file is a zip)",
                                 hint="save the model again with model.save('model.keras'); "
                                      "if it was copied, compare its size with the original")
        return "keras"
    if suffix in (".h5", ".hdf5"):
        if not _looks_like_hdf5(source):
            raise ModelFileError(f"{source} is not an HDF5 file", hint=_SOURCE_HINT)
        return "h5"
    raise ModelFileError(f"{source} is not a model tinyforge can convert "
                         f"(unknown extension '{source.suffix}')", hint=_SOURCE_HINT)


def convert(source: Path, *, calibration: Path | None, quantize: str = "int8", output: Path,
            on_line: Callable[[str], None] | None = None,
            timeout: float = CONVERSION_TIMEOUT_S,
            per_channel_dense: bool = True, flash_bytes: int | None = None) -> ConversionResult:
    """Convert `source` to a TFLite model written (atomically) to `output`.

    `per_channel_dense=False` quantizes FULLY_CONNECTED weights per tensor, for TFLM versions
    that only apply a single scale to them (board profile `tflm.per_channel_fully_connected`).
    `flash_bytes` (the board's) refuses sources too large to become a model that fits.

    `on_line` receives every line TensorFlow prints in the child (they also go to the
    debug log). int8 requires `calibration`; with float32 it is optional and only feeds the
    float reference.
    """
    source, output = Path(source), Path(output)
    if quantize not in QUANTIZE_MODES:
        raise ConversionError(f"unknown quantization '{quantize}'",
                              hint=f"use one of: {', '.join(QUANTIZE_MODES)}")
    kind = source_kind(source, flash_bytes=flash_bytes)
    if quantize == "int8":
        calibration = calib.require_calibration(calibration, quantize=quantize)
    if calibration is not None:
        # Format and values are checked now, without TensorFlow; the shape once the
        # child knows the model's input.
        calibration = Path(calibration)
        calib.load_array(calibration)
    _require_tensorflow()
    log.info("converting %s (%s) to %s in a TensorFlow child process", source, kind, quantize)
    with tempfile.TemporaryDirectory(prefix="tinyforge-convert-") as work_dir:
        work = Path(work_dir)
        # Paths go to the child as the user gave them (it runs in the same directory), so
        # its messages name them the same way.
        completed = _run_child(work, source=source, kind=kind, quantize=quantize,
                               calibration=calibration, on_line=on_line, timeout=timeout,
                               per_channel_dense=per_channel_dense)
        facts = _outcome(work, completed, source)
        data = (work / "model.tflite").read_bytes()
        reference_path = work / "reference.npz"
        reference = FloatReference.load(reference_path) if reference_path.exists() else None
    _write_atomically(output, data)
    result = ConversionResult(
        source=source, source_kind=kind, output=output, quantize=quantize,
        model_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        input_shape=facts["input_shape"], batch_was_fixed=facts["batch_was_fixed"],
        calibration=calibration, calibration_samples=facts["calibration_samples"],
        seconds=completed.seconds, convert_seconds=facts["convert_seconds"],
        tensorflow_version=facts["tensorflow_version"], reference=reference,
        log_lines=completed.output)
    log.debug("converted %s: %s in %s (converter %.2f s)%s", source, units.size(len(data)),
              units.seconds(completed.seconds), result.convert_seconds,
              "; batch fixed to 1" if result.batch_was_fixed else "")
    return result


def _run_child(work: Path, *, source: Path, kind: str, quantize: str,
               calibration: Path | None, on_line, timeout: float,
               per_channel_dense: bool) -> proc.Completed:
    request = work / "request.json"
    request.write_text(json.dumps({
        "source": str(source), "kind": kind, "quantize": quantize,
        "per_channel_dense": per_channel_dense,
        "calibration": str(calibration) if calibration else None, "work_dir": str(work)}))

    def relay(line: str) -> None:
        log.debug("tf: %s", line)
        if on_line:
            on_line(line)

    try:
        return proc.run(proc.python_module("tinyforge.model._convert_child", str(request)),
                        timeout=timeout, env=_child_env(), on_line=relay, check=False,
                        what="conversion")
    except ChildTimeoutError as exc:
        raise ConversionError(f"converting {source} took longer than {timeout:g} s and was "
                              "stopped", details=without_tensorflow_logs(exc.details),
                              hint="try fewer calibration samples, or a smaller model") from None


def _outcome(work: Path, completed: proc.Completed, source: Path) -> dict:
    """The child's facts on success; otherwise the error it reported, or its crash."""
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    if completed.returncode == 0 and result and result.get("ok"):
        return result
    if completed.returncode == EXIT_REPORTED and result and not result.get("ok"):
        raise _reported_error(result)
    shown = without_tensorflow_logs("\n".join(completed.output)) or ""
    tail = "\n".join(f"  {line}" for line in shown.splitlines()[-proc.TAIL_LINES:])
    raise ConversionError(
        f"the conversion process for {source} crashed "
        f"({_describe_exit(completed.returncode)})",
        details=tail or None,
        hint="TensorFlow crashed on this model; run with --verbose for its full output")


def without_tensorflow_logs(text: str | None) -> str | None:
    """`text` without TensorFlow's C++ log lines: what a conversion error shows the user."""
    if not text:
        return text
    return "\n".join(line for line in text.splitlines() if not _TF_LOG_LINE.match(line.strip()))


def _reported_error(result: dict) -> TinyforgeError:
    from .. import errors

    cls = getattr(errors, result.get("error", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, TinyforgeError)) or cls in (
            errors.UnsupportedOpsError, errors.ChildProcessFailed, errors.PlatformIOError):
        cls = ConversionError  # those need extra constructor arguments the child cannot send
    return cls(result["message"], details=result.get("details"),
               hint=result.get("hint") or "run with --verbose to see TensorFlow's full output")


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(_CHILD_ENV)
    # The child must import this very copy of tinyforge, installed or not, and nothing from
    # the working directory (see proc.python_module).
    env["PYTHONPATH"] = proc.pythonpath(str(Path(__file__).resolve().parents[2]))
    return env


def _source_limit(flash_bytes: int | None) -> tuple[int, str]:
    if flash_bytes is None:
        return MAX_SOURCE_BYTES, ""
    return (SOURCE_FLASH_MULTIPLE * flash_bytes,
            f"{SOURCE_FLASH_MULTIPLE} times the board's {flash_bytes:,} B of flash; a larger "
            "source cannot become a model that fits")


def _check_saved_model_files(folder: Path, limit: int, too_large: str) -> None:
    """Every entry of a SavedModel is a folder or a regular file, and together they are small."""
    total, count = 0, 0
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            count += 1
            if count > _SAVED_MODEL_MAX_FILES:
                raise ModelFileError(f"SavedModel {folder} holds more than "
                                     f"{_SAVED_MODEL_MAX_FILES:,} files; it is not a model",
                                     hint=_SOURCE_HINT)
            total += regular_size(Path(directory) / name, what="SavedModel file",
                                  limit=limit, error=ModelFileError, hint=_SOURCE_HINT,
                                  too_large=too_large)
            if total > limit:
                raise ModelFileError(
                    f"SavedModel {folder} holds more than {limit:,} B"
                    + (f": {too_large}" if too_large else ""),
                    hint=f"check that {folder} is the model you meant; nothing was read from it")


def _require_tensorflow() -> None:
    # find_spec looks for the package without importing it (TF's import takes seconds).
    if importlib.util.find_spec("tensorflow") is None:
        raise ToolMissingError("TensorFlow is not installed; it is needed to convert "
                               ".keras, .h5 and SavedModel inputs",
                               hint="pip install 'tinyforge[convert]' (tensorflow-cpu 2.21), "
                                    "or give a .tflite model")


def _looks_like_hdf5(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            for offset in _HDF5_OFFSETS:
                handle.seek(offset)
                if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def _write_atomically(output: Path, data: bytes) -> None:
    # A reader of `output` sees the old model or the new one, never a partial file.
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ConversionError(f"cannot write the converted model to {output}: "
                              f"{exc.strerror or exc}",
                              hint="choose a writable output path") from None
