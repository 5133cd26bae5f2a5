"""The host build of a board's TFLM tree, called through its C API with ctypes.

`host_build.build_host_library()` makes the shared library; this module loads it and wraps
`native/tinyforge_tflm_host.h`. Like the wheel, native code can crash on a too-small arena,
so everything that creates or runs an interpreter belongs in a forked child
(`isolated.call_isolated`): the library is loaded in the parent (once, cheaply) and only
used in the children.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import HostBuildError
from .layers import LayerOutput, TensorSummary

ABI_VERSION = 1
MAX_DIMS = 8
# TFLM's TfLiteType values (tensorflow/lite/core/c/c_api_types.h), stable across versions.
TFLITE_TYPES = {1: "float32", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
                9: "int8", 10: "float16", 11: "float64", 13: "uint64", 14: "resource",
                15: "variant", 16: "uint32", 17: "uint16", 18: "int4"}
_NUMPY = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "int64": np.int64,
          "bool": np.bool_, "int16": np.int16, "int8": np.int8, "float16": np.float16,
          "float64": np.float64, "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16}
_OK, _NOT_ALLOCATED = 0, 3


class _TensorInfo(ctypes.Structure):
    _fields_ = [("tensor_index", ctypes.c_int32), ("type", ctypes.c_int32),
                ("dims_count", ctypes.c_int32), ("dims", ctypes.c_int32 * MAX_DIMS),
                ("bytes", ctypes.c_uint64), ("scale", ctypes.c_float),
                ("zero_point", ctypes.c_int32)]

    def summary(self) -> TensorSummary:
        if self.tensor_index < 0:  # an optional input left out
            return TensorSummary(index=-1, dtype="", shape=[])
        dtype = TFLITE_TYPES.get(self.type, f"type_{self.type}")
        return TensorSummary(index=self.tensor_index, dtype=dtype,
                             shape=[int(self.dims[i]) for i in range(self.dims_count)],
                             scale=float(self.scale) or None,
                             zero_point=int(self.zero_point) if self.scale else None,
                             bytes=int(self.bytes))


_HANDLE = ctypes.c_void_p
_INFO_P = ctypes.POINTER(_TensorInfo)
_SIGNATURES = {
    "tfh_abi_version": (ctypes.c_int, []),
    "tfh_pointer_bytes": (ctypes.c_int, []),
    "tfh_create": (_HANDLE, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                             ctypes.c_int32]),
    "tfh_destroy": (None, [_HANDLE]),
    "tfh_allocation_status": (ctypes.c_int, [_HANDLE]),
    "tfh_arena_used_bytes": (ctypes.c_size_t, [_HANDLE]),
    "tfh_input_count": (ctypes.c_int32, [_HANDLE]),
    "tfh_output_count": (ctypes.c_int32, [_HANDLE]),
    "tfh_input_info": (ctypes.c_int, [_HANDLE, ctypes.c_int32, _INFO_P]),
    "tfh_output_info": (ctypes.c_int, [_HANDLE, ctypes.c_int32, _INFO_P]),
    "tfh_set_input": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.c_void_p,
                                     ctypes.c_size_t]),
    "tfh_get_output": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.c_void_p,
                                      ctypes.c_size_t]),
    "tfh_invoke": (ctypes.c_int, [_HANDLE]),
    "tfh_reset": (ctypes.c_int, [_HANDLE]),
    "tfh_capture_layers": (ctypes.c_int, [_HANDLE, ctypes.c_int32]),
    "tfh_layer_count": (ctypes.c_int32, [_HANDLE]),
    "tfh_layer_op": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32),
                                    ctypes.POINTER(ctypes.c_char_p)]),
    "tfh_layer_input_count": (ctypes.c_int32, [_HANDLE, ctypes.c_int32]),
    "tfh_layer_output_count": (ctypes.c_int32, [_HANDLE, ctypes.c_int32]),
    "tfh_layer_input": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.c_int32, _INFO_P]),
    "tfh_layer_output": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.c_int32, _INFO_P]),
    "tfh_layer_output_data": (ctypes.c_int, [_HANDLE, ctypes.c_int32, ctypes.c_int32,
                                             ctypes.c_void_p, ctypes.c_size_t]),
}


@cache
def load(path: Path) -> ctypes.CDLL:
    """The shared library at `path` with its C API declared; checks the ABI version."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError as exc:
        raise HostBuildError(f"cannot load the host TFLM build {path}: {exc}",
                             hint="delete that folder so it is rebuilt") from None
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    if library.tfh_abi_version() != ABI_VERSION:
        raise HostBuildError(f"{path} has C API version {library.tfh_abi_version()}, this "
                             f"tinyforge needs {ABI_VERSION}",
                             hint="delete that folder so it is rebuilt")
    return library


