"""`tinyforge validate --layers`: where, operator by operator, the board and the host differ.

The firmware of a debug build (`build --debug-layers`) keeps every tensor of an inference and
answers two requests (docs/protocol.md 3.3): LAYERS gives a CRC-32 of each operator's output,
TENSOR gives the bytes of one output. The host runs the same input through its reference
(`HostRuntime.layers`), compares the CRCs in node order, fetches only the first output whose
CRC differs, and `model.layers.first_divergence` names it with its max LSB. Before the input
both sides start from the model's initial state: the device is sent RESET, and the host runs
a new interpreter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..device import protocol
from ..device.conversation import Conversation
from ..errors import DeviceError
from ..model.layers import (
    OPAQUE_DTYPES,
    Divergence,
    LayerOutput,
    TensorSummary,
    first_divergence,
)

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0
# A TENSOR answer streams ~128 bytes per line; QEMU's UART and a board's USB carry more than
# 10 KB/s, so this bounds a tensor of ~1 MB.
TENSOR_TIMEOUT_S = 120.0
_NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
                "int64": np.int64, "float32": np.float32, "bool": np.bool_}


@dataclass
class LayerReport:
    """One input's layers on the device against the host reference."""

    sample: int
    reference: str
    operators: int
    compared: int                       # operator outputs compared (resources are not)
    agreeing: int                       # of them, with the same CRC on both sides
    divergence: Divergence | None       # the first operator output that differs
    max_lsb_allowed: int = 0
    passed: bool = True
    device: list[dict] = field(default_factory=list)    # the LAYER lines, decoded

    def to_json(self) -> dict:
        return {"sample": self.sample, "reference": self.reference,
                "operators": self.operators, "compared": self.compared,
                "agreeing": self.agreeing, "max_lsb_allowed": self.max_lsb_allowed,
                "passed": self.passed,
                "first_divergence": self.divergence.to_json() if self.divergence else None,
                "device_layers": self.device}

    def lines(self) -> list[str]:
        lines = [f"layers         sample {self.sample}, {self.operators} operators "
                 f"(reference: {self.reference})",
                 f"agreeing       {self.agreeing} of {self.compared} operator outputs "
                 "(CRC-32 of the device's bytes against the host's)"]
        if self.divergence is None:
            lines.append("first diff     none: every operator's output is identical")
        else:
            lines.append(f"first diff     {self.divergence.describe()}")
            if not self.passed:
                lines.append("FAIL: the board's operators differ from the host's from this one "
                             "on (the ops after it see its output)")
            else:
                lines.append(f"within the tolerance (--max-lsb {self.max_lsb_allowed})")
        return lines


def compare(conversation: Conversation, boot: protocol.Boot, sample_index: int,
            inputs: np.ndarray, model: bytes, model_name: str, runtime, *,
            max_lsb: int = 0, reset: bool = True, seq: int | None = None) -> LayerReport:
    """Run `inputs` (sample `sample_index`) on the device, as IN `seq` (default the sample
    index), and on `runtime` (a `model.reference.HostRuntime`), and compare every
    operator's output; fetch the first that differs."""
    seq = sample_index if seq is None else seq
    if reset:
        reset_device(conversation, seq)
    _run_input(conversation, seq, inputs, boot.max_line)
    device = device_checksums(conversation, seq)
    host = runtime.layers(model, [inputs], model_name)
    report = LayerReport(sample=sample_index, reference=runtime.description,
                         operators=len(host), compared=0, agreeing=0, divergence=None,
                         max_lsb_allowed=max_lsb,
                         device=[_checksum_json(line) for line in device])
    by_key = {(line.op, line.out): line for line in device}
    for layer in host:
        for out, (summary, crc) in enumerate(zip(layer.outputs, layer.checksums())):
            if summary.dtype in OPAQUE_DTYPES:
                continue
            report.compared += 1
            line = by_key.get((layer.index, out))
            if line is not None and line.crc == crc and line.shape == list(summary.shape):
                report.agreeing += 1
                continue
            if report.divergence is None:
                report.divergence = _diverging_output(conversation, seq, layer, out, line)
    report.passed = (report.divergence is None
                     or (report.divergence.reason == "values"
                         and report.divergence.max_lsb is not None
                         and report.divergence.max_lsb <= max_lsb))
    return report


def reset_device(conversation: Conversation, seq: int) -> None:
    """RESET: the device rebuilds its interpreter, so a model with state starts afresh."""
    conversation.send(protocol.encode_reset(seq))
    answer = conversation.wait_for(
        lambda e: (isinstance(e, protocol.OtherMessage) and e.type == "RESET"
                   and e.fields.get("seq") == str(seq))
        or (isinstance(e, protocol.DeviceErrorMessage) and e.seq in (seq, None)),
        timeout=ANSWER_TIMEOUT_S, what="the answer to RESET")
    if isinstance(answer, protocol.DeviceErrorMessage):
        raise _refused("RESET", answer, conversation)


