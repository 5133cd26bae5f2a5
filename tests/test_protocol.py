"""Serial protocol v1 (docs/protocol.md): the host's Python side against the firmware's C++.

The firmware side (firmware_templates/common/tf_protocol.cpp) is compiled with the host g++,
with AddressSanitizer and UBSan, into tests/cpp/protocol_harness.cpp. In `emit` mode the
harness runs the C++ encoder on values this test chooses; in `device` mode it answers host
lines like a firmware. The Python decoder must read exactly what the C++ encoder wrote, and
the C++ parser must accept what the Python encoder writes and reject what it must reject,
with the same verdict as the Python decoder.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinyforge import proc
from tinyforge.device import protocol
from tinyforge.device.protocol import (
    Boot,
    Corrupt,
    Decoder,
    DeviceErrorMessage,
    DeviceLog,
    Echo,
    OtherMessage,
    OutputValues,
    Result,
    TensorSpec,
    UnsupportedVersion,
    encode,
    encode_echo,
    encode_hello,
    encode_input,
    encode_input_chunk,
    encode_input_lines,
    format_float,
)

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "firmware_templates" / "common"
PROTOCOL_CPP = COMMON / "tf_protocol.cpp"
HARNESS_CPP = ROOT / "tests" / "cpp" / "protocol_harness.cpp"
DOC = ROOT / "docs" / "protocol.md"

LINE_CAPACITY = 128         # the harness device's line buffer (-DHARNESS_LINE_CAPACITY)
INPUT_SIZES = (5, 3)        # the harness device's int8 input tensors, in bytes
HARNESS_SCALE = 0.5         # and their quantization
HARNESS_ZERO_POINT = -3
HARNESS_SHA = "0123456789abcdef" * 4
CPP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60
# The flags the brief fixes for the device build (the nano33ble core uses softfp).
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-Os", "-fno-rtti",
             "-fno-exceptions", "-std=gnu++14", "-Wall", "-Wextra", "-Werror"]
# What tf_protocol.o may need from the C library and libgcc: no heap, no stdio.
ARM_ALLOWED_UNDEFINED = {"memcpy", "memset", "strlen", "strncmp"}

MESSAGE_EVENTS = (Boot, Result, DeviceErrorMessage, Echo, OtherMessage)
PARSER_CODES = {"BAD_CRC", "BAD_MESSAGE", "PROTOCOL_VERSION", "LINE_TOO_LONG"}


# --- helpers ------------------------------------------------------------------------------

def f32(value: float) -> float:
    """`value` rounded to the nearest float32, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def bits(value: float) -> str:
    """The 8 hex digits of `value` as a float32: how the harness is told a float exactly."""
    return struct.pack(">f", value).hex()


def with_crc(body: str | bytes, eol: bytes = b"\n") -> bytes:
    """A line with a correct CRC for any body, including ones that break the grammar."""
    raw = body.encode("latin-1") if isinstance(body, str) else body
    return raw + b" *%08x" % zlib.crc32(raw) + eol


def decode(data: bytes) -> list:
    return Decoder().feed(data)


def only(events: list):
    assert len(events) == 1, events
    return events[0]


def doc_code_lines() -> list[str]:
    """Every protocol line inside a fenced code block of docs/protocol.md."""
    lines, inside = [], False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside and re.match(r"!tf[0-9]", line):
            lines.append(line)
    return lines


def python_verdict(line: bytes) -> str | None:
    """What the Python decoder makes of one host line, in the device's ERR codes.

    "valid" for a valid message, None when it holds no message (log only).
    """
    kinds = [e for e in decode(line) if not isinstance(e, DeviceLog)]
    if not kinds:
        return None
    event = only(kinds)
    if isinstance(event, UnsupportedVersion):
        return "PROTOCOL_VERSION"
    if isinstance(event, Corrupt):
        return "BAD_CRC" if event.reason == "CRC mismatch" else "BAD_MESSAGE"
    return "valid"


def replies_by_sync(events: list, count: int) -> list[list]:
    """Split a device's replies at the ECHO seq=i answers that follow each of `count` lines."""
    groups, current = [], []
    for event in events:
        if isinstance(event, Echo) and event.seq == len(groups) and event.data == b"":
            groups.append(current)
            current = []
        else:
            current.append(event)
    assert len(groups) == count and not current, (len(groups), current)
    return groups


def sync_line(i: int) -> bytes:
    return encode_echo(i, b"")


def reply_kind(replies: list) -> str | None:
    """The device's verdict on one line: its ERR code, "valid" for any other reply, or None."""
    if not replies:
        return None
    reply = only(replies)
    assert not isinstance(reply, (Corrupt, UnsupportedVersion, DeviceLog)), reply
    if isinstance(reply, DeviceErrorMessage) and reply.code in PARSER_CODES:
        return reply.code
    return "valid"


class Harness:
    """Runs the compiled protocol_harness on files in a work folder."""

    def __init__(self, executable: Path, workdir: Path):
        self.executable = executable
        self.workdir = workdir
        self._runs = 0

    def _run(self, mode: str, payload: bytes, *extra: str) -> bytes:
        self._runs += 1
        source = self.workdir / f"{mode}-{self._runs}.in"
        output = self.workdir / f"{mode}-{self._runs}.out"
        source.write_bytes(payload)
        proc.run([self.executable, mode, source, output, *extra], timeout=RUN_TIMEOUT_S,
                 what=f"protocol harness ({mode})")
        return output.read_bytes()

    def emit(self, *commands: str) -> bytes:
        return self._run("emit", ("\n".join(commands) + "\n").encode("ascii"))

    def emit_line(self, command: str) -> bytes:
        """The single line one command writes, checked to end in the device's \\r\\n."""
        out = self.emit(command)
        assert out.endswith(b"\r\n") and out.count(b"\n") == 1, out
        return out

    def device(self, data: bytes, sizes: tuple[int, ...] = INPUT_SIZES) -> list:
        return decode(self._run("device", data, ",".join(map(str, sizes))))


@pytest.fixture(scope="module")
def harness(tmp_path_factory, host_builds) -> Harness:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the C++ side of the protocol cannot be built here")
    workdir = tmp_path_factory.mktemp("protocol_harness")
    executable = workdir / "protocol_harness"
    argv = [compiler, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            f"-DHARNESS_LINE_CAPACITY={LINE_CAPACITY}", f"-I{COMMON}",
            HARNESS_CPP, PROTOCOL_CPP, "-o", executable]
    host_builds.build(argv, executable, lambda: proc.run(
        argv, timeout=CPP_TIMEOUT_S, what="g++ build of the protocol harness"))
    return Harness(executable, workdir)


# --- the C++ encoder, read by the Python decoder ----------------------------------------------

def special_floats() -> list[float]:
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 2 / 3, 0.5, 2.5, 123456.7, 1234567.4, 9999999.0,
              1e7, 10000005.0, 1048576.5, 1048577.5, 1e-4, 9.9999995e-5, 0.000123456789,
              3.4028234663852886e38, 1.1754943508222875e-38, 1.401298464324817e-45,
              5.877471754111438e-39, math.inf, -math.inf, math.nan, 31.41593, -1.5e-5]
    for exponent in range(-45, 39):
        power = f32(10.0 ** exponent)
        values += [power, math.nextafter(power, 0), math.nextafter(power, math.inf)]
    return [f32(v) for v in values]


