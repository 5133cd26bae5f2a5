"""The host reference runtime: what `validate`, the host arena search and the dry run run on.

Two implementations of one small interface (`HostRuntime`):

- `TreeRuntime`: a host build of the board's own TFLM library tree (`host_build.py`,
  `host_tflm.py`): the board's TFLM version and kernels, CMSIS-NN included. Used whenever a
  tree is at hand.
- `WheelRuntime`: the `tflite-micro` wheel, TFLM of another year with reference kernels. It
  may differ from the board's by a few LSB on some ops; every report that uses it says so.

`runtime_for_tree(tree)` picks one. Every call that runs native code runs in a forked child
(`isolated.py`): a too-small arena can crash either runtime.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import HostRuntimeError, ReferenceUnavailable, TinyforgeError
from . import host_runtime
from . import layers as layers_module
from .isolated import IsolatedResult, call_isolated
from .layers import LayerOutput, TensorSummary, model_operators, tensor_summaries

log = logging.getLogger(__name__)

WHEEL_DISTRIBUTION = "tflite-micro"
_WHEEL_YEAR = re.compile(r"dev(\d{4})")
BATCH_TIMEOUT_S = 600.0


class HostRuntime:
    """A TFLM interpreter on the host, run in forked children."""

    kind = ""

    @property
    def label(self) -> str:
        """Short name for notes: which TFLM this is."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """What every report says about the reference: version, kernels, caveat."""
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"kind": self.kind, "label": self.label, "description": self.description}

    def probe(self, model: bytes, arena_size: int) -> IsolatedResult:
        """Allocate and invoke once with zero inputs; the result says if it ran."""
        raise NotImplementedError

    def reported_arena_total(self, model: bytes, arena_size: int) -> int | None:
        """What this TFLM reports having used of a generous arena, or None if it failed."""
        raise NotImplementedError

    def _batch_target(self):
        raise NotImplementedError

    def _layers_target(self):
        raise NotImplementedError

    def _prepare_fork(self) -> None:
        """Load the native library in the parent, so every forked child inherits it."""

    def dry_run(self, model: bytes, model_name: str) -> None:
        """Run the model once; raise `HostRuntimeError` with TFLM's own text if it fails."""
        result = self.probe(model, host_runtime.generous_arena(len(model)))
        if not result.ok:
            raise HostRuntimeError(
                f"the host TFLM runtime ({self.label}) cannot run {model_name}: "
                f"{result.describe_failure()}",
                details=host_runtime.tflm_diagnostics(result.output),
                hint="TFLM supports int8/int16/float32 tensors and a subset of ops; re-convert "
                     "the model with full-integer int8 quantization (`--quantize int8`)")

    def run_batch(self, model: bytes, batch: list[list[np.ndarray]], output_count: int,
                  model_name: str) -> list[list[np.ndarray]]:
        """The raw outputs for each list of inputs in `batch`, in order."""
        result = self._call(self._batch_target(), model, batch, output_count)
        if not result.ok:
            raise HostRuntimeError(
                f"the host TFLM runtime ({self.label}) failed running {model_name}: "
                f"{result.describe_failure()}",
                details=host_runtime.tflm_diagnostics(result.output),
                hint="check the inputs against the model's input tensor (`tinyforge inspect "
                     "MODEL`); run with -v for the runtime's own output")
        return result.value

    def layers(self, model: bytes, inputs: list[np.ndarray], model_name: str) -> list[LayerOutput]:
        """Every operator's outputs (subgraph 0, node order) for one list of inputs."""
        result = self._call(self._layers_target(), model, inputs)
        if not result.ok:
            raise HostRuntimeError(
                f"the host TFLM runtime ({self.label}) failed recording the layers of "
                f"{model_name}: {result.describe_failure()}",
                details=host_runtime.tflm_diagnostics(result.output),
                hint="TFLM's own words are above; `tinyforge inspect MODEL` runs the model "
                     "once on the same reference")
        return result.value

    def _call(self, target, *args) -> IsolatedResult:
        self._prepare_fork()
        return call_isolated(target, *args, timeout=BATCH_TIMEOUT_S)


