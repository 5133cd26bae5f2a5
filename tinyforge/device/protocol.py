"""The serial protocol v1 between tinyforge and its firmware: the host side (docs/protocol.md).

Every message is one line: ``!tf1 <TYPE>[ <key>=<value>]* *<crc32>``. `Decoder` turns the
bytes a device sends into events: messages (`Boot`, `Result`, `DeviceErrorMessage`, `Echo`,
`OtherMessage`), `DeviceLog` for everything else the device prints, and `Corrupt` or
`UnsupportedVersion` for lines that look like messages but cannot be trusted. `encode()`
builds the lines the host sends (HELLO, IN, ECHO); `encode_input_lines()` splits an input
into IN chunks that fit the device's line buffer (BOOT's max_line).

Standard library only, so importing it is cheap (the serial monitor imports it).
"""

from __future__ import annotations

import operator
import re
import zlib
from dataclasses import dataclass, field
from typing import Union

__all__ = [
    "VERSION", "MAX_LINE_BYTES", "ERROR_CODES", "DEVICE_EOL", "HOST_EOL", "Decoder",
    "decode_message", "Event", "TensorSpec", "Boot", "OutputValues", "Result",
    "DeviceErrorMessage", "Echo", "OtherMessage", "DeviceLog", "Corrupt", "UnsupportedVersion",
    "encode", "encode_hello", "encode_input", "encode_input_chunk", "encode_input_lines",
    "encode_echo", "format_float", "Profile", "PROFILE_UNITS", "parse_profile",
    "LayerChecksum", "TensorChunk", "encode_reset", "encode_layers", "encode_tensor",
    "layer_checksum", "tensor_chunk",
    "Decision", "Credit", "Features", "encode_replay", "encode_samples", "samples_per_line",
]

VERSION = 1
# A line longer than this is reported as Corrupt and dropped, so a device that never sends a
# line end cannot make the host buffer grow without bound. A RES with 1,000 floats is ~12 KB.
MAX_LINE_BYTES = 1 << 20
# How much of a bad line a Corrupt event keeps for the user to look at.
_EXCERPT_CHARS = 200

DEVICE_EOL = b"\r\n"
HOST_EOL = b"\n"

ERROR_CODES = frozenset({
    "SCHEMA_VERSION", "ALLOCATE_FAILED", "INVOKE_FAILED", "INPUT_TYPE", "OP_RESOLVER",
    "BAD_CRC", "BAD_MESSAGE", "BAD_LENGTH", "LINE_TOO_LONG", "UNKNOWN_TYPE", "PROTOCOL_VERSION",
    "BAD_OFFSET", "INPUT_INCOMPLETE",
    "NO_INFERENCE",
    # The sensor pipeline and its replay (docs/protocol.md, section 3.5).
    "SENSOR", "STREAM_DROPPED", "NO_REPLAY", "REPLAY_OVERRUN",
})

_MARKER = b"!tf"
# "key=value" -> [key, value], called from C by map().
_split_field = operator.methodcaller("split", "=", 1)
_UINT32_MAX = 0xFFFFFFFF


# --- events -------------------------------------------------------------------------------

@dataclass(slots=True)
class TensorSpec:
    """One tensor of BOOT's ``in=``/``out=``: scale 0 and zero point 0 mean not quantized."""

    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int


@dataclass(slots=True)
class Boot:
    """BOOT: what the firmware runs and whether TFLM could set it up."""

    protocol: int                   # v=
    firmware: str                   # fw=, the tinyforge version that generated it
    board: str                      # board=
    model_sha256: str               # model=
    arena_bytes: int                # arena=
    arena_used_bytes: int           # used=, 0 when AllocateTensors failed
    ops: int                        # ops=, number of ops registered
    inputs: list[TensorSpec]        # in=
    outputs: list[TensorSpec]       # out=
    status: str                     # status=, "ok" or "error"
    extra: dict[str, str] = field(default_factory=dict)  # keys a later firmware added
    # max_line=, the longest host message the device reads; None from firmware that predates
    # chunked inputs (it reads an IN as long as its whole input).
    max_line: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def memory_plan(self) -> str | None:
        """plan=, the arena plan TFLM runs: "offline" (the model's OfflineMemoryAllocation)
        or "tflm-greedy"; None from firmware that predates the key (docs/protocol.md)."""
        value = self.extra.get("plan")
        return None if value is None else _unquote(value)