def random_floats(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [struct.unpack(">f", rng.getrandbits(32).to_bytes(4, "big"))[0] for _ in range(count)]


def test_floats_are_written_like_python_format_7g(harness):
    floats = [v for v in special_floats() + random_floats(4000, seed=7)]
    commands = ["fmt " + " ".join(bits(v) for v in floats[i:i + 500])
                for i in range(0, len(floats), 500)]
    written = harness.emit(*commands).decode("ascii").split()
    assert len(written) == len(floats)
    for value, text in zip(floats, written):
        assert text == format_float(value), (value, text)
        parsed = float(text)
        if math.isnan(value):
            assert math.isnan(parsed)
        elif math.isinf(value) or value == 0:
            assert parsed == value
        else:
            assert math.isclose(parsed, value, rel_tol=5e-7), (value, text)


def test_float_forms_follow_the_spec(harness):
    cases = {0.25: "0.25", -1e-4: "-0.0001", 9999999.0: "9999999", 1e7: "1e+07",
             -1.5e-5: "-1.5e-05", 2.0: "2", -0.0: "0", math.inf: "inf", -math.inf: "-inf",
             math.nan: "nan", 1.401298464324817e-45: "1.401298e-45",
             10000005.0: "1e+07",            # a tie: rounds to the even 1000000
             1048577.5: "1048578"}           # a tie: rounds to the even 8
    written = harness.emit("fmt " + " ".join(bits(v) for v in cases)).decode().split()
    assert dict(zip(cases.values(), written)) == {v: v for v in cases.values()}


def test_crc_is_zlib_crc32(harness):
    rng = random.Random(3)
    samples = [b"", b"123456789", b"!tf1 HELLO", bytes(range(256)), rng.randbytes(5000)]
    out = harness.emit(*(f"crc {sample.hex()}" for sample in samples)).decode().split()
    assert out == [f"{zlib.crc32(sample):08x}" for sample in samples]
    assert out[1] == "cbf43926"


TEXTS = ["", "plain", "a b  c", 'quote " and \' too', "line\nbreak\r\nand\ttab", "100%",
         "bang! and !tf1 RES seq=1 *00000000", "é ü ß 日本 🙂", "\x00nul\x7fdel",
         "*star* ,comma, =equals= :colon:", "~" * 300]


@pytest.mark.parametrize("text", TEXTS)
def test_text_is_percent_encoded_and_decoded_back(harness, text):
    line = harness.emit_line(f"text LOG msg {text.encode('utf-8').hex()}")
    body = line[:-2]
    assert all(0x20 <= b <= 0x7E for b in body)     # one printable line, whatever the text
    assert body.count(b"!") == 1 and body.count(b" ") == 3
    event = only(decode(line))
    assert event == OtherMessage("LOG", {"msg": text})
    assert line == encode("LOG", eol=b"\r\n", msg=text)


def test_encoder_drops_invalid_keys_and_types_rather_than_send_bad_lines(harness):
    assert harness.emit("text lower msg 41", "text T9 msg 41") == b""
    line = harness.emit_line("text NOTE Bad 41")
    assert only(decode(line)) == OtherMessage("NOTE", {})
    assert harness.emit_line("text NOTE a_1 41") == encode("NOTE", eol=b"\r\n", a_1="A")


def test_integer_extremes(harness):
    out = harness.emit("int NUM v -2147483648", "int NUM v 2147483647", "uint NUM v 4294967295",
                       "uint NUM v 0", "hex BLOB data 00ff10", "hex BLOB data ")
    assert decode(out) == [OtherMessage("NUM", {"v": "-2147483648"}),
                           OtherMessage("NUM", {"v": "2147483647"}),
                           OtherMessage("NUM", {"v": "4294967295"}),
                           OtherMessage("NUM", {"v": "0"}),
                           OtherMessage("BLOB", {"data": "00ff10"}),
                           OtherMessage("BLOB", {"data": ""})]


RAW_VALUES = {
    "int8": [-128, -1, 0, 1, 127],
    "uint8": [0, 1, 128, 255],
    "int16": [-32768, -300, 0, 300, 32767],
    "int32": [-2147483648, -70000, 0, 70000, 2147483647],
}


@pytest.mark.parametrize("dtype", sorted(RAW_VALUES))
def test_integer_values_and_their_dequantization(harness, dtype):
    values = RAW_VALUES[dtype]
    listed = ",".join(map(str, values))
    for scale, zero_point in [(0.00390625, -128), (0.1234567, 7), (3.5e-9, -2147483648),
                              (1.0, 0), (0.0, 0)]:
        scale = f32(scale)
        out = harness.emit(f"values OUT q {dtype} {listed}",
                           f"deq OUT f {dtype} {bits(scale)} {zero_point} {listed}",
                           f"values OUT q {dtype} -")
        raw, dequantized, empty = decode(out)
        assert raw == OtherMessage("OUT", {"q": listed})
        assert empty == OtherMessage("OUT", {"q": ""})
        # float32 arithmetic, as the firmware does it: (float)(q - zp) * scale.
        expected = [f32(f32(q - zero_point) * scale) for q in values]
        assert dequantized.fields["f"] == ",".join(map(format_float, expected))


def test_float32_values_pass_through_unchanged(harness):
    values = special_floats()[:60]
    listed = ",".join(bits(v) for v in values)
    out = harness.emit(f"values OUT f float32 {listed}",
                       f"deq OUT f float32 {bits(0.5)} 9 {listed}")
    raw, dequantized = decode(out)
    assert raw == dequantized     # no dequantization for float32, whatever scale is given
    assert raw.fields["f"] == ",".join(map(format_float, values))


def res_command(seq: int, src: str, us: int, tensors: list[tuple]) -> str:
    parts = []
    for dtype, scale, zero_point, values in tensors:
        if dtype == "float32":
            listed = ",".join(bits(v) for v in values) or "-"
        else:
            listed = ",".join(map(str, values)) or "-"
        parts.append(f"{dtype}:{bits(scale)}:{zero_point}:{listed}")
    return " ".join([f"res {seq} {src} {us}", *parts])


def expected_outputs(tensors: list[tuple]) -> list[OutputValues]:
    outputs = []
    for dtype, scale, zero_point, values in tensors:
        if dtype == "float32":
            floats = [f32(v) for v in values]
            outputs.append(OutputValues(None, [float(format_float(v)) for v in floats]))
        else:
            floats = [f32(f32(q - zero_point) * f32(scale)) for q in values]
            outputs.append(OutputValues(list(values), [float(format_float(v)) for v in floats]))
    return outputs


def test_res_messages(harness):
    rng = random.Random(11)
    big = [rng.randint(-128, 127) for _ in range(1000)]
    cases = [
        (7, "host", 2713, [("int8", 0.00390625, -128, [-128, -121, 120])]),
        (0, "demo", 0, []),                                            # no outputs
        (4294967295, "host", 4294967295, [("int8", 0.02, 5, [])]),     # an empty output
        (12, "demo", 1830, [("float32", 0.0, 0, [0.25, -1.5e-5, 31.41593, 1e30])]),
        (3, "host", 99, [("uint8", 0.0078125, 128, [0, 128, 255]),
                         ("float32", 0.0, 0, [1.0, -2.0]),
                         ("int16", 0.000123, -7, [-32768, 0, 32767]),
                         ("int32", 1e-6, 1000, [-2147483648, 2147483647])]),
        (8, "host", 1, [("int8", 0.05123, -17, big)]),                 # 1000 values
    ]
    out = harness.emit(*(res_command(*case) for case in cases))
    events = decode(out)
    assert events == [Result(seq, src, us, expected_outputs(tensors))
                      for seq, src, us, tensors in cases]
    assert len(events[-1].outputs[0].f) == 1000
    # Every line the harness wrote ends in \r\n: one message per line.
    assert out.count(b"\r\n") == len(cases) and out.count(b"\n") == len(cases)


def test_boot_messages(harness):
    sha = hashlib.sha256(b"a model").hexdigest()
    out = harness.emit(
        f"boot 0.1.0 nano33ble {sha} 8192 5348 5 ok "
        f"int8:{bits(0.003921569)}:-128:1x32x3,float32:{bits(0)}:0: "
        f"int8:{bits(0.00390625)}:-128:1x3,int16:{bits(1 / 3)}:0:2x2x2x2",
        f"boot 0.1.0 qemu-m4 {sha} 100 0 2 error - - 512")
    assert decode(out) == [
        Boot(1, "0.1.0", "nano33ble", sha, 8192, 5348, 5,
             [TensorSpec("int8", (1, 32, 3), 0.003921569, -128), TensorSpec("float32", (), 0, 0)],
             [TensorSpec("int8", (1, 3), 0.00390625, -128),
              TensorSpec("int16", (2, 2, 2, 2), float(format_float(f32(1 / 3))), 0)],
             "ok"),
        Boot(1, "0.1.0", "qemu-m4", sha, 100, 0, 2, [], [], "error", max_line=512),
    ]
    assert decode(out)[0].ok and not decode(out)[1].ok


def test_boot_says_which_memory_plan_the_firmware_runs(harness):
    sha = hashlib.sha256(b"a model").hexdigest()
    out = harness.emit(f"boot 0.1.0 qemu-m4 {sha} 100 60 2 ok - - 512 offline",
                       f"boot 0.1.0 qemu-m4 {sha} 100 60 2 ok - - 512 tflm-greedy",
                       f"boot 0.1.0 qemu-m4 {sha} 100 60 2 ok - - 512")
    assert out.split(b"\r\n")[0].endswith(b" max_line=512 plan=offline *"
                                          + out.split(b"\r\n")[0][-8:])
    plans = [boot.memory_plan for boot in decode(out)]
    assert plans == ["offline", "tflm-greedy", None]
    # An older host keeps the key among the extras: the message is still a valid BOOT.
    assert decode(out)[0].extra == {"plan": "offline"}


def test_err_and_echo_messages(harness):
    text = 'Didn\'t find op for builtin opcode "GELU"\n100% sure!'
    out = harness.emit(f"err - OP_RESOLVER 1 {text.encode().hex()}",
                       "err 4294967295 INVOKE_FAILED 1 ",
                       "echo 9 00017f80ff", "echo 0 ")
    assert decode(out) == [
        DeviceErrorMessage(None, "OP_RESOLVER", 1, text),
        DeviceErrorMessage(4294967295, "INVOKE_FAILED", 1, ""),
        Echo(9, bytes([0, 1, 0x7F, 0x80, 0xFF])),
        Echo(0, b""),
    ]


# --- docs/protocol.md cannot drift from the code ------------------------------------------

DOC_SHA = hashlib.sha256(b"tinyforge protocol example model").hexdigest()
DOC_DEVICE_COMMANDS = [
    f"boot 0.1.0 nano33ble {DOC_SHA} 8192 5348 5 ok int8:{bits(0.0039215689)}:-128:1x32x3 "
    f"int8:{bits(0.00390625)}:-128:1x3 512",
    res_command(7, "host", 2713, [("int8", 0.00390625, -128, [-128, -121, 120])]),
    res_command(12, "demo", 1830, [("float32", 0.0, 0, [0.25, -1.5e-5, 31.41593])]),
    "err 8 BAD_LENGTH 0 " + b"expected 96 bytes, got 95 bytes".hex(),
    "echo 1 00017f80ff",
    "err 9 BAD_OFFSET 0 " + b"expected offset=4, got offset=6".hex(),
    f"boot 0.1.0 nano33ble {DOC_SHA} 8192 0 5 error - - 512",
    "err - ALLOCATE_FAILED 1 " + b"AllocateTensors() failed: arena too small or op missing".hex(),
]
DOC_HOST_LINES = [encode_hello(), encode_input(8, bytes(range(6))),
                  encode_echo(1, bytes([0, 1, 0x7F, 0x80, 0xFF])),
                  encode_input_chunk(9, 0, bytes(range(4)), final=False),
                  encode_input_chunk(9, 4, bytes([4, 5]), final=True)]


# Device lines the docs show that other harnesses write: PROF (tests/test_profile.py, with the
# profiler's own code).
CHECKED_ELSEWHERE = {"PROF"}


def test_doc_device_examples_are_byte_for_byte_what_the_firmware_writes(harness):
    written = [harness.emit_line(command) for command in DOC_DEVICE_COMMANDS]
    doc_lines = doc_code_lines()
    for line in written:
        assert line[:-2].decode() in doc_lines
    host_types = {"HELLO", "IN"}
    documented_device_lines = {line for line in doc_lines if line.split()[1] not in host_types
                               and line.split()[1] not in CHECKED_ELSEWHERE}
    assert documented_device_lines == {line[:-2].decode() for line in written}


def test_doc_host_examples_are_what_the_host_writes_and_the_device_accepts(harness):
    doc_lines = doc_code_lines()
    for line in DOC_HOST_LINES:
        assert line.endswith(b"\n") and line[:-1].decode() in doc_lines
    replies = harness.device(b"".join(DOC_HOST_LINES), sizes=(6,))
    assert [type(r) for r in replies] == [Boot, Result, Echo, Result]
    assert replies[1].seq == 8 and replies[1].outputs[0].q == [0, 1, 2, 3, 4, 5]
    assert replies[2] == Echo(1, bytes([0, 1, 0x7F, 0x80, 0xFF]))
    assert replies[3].seq == 9 and replies[3].outputs == replies[1].outputs


def test_every_doc_line_is_a_valid_message():
    lines = doc_code_lines()
    assert len(lines) >= 10
    for line in lines:
        event = only(decode(line.encode() + b"\r\n"))
        assert isinstance(event, MESSAGE_EVENTS), (line, event)


def test_doc_crc_examples():
    text = DOC.read_text(encoding="utf-8")
    assert f"`{zlib.crc32(b'123456789'):08x}`" in text
    assert f"`!tf1 HELLO` is `{zlib.crc32(b'!tf1 HELLO'):08x}`" in text
    assert text.count("## Self-test firmware") == 1


# --- the C++ parser, fed by the Python encoder --------------------------------------------

def test_device_answers_python_encoded_messages(harness):
    data = bytes([1, 2, 0xFF, 0x80, 0x7F, 9, 10, 11])
    stream = (b"noise before the message " + encode_hello()
              + encode_input(42, data).replace(b"\n", b"\r\n")
              + b"a log line the device ignores\n"
              + encode_echo(7, b"\x00\xffabc").replace(b"\n", b"\r")
              + encode_input(4294967295, data[::-1]))
    boot, result, echo, last = harness.device(stream)
    assert boot == Boot(1, "0.1.0", "harness", HARNESS_SHA, 4096, 1000, 3,
                        [TensorSpec("int8", (1, 5), 0.5, -3), TensorSpec("int8", (1, 3), 0.5, -3)],
                        [TensorSpec("int8", (1, 5), 0.5, -3), TensorSpec("int8", (1, 3), 0.5, -3)],
                        "ok", max_line=LINE_CAPACITY - 1)
    as_int8 = list(struct.unpack("8b", data))
    assert result == Result(42, "host", 0, [
        OutputValues(as_int8[:5], [(q - HARNESS_ZERO_POINT) * HARNESS_SCALE for q in as_int8[:5]]),
        OutputValues(as_int8[5:], [(q - HARNESS_ZERO_POINT) * HARNESS_SCALE for q in as_int8[5:]]),
    ])
    assert echo == Echo(7, b"\x00\xffabc")
    assert last.seq == 4294967295 and last.outputs[0].q == as_int8[::-1][:5]


def test_failed_input_leaves_the_inputs_unchanged(harness):
    good = bytes(range(1, 9))
    replies = harness.device(encode_input(1, good)
                             + with_crc(f"!tf1 IN seq=2 data={good.hex()[:-1]}G")
                             + encode_input(3, bytes(9))
                             + with_crc("!tf1 RUN"))
    first, bad_hex, bad_length, run = replies
    assert bad_hex == DeviceErrorMessage(2, "BAD_MESSAGE", 0, "IN needs data=<lower-case hex>")
    assert bad_length == DeviceErrorMessage(3, "BAD_LENGTH", 0, "expected 8 bytes, got 9 bytes")
    assert run.src == "demo" and run.outputs == first.outputs


# --- inputs in chunks (docs/protocol.md, section 3.1) -------------------------------------

INPUT = bytes([1, 2, 0xFF, 0x80, 0x7F, 9, 10, 11])     # fills INPUT_SIZES (5 + 3 bytes)


def chunk(seq: int, start: int, end: int, data: bytes = INPUT, *, final: bool | None = None):
    return encode_input_chunk(seq, start, data[start:end],
                              final=end >= len(data) if final is None else final)


def as_outputs(data: bytes) -> list[list[int]]:
    """The q values the harness device answers for inputs holding `data`."""
    values = list(struct.unpack(f"{len(data)}b", data))
    return [values[:INPUT_SIZES[0]], values[INPUT_SIZES[0]:]]


def errors(replies: list) -> list[tuple]:
    return [(r.seq, r.code, r.msg) for r in replies if isinstance(r, DeviceErrorMessage)]


def test_chunks_in_order_fill_the_inputs_across_tensor_boundaries(harness):
    # Chunks of 3 bytes: the second one spans the end of input 0 and the start of input 1.
    replies = harness.device(chunk(4, 0, 3) + chunk(4, 3, 6) + chunk(4, 6, 6, final=False)
                             + chunk(4, 6, 8) + encode_input(5, INPUT[::-1]))
    first, second = replies
    assert first.seq == 4 and [o.q for o in first.outputs] == as_outputs(INPUT)
    assert second.seq == 5 and [o.q for o in second.outputs] == as_outputs(INPUT[::-1])


def test_the_host_sends_chunks_only_when_a_whole_input_does_not_fit(harness):
    data = bytes(random.Random(5).randrange(256) for _ in range(300))
    max_line = LINE_CAPACITY - 1
    lines = encode_input_lines(7, data, max_line)
    assert len(lines) > 4
    assert all(len(line) - 1 <= max_line for line in lines)
    assert max(len(line) for line in lines) - 1 >= max_line - 2   # as long as allowed
    result = only(harness.device(b"".join(lines), sizes=(300,)))
    assert result.seq == 7 and result.outputs[0].q == list(struct.unpack("300b", data))
    # Whole when it fits, and always for a firmware that does not say (no max_line in BOOT).
    assert encode_input_lines(7, data[:20], max_line) == [encode_input(7, data[:20])]
    assert encode_input_lines(7, data, None) == [encode_input(7, data)]
    with pytest.raises(ValueError):
        encode_input_lines(7, data, 40)        # not even one byte per chunk


def test_a_missing_chunk_is_refused_once_and_the_rest_of_its_input_ignored(harness):
    replies = harness.device(chunk(4, 0, 3) + chunk(4, 6, 8) + encode_input(5, INPUT)
                             + chunk(6, 0, 3) + chunk(6, 6, 7, final=False) + chunk(6, 7, 8)
                             + encode_input(8, INPUT))
    assert errors(replies) == [(4, "BAD_OFFSET", "expected offset=3, got offset=6"),
                               (6, "BAD_OFFSET", "expected offset=3, got offset=6")]
    # Nothing answers the ignored chunks: the next answers are the next inputs'.
    assert [r.seq for r in replies if isinstance(r, Result)] == [5, 8]
    assert len(replies) == 4


def test_chunks_out_of_order_or_repeated_are_refused(harness):
    replies = harness.device(
        chunk(4, 3, 6)                                   # no input in progress
        + chunk(4, 0, 3) + chunk(4, 3, 6) + chunk(4, 6, 8)   # a fresh start works
        + chunk(5, 0, 3) + chunk(5, 3, 6) + chunk(5, 3, 6) + chunk(5, 6, 8))  # repeated
    assert errors(replies) == [
        (4, "BAD_OFFSET", "no input in progress for this seq (start at offset=0)"),
        (5, "BAD_OFFSET", "expected offset=6, got offset=3")]
    assert [r.seq for r in replies if isinstance(r, Result)] == [4]


def test_chunks_past_the_inputs_or_short_of_them_are_bad_length(harness):
    replies = harness.device(
        encode_input(1, INPUT)
        + encode_input_chunk(2, 0, INPUT + b"\0", final=True)      # one byte too many
        + with_crc("!tf1 RUN")                                   # the inputs are unchanged
        + chunk(3, 0, 5) + encode_input_chunk(3, 5, b"\0" * 4, final=False)
        + chunk(3, 9, 10, final=True)                            # ignored: 3 already failed
        + chunk(4, 0, 6, final=True))                            # final, 2 bytes short
    assert errors(replies) == [
        (2, "BAD_LENGTH", "expected 8 bytes, got at least 9 bytes"),
        (3, "BAD_LENGTH", "expected 8 bytes, got at least 9 bytes"),
        (4, "BAD_LENGTH", "expected 8 bytes, got 6 bytes")]
    run = [r for r in replies if isinstance(r, Result) and r.src == "demo"]
    assert [o.q for o in run[0].outputs] == as_outputs(INPUT)


@pytest.mark.parametrize("fields", [
    "offset=0 data=00",                     # offset without final
    "final=1 data=00",                      # final without offset
    "offset=0 final=2 data=00",
    "offset=0 final=yes data=00",
    "offset=-1 final=0 data=00",
    "offset=4294967296 final=0 data=00",
    "offset=0 final=1 data=0g",
])
def test_malformed_chunks_are_bad_message(harness, fields):
    error = only(harness.device(with_crc(f"!tf1 IN seq=3 {fields}")))
    assert (error.seq, error.code) == (3, "BAD_MESSAGE"), error


def test_a_second_input_before_the_first_completes_drops_the_first(harness):
    replies = harness.device(
        chunk(1, 0, 3) + chunk(2, 0, 3) + chunk(1, 3, 6) + chunk(2, 3, 8)
        + chunk(3, 0, 5) + encode_input(4, INPUT[::-1]))
    assert errors(replies) == [
        (1, "INPUT_INCOMPLETE", "another input started after 3 of 8 bytes"),
        (1, "BAD_OFFSET", "no input in progress for this seq (start at offset=0)"),
        (3, "INPUT_INCOMPLETE", "another input started after 5 of 8 bytes")]
    results = [r for r in replies if isinstance(r, Result)]
    assert [r.seq for r in results] == [2, 4]
    assert [o.q for o in results[0].outputs] == as_outputs(INPUT)
    assert [o.q for o in results[1].outputs] == as_outputs(INPUT[::-1])


def test_an_input_dropped_by_the_firmware_is_answered_and_its_rest_ignored(harness):
    # DROP does what a PROBE does to an input in progress (the interpreter is rebuilt).
    replies = harness.device(with_crc("!tf1 DROP") + chunk(1, 0, 3) + with_crc("!tf1 DROP")
                             + chunk(1, 3, 6) + chunk(1, 6, 8) + encode_input(2, INPUT))
    assert errors(replies) == [(1, "INPUT_INCOMPLETE", "dropped after 3 of 8 bytes")]
    assert [r.seq for r in replies if isinstance(r, Result)] == [2]


class AssemblerModel:
    """docs/protocol.md section 3.1, written down in Python: the answers a device gives."""

    def __init__(self, total: int):
        self.total, self.state, self.seq, self.received = total, "idle", 0, 0
        self.inputs = bytearray(total)

    def whole(self, seq: int, data: bytes) -> list[tuple]:
        answers = self._abandon()
        self.state = "idle"
        if len(data) != self.total:
            return answers + [(seq, "BAD_LENGTH")]
        self.inputs[:] = data
        return answers + [(seq, "RES", bytes(self.inputs))]

    def chunk(self, seq: int, offset: int, data: bytes, final: bool) -> list[tuple]:
        answers = []
        if offset == 0:
            answers = self._abandon()
            self.state, self.seq, self.received = "receiving", seq, 0
        elif self.state == "discarding" and seq == self.seq:
            self.state = "idle" if final else "discarding"
            return []
        elif not (self.state == "receiving" and seq == self.seq and offset == self.received):
            if self.state != "receiving" or seq == self.seq:
                self.state, self.seq = ("idle" if final else "discarding"), seq
            return [(seq, "BAD_OFFSET")]
        if len(data) > self.total - self.received:
            self.state = "idle" if final else "discarding"
            return answers + [(seq, "BAD_LENGTH")]
        self.inputs[self.received:self.received + len(data)] = data
        self.received += len(data)
        if not final:
            return answers
        self.state = "idle"
        if self.received != self.total:
            return answers + [(seq, "BAD_LENGTH")]
        return answers + [(seq, "RES", bytes(self.inputs))]

    def _abandon(self) -> list[tuple]:
        if self.state != "receiving":
            return []
        self.state = "discarding"
        return [(self.seq, "INPUT_INCOMPLETE")]


def test_device_assembles_random_chunk_streams_exactly_as_specified(harness):
    """Differential fuzzing against the spec: random whole and chunked inputs, with missing,
    repeated, foreign and oversized chunks, get exactly the answers AssemblerModel gives, and
    every RES carries exactly the bytes the spec says the inputs hold."""
    rng = random.Random(99)
    total = sum(INPUT_SIZES)
    model = AssemblerModel(total)
    stream, expected = [], []
    for _ in range(2000):
        seq = rng.randrange(6)                  # few seqs, so they collide
        data = rng.randbytes(rng.choice([0, 1, 2, 3, 5, 8, 9]))
        if rng.random() < 0.1:
            stream.append(encode_input(seq, data))
            expected += model.whole(seq, data)
            continue
        offset = rng.choice([0, 0, model.received, model.received, rng.randrange(12)])
        final = rng.random() < 0.3
        stream.append(encode_input_chunk(seq, offset, data, final=final))
        expected += model.chunk(seq, offset, data, final)
    replies = harness.device(b"".join(stream))
    got = []
    for reply in replies:
        if isinstance(reply, Result):
            got.append((reply.seq, "RES", struct.pack(f"{total}b", *(q for o in reply.outputs
                                                                       for q in o.q))))
        else:
            got.append((reply.seq, reply.code))
    assert got == expected
    kinds = {answer[1] for answer in expected}
    assert kinds == {"RES", "BAD_OFFSET", "BAD_LENGTH", "INPUT_INCOMPLETE"}
    assert sum(answer[1] == "RES" for answer in expected) > 50


def _host_cases() -> list[tuple[str, bytes, object, str | None]]:
    """(name, line, the device's answer, the host decoder's verdict).

    The answer is a message type, an ERR as (code, seq), or None for no answer. The verdict
    is "valid", the ERR code the decoder's rejection corresponds to, or None for log only;
    the device's answer to a valid message may still be an ERR from its handler.
    """
    good = bytes(range(8))
    long_echo = encode_echo(1, bytes(48))               # exactly LINE_CAPACITY - 1 bytes
    too_long = encode_echo(10, bytes(48))               # one byte more
    assert len(long_echo) - 1 == LINE_CAPACITY - 1 and len(too_long) - 1 == LINE_CAPACITY
    bad = "BAD_MESSAGE"
    return [
        ("hello", encode_hello(), Boot, "valid"),
        ("input", encode_input(5, good), Result, "valid"),
        ("echo", encode_echo(5, b"\x01"), Echo, "valid"),
        ("longest line that fits", long_echo, Echo, "valid"),
        ("noise does not count", b"x" * 500 + encode_hello(), Boot, "valid"),
        ("the last !tf wins", b"!tf1 IN seq=1 data=00 *12345678 " + encode_hello(), Boot,
         "valid"),
        ("a later !tf restarts an overlong line", b"!tf1 " + b"y" * 300 + encode_hello(),
         Boot, "valid"),
        ("unknown keys are ignored", with_crc("!tf1 ECHO seq=5 data=01 note=a%20b"), Echo,
         "valid"),
        # The host's own line limit is 1 MiB: these are valid to it.
        ("line too long", too_long, ("LINE_TOO_LONG", None), "valid"),
        ("input too long", encode_input(6, bytes(100)), ("LINE_TOO_LONG", None), "valid"),
        ("wrong crc", encode_hello().replace(b"f6000386", b"f6000387"), ("BAD_CRC", None),
         "BAD_CRC"),
        ("upper-case crc", b"!tf1 HELLO *F6000386\n", (bad, None), bad),
        ("no crc", b"!tf1 HELLO\n", (bad, None), bad),
        ("space after crc", b"!tf1 HELLO *f6000386 \n", (bad, None), bad),
        ("version 2", with_crc("!tf2 HELLO"), ("PROTOCOL_VERSION", None), "PROTOCOL_VERSION"),
        ("version 01", with_crc("!tf01 HELLO"), (bad, None), bad),
        ("ten-digit version", with_crc("!tf1000000000 HELLO"), (bad, None), bad),
        ("no version", with_crc("!tf HELLO"), (bad, None), bad),
        ("lower-case type", with_crc("!tf1 hello"), (bad, None), bad),
        ("empty type", with_crc("!tf1 "), (bad, None), bad),
        ("two spaces", with_crc("!tf1 ECHO  seq=1 data="), (bad, None), bad),
        ("key with capital", with_crc("!tf1 ECHO Seq=1 data="), (bad, None), bad),
        ("key starting with digit", with_crc("!tf1 ECHO 1seq=1 data="), (bad, None), bad),
        ("field without =", with_crc("!tf1 ECHO seq"), (bad, None), bad),
        ("duplicate key", with_crc("!tf1 ECHO seq=1 seq=2 data="), (bad, None), bad),
        ("bad escape", with_crc("!tf1 ECHO seq=1 data= note=%4"), (bad, None), bad),
        ("lower-case escape", with_crc("!tf1 ECHO seq=1 data= note=%4a"), (bad, None), bad),
        ("control byte", with_crc("!tf1 ECHO seq=1 data= note=a\tb"), (bad, None), bad),
        ("non-ascii byte", with_crc(b"!tf1 ECHO seq=1 data= note=\xc3\xa9"), (bad, None), bad),
        ("unknown type", with_crc("!tf1 PING"), ("UNKNOWN_TYPE", None), "valid"),
        # Valid lines whose content the device's handlers reject.
        ("input without seq", with_crc("!tf1 IN data=00"), (bad, None), "valid"),
        ("seq over uint32", encode("IN", seq=2**32, data=good), (bad, None), "valid"),
        ("negative seq", encode("IN", seq=-1, data=good), (bad, None), "valid"),
        ("input without data", with_crc("!tf1 IN seq=5"), (bad, 5), "valid"),
        ("odd hex", with_crc("!tf1 IN seq=5 data=000"), (bad, 5), "valid"),
        ("upper-case hex", with_crc("!tf1 IN seq=5 data=A8A9AAABACADAEAF"), (bad, 5), "valid"),
        ("short input", encode_input(5, good[:-1]), ("BAD_LENGTH", 5), "valid"),
        ("long input", encode_input(5, good + b"\0"), ("BAD_LENGTH", 5), "valid"),
        ("echo bad data", with_crc("!tf1 ECHO seq=5 data=0g"), (bad, 5), bad),
        ("echo without seq", with_crc("!tf1 ECHO data=00"), (bad, None), bad),
        ("no !tf", b"just text with !t f and tf!\n", None, None),
        ("empty line", b"\n", None, None),
    ]


def test_device_answers_every_host_line_as_specified_and_agrees_with_python(harness):
    cases = _host_cases()
    stream = b"".join(line + sync_line(i) for i, (_, line, _, _) in enumerate(cases))
    groups = replies_by_sync(harness.device(stream), len(cases))
    for (name, line, answer, verdict), replies in zip(cases, groups):
        if answer is None:
            assert replies == [], name
        elif isinstance(answer, tuple):
            reply = only(replies)
            assert isinstance(reply, DeviceErrorMessage), (name, reply)
            assert (reply.code, reply.seq) == answer, name
        else:
            assert [type(r) for r in replies] == [answer], (name, replies)
        assert python_verdict(line) == verdict, name


def _single_byte_corruptions(line: bytes) -> list[tuple[int, bytes]]:
    body = line.rstrip(b"\n")
    return [(k, body[:k] + bytes([body[k] ^ (1 << bit)]) + body[k + 1:] + b"\n")
            for k in range(len(body)) for bit in range(8)]


def _expected_code(line: bytes, k: int, new: int) -> str | None:
    """The ERR code docs/protocol.md section 1.3 prescribes for byte k of a line changed to new."""
    body_end = len(line.rstrip(b"\n")) - 10
    if new in (0x0A, 0x0D):         # the line splits; the part with !tf has no CRC
        return None if k < 3 else "BAD_MESSAGE"
    if k < 3:
        return None                 # no "!tf": not a message
    if k == 3:
        return "PROTOCOL_VERSION" if 0x32 <= new <= 0x39 else "BAD_MESSAGE"
    if k == 4 or k in (body_end, body_end + 1):
        return "BAD_MESSAGE"
    if k > body_end + 1:
        return "BAD_CRC" if chr(new) in "0123456789abcdef" else "BAD_MESSAGE"
    return "BAD_CRC"


@pytest.mark.parametrize("line", [encode_input(42, bytes(range(8))), encode_hello(),
                                  encode_echo(3, b"\xa5")], ids=["IN", "HELLO", "ECHO"])
def test_every_single_bit_flip_is_rejected_with_the_right_code(harness, line):
    corrupted = _single_byte_corruptions(line)
    stream = b"".join(bad + sync_line(i) for i, (_, bad) in enumerate(corrupted))
    groups = replies_by_sync(harness.device(stream), len(corrupted))
    for (k, bad), replies in zip(corrupted, groups):
        expected = _expected_code(line, k, bad[k])
        codes = [r.code for r in replies]
        assert all(isinstance(r, DeviceErrorMessage) for r in replies), (bad, replies)
        assert codes == ([] if expected is None else [expected]), bad
        assert python_verdict(bad) == expected, bad


def test_every_truncation_is_rejected(harness):
    line = encode_input(42, bytes(range(8)))
    body = line[:-1]
    cuts = [body[:k] + b"\n" for k in range(len(body))]
    stream = b"".join(cut + sync_line(i) for i, cut in enumerate(cuts))
    groups = replies_by_sync(harness.device(stream), len(cuts))
    for k, (cut, replies) in enumerate(zip(cuts, groups)):
        expected = None if k < 3 else "BAD_MESSAGE"
        assert [r.code for r in replies] == ([] if expected is None else [expected]), cut
        assert python_verdict(cut) == expected, cut


def test_device_and_host_agree_on_random_damage(harness):
    """Differential fuzzing: random edits of valid lines, and random lines, get the same verdict
    from the C++ parser and the Python decoder, and never crash the parser (ASan/UBSan)."""
    rng = random.Random(2024)
    seeds = [encode_hello(), encode("PING", a=1, b="x y"), with_crc("!tf1 STATUS")]
    lines = []
    for _ in range(1500):
        line = bytearray(rng.choice(seeds)[:-1])
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            k = rng.randrange(len(line) + 1)
            if action < 0.4 and k < len(line):
                line[k] = rng.choice(b"!tf1 *=%aAzZ09\t\x00\xff" + bytes([rng.randrange(256)]))
            elif action < 0.7:
                line.insert(k, rng.randrange(256))
            elif k < len(line):
                del line[k]
        if rng.random() < 0.3:
            line = bytearray(with_crc(bytes(line).rsplit(b" *", 1)[0], eol=b""))
        lines.append(bytes(line).replace(b"\n", b"").replace(b"\r", b"") + b"\n")
    lines += [bytes(rng.randrange(256) for _ in range(rng.randrange(200))).replace(b"\n", b"")
              .replace(b"\r", b"") + b"\n" for _ in range(300)]
    stream = b"".join(line + sync_line(i) for i, line in enumerate(lines))
    groups = replies_by_sync(harness.device(stream, sizes=(1,)), len(lines))
    disagreements = []
    for line, replies in zip(lines, groups):
        device = reply_kind(replies)
        if device == "LINE_TOO_LONG" or _handled_type(line):
            continue    # the device's buffer is far smaller; IN/ECHO handlers have own ERRs
        if python_verdict(line) != device:
            disagreements.append((line, device, python_verdict(line)))
    assert disagreements == []
    assert sum(reply_kind(g) == "valid" for g in groups) > 100     # both kinds were tried
    assert sum(reply_kind(g) == "BAD_CRC" for g in groups) > 100


def _handled_type(line: bytes) -> bool:
    messages = [e for e in decode(line) if isinstance(e, OtherMessage)]
    return any(m.type in ("IN", "ECHO") for m in messages)


# --- the Python decoder on its own ----------------------------------------------------------

RES_LINE = encode("RES", eol=b"\r\n", seq=7, src="host", us=2713, q0=[-128, -121, 120],
                  f0=[0.0, 0.02734375, 0.96875])
RES_EVENT = Result(7, "host", 2713, [OutputValues([-128, -121, 120], [0.0, 0.02734375, 0.96875])])


def test_log_lines_noise_and_line_ends():
    stream = (b"Arena allocation total 5348 bytes\r\n" + b"xx" + RES_LINE + b"\n"
              + RES_LINE.rstrip(b"\r\n") + b"\r" + b"last\n")
    assert decode(stream) == [DeviceLog("Arena allocation total 5348 bytes"), DeviceLog("xx"),
                              RES_EVENT, DeviceLog(""), RES_EVENT, DeviceLog("last")]


def test_lines_split_across_feeds_and_crlf_split_between_feeds():
    decoder = Decoder()
    events = []
    for piece in (RES_LINE[:10], RES_LINE[10:-1], b"\nhello\r", b"\nworld", b"\n"):
        events += decoder.feed(piece)
    assert events == [RES_EVENT, DeviceLog("hello"), DeviceLog("world")]
    assert decoder.feed(b"") == []


def test_non_utf8_log_is_replaced_not_raised():
    assert decode(b"caf\xe9 \xff\xfe\n") == [DeviceLog("caf\ufffd \ufffd\ufffd")]


def test_corrupt_and_unsupported_lines():
    body = RES_LINE[:-2]
    assert decode(body.replace(b"120", b"121") + b"\n") == [
        Corrupt("CRC mismatch", body.replace(b"120", b"121").decode())]
    assert decode(b"!tf1 RES seq=7 src=ho\n") == [
        Corrupt("no CRC at the end of the line", "!tf1 RES seq=7 src=ho")]
    assert decode(b"!tf2 STAT x=1 *00000000\n") == [
        UnsupportedVersion(2, "!tf2 STAT x=1 *00000000")]
    assert decode(b"!tfoo\n") == [Corrupt("no protocol version after !tf", "!tfoo")]
    assert isinstance(only(decode(with_crc("!tf1 RES seq=1 seq=2"))), Corrupt)
    assert isinstance(only(decode(with_crc("!tf1 RES seq=1 x=%zz"))), Corrupt)
    assert isinstance(only(decode(with_crc(b"!tf" + b"9" * 5000 + b" X"))), Corrupt)


@pytest.mark.parametrize("fields, reason", [
    ("seq=1 src=host", "missing us"),
    ("seq=1 src=host us=1 q0=1,2 f0=1", "q0 and f0 differ in length"),
    ("seq=1 src=host us=1 q0=1", "q0 has no matching f0"),
    ("seq=1 src=host us=1 f0=1 f2=1", "f2 has no matching"),
    ("seq=-1 src=host us=1", "seq is not a uint32"),
    ("seq=4294967296 src=host us=1", "seq is not a uint32"),
    ("seq=1 src=host us=1 f0=1_0", "f is not a list of floats"),
    ("seq=1 src=host us=1 f0=Infinity", "f is not a list of floats"),
    ("seq=1 src=host us=1 q0=+1 f0=1", "q is not a list of integers"),
    ("seq=1 src=host us=1 q0=1,,2 f0=1,2,3", "invalid literal"),
])
def test_invalid_results_are_corrupt(fields, reason):
    event = only(decode(with_crc(f"!tf1 RES {fields}")))
    assert isinstance(event, Corrupt) and reason in event.reason, event


def test_unknown_keys_are_kept_and_unknown_types_passed_through():
    line = encode("RES", seq=1, src="demo", us=5, f0=[1.5], temp="41 C", rssi=-60)
    assert decode(line) == [Result(1, "demo", 5, [OutputValues(None, [1.5])],
                                   {"temp": "41 C", "rssi": "-60"})]
    assert decode(encode("STAT", uptime=12, name="a%b")) == [
        OtherMessage("STAT", {"uptime": "12", "name": "a%b"})]


@pytest.mark.parametrize("line", [
    with_crc("!tf1 BOOT v=1 fw=0.1.0 board=b model=xyz arena=1 used=1 ops=1 in= out= status=ok"),
    with_crc("!tf1 BOOT v=1 fw=0.1.0 board=b model=" + "0" * 64
             + " arena=1 used=1 ops=1 in=int8:1x:0:0 out= status=ok"),
    with_crc("!tf1 BOOT v=1 fw=0.1.0 board=b model=" + "0" * 64
             + " arena=1 used=1 ops=1 in= out= status=maybe"),
    with_crc("!tf1 ERR seq=- code=X status=1.5 msg="),
    with_crc("!tf1 ECHO seq=1 data=ABCD"),
])
def test_invalid_boot_err_echo_are_corrupt(line):
    assert isinstance(only(decode(line)), Corrupt)


def test_overlong_lines_are_reported_once_and_dropped():
    assert len(RES_LINE) < 100
    for pieces in ([b"a" * 150 + b"\n" + RES_LINE],
                   [b"a" * 60, b"a" * 60, b"a" * 40, b"a" * 200, b"\n", RES_LINE]):
        decoder = Decoder(max_line=100)
        events = [event for piece in pieces for event in decoder.feed(piece)]
        assert len(events) == 2 and events[1] == RES_EVENT, events
        assert events[0] == Corrupt("line longer than 100 bytes (dropped)", "a" * 100 + "...")


def test_encoder_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError):
        encode("hello")
    with pytest.raises(ValueError):
        encode("IN", Seq=1)
    with pytest.raises(TypeError):
        encode("IN", flag=True)
    with pytest.raises(TypeError):
        encode("IN", values=[1, "2"])
    with pytest.raises(TypeError):
        encode("IN", thing=object())
    with pytest.raises(ValueError):
        encode_input(2**32, b"")
    assert encode("X", t="!tf% é") == with_crc("!tf1 X t=%21tf%25%20%C3%A9")


