"""The memory a model's graph needs in TFLM's arena, computed the way TFLM computes it.

Pure Python over the flatbuffer (no TensorFlow, no native runtime). It follows the board's
library, Chirale_TensorFlowLite 2.0.0 (TFLM of 2023), file by file:

- which tensors are planned: `micro_allocation_info.cpp`, `InitializeAllocationInfo`: a tensor
  is planned when it has no data in the flatbuffer, is not a variable and is not empty;
- its size: `memory_helpers.cpp`, `TfLiteEvalTensorByteLength` (elements x type size), rounded
  up to 16 bytes by `micro_allocator.cpp`, `CreatePlan` (`MicroArenaBufferAlignment()`);
- its lifetime: `MarkAllocationLifetimes`, one "allocation scope" per operator, a new scope
  for each subgraph a control-flow operator (IF, WHILE, CALL_ONCE) enters, subgraph inputs
  created at the scope the subgraph starts in and outputs kept to the scope it ends in;
- scratch buffers: requested by kernels in Prepare, planned with the tensors, alive during
  their operator (and the subgraphs it enters); their sizes come from `memory_scratch.py`;
- the plan: `memory_planner/greedy_memory_planner.cpp`, emulated by `greedy_plan` with the
  same ordering (offline buffers first, then by size, ties in reverse order of addition) and
  the same first-gap search.

The result is the arena's planned "head"; the persistent "tail" (structs, quantization data,
variables, kernel op data) is not computed here.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ModelFileError, UnsupportedFeatureError
from . import reader

ALIGNMENT = 16            # MicroArenaBufferAlignment()
ONLINE = -1               # kOnlinePlannedBuffer: "TFLM plans this one at run time"

# TfLiteTypeSizeOf in the board's memory_helpers.cpp, by the schema's type names.
_TYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8, "int16": 2, "int32": 4, "uint32": 4,
               "uint8": 1, "int8": 1, "int64": 8, "uint64": 8, "bool": 1, "resource": 4,
               "complex64": 8, "complex128": 16, "int4": 1}
# The control-flow operators whose subgraphs MarkSubgraphLifetimesIfNecessary enters, and the
# options fields naming them, in the order TFLM visits them.
_CONTROL_FLOW = {"IF": ("IfOptions", ("ThenSubgraphIndex", "ElseSubgraphIndex")),
                 "WHILE": ("WhileOptions", ("CondSubgraphIndex", "BodySubgraphIndex")),
                 "CALL_ONCE": ("CallOnceOptions", ("InitSubgraphIndex",))}


def align(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class TensorMemory:
    """One tensor of one subgraph, as TFLM's allocation info sees it."""

    subgraph: int
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int           # TfLiteEvalTensorByteLength
    kind: str            # "planned", "constant", "variable", "empty" or "handle"
    first: int           # first allocation scope it is alive in (-1: never touched)
    last: int            # last allocation scope it is alive in

    @property
    def planned(self) -> bool:
        return self.kind == "planned"

    @property
    def aligned_bytes(self) -> int:
        return align(self.bytes)


@dataclass(frozen=True)
class ScratchRequest:
    """A scratch buffer a kernel asks for in Prepare (RequestScratchBufferInArena)."""

    subgraph: int
    operator: int
    op: str
    bytes: int
    first: int = ONLINE
    last: int = ONLINE

    @property
    def aligned_bytes(self) -> int:
        return align(self.bytes)


@dataclass(frozen=True)
class Buffer:
    """What TFLM's planner gets for one buffer: size, lifetime and maybe a fixed offset."""

    size: int            # already aligned
    first: int
    last: int
    label: str
    offline: int = ONLINE

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return not (self.first > other.last or other.first > self.last)


@dataclass
class OperatorInfo:
    subgraph: int
    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: Any         # the operator's builtin options object (object API), or None
    # The opcode's `builtin_code` field alone: MarkSubgraphLifetimesIfNecessary reads only
    # that one (not the deprecated field) to recognise control flow.
    builtin_code: str = ""