@dataclass(slots=True)
class OutputValues:
    """One output tensor of a RES: raw values (None for float32 outputs) and dequantized ones."""

    q: list[int] | None
    f: list[float]


@dataclass(slots=True)
class Result:
    """RES: the outputs of one inference."""

    seq: int
    src: str                        # "host" (answer to IN) or "demo" (the sketch's own input)
    us: int                         # inference time in microseconds
    outputs: list[OutputValues]
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DeviceErrorMessage:
    """ERR: the device reports a failure; seq is None when it belongs to no request."""

    seq: int | None
    code: str
    status: int                     # the TfLiteStatus, or 0
    msg: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Echo:
    """ECHO: the device's answer to an ECHO the host sent."""

    seq: int
    data: bytes
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class OtherMessage:
    """A valid v1 message of a type this module does not interpret (values percent-decoded)."""

    type: str
    fields: dict[str, str]


@dataclass(slots=True)
class DeviceLog:
    """A line the device printed that is not a message (MicroPrintf, user prints)."""

    text: str


@dataclass(slots=True)
class Corrupt:
    """A line with ``!tf`` that fails the CRC or the grammar: never to be trusted."""

    reason: str
    line: str


@dataclass(slots=True)
class UnsupportedVersion:
    """A message of a protocol version this host does not speak (``!tf2 ...``)."""

    version: int
    line: str


@dataclass(slots=True)
class Decision:
    """DEC: the firmware's decision filter reported a new command (docs/protocol.md 2.1)."""

    seq: int                        # the pipeline inference (RES seq) that decided it
    cls: int                        # class=, the class index
    label: str                      # the class's label, empty without labels
    score: int                      # its average score, 0..255 (1/256 steps)
    t: int                          # stream time of the inference, ms
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Credit:
    """CREDIT: how much of a replay the device has taken (flow control, section 3.5)."""

    seq: int | None                 # the last SAMPLES it answers; None for REPLAY's answer
    read: int                       # int16 values the pipeline took since REPLAY
    capacity: int                   # the device's buffer, in int16 values
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Features:
    """FEAT: what the pipeline computed (an audio frame, or an IMU model input)."""

    n: int                          # frame index (microphone) or inference seq (IMU)
    values: list                    # ints, or floats for float32 inputs
    extra: dict[str, str] = field(default_factory=dict)


Event = Union[Boot, Result, DeviceErrorMessage, Echo, OtherMessage, DeviceLog, Corrupt,
              UnsupportedVersion, Decision, Credit, Features]


# --- decoding -----------------------------------------------------------------------------

class _Invalid(Exception):
    """A CRC-valid line that breaks the grammar of its message type."""


# One pass of the whole grammar: version 1, type, " key=value" fields, CRC. Values are any
# printable ASCII but space; percent escapes are checked separately (only when present).
_V1_LINE = re.compile(r"!tf1 ([A-Z]+)((?: [a-z][a-z0-9_]*=[!-~]*)*) \*([0-9a-f]{8})")
# Nine digits at most: int() of thousands of digits raises, and no protocol gets that far.
_VERSION = re.compile(r"!tf([1-9][0-9]{0,8}) ")
_TRAILER = re.compile(r" \*([0-9a-f]{8})\Z")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-F]{2})")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")
# Quick checks before int()/float() parse a list in C; the parse rejects what remains.
_NOT_INT_LIST = re.compile(r"[^0-9,-]")
_NOT_FLOAT_LIST = re.compile(r"[^0-9,.e+\-naif]")
_FLOAT = r"(?:-?(?:[0-9]+(?:\.[0-9]+)?(?:e[+-][0-9]{2,})?|inf)|nan)"
_INT = re.compile(r"-?[0-9]+")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPEC = re.compile(rf"([a-z][a-z0-9]*):((?:[0-9]+(?:x[0-9]+)*)?):({_FLOAT}):(-?[0-9]+)")
_OUTPUT_KEY = re.compile(r"[qf](?:0|[1-9][0-9]*)")
# Output keys are looked up by index; building them once keeps RES decoding fast.
_F_KEYS = tuple(f"f{i}" for i in range(64))
_Q_KEYS = tuple(f"q{i}" for i in range(64))