def test_importing_the_protocol_module_stays_light():
    code = ("import sys, tinyforge.device.protocol; "
            "print(sorted(m for m in ('numpy', 'tensorflow', 'serial', 'jinja2') "
            "if m in sys.modules))")
    result = proc.run([sys.executable, "-c", code], timeout=RUN_TIMEOUT_S, cwd=ROOT)
    assert result.output[-1] == "[]"


# --- hypothesis: the decoder never raises and never trusts a damaged line ----------------------

def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _feed_all(decoder: Decoder, pieces: list[bytes]) -> list:
    return [event for piece in pieces for event in decoder.feed(piece)]


FUZZ_PIECES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"!tf", b"!tf1 ", b"!tf1 RES ", b" *", b"\r", b"\n", b"\r\n", b"%", b"%4",
                     b"seq=", b"q0=1,2 ", b"f0=", b"!tf2 ", RES_LINE, encode_hello(),
                     with_crc("!tf1 RES seq=1 src=a us=2 q0= f0="), b"\xff\xfe"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(FUZZ_PIECES, max_size=30), cuts=st.lists(st.integers(0, 10**6)),
       max_line=st.sampled_from([16, 64, protocol.MAX_LINE_BYTES]))
def test_fuzz_decoder_never_raises_and_chunking_does_not_matter(pieces, cuts, max_line):
    data = b"".join(pieces)
    whole = Decoder(max_line).feed(data)
    assert _feed_all(Decoder(max_line), _chunks(data, cuts)) == whole
    assert _feed_all(Decoder(max_line), [data[i:i + 1] for i in range(len(data))]) == whole
    allowed = MESSAGE_EVENTS + (DeviceLog, Corrupt, UnsupportedVersion)
    assert all(isinstance(event, allowed) for event in whole)