def device_checksums(conversation: Conversation, seq: int) -> list[protocol.LayerChecksum]:
    """LAYERS: the device's CRC of every operator output for the inference of IN `seq`."""
    conversation.send(protocol.encode_layers(seq))
    lines: list[protocol.LayerChecksum] = []
    while True:
        event = conversation.wait_for(
            lambda e: (isinstance(e, protocol.OtherMessage) and e.type in ("LAYER", "LAYERS")
                       and e.fields.get("seq") == str(seq))
            or (isinstance(e, protocol.DeviceErrorMessage) and e.seq in (seq, None)),
            timeout=ANSWER_TIMEOUT_S, what=f"the layer report of input #{seq}")
        if isinstance(event, protocol.DeviceErrorMessage):
            raise _refused("LAYERS", event, conversation)
        if event.type == "LAYERS":
            return lines
        lines.append(_decoded(protocol.layer_checksum, event, conversation))


def device_tensor(conversation: Conversation, seq: int, op: int, out: int) -> bytes:
    """TENSOR: the bytes of output `out` of operator `op`, assembled from its chunks."""
    conversation.send(protocol.encode_tensor(seq, op, out))
    data = bytearray()
    while True:
        event = conversation.wait_for(
            lambda e: (isinstance(e, protocol.OtherMessage) and e.type == "TENSOR"
                       and e.fields.get("seq") == str(seq))
            or (isinstance(e, protocol.DeviceErrorMessage) and e.seq in (seq, None)),
            timeout=TENSOR_TIMEOUT_S, what=f"output {out} of operator {op}")
        if isinstance(event, protocol.DeviceErrorMessage):
            raise _refused("TENSOR", event, conversation)
        chunk = _decoded(protocol.tensor_chunk, event, conversation)
        if chunk.offset != len(data) or (chunk.op, chunk.out) != (op, out):
            raise DeviceError(f"the firmware sent output {chunk.out} of operator {chunk.op} "
                              f"at offset {chunk.offset}, expected output {out} of operator "
                              f"{op} at offset {len(data)}",
                              details=conversation.describe_tail(),
                              hint="a line was lost on the link: run validate --layers again")
        data += chunk.data
        if chunk.final:
            return bytes(data)


def _diverging_output(conversation, seq: int, layer: LayerOutput, out: int,
                      line: protocol.LayerChecksum | None) -> Divergence:
    summary = layer.outputs[out]
    # The device's run of this operator: the host's values but for the output that differs.
    actual = LayerOutput(index=layer.index, op=line.name if line else layer.op,
                         inputs=layer.inputs, outputs=list(layer.outputs),
                         values=list(layer.values))
    if line is None:
        actual.outputs, actual.values = actual.outputs[:out], actual.values[:out]
        return first_divergence([layer], [actual])
    if line.name != layer.op or line.dtype != summary.dtype or line.shape != list(summary.shape):
        # Structural: the two runs disagree before any value does.
        actual.outputs[out] = TensorSummary(index=summary.index, dtype=line.dtype,
                                            shape=line.shape, scale=summary.scale,
                                            zero_point=summary.zero_point, bytes=line.bytes)
        return first_divergence([layer], [actual])
    raw = device_tensor(conversation, seq, layer.index, out)
    dtype = _NUMPY_TYPES.get(summary.dtype)
    if dtype is None or len(raw) != np.asarray(layer.values[out]).nbytes:
        raise DeviceError(f"output {out} of operator {layer.index} ({layer.op}) came as "
                          f"{len(raw)} bytes of {summary.dtype}; the host's has "
                          f"{np.asarray(layer.values[out]).nbytes}",
                          hint="flash the last build first: `tinyforge flash`")
    actual.values[out] = np.frombuffer(raw, dtype=dtype).reshape(summary.shape)
    found = first_divergence([layer], [actual])
    if found is None:  # a CRC that differs for identical bytes: the link, not the board
        raise DeviceError(f"operator {layer.index}'s CRC differs but its bytes do not",
                          hint="a line was damaged on the link: run validate --layers again")
    return found


def _run_input(conversation: Conversation, seq: int, inputs: np.ndarray,
               max_line: int | None) -> None:
    from .validate import _ask
    _ask(conversation, seq, inputs, max_line)


def _decoded(parse, event, conversation):
    try:
        return parse(event)
    except ValueError as error:
        raise DeviceError(f"the firmware sent a malformed {event.type} message: {error}",
                          details=conversation.describe_tail(),
                          hint="the firmware is not the one built by this tinyforge: build "
                               "and flash again") from None


def _refused(request: str, answer: protocol.DeviceErrorMessage,
             conversation: Conversation) -> DeviceError:
    if answer.code == "UNKNOWN_TYPE":
        hint = ("the firmware predates layer reports or was built without them: "
                "`tinyforge build --debug-layers`, then `tinyforge flash`"
                if request != "RESET" else
                "the firmware predates RESET: build and flash it again with this tinyforge")
    else:
        hint = "docs/protocol.md explains the error code"
    return DeviceError(f"the firmware refused {request}: {answer.code} ({answer.msg})",
                       details=conversation.describe_tail(), hint=hint)


def _checksum_json(line: protocol.LayerChecksum) -> dict:
    return {"op": line.op, "name": line.name, "out": line.out, "dtype": line.dtype,
            "shape": line.shape, "bytes": line.bytes, "crc32": f"{line.crc:08x}"}
