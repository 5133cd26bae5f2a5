"""Multiply-accumulates per operator, computed on the host from the .tflite graph.

Conventions (docs/cost.md):
- CONV_2D: output elements × kernel height × kernel width × input channels per group.
- DEPTHWISE_CONV_2D: output elements × kernel height × kernel width.
- FULLY_CONNECTED: output elements × input features (the weights' second dimension).
- TRANSPOSE_CONV: input elements × kernel height × kernel width × output channels.
- BATCH_MATMUL: output elements × the shared inner dimension.
- ADD, SUB, MUL, DIV, SQUARED_DIFFERENCE, MAXIMUM, MINIMUM: one per output element.
- AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D: output elements × filter height × filter width.
- MEAN, SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD: one per input element.
- SOFTMAX, LOG_SOFTMAX: one per input element (the exponentials and the sum; the scaling that
  follows is not a multiply-accumulate).
- Every other op (RESHAPE, QUANTIZE, activations, data movement): 0. Their cost is real but
  not a multiply-accumulate; the per-op instruction counts measure it.
Only the main subgraph (the one the interpreter runs) is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..errors import ModelFileError
from .reader import _PARSE_ERRORS, _check_identifier, _opcode, schema

__all__ = ["LayerCost", "layer_costs"]

_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM"}
_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}
_SOFTMAXES = {"SOFTMAX", "LOG_SOFTMAX"}


@dataclass
class LayerCost:
    index: int                  # the operator's index in the graph (execution order)
    op: str
    inputs: list[list[int]]     # shapes of the non-constant and constant inputs, in order
    outputs: list[list[int]]
    macs: int
    basis: str = ""             # how `macs` was computed, e.g. "1×12×12×8 out × 3×3×1 kernel"

    def to_json(self) -> dict:
        return {"index": self.index, "op": self.op, "inputs": self.inputs,
                "outputs": self.outputs, "macs": self.macs, "basis": self.basis}


def layer_costs(data: bytes, name: str = "model") -> list[LayerCost]:
    """One `LayerCost` per operator of the main subgraph, in execution order."""
    _check_identifier(data, name)
    try:
        return _layers(data)
    except _PARSE_ERRORS as exc:
        raise ModelFileError(f"{name} is truncated or corrupt ({type(exc).__name__} while "
                             "reading its operators)",
                             hint="re-export the model") from None


def _layers(data: bytes) -> list[LayerCost]:
    s = schema()
    model = s.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("model has no subgraphs")
    opcodes = [_opcode(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    subgraph = model.Subgraphs(0)
    shapes = [[int(d) for d in subgraph.Tensors(t).ShapeAsNumpy()]
              if subgraph.Tensors(t).ShapeLength() else []
              for t in range(subgraph.TensorsLength())]
    layers = []
    for index in range(subgraph.OperatorsLength()):
        operator = s.OperatorT.InitFromObj(subgraph.Operators(index))
        if operator.opcodeIndex >= len(opcodes):
            raise IndexError("operator refers to a missing opcode")
        op = opcodes[operator.opcodeIndex][0]
        inputs = [shapes[t] if t >= 0 else [] for t in _indices(operator.inputs)]
        outputs = [shapes[t] for t in _indices(operator.outputs)]
        macs, basis = count_macs(op, inputs, outputs, operator.builtinOptions)
        layers.append(LayerCost(index, op, inputs, outputs, macs, basis))
    return layers


def _indices(values) -> list[int]:
    return [int(v) for v in values] if values is not None else []


def count_macs(op: str, inputs: list[list[int]], outputs: list[list[int]],
               options=None) -> tuple[int, str]:
    """(MACs, how they were counted) for one operator; see the module docstring."""
    out = outputs[0] if outputs else []
    out_elements = prod(out) if out else 0
    if op == "CONV_2D" and len(inputs) > 1 and len(inputs[1]) == 4:
        _, kh, kw, cin = inputs[1]
        return out_elements * kh * kw * cin, f"{_shape(out)} out × {kh}×{kw}×{cin} kernel"
    if op == "DEPTHWISE_CONV_2D" and len(inputs) > 1 and len(inputs[1]) == 4:
        _, kh, kw, _ = inputs[1]
        return out_elements * kh * kw, f"{_shape(out)} out × {kh}×{kw} kernel"
    if op == "FULLY_CONNECTED" and len(inputs) > 1 and len(inputs[1]) == 2:
        features = inputs[1][1]
        return out_elements * features, f"{_shape(out)} out × {features} inputs"
    if op == "TRANSPOSE_CONV" and len(inputs) > 2 and len(inputs[1]) == 4:
        cout, kh, kw, _ = inputs[1]
        in_elements = prod(inputs[2])
        return in_elements * kh * kw * cout, f"{_shape(inputs[2])} in × {kh}×{kw}×{cout} kernel"
    if op == "BATCH_MATMUL" and inputs and inputs[0]:
        inner = inputs[0][-1]
        return out_elements * inner, f"{_shape(out)} out × {inner} inner"
    if op in _ELEMENTWISE:
        return out_elements, f"{_shape(out)} out, 1 per element"
    if op in _POOLS and options is not None:
        fh, fw = int(options.filterHeight), int(options.filterWidth)
        return out_elements * fh * fw, f"{_shape(out)} out × {fh}×{fw} window"
    if op in _REDUCTIONS | _SOFTMAXES and inputs and inputs[0]:
        return prod(inputs[0]), f"{_shape(inputs[0])} in, 1 per element"
    return 0, ""


def _shape(shape: list[int]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"