FLOAT32 = st.floats(width=32)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
LOG_TEXT = TEXT.filter(lambda t: "!tf" not in t and "\n" not in t and "\r" not in t)


@st.composite
def valid_items(draw) -> tuple[bytes, object]:
    """One device line and the event it must decode to."""
    kind = draw(st.sampled_from(["res", "err", "echo", "boot", "log", "other"]))
    eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    seq = draw(st.integers(0, 2**32 - 1))
    if kind == "log":
        text = draw(LOG_TEXT)
        return text.encode("utf-8") + eol, DeviceLog(text)
    if kind == "res":
        fields, outputs = {}, []
        for i in range(draw(st.integers(0, 3))):
            floats = draw(st.lists(FLOAT32, max_size=12))
            quantized = draw(st.booleans())
            q = [draw(st.integers(-2**31, 2**31 - 1)) for _ in floats] if quantized else None
            if q is not None:
                fields[f"q{i}"] = q
            fields[f"f{i}"] = floats
            outputs.append(OutputValues(q, [float(format_float(f)) for f in floats]))
        us = draw(st.integers(0, 2**32 - 1))
        src = draw(st.sampled_from(["host", "demo"]))
        line = encode("RES", eol=eol, seq=seq, src=src, us=us, **fields)
        return line, Result(seq, src, us, outputs)
    if kind == "err":
        code = draw(st.sampled_from(sorted(protocol.ERROR_CODES)))
        status = draw(st.integers(-5, 5))
        msg = draw(TEXT)
        has_seq = draw(st.booleans())
        line = encode("ERR", eol=eol, seq=seq if has_seq else "-", code=code, status=status,
                      msg=msg)
        return line, DeviceErrorMessage(seq if has_seq else None, code, status, msg)
    if kind == "echo":
        data = draw(st.binary(max_size=20))
        return encode("ECHO", eol=eol, seq=seq, data=data), Echo(seq, data)
    if kind == "boot":
        specs = [TensorSpec(draw(st.sampled_from(["int8", "uint8", "int16", "int32", "float32"])),
                            tuple(draw(st.lists(st.integers(1, 500), max_size=4))),
                            float(format_float(draw(FLOAT32.filter(math.isfinite)))),
                            draw(st.integers(-2**31, 2**31 - 1)))
                 for _ in range(draw(st.integers(0, 2)))]
        spec_text = ",".join(f"{s.dtype}:{'x'.join(map(str, s.shape))}:"
                             f"{format_float(s.scale)}:{s.zero_point}" for s in specs)
        fw, board = draw(TEXT), draw(TEXT)
        sha = hashlib.sha256(draw(st.binary(max_size=8))).hexdigest()
        line = encode("BOOT", eol=eol, v=1, fw=fw, board=board, model=sha, arena=seq, used=0,
                      ops=3, **{"in": spec_text, "out": ""}, status="ok")
        # "in" is a Python keyword, hence the dict; the spec text holds no escapable bytes.
        return line, Boot(1, fw, board, sha, seq, 0, 3, specs, [], "ok")
    name = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)
                .filter(lambda t: t not in ("BOOT", "RES", "ERR", "ECHO")))
    text = draw(TEXT)
    return encode(name, eol=eol, note=text), OtherMessage(name, {"note": text})


