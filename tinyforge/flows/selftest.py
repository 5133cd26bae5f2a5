"""The firmware self-test: a board's runtime layer and serial link, checked without TFLM.

`run_selftest()` renders `firmware_templates/selftest/` into a cache folder (only changed files
are rewritten, so a second run rebuilds nothing), builds it with `pio run`, runs it (QEMU for
emulated boards) and talks to it with protocol v1:

- boot:      the BOOT message arrives and says what the firmware was built with;
- hello:     HELLO is answered with the same BOOT;
- echo:      many ECHO frames of random sizes up to the firmware's line limit, sent at full
             rate (a window of frames in flight); every answer must match;
- errors:    a corrupted line, an over-long line and an unknown type are answered with the
             right ERR codes and the parser recovers;
- timer:     two TIME readings of BoardMicros() against the host's wall clock;
- inference: IN messages answered with RES by a stand-in model (`reference_model`) that the
             host recomputes, so `validate`'s whole send/receive/compare path can be tested;
- chunks:    an input sent in IN chunks is assembled and run; a missing chunk and a second
             input before the first is complete get the ERR of docs/protocol.md, section 3.1.

The report carries figures (boot time, throughput, round-trip time, clock rate).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Callable

from .. import __version__, units
from ..board.profiles import Board
from ..device import protocol
from ..device.conversation import Conversation, describe, wait_for_boot
from ..errors import DeviceError
from ..project.selftest import (
    INPUT_SCALE,
    INPUT_SHAPE,
    INPUT_ZERO_POINT,
    MAX_LINE_LENGTH,
    MODEL_SHA256,
    OUTPUT_SCALE,
    OUTPUT_SHAPE,
    OUTPUT_ZERO_POINT,
    default_project_dir,
    reference_model,
    render_project,
)
from ..toolchain import offline_core, pio

__all__ = ["SelftestReport", "Step", "run_selftest", "exercise"]

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 5.0
ECHO_FRAMES = 300
ECHO_WINDOW = 8                         # frames in flight: full rate without deadlocking
RTT_SAMPLES = 20
INFERENCES = 64
TIMER_INTERVAL_S = 1.0
# QEMU's clock follows the host's only roughly (it is virtual time), hence the margin.
TIMER_TOLERANCE = 0.25


@dataclasses.dataclass
class Step:
    """One check of the self-test."""

    name: str
    ok: bool
    detail: str
    figures: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SelftestReport:
    board: str
    project_dir: str
    build: dict
    steps: list[Step]

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def to_json(self) -> dict:
        return {"board": self.board, "passed": self.passed, "project_dir": self.project_dir,
                "build": self.build, "steps": [dataclasses.asdict(s) for s in self.steps]}


# --- running ------------------------------------------------------------------------------

def run_selftest(board: Board, *, project_dir: Path | None = None,
                 core_dir: Path | None = None, echo_frames: int = ECHO_FRAMES, seed: int = 0,
                 port: str | None = None, ask=None,
                 on_build_line: Callable[[str], None] | None = None) -> SelftestReport:
    """Render, build, run and check the self-test firmware on `board`.

    Emulated boards run it in QEMU. A real board gets it uploaded like `tinyforge flash` does,
    so the self-test also checks the cable, the port and the upload path without a model.
    """
    project_dir = Path(project_dir or default_project_dir(board.id))
    core = offline_core.core_dir(core_dir) if board.emulated else pio.core_dir_for(board)
    plan = render_project(project_dir, board)
    log.info("self-test project %s: %s", project_dir, plan.summary_text())
    pio.check_packages(board, project_dir, core, local_tflm=True)
    log.info("building the self-test firmware with PlatformIO...")
    report = pio.build(project_dir, board, core, on_line=on_build_line)
    if not report.firmware:
        raise DeviceError(f"the build produced no firmware in {project_dir}",
                          hint="run with --verbose to see PlatformIO's output")
    if board.emulated:
        from ..device import emulator

        with emulator.launch(report.firmware) as link:
            steps = exercise(link, board, echo_frames=echo_frames, seed=seed,
                             started_at=link.started_at)
    else:
        steps = _exercise_real_board(board, project_dir, port, ask, echo_frames, seed)
    return SelftestReport(board=board.id, project_dir=str(project_dir),
                          build=report.to_json(), steps=steps)


def _exercise_real_board(board: Board, project_dir: Path, port: str | None, ask,
                         echo_frames: int, seed: int) -> list[Step]:
    from ..device import ports
    from ..project import last_build
    from . import flash

    build = last_build.find(project_dir, board.id)
    uploaded = flash.upload(build, port, ask=ask)
    link = ports.open_port(uploaded.port, board.serial["baud"])
    try:
        # Its boot message went out before the port was opened: ask for it.
        return exercise(link, board, echo_frames=echo_frames, seed=seed, started_at=None,
                        ask_boot=True)
    finally:
        link.close()


def exercise(link, board: Board, *, echo_frames: int = ECHO_FRAMES, seed: int = 0,
             started_at: float | None = None, ask_boot: bool = False) -> list[Step]:
    """Run every check over `link` (read_available/write); the firmware must have just booted
    (or, with `ask_boot`, is asked for its BOOT message first)."""
    talk = _Conversation(link)
    rng = random.Random(seed)
    boot_step, boot = _check_boot(talk, board, started_at, ask_boot)
    steps = [boot_step]
    steps.append(_check_hello(talk, boot))
    steps.append(_check_echo(talk, rng, echo_frames))
    steps.append(_check_errors(talk))
    steps.append(_check_timer(talk))
    steps.append(_check_inference(talk, rng))
    steps.append(_check_chunks(talk, rng))
    for step in steps:
        log.debug("%s %-9s %s", "PASS" if step.ok else "FAIL", step.name, step.detail)
    return steps


class _Conversation(Conversation):
    def next_message(self, what: str, timeout: float = ANSWER_TIMEOUT_S):
        """The next protocol message (device log lines are skipped); DeviceError on timeout."""
        return self.wait_for(lambda e: not isinstance(e, protocol.DeviceLog), timeout=timeout,
                             what=what)


def _check_boot(talk: _Conversation, board: Board, started_at: float | None, ask: bool):
    boot = wait_for_boot(talk, ask=ask)
    received = time.monotonic()
    expected = {
        "protocol": protocol.VERSION, "board": board.id, "model_sha256": MODEL_SHA256,
        "firmware": __version__, "status": "ok",
        "inputs": [protocol.TensorSpec("int8", INPUT_SHAPE, INPUT_SCALE, INPUT_ZERO_POINT)],
        "outputs": [protocol.TensorSpec("int8", OUTPUT_SHAPE, OUTPUT_SCALE, OUTPUT_ZERO_POINT)],
    }
    wrong = [f"{key} {getattr(boot, key)!r} (built: {value!r})"
             for key, value in expected.items() if getattr(boot, key) != value]
    figures = {}
    if started_at is not None:
        figures["boot_ms"] = round((received - started_at) * 1000, 1)
    detail = (f"BOOT after {units.millis(figures['boot_ms'])}" if figures else "BOOT received")
    if wrong:
        return (Step("boot", False, "BOOT differs from the firmware built: " + "; ".join(wrong),
                     figures), boot)
    return Step("boot", True, detail, figures), boot


def _check_hello(talk: _Conversation, boot) -> Step:
    talk.send(protocol.encode_hello())
    again = talk.next_message("BOOT in answer to HELLO")
    if boot is None or again != boot:
        return Step("hello", False,
                    f"HELLO answered with {_short(again)}, not the BOOT sent at start")
    return Step("hello", True, "HELLO answered with the same BOOT")


def _max_echo_payload() -> int:
    overhead = len(protocol.encode_echo(0xFFFFFFFF, b"")) - len(protocol.HOST_EOL)
    return (MAX_LINE_LENGTH - overhead) // 2


def _check_echo(talk: _Conversation, rng: random.Random, frames: int) -> Step:
    limit = _max_echo_payload()
    # The longest frame first, so the limit itself is always exercised.
    payloads = [rng.randbytes(limit if i == 0 else rng.randint(0, limit)) for i in range(frames)]
    sent = total = 0
    mismatches = []
    start = time.monotonic()
    while total < frames:
        while sent < frames and sent - total < ECHO_WINDOW:
            talk.send(protocol.encode_echo(sent, payloads[sent]))
            sent += 1
        answer = talk.next_message(f"ECHO seq={total}")
        if not (isinstance(answer, protocol.Echo) and answer.seq == total
                and answer.data == payloads[total]):
            mismatches.append(f"seq {total}: got {_short(answer)}")
        total += 1
    seconds = time.monotonic() - start
    rtts = []
    for i in range(RTT_SAMPLES):
        sent_at = time.monotonic()
        talk.send(protocol.encode_echo(frames + i, b"\x5a" * 8))
        answer = talk.next_message("ECHO (round trip)")
        rtts.append(time.monotonic() - sent_at)
        if not (isinstance(answer, protocol.Echo) and answer.seq == frames + i):
            mismatches.append(f"round trip {i}: got {_short(answer)}")
    payload = sum(map(len, payloads))
    figures = {"frames": frames, "max_payload_bytes": limit, "payload_bytes": payload,
               "seconds": round(seconds, 3),
               "frames_per_s": round(frames / seconds, 1) if seconds else None,
               "payload_kib_per_s": round(payload / 1024 / seconds, 1) if seconds else None,
               "rtt_ms_median": round(statistics.median(rtts) * 1000, 3)}
    if mismatches:
        return Step("echo", False, f"{len(mismatches)} bad echoes, first: {mismatches[0]}",
                    figures)
    return Step("echo", True, f"{units.count(frames)} frames ({units.size(payload)}) echoed "
                f"intact at {figures['frames_per_s']} frames/s; round trip "
                f"{units.millis(figures['rtt_ms_median'])}", figures)


def _check_errors(talk: _Conversation) -> Step:
    good = protocol.encode_echo(7, b"ok")
    corrupt = bytearray(good)
    corrupt[good.index(b"data=") + 5] ^= 0x01  # a flipped bit in the data: CRC must catch it
    cases = [
        ("BAD_CRC", bytes(corrupt)),
        ("LINE_TOO_LONG", protocol.encode_echo(8, b"\x00" * MAX_LINE_LENGTH)),
        ("UNKNOWN_TYPE", protocol.encode("SELFTESTX")),
        ("BAD_LENGTH", protocol.encode_input(9, b"\x00" * 3)),
    ]
    problems = []
    for code, line in cases:
        talk.send(line)
        answer = talk.next_message(f"ERR {code}")
        if not (isinstance(answer, protocol.DeviceErrorMessage) and answer.code == code):
            problems.append(f"{code}: got {_short(answer)}")
    talk.send(good)
    answer = talk.next_message("ECHO after the errors")
    if not (isinstance(answer, protocol.Echo) and answer.seq == 7 and answer.data == b"ok"):
        problems.append(f"no recovery after errors: got {_short(answer)}")
    if problems:
        return Step("errors", False, "; ".join(problems))
    return Step("errors", True, "BAD_CRC, LINE_TOO_LONG, UNKNOWN_TYPE and BAD_LENGTH "
                "reported; the parser recovered")


def _read_time(talk: _Conversation) -> tuple[float, int, float]:
    sent = time.monotonic()
    talk.send(protocol.encode("TIME"))
    answer = talk.next_message("TIME")
    received = time.monotonic()
    if not (isinstance(answer, protocol.OtherMessage) and answer.type == "TIME"
            and answer.fields.get("us", "").isdigit()):
        raise DeviceError(f"TIME answered with {_short(answer)}",
                          hint="the firmware is not the self-test's: run `tinyforge selftest` "
                               "again, it rebuilds and uploads it")
    return sent, int(answer.fields["us"]), received


def _check_timer(talk: _Conversation) -> Step:
    sent1, us1, received1 = _read_time(talk)
    time.sleep(TIMER_INTERVAL_S)
    sent2, us2, received2 = _read_time(talk)
    device = ((us2 - us1) % (1 << 32)) / 1e6
    # The device read its clock somewhere inside each round trip.
    shortest, longest = sent2 - received1, received2 - sent1
    rate = device / ((shortest + longest) / 2)
    figures = {"device_s": round(device, 6), "host_min_s": round(shortest, 6),
               "host_max_s": round(longest, 6), "rate": round(rate, 4)}
    ok = shortest * (1 - TIMER_TOLERANCE) <= device <= longest * (1 + TIMER_TOLERANCE)
    detail = (f"BoardMicros advanced {device:.4f} s while the host waited "
              f"{shortest:.4f}-{longest:.4f} s (rate {rate:.3f})")
    return Step("timer", ok, detail if ok else detail + f": outside ±{TIMER_TOLERANCE:.0%}",
                figures)


def _check_inference(talk: _Conversation, rng: random.Random) -> Step:
    size = INPUT_SHAPE[1]
    inputs = [bytes([0x7F] * size), bytes([0x80] * size), bytes(size)]  # both clamps, zero
    inputs += [rng.randbytes(size) for _ in range(INFERENCES - len(inputs))]
    problems = []
    for seq, data in enumerate(inputs, start=1000):
        talk.send(protocol.encode_input(seq, data))
        answer = talk.next_message(f"RES seq={seq}")
        expected = reference_model(data)
        dequantized = [(q - OUTPUT_ZERO_POINT) * OUTPUT_SCALE for q in expected]
        if not isinstance(answer, protocol.Result) or answer.seq != seq or answer.src != "host":
            problems.append(f"seq {seq}: got {_short(answer)}")
        elif len(answer.outputs) != 1 or answer.outputs[0].q != expected:
            problems.append(f"seq {seq}: q0={answer.outputs[0].q if answer.outputs else None}, "
                            f"expected {expected}")
        elif any(abs(f - d) > 1e-6 * max(1.0, abs(d))
                 for f, d in zip(answer.outputs[0].f, dequantized, strict=True)):
            problems.append(f"seq {seq}: f0={answer.outputs[0].f}, expected {dequantized}")
    if problems:
        return Step("inference", False, f"{len(problems)} of {len(inputs)} wrong, first: "
                    f"{problems[0]}", {"inferences": len(inputs)})
    return Step("inference", True, f"{len(inputs)} IN/RES exchanges match the host's "
                "reference model", {"inferences": len(inputs)})


def _chunk(seq: int, data: bytes, start: int, end: int) -> bytes:
    return protocol.encode_input_chunk(seq, start, data[start:end], final=end >= len(data))


def _check_chunks(talk: _Conversation, rng: random.Random) -> Step:
    size = INPUT_SHAPE[1]
    first, second, third = (rng.randbytes(size) for _ in range(3))
    # (what is checked, lines sent, the answers expected: RES with the reference model's
    # output for some input, or an ERR code, each with its seq).
    cases = [
        ("in order", [_chunk(2000, first, 0, 5), _chunk(2000, first, 5, 10),
                      _chunk(2000, first, 10, size)], [(2000, first)]),
        ("a missing chunk", [_chunk(2001, second, 0, 5), _chunk(2001, second, 10, size)],
         [(2001, "BAD_OFFSET")]),
        ("recovery", [protocol.encode_input(2002, second)], [(2002, second)]),
        ("a second input", [_chunk(2003, first, 0, 8), _chunk(2004, third, 0, 8),
                            _chunk(2004, third, 8, size)],
         [(2003, "INPUT_INCOMPLETE"), (2004, third)]),
    ]
    problems = []
    for name, lines, answers in cases:
        for line in lines:
            talk.send(line)
        for seq, expected in answers:
            answer = talk.next_message(f"answer to IN seq={seq} ({name})")
            if isinstance(expected, str):
                ok = (isinstance(answer, protocol.DeviceErrorMessage) and answer.seq == seq
                      and answer.code == expected)
            else:
                ok = (isinstance(answer, protocol.Result) and answer.seq == seq
                      and len(answer.outputs) == 1
                      and answer.outputs[0].q == reference_model(expected))
            if not ok:
                wanted = expected if isinstance(expected, str) else "RES"
                problems.append(f"{name}: expected {wanted} for seq {seq}, got {_short(answer)}")
    if problems:
        return Step("chunks", False, "; ".join(problems))
    return Step("chunks", True, "an input in 3 IN chunks matches the reference model; a missing "
                "chunk (BAD_OFFSET) and a second input before the first was complete "
                "(INPUT_INCOMPLETE) are refused, and the next input works")


def _short(event) -> str:
    # describe(), not repr(): a report line shows fields, not Python dicts and dataclasses.
    text = describe(event)
    return text if len(text) <= 160 else text[:157] + "..."