class WheelRuntime(HostRuntime):
    """The `tflite-micro` wheel (host_runtime.py): TFLM of its build date, reference kernels."""

    kind = "wheel"

    def __init__(self, note: str | None = None):
        # Why the board's tree is not the reference this time (no tree, no compiler...).
        self.note = note

    @property
    def version(self) -> str:
        from importlib import metadata
        try:
            return metadata.version(WHEEL_DISTRIBUTION)
        except metadata.PackageNotFoundError:
            return "(not installed)"

    @property
    def label(self) -> str:
        return f"tflite-micro wheel {self.version}"

    @property
    def description(self) -> str:
        year = _WHEEL_YEAR.search(self.version)
        era = f"TFLM of {year.group(1)}" if year else "another TFLM version"
        return (f"{self.label} ({era}, reference kernels; may differ from the board's by a "
                "few LSB)")

    def to_json(self) -> dict:
        return {**super().to_json(), "note": self.note}

    def probe(self, model, arena_size):
        return host_runtime.probe(model, arena_size)

    def reported_arena_total(self, model, arena_size):
        return host_runtime.reported_arena_total(model, arena_size)

    def _prepare_fork(self):
        host_runtime.runtime_module()

    def _batch_target(self):
        return _wheel_batch

    def _layers_target(self):
        return _wheel_layers


class TreeRuntime(HostRuntime):
    """A host build of the board's TFLM library tree (host_build.HostLibrary)."""

    kind = "tflm-tree"

    def __init__(self, library, display_name: str | None = None):
        self.library = library
        self.display_name = display_name or library.library

    @property
    def label(self) -> str:
        return f"host build of {self.display_name} {self.library.version}"

    @property
    def description(self) -> str:
        return f"{self.label} at {self.library.tree} (the board's kernels)"

    def to_json(self) -> dict:
        return {**super().to_json(), "tree": str(self.library.tree),
                "library_file": str(self.library.path)}

    def _prepare_fork(self):
        from . import host_tflm
        host_tflm.load(self.library.path)

    def probe(self, model, arena_size):
        self._prepare_fork()
        return call_isolated(_tree_probe, str(self.library.path), model, arena_size,
                             _resource_variables(model))

    def reported_arena_total(self, model, arena_size):
        self._prepare_fork()
        result = call_isolated(_tree_arena_used, str(self.library.path), model, arena_size,
                               _resource_variables(model))
        return result.value if result.ok else None

    def _call(self, target, *args):
        self._prepare_fork()
        return call_isolated(target, str(self.library.path), *args,
                             _resource_variables(args[0]), timeout=BATCH_TIMEOUT_S)

    def _batch_target(self):
        return _tree_batch

    def _layers_target(self):
        return _tree_layers


def runtime_for_tree(tree: Path | None, *, board=None, required: bool = False) -> HostRuntime:
    """The reference for a board: the host build of its TFLM `tree` when there is one, else
    the wheel. A tree that cannot be built here (no compiler, a file that does not compile)
    falls back to the wheel with a warning, or raises when `required`."""
    if tree is None:
        if required:
            raise ReferenceUnavailable(
                "no TFLM library tree to build the board's reference from",
                hint="give one with --tflm PATH or TINYFORGE_TFLM (e.g. a checkout of "
                     "Chirale_TensorFlowLite v2.0.0), or use --reference wheel")
        return WheelRuntime(note="no TFLM library tree (--tflm or TINYFORGE_TFLM)")
    from .host_build import build_host_library

    defines = tuple(board.tflm.get("build_flags", ())) if board is not None else ()
    try:
        library = build_host_library(Path(tree), extra_defines=defines)
    except TinyforgeError as error:
        if required:
            raise
        log.warning("warning: cannot build the board's TFLM for the host (%s); the reference "
                    "is the tflite-micro wheel, which may differ from the board by a few LSB",
                    error.message)
        return WheelRuntime(note=f"the host build of {tree} failed: {error.message}")
    return TreeRuntime(library, display_name=_display_name(library.library, board))


def _display_name(name: str, board) -> str:
    # Chirale's library.properties spells itself "Chirale_TensorFLowLite"; the board
    # profile's spelling is the one users know.
    if board is not None and board.tflm.get("library", "").lower() == name.lower():
        return board.tflm["library"]
    return name