def _same_event(actual, expected) -> bool:
    """Equality in which NaN equals NaN (the protocol carries nan): repr spells both 'nan'."""
    return repr(actual) == repr(expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(valid_items(), max_size=8), cuts=st.lists(st.integers(0, 10**6)))
def test_fuzz_valid_streams_decode_exactly_in_any_chunks(items, cuts):
    assume(not _cr_then_lf(items))
    data = b"".join(line for line, _ in items)
    events = _feed_all(Decoder(), _chunks(data, cuts))
    expected = [event for _, event in items]
    assert len(events) == len(expected)
    assert all(_same_event(a, e) for a, e in zip(events, expected)), (events, expected)


def _cr_then_lf(items: list[tuple[bytes, object]]) -> bool:
    """A line ending "\\r" right before an empty log line ending "\\n" reads as one "\\r\\n"."""
    lines = [line for line, _ in items]
    return any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in zip(lines, lines[1:]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(valid_items(), min_size=1, max_size=6), where=st.integers(0, 10**6),
       new=st.integers(0, 255))
def test_fuzz_a_damaged_byte_never_yields_a_different_valid_message(items, where, new):
    data = b"".join(line for line, _ in items)
    k = where % len(data)
    assume(data[k] != new)
    damaged = data[:k] + bytes([new]) + data[k + 1:]
    originals = [event for _, event in items if isinstance(event, MESSAGE_EVENTS)]
    for event in Decoder().feed(damaged):
        if isinstance(event, MESSAGE_EVENTS):
            assert any(_same_event(event, original) for original in originals), event


# --- the device build -----------------------------------------------------------------------

@pytest.mark.parametrize("float_abi", ["hard", "softfp"])
def test_tf_protocol_compiles_for_cortex_m4_without_heap_or_stdio(tmp_path, float_abi,
                                                                 host_builds):
    compiler, nm = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-nm")
    if compiler is None or nm is None:
        pytest.skip("arm-none-eabi-g++ is not installed (`make setup` installs it as root)")
    obj = tmp_path / "tf_protocol.o"
    argv = [compiler, *ARM_FLAGS, f"-mfloat-abi={float_abi}", "-c", PROTOCOL_CPP, "-o", obj]
    host_builds.build(argv, obj, lambda: proc.run(argv, timeout=CPP_TIMEOUT_S,
                                                  what="arm-none-eabi-g++"))
    symbols = proc.run([nm, "-u", obj], timeout=RUN_TIMEOUT_S).output
    undefined = {line.split()[-1] for line in symbols if line.strip()}
    unexpected = {s for s in undefined
                  if s not in ARM_ALLOWED_UNDEFINED and not re.match(r"__aeabi_[a-z0-9]+$", s)}
    assert unexpected == set()
    assert "memcpy" in undefined      # the check sees the object's real imports