class Decoder:
    """Turns the bytes a device sends into events, line by line.

    `feed` accepts any bytes in any chunks (a line may span feeds) and never raises:
    whatever arrives becomes `DeviceLog`, a message, `Corrupt` or `UnsupportedVersion`.
    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``. A line longer than `max_line` bytes is
    reported once as `Corrupt` and dropped. Bytes that are not UTF-8 in log lines are
    shown as U+FFFD.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES):
        self._max_line = max_line
        self._parts: list[bytes] = []   # the unfinished line, in pieces
        self._pending = 0               # its length
        self._skip_lf = False           # the last feed ended in "\r": a "\n" next ends nothing
        self._discarding = False        # inside an overlong line, until it ends

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by `data` (possibly none)."""
        events: list[Event] = []
        if not data:
            return events
        data = bytes(data)
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return events
        if b"\n" not in data and b"\r" not in data:
            self._hold(data, events)
            return events
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts = []
            self._pending = 0
        lines = data.splitlines()
        tail = lines.pop() if data[-1] not in (10, 13) else b""
        self._skip_lf = data[-1] == 13
        if self._discarding and lines:
            del lines[0]                    # the end of an overlong line
            self._discarding = False
        append = events.append
        for line in lines:
            if len(line) > self._max_line:
                append(self._too_long(line))
                continue
            start = line.rfind(_MARKER)
            if start < 0:
                append(DeviceLog(line.decode("utf-8", "replace")))
                continue
            if start:
                append(DeviceLog(line[:start].decode("utf-8", "replace")))
                line = line[start:]
            append(decode_message(line))
        if tail:
            self._hold(tail, events)
        return events

    def _hold(self, piece: bytes, events: list[Event]) -> None:
        if self._discarding:
            return
        self._parts.append(piece)
        self._pending += len(piece)
        if self._pending > self._max_line:
            events.append(self._too_long(b"".join(self._parts)))
            self._parts = []
            self._pending = 0
            self._discarding = True

    def _too_long(self, line: bytes) -> Corrupt:
        # Never more than max_line bytes: the same excerpt however the line was chunked.
        excerpt = line[:min(_EXCERPT_CHARS, self._max_line)]
        return Corrupt(f"line longer than {self._max_line} bytes (dropped)",
                       _text(excerpt) + "...")


def decode_message(line: bytes) -> Event:
    """Decode one line that starts with ``!tf`` (no line end). Never raises."""
    text = line.decode("latin-1")   # every byte maps to one char; non-ASCII fails the grammar
    match = _V1_LINE.fullmatch(text)
    if match is None:
        return _diagnose(line, text)
    message_type, fields_text, crc = match.groups()
    if zlib.crc32(line[:-10]) != int(crc, 16):
        return Corrupt("CRC mismatch", _text(line))
    if fields_text:
        if "%" in fields_text and _BAD_ESCAPE.search(fields_text):
            return Corrupt("bad percent escape", _text(line))
        items = fields_text[1:].split(" ")
        fields = dict(map(_split_field, items))
        if len(fields) != len(items):
            return Corrupt("duplicate key", _text(line))
    else:
        fields = {}
    build = _BUILDERS.get(message_type)
    try:
        if build is None:
            return OtherMessage(message_type, {k: _unquote(v) for k, v in fields.items()})
        return build(fields)
    except (_Invalid, ValueError) as exc:
        return Corrupt(f"invalid {message_type}: {exc}", _text(line))