@dataclass
class GraphMemory:
    """Every subgraph's tensors with size and lifetime, the scratch buffers, and the figures."""

    model: str
    subgraphs: list[list[TensorMemory]]
    operators: list[list[OperatorInfo]]
    scratch: list[ScratchRequest]
    kernels: str                     # whose scratch rules were used (memory_scratch.KERNELS)
    unknown_scratch: list[str] = field(default_factory=list)  # ops whose scratch is not known
    scopes: int = 0                  # allocation scopes used (lifetimes run from 0 to scopes-1)

    @property
    def tensor_count(self) -> int:
        return sum(len(tensors) for tensors in self.subgraphs)

    @property
    def planned_tensors(self) -> list[TensorMemory]:
        return [t for tensors in self.subgraphs for t in tensors if t.planned]

    def buffers(self, offsets: Sequence[int] | None = None) -> list[Buffer]:
        """The planner's buffers in TFLM's order of `AddBuffer` calls (`CreatePlan`).

        `offsets` is an offline plan as TFLM reads it (one entry per tensor of every subgraph,
        concatenated); planned tensors take their offset from it, scratch stays online.
        """
        result = []
        flat = 0
        for tensors in self.subgraphs:
            for tensor in tensors:
                offline = offsets[flat] if offsets is not None else ONLINE
                flat += 1
                if tensor.planned:
                    result.append(Buffer(tensor.aligned_bytes, tensor.first, tensor.last,
                                         f"s{tensor.subgraph}t{tensor.index}", offline))
        for number, request in enumerate(self.scratch):
            if request.bytes:
                result.append(Buffer(request.aligned_bytes, request.first, request.last,
                                     f"scratch{number}"))
        return result

    def lower_bound(self) -> int:
        """The largest sum of buffers alive at the same time: no plan can be smaller."""
        return peak_load(self.buffers())

    def greedy(self, offsets: Sequence[int] | None = None) -> "Placement":
        """TFLM's greedy plan (with an offline plan, if given)."""
        return greedy_plan(self.buffers(offsets))

    def occupancy(self) -> list[int]:
        """Bytes alive in each allocation scope (for plots of arena occupancy)."""
        loads = [0] * max(self.scopes, 1)
        for buffer in self.buffers():
            for scope in range(max(buffer.first, 0), buffer.last + 1):
                loads[scope] += buffer.size
        return loads

    def tensors_json(self) -> list[dict]:
        return [{"subgraph": t.subgraph, "index": t.index, "name": t.name, "dtype": t.dtype,
                 "shape": list(t.shape), "bytes": t.bytes, "aligned_bytes": t.aligned_bytes,
                 "kind": t.kind, "first": t.first, "last": t.last}
                for tensors in self.subgraphs for t in tensors]


@dataclass(frozen=True)
class Placement:
    offsets: list[int]     # one per buffer, in the order given
    size: int              # the high-water mark: GetMaximumMemorySize()


def peak_load(buffers: Sequence[Buffer]) -> int:
    """Max over time of the total size alive; lifetimes are inclusive intervals."""
    events: dict[int, int] = {}
    for buffer in buffers:
        events[buffer.first] = events.get(buffer.first, 0) + buffer.size
        events[buffer.last + 1] = events.get(buffer.last + 1, 0) - buffer.size
    peak = load = 0
    for time in sorted(events):
        load += events[time]
        peak = max(peak, load)
    return peak


def greedy_order(buffers: Sequence[Buffer]) -> list[int]:
    """The order GreedyMemoryPlanner places buffers in (`CalculateOffsetsIfNeeded`).

    Offline buffers first in the order they were added; then the online ones, which TFLM
    writes from the tail of its array (so in reverse order of addition) and sorts by size,
    largest first, with a stable bubble sort: equal sizes stay in reverse order of addition.
    """
    offline = [i for i, b in enumerate(buffers) if b.offline != ONLINE]
    online = [i for i, b in enumerate(buffers) if b.offline == ONLINE]
    online.reverse()
    online.sort(key=lambda i: -buffers[i].size)
    return offline + online


def lowest_fit(placed: Sequence[tuple[int, int]], buffers: Sequence[Buffer],
               wanted: Buffer) -> int:
    """The first gap big enough for `wanted` among the placed buffers alive at its time.

    `placed` holds (offset, buffer index) sorted by offset, as TFLM's linked list does; the
    walk is TFLM's: the candidate starts at 0, moves past every time-overlapping buffer whose
    gap below is too small, and stops at the first gap that fits.
    """
    candidate = 0
    for offset, index in placed:
        other = buffers[index]
        if not wanted.overlaps_in_time(other):
            continue
        if offset - candidate >= wanted.size:
            break
        candidate = max(candidate, offset + other.size)
    return candidate


def place_in_order(buffers: Sequence[Buffer], order: Sequence[int],
                   placed: list[tuple[int, int]] | None = None,
                   offsets: list[int] | None = None) -> Placement:
    """Place buffers one by one in `order`: offline ones at their offset, others lowest-fit."""
    placed = list(placed) if placed else []
    offsets = list(offsets) if offsets else [ONLINE] * len(buffers)
    for index in order:
        buffer = buffers[index]
        offset = buffer.offline if buffer.offline != ONLINE else lowest_fit(placed, buffers,
                                                                             buffer)
        offsets[index] = offset
        # After every entry with an offset <= this one, as TFLM inserts into its list.
        bisect.insort_right(placed, (offset, index), key=lambda entry: entry[0])
    size = max((offsets[i] + buffers[i].size for i in range(len(buffers))
                if offsets[i] != ONLINE), default=0)
    return Placement(offsets, size)