class Interpreter:
    """One MicroInterpreter of the host build, for one model and arena size."""

    def __init__(self, library: ctypes.CDLL, model: bytes, arena_size: int,
                 resource_variables: int = 0):
        self._lib = library
        self._model = model  # the C side copies it; kept for the lifetime anyway
        self._handle = library.tfh_create(model, len(model), arena_size, resource_variables)
        if not self._handle:
            raise MemoryError("the host could not allocate the model copy and the arena")

    @property
    def allocated(self) -> bool:
        return self._lib.tfh_allocation_status(self._handle) == _OK

    def check_allocated(self) -> None:
        if not self.allocated:
            raise RuntimeError("TFLM failed to allocate tensors (AllocateTensors)")

    @property
    def arena_used_bytes(self) -> int:
        return int(self._lib.tfh_arena_used_bytes(self._handle))

    def input_details(self, index: int) -> TensorSummary:
        return self._info(self._lib.tfh_input_info, index)

    def output_details(self, index: int) -> TensorSummary:
        return self._info(self._lib.tfh_output_info, index)

    @property
    def input_count(self) -> int:
        return int(self._lib.tfh_input_count(self._handle))

    @property
    def output_count(self) -> int:
        return int(self._lib.tfh_output_count(self._handle))

    def set_input(self, index: int, values: np.ndarray) -> None:
        details = self.input_details(index)
        data = np.ascontiguousarray(np.asarray(values, dtype=_NUMPY[details.dtype])
                                    .reshape(details.shape))
        self._check(self._lib.tfh_set_input(self._handle, index, data.ctypes.data, data.nbytes),
                    f"set input {index}")

    def get_output(self, index: int) -> np.ndarray:
        details = self.output_details(index)
        out = np.empty(details.shape, dtype=_NUMPY[details.dtype])
        self._check(self._lib.tfh_get_output(self._handle, index, out.ctypes.data, out.nbytes),
                    f"get output {index}")
        return out

    def invoke(self) -> None:
        self._check(self._lib.tfh_invoke(self._handle), "Invoke()")

    def reset(self) -> None:
        self._check(self._lib.tfh_reset(self._handle), "Reset()")

    def capture_layers(self, enabled: bool = True) -> None:
        self._lib.tfh_capture_layers(self._handle, int(enabled))

    def layers(self) -> list[LayerOutput]:
        """What the last invoke recorded (after `capture_layers()`), one entry per operator."""
        lib, handle = self._lib, self._handle
        result = []
        for layer in range(lib.tfh_layer_count(handle)):
            node, name = ctypes.c_int32(), ctypes.c_char_p()
            self._check(lib.tfh_layer_op(handle, layer, ctypes.byref(node), ctypes.byref(name)),
                        "read a layer")
            inputs = [self._layer_info(lib.tfh_layer_input, layer, j)
                      for j in range(lib.tfh_layer_input_count(handle, layer))]
            outputs = [self._layer_info(lib.tfh_layer_output, layer, j)
                       for j in range(lib.tfh_layer_output_count(handle, layer))]
            values = [self._layer_data(layer, j, info) for j, info in enumerate(outputs)]
            result.append(LayerOutput(index=node.value, op=(name.value or b"").decode(),
                                      inputs=inputs, outputs=outputs, values=values))
        return result

    def close(self) -> None:
        if self._handle:
            self._lib.tfh_destroy(self._handle)
            self._handle = None

    def _info(self, function, index: int) -> TensorSummary:
        info = _TensorInfo()
        self._check(function(self._handle, index, ctypes.byref(info)), f"describe tensor {index}")
        return info.summary()

    def _layer_info(self, function, layer: int, index: int) -> TensorSummary:
        info = _TensorInfo()
        self._check(function(self._handle, layer, index, ctypes.byref(info)), "read a layer")
        return info.summary()

    def _layer_data(self, layer: int, index: int, info: TensorSummary) -> np.ndarray:
        buffer = np.empty(info.bytes, dtype=np.uint8)
        self._check(self._lib.tfh_layer_output_data(self._handle, layer, index,
                                                    buffer.ctypes.data, buffer.nbytes),
                    "read a layer's output")
        dtype = _NUMPY.get(info.dtype)
        if dtype is None or info.bytes % np.dtype(dtype).itemsize:
            return buffer
        return buffer.view(dtype).reshape(info.shape) if info.shape else buffer.view(dtype)

    def _check(self, status: int, what: str) -> None:
        if status == _NOT_ALLOCATED:
            raise RuntimeError(f"TFLM failed to allocate tensors, so it cannot {what}")
        if status != _OK:
            raise RuntimeError(f"TFLM failed: {what} returned status {status}")
