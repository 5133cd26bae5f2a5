"""The real TFLM interpreter compiled for the host (the `tflite-micro` wheel).

Everything that touches the native runtime runs in a forked child (`isolated.py`): a
too-small arena or a malformed model can crash it. What TFLM prints on fd 2 comes back as
text so the user sees TFLM's own words. Every run has a short limit (`HOST_RUN_TIMEOUT_S`):
a model that loops (a WHILE that never ends) or is far too heavy for a microcontroller is
stopped and reported, never waited on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import HostRuntimeError, HostRunTimeoutError, ToolMissingError
from .isolated import IsolatedResult, call_isolated

_ALLOCATION_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
# Generous arena for runs that are not about measuring: 10x the model, at least 1 MiB.
_MIN_GENEROUS_ARENA = 1 << 20
# One run of a model on the host: create the interpreter, allocate, invoke once. Models that
# fit a board take milliseconds here (the gesture example ~2 ms); this long means the model
# loops or is far too heavy for a microcontroller. A batch gets this long per input.
HOST_RUN_TIMEOUT_S = 10.0


def generous_arena(model_bytes: int) -> int:
    return max(_MIN_GENEROUS_ARENA, 10 * model_bytes)


def runtime_module():
    try:
        from tflite_micro import runtime
    except ImportError as exc:
        raise ToolMissingError(
            f"the host TFLM runtime (tflite-micro) is not available: {exc}",
            hint="run `make setup`; tflite-micro has wheels for Linux x86_64 only "
                 "(CPython 3.10-3.14)") from None
    return runtime


def _interpreter(model: bytes, arena_size: int):
    return runtime_module().Interpreter.from_bytes(model, arena_size=arena_size)


def _invoke(model: bytes, arena_size: int, inputs: list[np.ndarray] | None):
    from .reader import inspect_bytes

    interpreter = _interpreter(model, arena_size)
    for index in range(len(inspect_bytes(model, "model").inputs)):
        details = interpreter.get_input_details(index)
        data = inputs[index] if inputs is not None else np.zeros(details["shape"],
                                                                  details["dtype"])
        interpreter.set_input(np.asarray(data, dtype=details["dtype"]).reshape(details["shape"]),
                              index)
    interpreter.invoke()
    return interpreter


def _run_batch(model: bytes, arena_size: int, batch: list[list[np.ndarray]],
               output_count: int, reset_between: bool = True):
    """The outputs for each inputs of `batch`, one by one (streamed back by isolated.py).

    `reset_between=False` keeps a model's state from one input to the next, as the firmware
    does: a streaming model then steps through `batch` as a sequence."""
    interpreter = _interpreter(model, arena_size)
    for inputs in batch:
        for index, data in enumerate(inputs):
            details = interpreter.get_input_details(index)
            interpreter.set_input(
                np.asarray(data, dtype=details["dtype"]).reshape(details["shape"]), index)
        interpreter.invoke()
        yield [np.array(interpreter.get_output(i)) for i in range(output_count)]
        if reset_between:
            interpreter.reset()


def _allocation_report(model: bytes, arena_size: int) -> bool:
    _invoke(model, arena_size, None).print_allocations()
    return True


def _isolated(fn, *args, what: str = "the model") -> IsolatedResult:
    # Loaded here, before the fork, so every child inherits it instead of importing it again
    # (~80 ms each): an arena search forks a dozen of them.
    runtime_module()
    result = call_isolated(fn, *args, timeout=HOST_RUN_TIMEOUT_S)
    if result.timed_out:
        raise _timed_out(what, result)
    return result


def _timed_out(what: str, result: IsolatedResult) -> HostRunTimeoutError:
    return HostRunTimeoutError(
        f"the host TFLM runtime ran {what} for {HOST_RUN_TIMEOUT_S:g} s without finishing "
        "and was stopped",
        details=tflm_diagnostics(result.output) or None,
        hint="a model that fits a microcontroller runs in milliseconds on a PC: this one "
             "loops (a WHILE whose condition never turns false?) or is far too heavy for "
             "the board; check its ops with `tinyforge inspect MODEL`")


def probe(model: bytes, arena_size: int) -> IsolatedResult:
    """Allocate and invoke once with zero inputs, isolated; the result says if it ran.

    A probe that times out did not run (`ok` is False, `timed_out` True) rather than raising:
    an arena search probes only after the model ran within the limit with a generous arena
    (`reported_arena_total`), so a hang here comes from the arena being too small.
    """
    runtime_module()
    return call_isolated(_probe_target, model, arena_size, timeout=HOST_RUN_TIMEOUT_S)


def _probe_target(model: bytes, arena_size: int) -> bool:
    _invoke(model, arena_size, None)
    return True


def reported_arena_total(model: bytes, arena_size: int) -> int | None:
    """What TFLM's RecordingMicroAllocator reports as the arena total, or None if it failed."""
    result = _isolated(_allocation_report, model, arena_size)
    match = _ALLOCATION_TOTAL.search(result.output)
    return int(match.group(1)) if result.ok and match else None


def dry_run(model: bytes, model_name: str) -> None:
    """Run the model once in host TFLM; raise `HostRuntimeError` with TFLM's own text."""
    result = _isolated(_probe_target, model, generous_arena(len(model)), what=model_name)
    if not result.ok:
        raise HostRuntimeError(
            f"the host TFLM runtime cannot run {model_name}: {result.describe_failure()}",
            details=tflm_diagnostics(result.output),
            hint="TFLM supports int8/int16/float32 tensors and a subset of ops; re-convert "
                 "the model with full-integer int8 quantization (`--quantize int8`)")


def run_batch(model: bytes, batch: list[list[np.ndarray]], output_count: int,
              model_name: str) -> list[list[np.ndarray]]:
    """Outputs of the host TFLM runtime for each list of inputs in `batch`.

    Each input gets `HOST_RUN_TIMEOUT_S` (the first one also creates the interpreter).
    """
    runtime_module()
    result = call_isolated(_run_batch, model, generous_arena(len(model)), batch, output_count,
                           timeout=HOST_RUN_TIMEOUT_S)
    if result.timed_out:
        raise _timed_out(f"{model_name} on input #{result.items} of {len(batch)}", result)
    if not result.ok:
        raise HostRuntimeError(
            f"the host TFLM runtime failed running {model_name}: {result.describe_failure()}",
            details=tflm_diagnostics(result.output),
            hint="these inputs make TFLM fail where the build's own run did not: check their "
                 "shape and range, and the model with `tinyforge inspect MODEL`")
    return result.value


def tflm_diagnostics(output: str, limit: int = 12) -> str:
    """TFLM's own lines from a child's fd 2, indented; allocation chatter is dropped."""
    lines = [line for line in output.splitlines()
             if line.strip() and "[RecordingMicroAllocator]" not in line]
    return "\n".join(f"  tflm: {line}" for line in lines[-limit:])


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int
    dtype: str

    def quantize(self, values: np.ndarray) -> np.ndarray:
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(values, dtype=np.float64) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.zero_point) * self.scale