def _diagnose(line: bytes, text: str) -> Event:
    """Why a line starting with !tf is not a valid v1 message (checked in the spec's order)."""
    version = _VERSION.match(text)
    if version is None:
        return Corrupt("no protocol version after !tf", _text(line))
    if version[1] != "1":
        return UnsupportedVersion(int(version[1]), _text(line))
    trailer = _TRAILER.search(text)
    if trailer is None:
        return Corrupt("no CRC at the end of the line", _text(line))
    if zlib.crc32(line[:-10]) != int(trailer[1], 16):
        return Corrupt("CRC mismatch", _text(line))
    return Corrupt("malformed message (bad type, key or value)", _text(line))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _unquote(value: str) -> str:
    if "%" not in value:
        return value
    raw = _ESCAPE.sub(lambda m: chr(int(m[1], 16)), value).encode("latin-1")
    return _text(raw)


def _require(fields: dict[str, str], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in fields]
    if missing:
        raise _Invalid(f"missing {', '.join(missing)}")


def _uint32(value: str, key: str) -> int:
    # isdigit() is enough: values are ASCII by then, and it rejects signs and "_".
    if not value.isdigit() or len(value) > 10 or int(value) > _UINT32_MAX:
        raise _Invalid(f"{key} is not a uint32")
    return int(value)


def _int(value: str, key: str) -> int:
    if _INT.fullmatch(value) is None:
        raise _Invalid(f"{key} is not an integer")
    return int(value)


def _ints(value: str, key: str) -> list[int]:
    if not value:
        return []
    # int() alone would also take "+1" and "1_0"; the protocol writes neither.
    if _NOT_INT_LIST.search(value):
        raise _Invalid(f"{key} is not a list of integers")
    return list(map(int, value.split(",")))


def _floats(value: str, key: str) -> list[float]:
    if not value:
        return []
    # float() alone would also take "1_0", "Infinity" or "1E5"; the protocol writes none.
    if _NOT_FLOAT_LIST.search(value):
        raise _Invalid(f"{key} is not a list of floats")
    return list(map(float, value.split(",")))


def _extra(fields: dict[str, str], known: tuple[str, ...]) -> dict[str, str]:
    if len(fields) == len(known):
        return {}
    return {k: _unquote(v) for k, v in fields.items() if k not in known}


def _tensor_specs(value: str, key: str) -> list[TensorSpec]:
    if not value:
        return []
    specs = []
    for item in value.split(","):
        match = _SPEC.fullmatch(item)
        if match is None:
            raise _Invalid(f"{key} has a bad tensor spec {item!r}")
        shape = tuple(int(d) for d in match[2].split("x")) if match[2] else ()
        specs.append(TensorSpec(match[1], shape, float(match[3]), int(match[4])))
    return specs


_BOOT_KEYS = ("v", "fw", "board", "model", "arena", "used", "ops", "in", "out", "status")
_BOOT_OPTIONAL_KEYS = ("max_line",)


def _boot(fields: dict[str, str]) -> Boot:
    _require(fields, _BOOT_KEYS)
    model = fields["model"]
    if _SHA256.fullmatch(model) is None:
        raise _Invalid("model is not a sha256")
    status = fields["status"]
    if status not in ("ok", "error"):
        raise _Invalid("status is neither ok nor error")
    return Boot(
        protocol=_uint32(fields["v"], "v"), firmware=_unquote(fields["fw"]),
        board=_unquote(fields["board"]), model_sha256=model,
        arena_bytes=_uint32(fields["arena"], "arena"),
        arena_used_bytes=_uint32(fields["used"], "used"),
        ops=_uint32(fields["ops"], "ops"), inputs=_tensor_specs(fields["in"], "in"),
        outputs=_tensor_specs(fields["out"], "out"), status=status,
        extra=_extra(fields, _BOOT_KEYS + tuple(k for k in _BOOT_OPTIONAL_KEYS if k in fields)),
        max_line=_uint32(fields["max_line"], "max_line") if "max_line" in fields else None)


_RESULT_KEYS = ("seq", "src", "us")


