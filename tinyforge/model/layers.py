"""Per-operator outputs for one input, and where two runs of the same model first differ.

A run's layers are one `LayerOutput` per operator of subgraph 0, in node order: the op, its
input and output tensors (index, dtype, shape, quantization) and the raw bytes of its
outputs. The host build of the board's TFLM records them after each operator runs
(`host_tflm.py`); the wheel can too, with every tensor preserved (`wheel_layers()`); the
firmware will (`validate --layers`, docs/reference.md has the suggested report format).
`first_divergence()` compares two lists and names the first operator whose output differs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

# Tensors with no data of their own (a VAR_HANDLE's resource): never compared.
OPAQUE_DTYPES = ("resource", "variant")


@dataclass(frozen=True)
class TensorSummary:
    index: int                 # tensor index in subgraph 0 (-1: optional input left out)
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None
    bytes: int = 0

    def to_json(self) -> dict:
        return {"index": self.index, "dtype": self.dtype, "shape": list(self.shape),
                "scale": self.scale, "zero_point": self.zero_point, "bytes": self.bytes}


@dataclass
class LayerOutput:
    index: int                 # the operator's node index in subgraph 0
    op: str                    # "CONV_2D", or a custom op's name
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    values: list[np.ndarray] = field(default_factory=list)  # one per output, raw

    def checksums(self) -> list[int]:
        """CRC-32 of each output's bytes: what a device can send first, cheaply."""
        return [zlib.crc32(np.ascontiguousarray(v).tobytes()) for v in self.values]

    def to_json(self, *, with_values: bool = False) -> dict:
        data = {"index": self.index, "op": self.op,
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "crc32": self.checksums()}
        if with_values:
            data["values"] = [np.asarray(v).reshape(-1).tolist() for v in self.values]
        return data


@dataclass(frozen=True)
class Divergence:
    """The first operator whose output differs between two runs."""

    index: int
    op: str
    output: int                # which of its outputs
    input_shapes: list[list[int]]
    output_shape: list[int]
    dtype: str
    max_lsb: int | None        # integer outputs: largest difference in quantization steps
    max_abs: float             # after dequantization (floats: the raw difference)
    differing: int             # how many values differ
    count: int                 # of how many
    reason: str                # "values", "shape", "dtype", "op" or "missing"

    def describe(self) -> str:
        where = f"op {self.index} {self.op}"
        shapes = " ".join(str(s) for s in self.input_shapes)
        if self.reason != "values":
            return f"{where}: the two runs disagree on the {self.reason} ({self.detail_text()})"
        amount = (f"max {self.max_lsb} LSB" if self.max_lsb is not None
                  else f"max {self.max_abs:.6g}")
        return (f"{where} (inputs {shapes} -> output {self.output} {self.output_shape} "
                f"{self.dtype}): {self.differing} of {self.count} values differ, {amount}")

    def detail_text(self) -> str:
        return f"output {self.output} {self.output_shape} {self.dtype}"

    def to_json(self) -> dict:
        return {"index": self.index, "op": self.op, "output": self.output,
                "input_shapes": self.input_shapes, "output_shape": self.output_shape,
                "dtype": self.dtype, "max_lsb": self.max_lsb, "max_abs": self.max_abs,
                "differing": self.differing, "count": self.count, "reason": self.reason}


def first_divergence(expected: list[LayerOutput], actual: list[LayerOutput], *,
                     max_lsb: int = 0, max_abs: float = 0.0) -> Divergence | None:
    """The first operator (in node order) whose output in `actual` differs from `expected`
    by more than the tolerance, or None when every operator agrees.

    Both lists must come from the same model; an op or tensor that does not line up is
    itself reported as the divergence (reason "op", "shape", "dtype" or "missing").
    """
    by_index = {layer.index: layer for layer in actual}
    for layer in sorted(expected, key=lambda item: item.index):
        other = by_index.get(layer.index)
        if other is None:
            return _structural(layer, 0, "missing")
        if other.op != layer.op:
            return _structural(layer, 0, "op")
        for output, (mine, theirs) in enumerate(zip(layer.outputs, other.outputs)):
            if mine.dtype in OPAQUE_DTYPES and theirs.dtype in OPAQUE_DTYPES:
                continue
            if list(mine.shape) != list(theirs.shape):
                return _structural(layer, output, "shape")
            if mine.dtype != theirs.dtype:
                return _structural(layer, output, "dtype")
            found = _compare_values(layer, output, layer.values[output],
                                    other.values[output], max_lsb, max_abs)
            if found is not None:
                return found
        if len(layer.outputs) != len(other.outputs):
            return _structural(layer, min(len(layer.outputs), len(other.outputs)), "missing")
    return None