@lru_cache(maxsize=8)
def _resource_variables(model: bytes) -> int:
    # Asked once per probe of an arena search: parse each model once.
    from .reader import inspect_bytes
    return inspect_bytes(model, "model").resource_variables


# --- what runs in the forked children ---------------------------------------------------

def _tree_interpreter(path: str, model: bytes, arena_size: int, variables: int):
    from . import host_tflm
    interpreter = host_tflm.Interpreter(host_tflm.load(Path(path)), model, arena_size, variables)
    interpreter.check_allocated()
    return interpreter


def _zero_inputs(interpreter) -> None:
    for index in range(interpreter.input_count):
        details = interpreter.input_details(index)
        interpreter.set_input(index, np.zeros(details.shape, dtype=np.dtype(details.dtype)))


def _tree_probe(path, model, arena_size, variables) -> bool:
    interpreter = _tree_interpreter(path, model, arena_size, variables)
    _zero_inputs(interpreter)
    interpreter.invoke()
    return True


def _tree_arena_used(path, model, arena_size, variables) -> int:
    return _tree_interpreter(path, model, arena_size, variables).arena_used_bytes


def _tree_batch(path, model, batch, output_count, variables) -> list[list[np.ndarray]]:
    # One interpreter for the whole batch and no reset between inputs: the firmware keeps
    # invoking the same interpreter, so a model with state steps through the inputs the way
    # the device does.
    interpreter = _tree_interpreter(path, model, host_runtime.generous_arena(len(model)),
                                    variables)
    results = []
    for inputs in batch:
        for index, values in enumerate(inputs):
            interpreter.set_input(index, values)
        interpreter.invoke()
        results.append([interpreter.get_output(i) for i in range(output_count)])
    return results


def _tree_layers(path, model, inputs, variables) -> list[LayerOutput]:
    interpreter = _tree_interpreter(path, model, host_runtime.generous_arena(len(model)),
                                    variables)
    for index, values in enumerate(inputs):
        interpreter.set_input(index, values)
    interpreter.capture_layers(True)
    interpreter.invoke()
    return interpreter.layers()


def _wheel_batch(model, batch, output_count) -> list[list[np.ndarray]]:
    # No reset between inputs, like the tree's batch and the firmware: a model with state
    # steps through the batch in order from a new interpreter's initial state.
    return host_runtime._run_batch(model, host_runtime.generous_arena(len(model)), batch,
                                   output_count, reset_between=False)


def _wheel_layers(model, inputs) -> list[LayerOutput]:
    # The wheel cannot stop between operators, but it can keep every tensor in its own
    # buffer (kPreserveAllTensors) so that all of them can be read after the invoke.
    runtime = host_runtime.runtime_module()
    interpreter = runtime.Interpreter.from_bytes(
        model, arena_size=host_runtime.generous_arena(len(model)),
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    for index, values in enumerate(inputs):
        details = interpreter.get_input_details(index)
        interpreter.set_input(np.asarray(values, dtype=details["dtype"])
                              .reshape(details["shape"]), index)
    interpreter.invoke()
    summaries = tensor_summaries(model)
    layers = []
    for node, (op, input_indices, output_indices) in enumerate(model_operators(model)):
        outputs, values = [], []
        for index in output_indices:
            if summaries[index].dtype in layers_module.OPAQUE_DTYPES:
                # A VAR_HANDLE's resource: no data, and the wheel's GetTensor() crashes on it.
                outputs.append(replace(summaries[index], bytes=0))
                values.append(np.empty(0, dtype=np.uint8))
                continue
            tensor = interpreter.GetTensor(index, 0)
            data = np.array(tensor["tensor_data"]).reshape([int(d) for d in tensor["shape"]])
            outputs.append(replace(summaries[index], shape=list(data.shape), bytes=data.nbytes))
            values.append(data)
        layers.append(LayerOutput(
            index=node, op=op, outputs=outputs, values=values,
            inputs=[summaries[i] if i >= 0 else TensorSummary(index=-1, dtype="", shape=[])
                    for i in input_indices]))
    return layers