def greedy_plan(buffers: Sequence[Buffer]) -> Placement:
    """TFLM's GreedyMemoryPlanner, step for step."""
    return place_in_order(buffers, greedy_order(buffers))


# --- reading the graph -----------------------------------------------------------------

def analyze(data: bytes, name: str = "model", *, kernels: str = "reference") -> GraphMemory:
    """Sizes, lifetimes and scratch buffers of every tensor of every subgraph of a .tflite.

    `kernels` chooses whose scratch-buffer rules apply (`memory_scratch.KERNELS`): the host
    runtime's reference kernels or the board's CMSIS-NN kernels.
    """
    from . import memory_scratch

    reader.inspect_bytes(data, name)      # the same checks and errors as everywhere else
    try:
        model = reader.schema().ModelT.InitFromObj(reader.schema().Model.GetRootAsModel(data, 0))
    except reader._PARSE_ERRORS:
        raise ModelFileError(f"{name} is truncated or corrupt",
                             hint="re-export the model") from None
    _validate(model, name)
    operators = _operators(model)
    kinds = _kinds(model, operators, name)
    scratch, unknown = memory_scratch.requests(model, operators, kernels)
    _check_intermediates(model, name)
    lifetimes = _Lifetimes(model, operators, scratch)
    lifetimes.mark(0)
    subgraphs = []
    for s, subgraph in enumerate(model.subgraphs or []):
        subgraphs.append([
            TensorMemory(subgraph=s, index=i, name=_text(tensor.name),
                         dtype=reader.dtype_name(tensor.type),
                         shape=tuple(_ints(tensor.shape)), bytes=kinds[s][i][1],
                         kind=kinds[s][i][0], first=lifetimes.first[(s, i)],
                         last=lifetimes.last[(s, i)])
            for i, tensor in enumerate(subgraph.tensors or [])])
    scratch = [ScratchRequest(r.subgraph, r.operator, r.op, r.bytes,
                              lifetimes.scratch_first[n], lifetimes.scratch_last[n])
               for n, r in enumerate(scratch)]
    return GraphMemory(model=name, subgraphs=subgraphs, operators=operators, scratch=scratch,
                       kernels=kernels, unknown_scratch=unknown, scopes=lifetimes.scope + 1)


def _operators(model) -> list[list[OperatorInfo]]:
    codes = model.operatorCodes or []
    opcodes = [_op_name(code) for code in codes]
    builtin = [reader._enum_names("BuiltinOperator").get(code.builtinCode, "") for code in codes]
    return [[OperatorInfo(s, i, opcodes[op.opcodeIndex], _ints(op.inputs), _ints(op.outputs),
                          op.builtinOptions, builtin[op.opcodeIndex])
             for i, op in enumerate(subgraph.operators or [])]
            for s, subgraph in enumerate(model.subgraphs or [])]


def _kinds(model, operators, name: str) -> list[list[tuple[str, int]]]:
    """(kind, bytes) of every tensor of every subgraph."""
    kinds = [[_tensor_kind(model, tensor, name) for tensor in (subgraph.tensors or [])]
             for subgraph in model.subgraphs or []]
    for s, ops in enumerate(operators):
        for op in ops:
            if op.op == "VAR_HANDLE":
                # var_handle.cpp's Prepare points its output at the resource id it keeps in
                # its op data, before planning: TFLM then sees data and does not plan it.
                for index in op.outputs:
                    kinds[s][index] = ("handle", kinds[s][index][1])
    return kinds


def _validate(model, name: str) -> None:
    """Every index the lifetimes follow points at something: a bad one is a corrupt model."""
    def bad(what: str):
        return ModelFileError(f"{name} is corrupt: {what}", hint="re-export the model")

    subgraphs = model.subgraphs or []
    codes = len(model.operatorCodes or [])
    for subgraph in subgraphs:
        count = len(subgraph.tensors or [])
        for tensor in subgraph.tensors or []:
            if any(dim < 0 for dim in _ints(tensor.shape)):
                raise bad(f"tensor '{_text(tensor.name)}' has a dynamic (negative) dimension")
        for index in _ints(subgraph.inputs) + _ints(subgraph.outputs):
            if not 0 <= index < count:
                raise bad("a subgraph input or output refers to a missing tensor")
        for op in subgraph.operators or []:
            if not 0 <= op.opcodeIndex < codes:
                raise bad("an operator refers to a missing operator code")
            if any(not -1 <= i < count for i in _ints(op.inputs)) or \
                    any(not 0 <= i < count for i in _ints(op.outputs)) or \
                    any(not 0 <= i < count for i in _ints(op.intermediates)):
                raise bad("an operator refers to a missing tensor")
            for entered in _entered_subgraphs(OperatorInfo(0, 0, "", [], [], op.builtinOptions,
                                                           _builtin_name(model, op))):
                if not 0 <= entered < len(subgraphs):
                    raise bad("a control-flow operator names a missing subgraph")


