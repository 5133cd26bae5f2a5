"""Can the board's TFLM run this model? Checked statically first, then by running it.

The static check lists ALL ops the board's TFLM cannot resolve (the runtime only names the
first one it trips over, and for custom ops not even that). The host dry run then catches
what op names cannot show, such as fp16 weights ("Node DEQUANTIZE failed to prepare").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..board.profiles import Board
from ..board.resolver import ResolverTable
from ..errors import ModelFileError, ModelTypeError, UnsupportedFeatureError, UnsupportedOpsError
from .reader import ModelInfo

# TFLITE_SCHEMA_VERSION of TFLM (tensorflow/lite/micro/micro_interpreter.h): the firmware's
# GetModel() check refuses a flatbuffer of any other version at boot, while the host runtime
# runs it anyway, so it is checked here.
TFLM_SCHEMA_VERSION = 3

# Tensor types the firmware can feed and read at the model's edges (docs/protocol.md tensor
# specs). An int8 model may have uint8 or int16 edges (microWakeWord: int8 in, uint8 out):
# TFLM runs such models, and the firmware and validate handle every integer type here.
INTEGER_IO_TYPES = ("int8", "uint8", "int16")
FLOAT_IO_TYPES = ("float32",)


@dataclass(frozen=True)
class ResolvedOp:
    name: str
    method: str
    custom: bool


def resolve_ops(info: ModelInfo, table: ResolverTable) -> tuple[list[ResolvedOp], list[str]]:
    """(ops with their resolver method, names of ops this TFLM cannot resolve), both sorted."""
    resolved, missing = [], []
    for op in info.ops:
        method = table.method_for(op.name, custom=op.custom)
        if method is None:
            missing.append(f"{op.name} (custom op)" if op.custom else op.name)
        else:
            resolved.append(ResolvedOp(op.name, method, op.custom))
    return sorted(resolved, key=lambda r: r.method), sorted(missing)


def check_ops(info: ModelInfo, table: ResolverTable, board_id: str) -> list[ResolvedOp]:
    resolved, missing = resolve_ops(info, table)
    if missing:
        custom = any("(custom op)" in m for m in missing)
        hint = ("replace these layers with ones TFLM supports and convert again"
                if not custom else
                "custom ops need a kernel of your own registered with AddCustom(); remove them "
                "from the model or convert without custom ops")
        raise UnsupportedOpsError(
            f"{info.name} uses {len(missing)} op{'s' if len(missing) != 1 else ''} that "
            f"{table.library} {table.version} (board '{board_id}') cannot resolve:",
            ops=missing, hint=hint)
    return resolved


def check_io_types(info: ModelInfo, quantize: str) -> None:
    """The firmware feeds int8, uint8 and int16 edges of an integer model (and float32 ones
    with --quantize float32); anything else is refused with a hint for this model."""
    edges = [("input", t) for t in info.inputs] + [("output", t) for t in info.outputs]
    allowed = INTEGER_IO_TYPES if quantize == "int8" else INTEGER_IO_TYPES + FLOAT_IO_TYPES
    wrong = [(kind, t) for kind, t in edges if t.dtype not in allowed]
    if not wrong:
        return
    listed = "; ".join(f"{kind} '{t.name}' is {t.dtype}" for kind, t in wrong)
    floats = [t for _, t in wrong if t.dtype in FLOAT_IO_TYPES]
    if quantize == "int8" and len(floats) == len(wrong):
        raise ModelTypeError(
            f"{info.name} has float edges where an integer model is required: {listed}",
            hint=_float_edges_hint(info))
    raise ModelTypeError(
        f"{info.name} has tensor types the firmware cannot feed or read: {listed}",
        hint="the firmware's inputs and outputs are " + ", ".join(allowed) + "; convert the "
             "model with integer inputs and outputs (TFLiteConverter's inference_input_type "
             "and inference_output_type: tf.int8, tf.uint8 or tf.int16)")


def _float_edges_hint(info: ModelInfo) -> str:
    if "int8" in info.dtypes:
        # Quantized inside, float at the edges (QUANTIZE/DEQUANTIZE): only the edges need
        # converting.
        return ("the model computes in integers but takes or returns float32: convert it "
                "again with inference_input_type/inference_output_type = tf.int8 (or "
                "tf.uint8/tf.int16), or pass --quantize float32 to build it as it is")
    return ("give the Keras/SavedModel model with --calibration so tinyforge quantizes it, "
            "or pass --quantize float32 to build the float model as it is")


def per_channel_fc_supported(board: Board) -> bool:
    """Whether the board's TFLM applies per-channel scales in FULLY_CONNECTED."""
    return board.tflm.get("per_channel_fully_connected", True)


def schema_problem(info: ModelInfo) -> str | None:
    """Why the board's TFLM refuses the model's schema version, or None when it accepts it."""
    if info.schema_version == TFLM_SCHEMA_VERSION:
        return None
    return (f"TFLite schema version {info.schema_version}: TFLM accepts only version "
            f"{TFLM_SCHEMA_VERSION}, the firmware would refuse the model at boot")


def check_schema_version(info: ModelInfo) -> None:
    problem = schema_problem(info)
    if problem:
        raise ModelFileError(
            f"{info.name} has {problem}",
            hint="re-export it with TensorFlow's TFLiteConverter (it writes version "
                 f"{TFLM_SCHEMA_VERSION}); a file rewritten by another tool may carry another "
                 "version")


def unsupported_features(info: ModelInfo, board: Board) -> list[str]:
    """What in the model the board's TFLM refuses (schema version) or would compute wrongly
    without any error (per-channel FULLY_CONNECTED weights)."""
    features = [problem] if (problem := schema_problem(info)) else []
    return features + _per_channel_fc_features(info, board)


def _per_channel_fc_features(info: ModelInfo, board: Board) -> list[str]:
    weights = info.per_channel_fc_weights
    if weights and not per_channel_fc_supported(board):
        return [f"per-channel quantized FULLY_CONNECTED weights ({len(weights)} "
                f"tensor(s), e.g. '{weights[0]}')"]
    return []


def check_features(info: ModelInfo, board: Board) -> None:
    features = _per_channel_fc_features(info, board)
    if features:
        raise UnsupportedFeatureError(
            f"{info.name} uses what {board.tflm['library']} {board.tflm['version']} (board "
            f"'{board.id}') silently computes wrong: it applies only the first scale of "
            "per-channel FULLY_CONNECTED weights",
            details="\n".join(f"  - {f}" for f in features),
            hint="let tinyforge convert the Keras/SavedModel model for this board (it "
                 "quantizes dense layers per tensor): tinyforge build --model MODEL.keras "
                 "--calibration SAMPLES; or with your own converter set "
                 "converter._experimental_disable_per_channel_quantization_for_dense_layers = "
                 "True")
