"""The errors tinyforge raises.

Every failure a user can act on has its own subclass of `TinyforgeError` carrying a hint
that says what to do. The library only raises; `tinyforge.cli` prints the message and the
hint and turns `exit_code` into the process exit status.
"""

from __future__ import annotations

# Exit codes of the command line contract (docs/cli.md).
EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_DEVICE_ERROR = 2
EXIT_VALIDATION_FAILED = 3
EXIT_LIMIT_EXCEEDED = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class TinyforgeError(Exception):
    """Root of every error tinyforge reports to the user."""

    exit_code = EXIT_USER_ERROR
    # What the command found before it failed (validate's report): with --json it is printed
    # together with the error object (docs/cli.md).
    result: dict | None = None

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra text worth showing (a child's last output lines, a list of ops, ...).
        self.details = details

    def __str__(self) -> str:
        return self.message


# --- input the user gave us -------------------------------------------------------------

class InputError(TinyforgeError):
    """Something the user passed in is wrong; the message names it."""


class ModelFileError(InputError):
    """The model file is missing, not a model, truncated or corrupt."""


class ModelTypeError(InputError):
    """The model's tensor types do not suit what was asked (float where int8 is required, ...)."""


class CalibrationError(InputError):
    """Calibration or validation data is missing, unreadable or of the wrong shape or dtype."""


class UnsupportedOpsError(InputError):
    """The board's TFLM cannot resolve some of the model's operators."""

    def __init__(self, message: str, *, ops: list[str], hint: str | None = None):
        super().__init__(message, hint=hint, details="\n".join(f"  - {op}" for op in ops))
        self.ops = ops


class UnsupportedFeatureError(InputError):
    """The model uses a feature the board's TFLM version would compute wrongly."""


class DeviceMeasurementUnavailable(InputError):
    """`--arena device` was asked for but the emulated target cannot be built here."""


class HostRuntimeError(InputError):
    """The host TFLM runtime could not run the model (unsupported type, bad graph, ...)."""


class HostRunTimeoutError(HostRuntimeError):
    """One run of the model in the host TFLM runtime took longer than its limit and was stopped."""


class DoesNotFitError(InputError):
    """The model, runtime or arena do not fit the board's flash or RAM."""


class BoardProfileError(InputError):
    """A board id is unknown or a board profile is invalid."""


class ProjectError(InputError):
    """The project directory cannot be written, or holds files the user edited."""


class ConversionError(InputError):
    """TensorFlow could not convert or quantize the model."""


class PipelineConfigError(InputError):
    """A pipeline file (tinyforge.toml) is unreadable or has a wrong key, type or value."""


class PipelineShapeError(InputError):
    """The chosen sensor pipeline cannot produce the model's input (shape or type)."""


class SensorUnavailableError(InputError):
    """The board has no sensor for the chosen pipeline input."""


class RecordingError(InputError):
    """A recording (WAV, CSV, NPY/NPZ) is unreadable, too large or not what the pipeline takes."""


class CaptureFormatError(InputError):
    """`tinyforge capture` does not write this format, or not for this sensor."""


class CaptureOutputError(InputError):
    """The capture's output file cannot be written where it was asked for."""


class UnwritableFolderError(InputError):
    """A folder tinyforge keeps its own files in, outside any project (its PlatformIO core dir,
    the user's PlatformIO core dir, the cache), cannot be created or written.

    The hint names the folder and the environment variable (or option) that moves it.
    """

    def __init__(self, message: str, *, folder, variable: str, hint: str,
                 details: str | None = None):
        super().__init__(message, hint=hint, details=details)
        self.folder = folder
        self.variable = variable


class ResolverTableError(TinyforgeError):
    """The op-to-resolver table for the board's TFLM is missing or does not match TFLM's header."""


# --- tools and child processes ----------------------------------------------------------

class ToolMissingError(TinyforgeError):
    """A program tinyforge needs is not installed."""


class ChildTimeoutError(TinyforgeError):
    """A child process ran past its time limit and was stopped."""


class ChildProcessFailed(TinyforgeError):
    """A child process exited with a non-zero status."""

    def __init__(self, message: str, *, returncode: int, hint: str | None = None,
                 details: str | None = None):
        super().__init__(message, hint=hint, details=details)
        self.returncode = returncode


class PlatformIOError(ChildProcessFailed):
    """PlatformIO failed; tinyforge exits with PlatformIO's own status."""

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.returncode or EXIT_USER_ERROR


class PackageUnavailableError(TinyforgeError):
    """A PlatformIO package or library is not installed and cannot be downloaded."""


class TFLMSourceError(TinyforgeError):
    """No TFLM library source tree is available where one is needed."""


class HostBuildError(TinyforgeError):
    """A board's TFLM tree could not be compiled for the host (the reference runtime)."""


class ReferenceUnavailable(InputError):
    """The reference runtime that was asked for (`--reference tflm`) cannot be had here."""


# --- devices ----------------------------------------------------------------------------

class DeviceError(TinyforgeError):
    """The board, its serial port or the emulator misbehaved."""

    exit_code = EXIT_DEVICE_ERROR


class LinkLostError(DeviceError):
    """Reading from or writing to an open serial link failed: unplugged, reset, or an I/O error.

    `monitor` waits for the board to come back after this one; other commands stop.
    """


class CaptureStreamError(DeviceError):
    """The board's sensor stream broke during a capture: its sensor did not start, samples were
    lost or a line went missing. What arrived intact before is kept."""


class ValidationFailed(TinyforgeError):
    """The board's outputs differ from the host's beyond the tolerance."""

    exit_code = EXIT_VALIDATION_FAILED


class ProfileUnavailableError(InputError):
    """`tinyforge profile` has no profiling firmware or no counts to use."""


class ProfileLimitExceeded(TinyforgeError):
    """A model exceeded a `tinyforge profile` limit (--max-instructions, --max-arena)."""

    exit_code = EXIT_LIMIT_EXCEEDED