def _builtin_name(model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return reader._enum_names("BuiltinOperator").get(code.builtinCode, "")


def _ints(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _op_name(code) -> str:
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    op = reader._enum_names("BuiltinOperator").get(value, f"UNKNOWN_{value}")
    return _text(code.customCode) if op == "CUSTOM" else op


def _tensor_kind(model, tensor, name: str) -> tuple[str, int]:
    dtype = reader.dtype_name(tensor.type)
    if dtype not in _TYPE_BYTES:
        raise UnsupportedFeatureError(
            f"{name} has a tensor '{_text(tensor.name)}' of type {dtype}, which TFLM cannot "
            "allocate", hint="convert the model with int8, int16 or float32 tensors")
    count = 1
    for dim in _ints(tensor.shape):
        count *= dim
    size = count * _TYPE_BYTES[dtype]
    buffers = model.buffers or []
    buffer = buffers[tensor.buffer] if 0 <= tensor.buffer < len(buffers) else None
    # GetFlatbufferTensorBuffer: a tensor whose buffer has data points into the flatbuffer.
    if buffer is not None and buffer.data is not None and len(buffer.data):
        return "constant", size
    if tensor.isVariable:
        return "variable", size
    if size == 0:
        return "empty", size
    return "planned", size


def _check_intermediates(model, name: str) -> None:
    # ValidateSubgraph: TFLM refuses intermediate tensors that are not empty.
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            for index in _ints(op.intermediates):
                count = 1
                for dim in _ints(subgraph.tensors[index].shape):
                    count *= dim
                if count:
                    raise UnsupportedFeatureError(
                        f"{name} has an operator with a non-empty intermediate tensor, which "
                        "TFLM does not support", hint="convert the model without LSTM "
                        "intermediates (TFLite's integer LSTM) or use float LSTM")


class _Lifetimes:
    """`AllocationInfoBuilder::MarkAllocationLifetimes`, with its scope counter."""

    def __init__(self, model, operators, scratch):
        self.model = model
        self.operators = operators
        self.scratch = scratch
        self.scope = 0
        self.first: dict[tuple[int, int], int] = {}
        self.last: dict[tuple[int, int], int] = {}
        for s, subgraph in enumerate(model.subgraphs or []):
            for i in range(len(subgraph.tensors or [])):
                self.first[(s, i)] = self.last[(s, i)] = ONLINE
        self.scratch_first = [ONLINE] * len(scratch)
        self.scratch_last = [ONLINE] * len(scratch)
        self.depth = 0

    def _created(self, key, scope):
        if self.first[key] == ONLINE:
            self.first[key] = scope

    def _used(self, key, scope):
        self.last[key] = scope

    def mark(self, s: int) -> None:
        self.depth += 1
        if self.depth > 64:     # a subgraph that (indirectly) enters itself
            raise ModelFileError("the model's control-flow subgraphs call each other in a loop",
                                 hint="re-export the model")
        subgraph = self.model.subgraphs[s]
        for index in _ints(subgraph.inputs):
            self._created((s, index), self.scope)
            self._used((s, index), self.scope)
        for op in self.operators[s]:
            self.scope += 1
            for index in op.outputs:
                self._created((s, index), self.scope)
            start = self.scope
            for entered in _entered_subgraphs(op):
                self.scope += 1
                self.mark(entered)
            for index in op.inputs:
                if index >= 0:
                    self._used((s, index), self.scope)
            for index in op.outputs:
                self._used((s, index), self.scope)
            for number, request in enumerate(self.scratch):
                if request.subgraph == s and request.operator == op.index:
                    if self.scratch_first[number] == ONLINE:
                        self.scratch_first[number] = start
                    self.scratch_last[number] = self.scope
        for index in _ints(subgraph.outputs):
            self._created((s, index), self.scope)
            self._used((s, index), self.scope)
        self.depth -= 1


def _entered_subgraphs(op: OperatorInfo) -> list[int]:
    if op.builtin_code not in _CONTROL_FLOW or op.options is None:
        return []
    _, fields = _CONTROL_FLOW[op.builtin_code]
    names = {"ThenSubgraphIndex": "thenSubgraphIndex", "ElseSubgraphIndex": "elseSubgraphIndex",
             "CondSubgraphIndex": "condSubgraphIndex", "BodySubgraphIndex": "bodySubgraphIndex",
             "InitSubgraphIndex": "initSubgraphIndex"}
    return [int(getattr(op.options, names[f])) for f in fields]
