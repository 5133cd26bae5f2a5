"""MACs per operator from the .tflite graph (tinyforge.model.macs).

Graphs are built by hand with the flatbuffer schema's object API, so every answer is known:
shapes and kernel sizes are chosen, the expected counts are worked out in the comments.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import pytest

from tinyforge.errors import ModelFileError
from tinyforge.model import macs
from tinyforge.model.reader import schema

EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"


def build_model(tensors: list[list[int]], operators: list[tuple]) -> bytes:
    """A one-subgraph int8 model: `tensors` are shapes; operators are (op name, inputs,
    outputs[, options type name, options object])."""
    s = schema()
    names = sorted({op[0] for op in operators})
    model = s.ModelT()
    model.version = 3
    model.operatorCodes = []
    for name in names:
        code = s.OperatorCodeT()
        value = getattr(s.BuiltinOperator, name)
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, 127)
        code.version = 1
        model.operatorCodes.append(code)
    subgraph = s.SubGraphT()
    subgraph.tensors = []
    for index, shape in enumerate(tensors):
        tensor = s.TensorT()
        tensor.shape = shape
        tensor.type = s.TensorType.INT8
        tensor.name = f"t{index}".encode()
        tensor.buffer = 0
        subgraph.tensors.append(tensor)
    subgraph.operators = []
    for entry in operators:
        operator = s.OperatorT()
        operator.opcodeIndex = names.index(entry[0])
        operator.inputs, operator.outputs = entry[1], entry[2]
        if len(entry) > 3:
            operator.builtinOptionsType = getattr(s.BuiltinOptions, entry[3])
            operator.builtinOptions = entry[4]
        subgraph.operators.append(operator)
    subgraph.inputs, subgraph.outputs = [0], [len(tensors) - 1]
    model.subgraphs = [subgraph]
    model.buffers = [s.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def pool_options(height: int, width: int):
    options = schema().Pool2DOptionsT()
    options.filterHeight, options.filterWidth = height, width
    options.strideH = options.strideW = 2
    return options


def test_a_small_conv_net_gives_the_hand_counted_macs():
    data = build_model(
        tensors=[[1, 16, 16, 3],      # 0 input
                 [8, 3, 3, 3],        # 1 conv weights: 8 filters of 3x3x3
                 [8],                 # 2 bias
                 [1, 8, 8, 8],        # 3 conv out (stride 2)
                 [1, 3, 3, 8],        # 4 depthwise weights 3x3, 8 channels
                 [1, 8, 8, 8],        # 5 depthwise out
                 [1, 8, 8, 8],        # 6 add out
                 [1, 4, 4, 8],        # 7 avg pool out
                 [1, 128],            # 8 reshape out
                 [10, 128],           # 9 fc weights
                 [1, 10],             # 10 fc out
                 [1, 10]],            # 11 softmax out
        operators=[("CONV_2D", [0, 1, 2], [3]),
                   ("DEPTHWISE_CONV_2D", [3, 4, 2], [5]),
                   ("ADD", [3, 5], [6]),
                   ("AVERAGE_POOL_2D", [6], [7], "Pool2DOptions", pool_options(2, 2)),
                   ("RESHAPE", [7], [8]),
                   ("FULLY_CONNECTED", [8, 9, -1], [10]),
                   ("SOFTMAX", [10], [11])])
    layers = macs.layer_costs(data)
    assert [layer.op for layer in layers] == ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD",
                                              "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
                                              "SOFTMAX"]
    assert [layer.macs for layer in layers] == [
        8 * 8 * 8 * 3 * 3 * 3,   # 512 output values, each 3x3x3 multiply-accumulates: 13,824
        8 * 8 * 8 * 3 * 3,       # depthwise: 512 outputs x 3x3 = 4,608
        8 * 8 * 8,               # one add per output element: 512
        4 * 4 * 8 * 2 * 2,       # 128 outputs x 2x2 window = 512
        0,                       # reshape moves nothing
        10 * 128,                # 10 outputs x 128 inputs = 1,280
        10,                      # one per element
    ]
    assert layers[0].inputs == [[1, 16, 16, 3], [8, 3, 3, 3], [8]]
    assert layers[0].outputs == [[1, 8, 8, 8]]
    assert layers[5].inputs[2] == []  # an optional input that is absent (-1)
    assert layers[0].basis == "1×8×8×8 out × 3×3×3 kernel"


def test_mul_max_pool_and_mean_use_their_own_rules():
    data = build_model(
        tensors=[[1, 6, 6, 4], [1, 6, 6, 4], [1, 3, 3, 4], [2], [1, 4]],
        operators=[("MUL", [0, 0], [1]),
                   ("MAX_POOL_2D", [1], [2], "Pool2DOptions", pool_options(3, 2)),
                   ("MEAN", [2, 3], [4])])
    assert [layer.macs for layer in macs.layer_costs(data)] == [
        6 * 6 * 4,           # 144 products
        3 * 3 * 4 * 3 * 2,   # 36 outputs x 3x2 window = 216
        3 * 3 * 4,           # mean adds every input element: 36
    ]


def test_a_batch_of_fully_connected_rows_counts_every_row():
    data = build_model(tensors=[[4, 32], [16, 32], [4, 16]],
                       operators=[("FULLY_CONNECTED", [0, 1, -1], [2])])
    assert macs.layer_costs(data)[0].macs == 4 * 16 * 32


def test_the_bundled_example():
    layers = macs.layer_costs(EXAMPLE.read_bytes())
    assert [(layer.op, layer.macs) for layer in layers] == [
        ("RESHAPE", 0),
        ("CONV_2D", 30 * 8 * 1 * 3 * 3),     # 1x30x8 out x (1x3 kernel x 3 channels)
        ("MAX_POOL_2D", 15 * 8 * 1 * 2),     # 1x15x8 out x 1x2 window
        ("CONV_2D", 13 * 16 * 1 * 3 * 8),    # 1x13x16 out x (1x3 kernel x 8 channels)
        ("MAX_POOL_2D", 6 * 16 * 1 * 2),
        ("RESHAPE", 0),
        ("FULLY_CONNECTED", 16 * 96),
        ("FULLY_CONNECTED", 4 * 16),
        ("SOFTMAX", 4),
    ]
    assert sum(layer.macs for layer in layers) == 9188


def test_a_corrupt_model_is_a_model_file_error():
    data = EXAMPLE.read_bytes()
    with pytest.raises(ModelFileError, match="not a TensorFlow Lite model"):
        macs.layer_costs(b"\0" * 64, "junk.tflite")
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        macs.layer_costs(data[:200], "cut.tflite")