def _compare_values(layer: LayerOutput, output: int, expected: np.ndarray,
                    actual: np.ndarray, max_lsb: int, max_abs: float) -> Divergence | None:
    tensor = layer.outputs[output]
    a = np.asarray(expected).reshape(-1)
    b = np.asarray(actual).reshape(-1)
    if a.size != b.size:
        return _structural(layer, output, "shape")
    if a.dtype.kind in "iub":
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
        worst = int(diff.max()) if diff.size else 0
        scale = tensor.scale or 0.0
        if worst <= max_lsb:
            return None
        return _values(layer, output, worst, worst * scale if scale else float(worst),
                       int(np.count_nonzero(diff)), a.size)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    worst_abs = float(np.nanmax(diff)) if diff.size else 0.0
    mismatched = np.isnan(a) != np.isnan(b)
    if worst_abs <= max_abs and not mismatched.any():
        return None
    return _values(layer, output, None, worst_abs,
                   int(np.count_nonzero((diff > max_abs) | mismatched)), a.size)


def _values(layer, output, max_lsb, max_abs, differing, count) -> Divergence:
    tensor = layer.outputs[output]
    return Divergence(index=layer.index, op=layer.op, output=output,
                      input_shapes=[list(t.shape) for t in layer.inputs if t.index >= 0],
                      output_shape=list(tensor.shape), dtype=tensor.dtype, max_lsb=max_lsb,
                      max_abs=max_abs, differing=differing, count=count, reason="values")


def _structural(layer: LayerOutput, output: int, reason: str) -> Divergence:
    tensor = layer.outputs[output] if output < len(layer.outputs) else None
    return Divergence(index=layer.index, op=layer.op, output=output,
                      input_shapes=[list(t.shape) for t in layer.inputs if t.index >= 0],
                      output_shape=list(tensor.shape) if tensor else [],
                      dtype=tensor.dtype if tensor else "", max_lsb=None, max_abs=0.0,
                      differing=0, count=0, reason=reason)


def model_operators(model: bytes) -> list[tuple[str, list[int], list[int]]]:
    """(op name, input tensor indices, output tensor indices) of subgraph 0, in node order."""
    from .reader import _opcode, schema

    root = schema().Model.GetRootAsModel(model, 0)
    codes = [_opcode(root.OperatorCodes(i)) for i in range(root.OperatorCodesLength())]
    subgraph = root.Subgraphs(0)
    result = []
    for index in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(index)
        name = codes[operator.OpcodeIndex()][0]
        result.append((name, [int(operator.Inputs(j)) for j in range(operator.InputsLength())],
                       [int(operator.Outputs(j)) for j in range(operator.OutputsLength())]))
    return result


def tensor_summaries(model: bytes) -> dict[int, TensorSummary]:
    """Every tensor of subgraph 0 as the flatbuffer declares it."""
    from .reader import DTYPE_BYTES, _tensor, schema

    subgraph = schema().Model.GetRootAsModel(model, 0).Subgraphs(0)
    result = {}
    for index in range(subgraph.TensorsLength()):
        info = _tensor(subgraph.Tensors(index), index)
        result[index] = TensorSummary(index=index, dtype=info.dtype, shape=list(info.shape),
                                      scale=info.scales[0] if info.scales else None,
                                      zero_point=(info.zero_points[0] if info.zero_points
                                                  else None),
                                      bytes=info.element_count * DTYPE_BYTES.get(info.dtype, 0))
    return result
