"""The scratch buffers TFLM kernels request in Prepare, by the kernels' own rules.

TFLM plans scratch buffers in the arena's head together with the tensors (greedily, around
any offline-planned tensors). Their sizes are not in the model: each kernel computes them in
its Prepare. Two kernel sets matter to tinyforge, and they differ:

- "reference": the host runtime (the tflite-micro wheel: TFLM of 2026, reference kernels,
  64-bit pointers). Rules read from tflite-micro's `kernels/reduce_common.cc`,
  `transpose_conv.cc`, `mirror_pad.cc`, `add_n.cc`, `conv_common.cc`.
- "cmsis-nn": the board (Chirale_TensorFlowLite 2.0.0 on a Cortex-M4 with the DSP
  extension, so CMSIS-NN's `ARM_MATH_DSP` paths and no MVE). Rules read from its
  `kernels/cmsis_nn/{conv,depthwise_conv,fully_connected,pooling}.cpp`,
  `kernels/reduce_common.cpp` and CMSIS-NN's `arm_*_get_buffer_size()` functions.

An op known to request scratch that no rule here covers is listed as unknown: the plan stays
correct (TFLM places scratch itself) but the figures for that model are estimates.
"""

from __future__ import annotations

from . import reader

KERNELS = {
    "reference": "the host runtime's reference kernels (tflite-micro wheel, 64-bit)",
    "cmsis-nn": "the board's CMSIS-NN kernels (Chirale_TensorFlowLite 2.0.0, Cortex-M4 DSP)",
}
# Ops that request scratch in some configuration no rule below models.
_UNMODELLED = {"SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "TFLite_Detection_PostProcess"}
_POINTER_BYTES = {"reference": 8, "cmsis-nn": 4}


class _Graph:
    """Shapes, types and constant data of one subgraph's tensors, for the rules."""

    def __init__(self, model, subgraph_index: int):
        self.model = model
        self.tensors = model.subgraphs[subgraph_index].tensors or []

    def shape(self, index: int) -> list[int]:
        shape = self.tensors[index].shape
        return [] if shape is None else [int(d) for d in shape]

    def elements(self, index: int) -> int:
        count = 1
        for dim in self.shape(index):
            count *= dim
        return count

    def dtype(self, index: int) -> str:
        return reader.dtype_name(self.tensors[index].type)


def requests(model, operators, kernels: str) -> tuple[list, list[str]]:
    """Every scratch request in TFLM's order (subgraph by subgraph, operator by operator).

    Returns the requests (`memory.ScratchRequest`, without lifetimes yet) and the names of ops
    whose scratch needs are not modelled.
    """
    from .memory import ScratchRequest

    if kernels not in KERNELS:
        raise ValueError(f"unknown kernel set {kernels!r}")
    result: list[ScratchRequest] = []
    unknown: set[str] = set()
    for s, ops in enumerate(operators):
        graph = _Graph(model, s)
        for op in ops:
            try:
                sizes = _rule(graph, op, kernels)
            except (ValueError, IndexError, AttributeError, TypeError):
                sizes = None     # shapes or options the kernel would refuse in Prepare
            if sizes is None:
                unknown.add(op.op)
                continue
            result += [ScratchRequest(s, op.index, op.op, size) for size in sizes]
    return result, sorted(unknown)


def _rule(graph: _Graph, op, kernels: str) -> list[int] | None:
    if op.op in _UNMODELLED:
        return None
    inputs = op.inputs
    sizes: list[int] = []
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(inputs) > 1 \
            and graph.dtype(inputs[1]) == "int4":     # the int4 filter, unpacked
        sizes.append(graph.elements(inputs[1]))
    if op.op in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        return sizes + _reduce(graph, op, kernels)
    if op.op == "TRANSPOSE_CONV":
        return sizes + _transpose_conv(graph, op)
    if op.op == "MIRROR_PAD":
        rank = len(graph.shape(inputs[0]))
        return [4 * rank, 4 * rank]
    if op.op == "ADD_N" and graph.dtype(op.outputs[0]) in ("float32", "int8"):
        return [_POINTER_BYTES[kernels] * len(inputs)]
    if kernels == "cmsis-nn":
        cmsis = _cmsis_nn(graph, op)
        if cmsis is None:
            return None
        sizes += cmsis
    return sizes


def _reduce(graph: _Graph, op, kernels: str) -> list[int]:
    data, axis = op.inputs[0], op.inputs[1]
    rank = len(graph.shape(data))
    axes = graph.elements(axis)
    quantized = graph.dtype(data) in ("int8", "int16")
    if op.op in ("MEAN", "SUM"):
        accumulator = [4 * graph.elements(op.outputs[0])] if quantized else []
        if kernels == "cmsis-nn":        # Chirale's PrepareMeanOrSumHelper: the accumulator only
            return accumulator
        return accumulator + [4 * rank, 4 * axes]
    return [4 * rank, 4 * axes]


def _transpose_conv(graph: _Graph, op) -> list[int]:
    # Inputs: output shape, filter, input, (bias).
    data = op.inputs[2]
    output = graph.elements(op.outputs[0])
    if graph.dtype(data) == "int8":
        return [4 * output]
    if graph.dtype(data) == "int16":
        bias = op.inputs[3] if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
        extra = [8 * graph.elements(bias)] if bias is not None and \
            graph.dtype(bias) == "int16" else []
        return extra + [8 * output]
    return []


def _cmsis_nn(graph: _Graph, op) -> list[int] | None:
    """CMSIS-NN's buffers on a Cortex-M4 with DSP; None where the rule is not modelled."""
    options = op.options
    if op.op == "CONV_2D":
        dtype = graph.dtype(op.inputs[0])
        if dtype == "int16":
            return None
        if dtype != "int8":
            return []
        _, fh, fw, cin = graph.shape(op.inputs[1])
        one_by_one = (fh == fw == 1 and options.strideW == options.strideH == 1
                      and options.dilationWFactor == options.dilationHFactor == 1)
        # arm_convolve_wrapper_s8_get_buffer_size: the 1x1 fast path needs nothing; the
        # 1xN and general paths both need arm_convolve_s8_get_buffer_size = 2*c*w*h int16.
        return [] if one_by_one else [2 * cin * fw * fh * 2]
    if op.op == "DEPTHWISE_CONV_2D":
        dtype = graph.dtype(op.inputs[0])
        if dtype == "int16":
            return None
        if dtype != "int8":
            return []
        batch, _, _, cin = graph.shape(op.inputs[0])
        _, fh, fw, cout = graph.shape(op.inputs[1])
        if cin == cout and batch == 1 and options.dilationWFactor == 1 \
                and options.dilationHFactor == 1:
            return [cin * fw * fh * 2]     # arm_depthwise_conv_s8_opt_get_buffer_size (DSP)
        return []
    if op.op == "AVERAGE_POOL_2D" and graph.dtype(op.inputs[0]) == "int8":
        return [4 * graph.shape(op.outputs[0])[3]]   # arm_avgpool_s8_get_buffer_size (DSP)
    return []      # FULLY_CONNECTED's CMSIS-NN buffers are 0 bytes; others request none