def _result(fields: dict[str, str]) -> Result:
    try:
        seq, src, us = fields["seq"], fields["src"], fields["us"]
    except KeyError:
        _require(fields, _RESULT_KEYS)
        raise
    outputs = []
    used = len(_RESULT_KEYS)
    get = fields.get
    i = 0
    while (f_text := get(_F_KEYS[i] if i < len(_F_KEYS) else f"f{i}")) is not None:
        floats = _floats(f_text, "f")
        q_text = get(_Q_KEYS[i] if i < len(_Q_KEYS) else f"q{i}")
        if q_text is None:
            outputs.append(OutputValues(None, floats))
            used += 1
        else:
            ints = _ints(q_text, "q")
            if len(ints) != len(floats):
                raise _Invalid(f"q{i} and f{i} differ in length")
            outputs.append(OutputValues(ints, floats))
            used += 2
        i += 1
    extra = {} if used == len(fields) else _result_extra(fields, i)
    return Result(_uint32(seq, "seq"), _unquote(src), _uint32(us, "us"), outputs, extra)


def _result_extra(fields: dict[str, str], outputs: int) -> dict[str, str]:
    """Unknown keys of a RES; a q or f key outside the outputs makes it invalid."""
    taken = set(_RESULT_KEYS) | {f"{p}{k}" for p in "qf" for k in range(outputs)}
    extra = {}
    for key, value in fields.items():
        if key in taken:
            continue
        if _OUTPUT_KEY.fullmatch(key):
            raise _Invalid(f"{key} has no matching f{key[1:]} or follows a gap")
        extra[key] = _unquote(value)
    return extra


_ERROR_KEYS = ("seq", "code", "status", "msg")


def _error(fields: dict[str, str]) -> DeviceErrorMessage:
    _require(fields, _ERROR_KEYS)
    seq_text = fields["seq"]
    seq = None if seq_text == "-" else _uint32(seq_text, "seq")
    return DeviceErrorMessage(seq, _unquote(fields["code"]), _int(fields["status"], "status"),
                              _unquote(fields["msg"]), _extra(fields, _ERROR_KEYS))


_ECHO_KEYS = ("seq", "data")


def _echo(fields: dict[str, str]) -> Echo:
    _require(fields, _ECHO_KEYS)
    data = fields["data"]
    if _HEX.fullmatch(data) is None:
        raise _Invalid("data is not lower-case hex")
    return Echo(_uint32(fields["seq"], "seq"), bytes.fromhex(data), _extra(fields, _ECHO_KEYS))


_DECISION_KEYS = ("seq", "class", "label", "score", "t")


def _decision(fields: dict[str, str]) -> Decision:
    _require(fields, _DECISION_KEYS)
    score = _uint32(fields["score"], "score")
    if score > 255:
        raise _Invalid("score is above 255")
    return Decision(_uint32(fields["seq"], "seq"), _int(fields["class"], "class"),
                    _unquote(fields["label"]), score, _uint32(fields["t"], "t"),
                    _extra(fields, _DECISION_KEYS))


_CREDIT_KEYS = ("seq", "read", "capacity")


def _credit(fields: dict[str, str]) -> Credit:
    _require(fields, _CREDIT_KEYS)
    seq = None if fields["seq"] == "-" else _uint32(fields["seq"], "seq")
    return Credit(seq, _uint32(fields["read"], "read"), _uint32(fields["capacity"], "capacity"),
                  _extra(fields, _CREDIT_KEYS))


_FEATURES_KEYS = ("n", "v")


def _features(fields: dict[str, str]) -> Features:
    _require(fields, _FEATURES_KEYS)
    text = fields["v"]
    values = _ints(text, "v") if not _NOT_INT_LIST.search(text) else _floats(text, "v")
    return Features(_uint32(fields["n"], "n"), values, _extra(fields, _FEATURES_KEYS))


_BUILDERS = {"BOOT": _boot, "RES": _result, "ERR": _error, "ECHO": _echo, "DEC": _decision,
             "CREDIT": _credit, "FEAT": _features}


# --- encoding -----------------------------------------------------------------------------

_TYPE = re.compile(r"[A-Z]+")
_KEY = re.compile(r"[a-z][a-z0-9_]*")
# Characters a value may carry as they are; '!' is left out so no value holds "!tf".
_PLAIN = re.compile(r"[\x22-\x24\x26-\x7e]*")


def format_float(value: float) -> str:
    """A float as the protocol writes it: 7 significant digits, like the firmware does."""
    if value == 0:
        return "0"          # also for -0.0
    return format(value, ".7g")


