"""Tiny .tflite graphs built directly with the flatbuffer schema's object API, for the memory
tests: every tensor, operator and subgraph is chosen by the test, so sizes and lifetimes are
known by construction. Float32 FULLY_CONNECTED and ADD graphs also run in the host TFLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np

from tinyforge.model import reader

DTYPES = {"float32": 0, "int32": 2, "uint8": 3, "bool": 6, "int8": 9, "int16": 7,
          "resource": 13}
NUMPY = {"float32": np.float32, "int32": np.int32, "int8": np.int8, "int16": np.int16,
         "uint8": np.uint8, "bool": np.bool_}


@dataclass
class T:
    """A tensor: shape, dtype, and constant data (None for an activation)."""

    shape: tuple
    dtype: str = "float32"
    data: np.ndarray | None = None
    variable: bool = False
    name: str = ""


@dataclass
class Op:
    op: str
    inputs: list
    outputs: list
    options: object = None


@dataclass
class Graph:
    tensors: list
    ops: list
    inputs: list
    outputs: list
    name: str = ""


@dataclass
class ModelSpec:
    subgraphs: list
    metadata: dict = field(default_factory=dict)   # name -> bytes


def build(spec: ModelSpec) -> bytes:
    """Serialise a model spec to .tflite bytes."""
    s = reader.schema()
    model = s.ModelT()
    model.version = 3
    model.description = "tinyforge memory test graph"
    model.buffers = [s.BufferT()]        # buffer 0: the empty sentinel
    codes: dict[str, int] = {}
    model.operatorCodes = []
    model.subgraphs = []
    for graph in spec.subgraphs:
        sub = s.SubGraphT()
        sub.name = graph.name
        sub.tensors = []
        for number, tensor in enumerate(graph.tensors):
            t = s.TensorT()
            t.shape = list(tensor.shape)
            t.type = DTYPES[tensor.dtype]
            t.name = tensor.name or f"t{number}"
            t.isVariable = tensor.variable
            t.buffer = 0
            if tensor.data is not None:
                buffer = s.BufferT()
                buffer.data = np.frombuffer(
                    np.asarray(tensor.data, NUMPY[tensor.dtype]).tobytes(), np.uint8)
                t.buffer = len(model.buffers)
                model.buffers.append(buffer)
            sub.tensors.append(t)
        sub.operators = []
        for op in graph.ops:
            if op.op not in codes:
                code = s.OperatorCodeT()
                value = getattr(s.BuiltinOperator, op.op)
                code.builtinCode = value
                code.deprecatedBuiltinCode = min(value, 127)
                code.version = 1
                codes[op.op] = len(model.operatorCodes)
                model.operatorCodes.append(code)
            o = s.OperatorT()
            o.opcodeIndex = codes[op.op]
            o.inputs = list(op.inputs)
            o.outputs = list(op.outputs)
            if op.options is not None:
                o.builtinOptionsType, o.builtinOptions = op.options
            sub.operators.append(o)
        sub.inputs = list(graph.inputs)
        sub.outputs = list(graph.outputs)
        model.subgraphs.append(sub)
    model.metadata = []
    for name, payload in spec.metadata.items():
        buffer = s.BufferT()
        buffer.data = np.frombuffer(payload, np.uint8)
        entry = s.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers)
        model.buffers.append(buffer)
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=reader.TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def call_once(init_subgraph: int):
    s = reader.schema()
    options = s.CallOnceOptionsT()
    options.initSubgraphIndex = init_subgraph
    return s.BuiltinOptions.CallOnceOptions, options


def if_options(then_subgraph: int, else_subgraph: int):
    s = reader.schema()
    options = s.IfOptionsT()
    options.thenSubgraphIndex = then_subgraph
    options.elseSubgraphIndex = else_subgraph
    return s.BuiltinOptions.IfOptions, options


def fc_options():
    s = reader.schema()
    return s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()


def add_options():
    s = reader.schema()
    return s.BuiltinOptions.AddOptions, s.AddOptionsT()


class FloatNet:
    """A float32 graph of FULLY_CONNECTED and ADD operators that host TFLM can run.

    Each tensor is [1, width]; `fc(x, width)` maps x to a new width with constant weights,
    `add(a, b)` adds two tensors of the same width. Weights are small and seeded.
    """

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: list[T] = []
        self.ops: list[Op] = []

    def tensor(self, width: int, data=None) -> int:
        shape = (1, width) if data is None else data.shape
        self.tensors.append(T(shape, "float32", data))
        return len(self.tensors) - 1

    def input(self, width: int) -> int:
        return self.tensor(width)

    def fc(self, x: int, width: int) -> int:
        weights = self.tensor(0, (self.rng.normal(size=(width, self.tensors[x].shape[1]))
                                  * 0.3).astype(np.float32))
        out = self.tensor(width)
        self.ops.append(Op("FULLY_CONNECTED", [x, weights, -1], [out], fc_options()))
        return out

    def add(self, a: int, b: int) -> int:
        out = self.tensor(self.tensors[a].shape[1])
        self.ops.append(Op("ADD", [a, b], [out], add_options()))
        return out

    def model(self, inputs: list[int], outputs: list[int], metadata=None) -> bytes:
        return build(ModelSpec([Graph(self.tensors, self.ops, inputs, outputs)],
                               metadata or {}))


def concat_options(axis: int = 1):
    s = reader.schema()
    options = s.ConcatenationOptionsT()
    options.axis = axis
    return s.BuiltinOptions.ConcatenationOptions, options


def _concat(self, *parts: int) -> int:
    out = self.tensor(sum(self.tensors[p].shape[1] for p in parts))
    self.ops.append(Op("CONCATENATION", list(parts), [out], concat_options()))
    return out


FloatNet.concat = _concat