def _quote(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return text
    return "".join(chr(b) if 0x21 < b <= 0x7E and b != 0x25 else f"%{b:02X}"
                   for b in text.encode("utf-8"))


def _encode_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        raise TypeError(f"{key}: booleans have no protocol encoding; pass 0/1 or a word")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, (str, bool)) or not isinstance(item, (int, float))
               for item in value):
            raise TypeError(f"{key}: lists hold numbers only")
        return ",".join(str(item) if isinstance(item, int) else format_float(item)
                        for item in value)
    raise TypeError(f"{key}: cannot encode a {type(value).__name__}")


def encode(message_type: str, /, *, eol: bytes = HOST_EOL, **fields: object) -> bytes:
    """One protocol line: ``!tf1 TYPE key=value ... *crc`` plus `eol`.

    Values: int, float, str (percent-encoded), bytes (lower-case hex), or a list of numbers
    (comma-separated). Fields keep the order given. Raises ValueError for a bad type or key.
    """
    if _TYPE.fullmatch(message_type) is None:
        raise ValueError(f"message type must be upper-case letters, not {message_type!r}")
    parts = [f"!tf{VERSION} {message_type}"]
    for key, value in fields.items():
        if _KEY.fullmatch(key) is None:
            raise ValueError(f"key must match [a-z][a-z0-9_]*, not {key!r}")
        parts.append(f"{key}={_encode_value(key, value)}")
    body = " ".join(parts).encode("ascii")
    return body + b" *%08x" % zlib.crc32(body) + eol


def encode_hello() -> bytes:
    """HELLO: asks the device to send its BOOT message again."""
    return encode("HELLO")


def encode_input(seq: int, data: bytes) -> bytes:
    """IN: the bytes of all input tensors, concatenated in input order."""
    return encode("IN", seq=_check_seq(seq), data=bytes(data))


def encode_input_chunk(seq: int, offset: int, data: bytes, *, final: bool) -> bytes:
    """IN carrying `data` at byte `offset` of the concatenated inputs; `final` ends the input."""
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _UINT32_MAX:
        raise ValueError(f"offset must be a uint32, not {offset!r}")
    return encode("IN", seq=_check_seq(seq), offset=offset, final=int(bool(final)),
                  data=bytes(data))


def encode_input_lines(seq: int, data: bytes, max_line: int | None) -> list[bytes]:
    """The IN lines that carry one input to a device that reads messages of up to `max_line`
    bytes (BOOT's max_line): one whole IN when it fits or the device did not say (older
    firmware reads an IN as long as its input), else chunks in order, the last one final."""
    data = bytes(data)
    whole = encode_input(seq, data)
    if max_line is None or len(whole) - len(HOST_EOL) <= max_line:
        return [whole]
    # The longest offset any chunk carries is below len(data): its digits bound the overhead.
    overhead = len(encode_input_chunk(seq, len(data), b"", final=False)) - len(HOST_EOL)
    per_line = (max_line - overhead) // 2
    if per_line < 1:
        raise ValueError(f"a device line of {max_line} bytes cannot carry an IN chunk "
                         f"({overhead} bytes without data)")
    return [encode_input_chunk(seq, offset, data[offset:offset + per_line],
                               final=offset + per_line >= len(data))
            for offset in range(0, len(data), per_line)]


def encode_echo(seq: int, data: bytes) -> bytes:
    """ECHO: the device answers with the same seq and data."""
    return encode("ECHO", seq=_check_seq(seq), data=bytes(data))


def _check_seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _UINT32_MAX:
        raise ValueError(f"seq must be a uint32, not {seq!r}")
    return seq


# --- PROF (firmware built with `tinyforge build --profile`) --------------------------------

PROFILE_UNITS = ("instructions", "cycles")


@dataclass(slots=True)
class Profile:
    """PROF: the per-op counts of one inference, sent after its RES (docs/protocol.md).

    The decoder reports PROF as an `OtherMessage`; `parse_profile()` reads it.
    """

    seq: int
    src: str
    unit: str                       # "instructions" (QEMU) or "cycles" (a board)
    costs: list[int]                # one count per operator of subgraph 0, in order
    total: int                      # the whole Invoke(), profiler included
    overhead: int                   # one Begin/End pair of the profiler, measured at boot
    dropped: int                    # operators beyond the firmware's table (0 normally)
    extra: dict[str, str] = field(default_factory=dict)


_PROFILE_KEYS = ("seq", "src", "unit", "ops", "cost", "total", "overhead", "dropped")


def parse_profile(message: OtherMessage) -> Profile:
    """The `Profile` a PROF message carries; ValueError naming the field when malformed."""
    if message.type != "PROF":
        raise ValueError(f"not a PROF message: {message.type}")
    fields = message.fields
    try:
        _require(fields, _PROFILE_KEYS)
        try:
            costs = _ints(fields["cost"], "cost")
        except ValueError:   # an empty item: "1,,2"
            raise _Invalid("cost is not a list of integers") from None
        if any(c < 0 for c in costs):
            raise _Invalid("cost holds a negative count")
        if len(costs) != _uint32(fields["ops"], "ops"):
            raise _Invalid(f"ops={fields['ops']} but cost has {len(costs)} items")
        if fields["unit"] not in PROFILE_UNITS:
            raise _Invalid(f"unit is not one of {', '.join(PROFILE_UNITS)}")
        return Profile(seq=_uint32(fields["seq"], "seq"), src=fields["src"],
                       unit=fields["unit"], costs=costs,
                       total=_uint32(fields["total"], "total"),
                       overhead=_uint32(fields["overhead"], "overhead"),
                       dropped=_uint32(fields["dropped"], "dropped"),
                       extra={k: v for k, v in fields.items() if k not in _PROFILE_KEYS})
    except _Invalid as exc:
        raise ValueError(f"invalid PROF: {exc}") from None


# --- layer reports and state resets (docs/protocol.md 3.3, 3.4) ----------------------------
# Devices send LAYER, LAYERS, TENSOR and RESET as generic messages (`OtherMessage`); the
# functions below read them, raising ValueError for a message that breaks their format.

@dataclass(frozen=True)
class LayerChecksum:
    """One LAYER line: the CRC-32 of one output of one operator, after an inference."""

    seq: int
    op: int
    name: str
    out: int
    dtype: str
    shape: list[int]
    bytes: int
    crc: int


@dataclass(frozen=True)
class TensorChunk:
    """One TENSOR line: `data` at byte `offset` of an operator's output."""

    seq: int
    op: int
    out: int
    offset: int
    final: bool
    data: bytes


def encode_reset(seq: int) -> bytes:
    """RESET: the device rebuilds its interpreter (a streaming model's initial state)."""
    return encode("RESET", seq=_check_seq(seq))


def encode_layers(seq: int) -> bytes:
    """LAYERS: each operator's output CRC for the inference of IN `seq` (a debug build)."""
    return encode("LAYERS", seq=_check_seq(seq))


def encode_tensor(seq: int, op: int, out: int) -> bytes:
    """TENSOR: the bytes of output `out` of operator `op` of the inference of IN `seq`."""
    return encode("TENSOR", seq=_check_seq(seq), op=_check_seq(op), out=_check_seq(out))


def layer_checksum(message: OtherMessage) -> LayerChecksum:
    """A LAYER message read; ValueError when a field is missing or malformed."""
    fields = _message_fields(message, "LAYER", ("seq", "op", "name", "out", "type", "shape",
                                                "bytes", "crc"))
    if re.fullmatch(r"[0-9a-f]{8}", fields["crc"]) is None:
        raise ValueError(f"LAYER crc is not 8 lower-case hex digits: {fields['crc']!r}")
    shape = fields["shape"]
    if shape and re.fullmatch(r"\d+(x\d+)*", shape) is None:
        raise ValueError(f"LAYER shape is not dimensions joined by x: {shape!r}")
    return LayerChecksum(
        seq=_field_uint(fields, "seq"), op=_field_uint(fields, "op"), name=fields["name"],
        out=_field_uint(fields, "out"), dtype=fields["type"],
        shape=[int(d) for d in shape.split("x")] if shape else [],
        bytes=_field_uint(fields, "bytes"), crc=int(fields["crc"], 16))


def tensor_chunk(message: OtherMessage) -> TensorChunk:
    """A TENSOR message read; ValueError when a field is missing or malformed."""
    fields = _message_fields(message, "TENSOR", ("seq", "op", "out", "offset", "final", "data"))
    if fields["final"] not in ("0", "1"):
        raise ValueError(f"TENSOR final must be 0 or 1, not {fields['final']!r}")
    data = fields["data"]
    if len(data) % 2 or re.fullmatch(r"[0-9a-f]*", data) is None:
        raise ValueError("TENSOR data is not lower-case hex bytes")
    return TensorChunk(seq=_field_uint(fields, "seq"), op=_field_uint(fields, "op"),
                       out=_field_uint(fields, "out"), offset=_field_uint(fields, "offset"),
                       final=fields["final"] == "1", data=bytes.fromhex(data))


def _message_fields(message: OtherMessage, message_type: str,
                    keys: tuple[str, ...]) -> dict[str, str]:
    if message.type != message_type:
        raise ValueError(f"not a {message_type} message: {message.type}")
    missing = [key for key in keys if key not in message.fields]
    if missing:
        raise ValueError(f"{message_type} lacks {', '.join(missing)}")
    return message.fields


def _field_uint(fields: dict[str, str], key: str) -> int:
    try:
        return _uint32(fields[key], key)
    except _Invalid as error:
        raise ValueError(str(error)) from None


# --- sensor replay (docs/protocol.md) -------------------------------------------------------

REPLAY_INPUTS = ("imu", "microphone")
# int16 values per reading: an IMU reading is ax, ay, az, gx, gy, gz.
REPLAY_UNIT = {"imu": 6, "microphone": 1}


def encode_replay(input_kind: str, *, rate_mhz: int | None = None, features: bool = False,
                  discard: bool = False) -> bytes:
    """REPLAY: start a new stream of replayed samples (section 3.5). The IMU needs its rate
    in millihertz; `features` asks for FEAT messages; `discard` drops the first
    kAudioDiscardSamples like a live microphone."""
    if input_kind not in REPLAY_INPUTS:
        raise ValueError(f"input must be one of {REPLAY_INPUTS}, not {input_kind!r}")
    fields: dict[str, object] = {"input": input_kind}
    if input_kind == "imu":
        if isinstance(rate_mhz, bool) or not isinstance(rate_mhz, int) \
                or not 0 < rate_mhz <= _UINT32_MAX:
            raise ValueError(f"an IMU replay needs rate_mhz, a uint32 above 0, not {rate_mhz!r}")
        fields["rate_mhz"] = rate_mhz
    fields["features"] = int(bool(features))
    if discard:
        fields["discard"] = 1
    return encode("REPLAY", **fields)


def encode_samples(seq: int, values) -> bytes:
    """SAMPLES: int16 values (an IMU's readings, or PCM) as little-endian bytes."""
    import array
    data = array.array("h", values)
    if data.itemsize != 2:  # pragma: no cover - every platform tinyforge runs on
        raise ValueError("int16 arrays are not 2 bytes here")
    raw = data.tobytes() if _LITTLE_ENDIAN else _swapped(data)
    return encode("SAMPLES", seq=_check_seq(seq), data=raw)


def samples_per_line(max_line: int, unit: int = 1) -> int:
    """How many int16 values one SAMPLES line carries within `max_line` (BOOT's max_line),
    a multiple of `unit` (6 for IMU readings)."""
    overhead = len(encode("SAMPLES", seq=_UINT32_MAX, data=b"")) - len(HOST_EOL)
    count = (max_line - overhead) // 4 // unit * unit
    if count < unit:
        raise ValueError(f"a device line of {max_line} bytes cannot carry a SAMPLES message")
    return count


def _swapped(data) -> bytes:  # pragma: no cover - big-endian hosts only
    data = data.__copy__()
    data.byteswap()
    return data.tobytes()


_LITTLE_ENDIAN = __import__("sys").byteorder == "little"
