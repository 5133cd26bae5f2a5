"""`tinyforge profile` as a library: what each layer of the model costs on the device.

A firmware built with `tinyforge build --profile` sends, after each RES, a PROF message with
one count per operator (docs/protocol.md, "PROF"): instructions under QEMU (`-icount
shift=7`: exact and the same in every run), cycles on a real board (DWT->CYCCNT). This flow
runs one input through such a firmware (the last build, or a qemu-m4 profiling build of
`--model`), joins the counts with the host's MACs and shapes per operator, and estimates the
latency band, the energy per inference and the average power on the nRF52840
(`model.cost`, docs/cost.md). Limits (`--max-instructions`, `--max-arena`) fail with their
own exit code, for CI.

The profiler's own overhead is measured by the firmware (one Begin/End pair, timed back to
back at boot) and reported; the per-op counts add up to the Invoke() total within it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage, units
from ..board import profiles
from ..device import protocol
from ..device.conversation import Conversation, require_started, wait_for_boot
from ..errors import DeviceError, InputError, ProfileLimitExceeded, ProfileUnavailableError
from ..project import cycle_ratios, last_build, writer

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 60.0
# Where `--model` builds its profiling firmware, under ./build/ like every build.
MODEL_PROJECT = "qemu-m4-profile"
PROFILE_BOARD = "qemu-m4"
# The saved result of the last run, for `tinyforge report`.
SAVED_PATH = ".tinyforge/last-profile.json"
# Instruction counts measured under QEMU, by model: a board's cycles are divided by them.
INSTRUCTIONS_CACHE = "profile-instructions.json"
_MAX_SAVED_BYTES = 16 * 1024 * 1024
_NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
                "float32": np.float32}
# qemu-m4 emulates the Nano 33 BLE's limits; latency and energy are estimated for that board.
EMULATED_TARGET = "nano33ble"


@dataclass
class ProfileOptions:
    project_dir: Path | None = None
    board: str | None = None          # of the last build to use
    model: Path | None = None         # build a qemu-m4 profiling firmware for this model
    tflm: Path | None = None
    port: str | None = None
    decisions_per_s: float = 1.0
    seed: int = 0
    max_instructions: int | None = None
    max_arena: int | None = None


@dataclass
class ProfileReport:
    """The per-layer table and every figure derived from one profiled inference."""

    project_dir: str
    board: str                        # where it ran
    target: str                       # the board latency and energy are estimated for
    model: dict[str, Any]
    unit: str                         # what the device counted: instructions or cycles
    seed: int
    summary: dict[str, Any]           # model.cost.summary(): layers, totals, latency, energy
    profiler: dict[str, Any]          # Invoke() total, sum of ops, the profiler's overhead
    device_us: int                    # RES's us: Invoke() on the device's clock
    arena: dict[str, Any]
    limits: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[int] | None = None   # per op, when a real board counted cycles
    ratio: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"project_dir": self.project_dir, "board": self.board, "target": self.target,
                "model": self.model, "unit": self.unit, "seed": self.seed,
                "layers": self.summary["layers"], "totals": self.summary["totals"],
                "latency": self.summary["latency"], "energy": self.summary["energy"],
                "power_source": self.summary["power_source"], "profiler": self.profiler,
                "device_us": self.device_us, "arena": self.arena, "limits": self.limits,
                "cycles": self.cycles, "measured_ratio": self.ratio}

    @property
    def instructions(self) -> dict[int, int] | None:
        """{operator index: instructions}, for `tinyforge report`."""
        rows = self.summary["layers"]
        if any(row["instructions"] is None for row in rows):
            return None
        return {row["index"]: row["instructions"] for row in rows}

    def exceeded(self) -> list[dict[str, Any]]:
        return [limit for limit in self.limits if limit["exceeded"]]

    def lines(self) -> list[str]:
        return report_lines(self)


def profile(options: ProfileOptions, *, ask=None) -> ProfileReport:
    """Profile one inference of the last build (or of `options.model` on qemu-m4)."""
    from ..device.sources import source_for
    from ..model import macs
    from ..model.reader import read_model_file

    _check_options(options)
    build = _profiling_build(options)
    model_path = build.model_path
    if model_path is None or not model_path.is_file():
        raise ProfileUnavailableError(f"the build in {build.project_dir} has no model file",
                                      hint="build a model with `tinyforge build --profile`")
    model_bytes, _ = read_model_file(model_path)
    layers = macs.layer_costs(model_bytes, model_path.name)
    source = source_for(build.board, build.elf, options.port, ask=ask)
    link = source.open()
    try:
        conversation = Conversation(link)
        boot = wait_for_boot(conversation, ask=not build.board.emulated)
        require_started(boot, conversation)
        result, prof = _run_one(conversation, boot, options.seed)
    finally:
        source.close(link)
    report = _report(build, layers, result, prof, options)
    _save(build, report)
    return report


def check_limits(report: ProfileReport) -> None:
    """Raise `ProfileLimitExceeded` (exit code 4) when a --max-* limit was exceeded."""
    exceeded = report.exceeded()
    if not exceeded:
        return
    raise ProfileLimitExceeded(
        "the model exceeds its limits: " + "; ".join(
            f"{limit['name']} {limit['value']:,} > {limit['limit']:,}" for limit in exceeded),
        hint="make the model cheaper, or raise the limit if the growth is intended")


# --- which firmware ------------------------------------------------------------------------

def _check_options(options: ProfileOptions) -> None:
    if not options.decisions_per_s > 0 or options.decisions_per_s == float("inf"):
        raise InputError(f"the decision rate must be positive, not {options.decisions_per_s}",
                         hint="give decisions per second, e.g. --rate 1")
    if options.model is not None and (options.port or options.board not in (None, PROFILE_BOARD)):
        raise InputError("--model builds a profiling firmware for qemu-m4 only",
                         hint="for a board, build with `tinyforge build --profile --board B`, "
                              "flash it, then run `tinyforge profile --board B`")


def _profiling_build(options: ProfileOptions) -> last_build.LastBuild:
    if options.model is not None:
        from . import build as build_flow

        project_dir = options.project_dir or last_build.DEFAULT_ROOT / MODEL_PROJECT
        log.info("building a profiling firmware for %s on %s...", options.model.name,
                 PROFILE_BOARD)
        build_flow.build(build_flow.BuildOptions(
            board=PROFILE_BOARD, model=options.model, project_dir=project_dir,
            tflm=options.tflm, profile=True))
        return last_build.find(project_dir)
    build = last_build.find(options.project_dir, options.board)
    if not build.manifest.get("profile"):
        raise ProfileUnavailableError(
            f"the firmware in {build.project_dir} was built without the profiler",
            hint=f"rebuild it with `tinyforge build --profile --board {build.board.id}` (and "
                 "flash it on a board), or run `tinyforge profile --model MODEL` for qemu-m4")
    return build


# --- one inference -------------------------------------------------------------------------

def input_bytes(boot: protocol.Boot, seed: int) -> bytes:
    """A fixed pseudo-random input for every input tensor, concatenated: the same seed gives
    the same bytes, so two runs execute the same instructions."""
    rng = np.random.default_rng(seed)
    parts = []
    for spec in boot.inputs:
        count = int(np.prod(spec.shape)) if spec.shape else 1
        if spec.dtype == "float32":
            values = rng.normal(size=count).astype("<f4")
        else:
            info = np.iinfo(_NUMPY_TYPES[spec.dtype])
            values = rng.integers(info.min, info.max, size=count, endpoint=True,
                                  dtype=_NUMPY_TYPES[spec.dtype]).astype(
                np.dtype(_NUMPY_TYPES[spec.dtype]).newbyteorder("<"))
        parts.append(values.tobytes())
    return b"".join(parts)


def _run_one(conversation: Conversation, boot: protocol.Boot,
             seed: int) -> tuple[protocol.Result, protocol.Profile]:
    seq = 0
    for line in protocol.encode_input_lines(seq, input_bytes(boot, seed), boot.max_line):
        conversation.send(line)
    answer = conversation.wait_for(
        lambda e: isinstance(e, (protocol.Result, protocol.DeviceErrorMessage))
        and e.seq == seq and getattr(e, "src", "host") == "host",
        timeout=ANSWER_TIMEOUT_S, what="the result of the profiled input")
    if isinstance(answer, protocol.DeviceErrorMessage):
        raise DeviceError(f"the firmware refused the profiled input: {answer.code} "
                          f"({answer.msg})", details=conversation.describe_tail(),
                          hint="docs/protocol.md explains the error code")
    message = conversation.wait_for(
        lambda e: isinstance(e, protocol.OtherMessage) and e.type == "PROF"
        and e.fields.get("seq") == str(seq) and e.fields.get("src") == "host",
        timeout=ANSWER_TIMEOUT_S, what="the PROF message after the result")
    try:
        return answer, protocol.parse_profile(message)
    except ValueError as exc:
        raise DeviceError(f"the firmware sent a malformed PROF message: {exc}",
                          details=conversation.describe_tail(),
                          hint="rebuild the firmware with this tinyforge "
                               "(`tinyforge build --profile`)") from None


# --- figures -------------------------------------------------------------------------------

def _report(build: last_build.LastBuild, layers, result: protocol.Result,
            prof: protocol.Profile, options: ProfileOptions) -> ProfileReport:
    from ..model import cost

    if prof.dropped or len(prof.costs) != len(layers):
        raise DeviceError(f"the firmware profiled {len(prof.costs)} operators "
                          f"({prof.dropped} dropped); the model has {len(layers)}",
                          hint="flash the last build (`tinyforge flash`): the board runs "
                               "another model")
    board = build.board
    target = board if board.power else profiles.load_board(EMULATED_TARGET)
    sha = build.model_sha256
    cycles = None
    ratio = None
    if prof.unit == "instructions":
        instructions = dict(enumerate(prof.costs))
        _remember_instructions(sha, prof)
        measured = cycle_ratios.lookup(target.id, sha)
    else:
        cycles = list(prof.costs)
        known = _known_instructions(sha)
        instructions = dict(enumerate(known["costs"])) if known else None
        measured = None
        if known and known["total"] > 0 and board.id == target.id:
            measured = cycle_ratios.record(
                target.id, sha, known["total"], prof.total,
                source=f"DWT->CYCCNT on {board.id}, tinyforge profile")
    if measured is not None:
        ratio = measured.to_json()
    summary = cost.summary(
        layers, target, instructions=instructions, power=cost.PowerFigures.from_board(target),
        decisions_per_s=options.decisions_per_s,
        measured_cpi=measured.cycles_per_instruction if measured else None,
        measured_basis=(f"measured on {measured.board}: {measured.cycles:,} cycles for "
                        f"{measured.instructions:,} instructions ({measured.source})"
                        if measured else ""))
    profiler = _overhead(prof)
    arena_bytes = int((build.manifest.get("arena") or {}).get("arena_bytes", 0))
    report = ProfileReport(
        project_dir=str(build.project_dir), board=board.id, target=target.id,
        model={k: (build.manifest.get("model") or {}).get(k) for k in ("name", "sha256",
                                                                        "bytes")},
        unit=prof.unit, seed=options.seed, summary=summary, profiler=profiler,
        device_us=result.us, arena={"arena_bytes": arena_bytes}, cycles=cycles, ratio=ratio)
    if cycles is not None:
        report.profiler["seconds"] = [c / board.clock_hz for c in cycles]
    report.limits = _limits(report, options)
    return report


def _overhead(prof: protocol.Profile) -> dict[str, Any]:
    """The Invoke() total against the sum of the ops, and the profiler's measured cost."""
    ops_sum = sum(prof.costs)
    events = len(prof.costs)
    overhead = prof.overhead * events
    unaccounted = prof.total - ops_sum
    return {"unit": prof.unit, "invoke_total": prof.total, "ops_sum": ops_sum,
            "unaccounted": unaccounted, "overhead_per_op": prof.overhead,
            "overhead_total": overhead,
            "within_overhead": 0 <= unaccounted <= overhead}


def _limits(report: ProfileReport, options: ProfileOptions) -> list[dict[str, Any]]:
    limits = []
    if options.max_instructions is not None:
        value = report.summary["totals"]["instructions"]
        if value is None:
            raise ProfileUnavailableError(
                "--max-instructions needs an instruction count, and this board counted cycles "
                "with no qemu-m4 profile of the same model",
                hint="run `tinyforge profile --model MODEL` (qemu-m4) once first")
        limits.append({"name": "instructions", "limit": options.max_instructions,
                       "value": value, "exceeded": value > options.max_instructions})
    if options.max_arena is not None:
        value = report.arena["arena_bytes"]
        limits.append({"name": "arena_bytes", "limit": options.max_arena, "value": value,
                       "exceeded": value > options.max_arena})
    return limits


# --- saved results -------------------------------------------------------------------------

def _instructions_path() -> Path:
    return storage.cache_root() / INSTRUCTIONS_CACHE


def _remember_instructions(sha: str | None, prof: protocol.Profile) -> None:
    """Keep a model's QEMU counts, so a board's cycles for it give a measured ratio."""
    if not sha:
        return
    path = _instructions_path()
    known = _read_instructions(path)
    known[sha] = {"costs": list(prof.costs), "total": prof.total}
    try:
        writer.atomic_write_text(path, json.dumps(dict(sorted(known.items()))) + "\n")
    except OSError as exc:
        log.warning("instruction counts not kept in %s: %s", path, exc)


def _known_instructions(sha: str | None) -> dict | None:
    if not sha:
        return None
    entry = _read_instructions(_instructions_path()).get(sha)
    return entry if isinstance(entry, dict) else None


def _read_instructions(path: Path) -> dict:
    try:
        if path.stat().st_size > _MAX_SAVED_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}   # a cache: unreadable means measured again
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if isinstance(v, dict) and isinstance(v.get("costs"), list)
            and all(isinstance(c, int) for c in v["costs"]) and isinstance(v.get("total"), int)}


def _save(build: last_build.LastBuild, report: ProfileReport) -> None:
    path = build.project_dir / SAVED_PATH
    try:
        writer.atomic_write_text(path, json.dumps(report.to_json(), indent=1) + "\n")
    except OSError as exc:
        log.warning("the profile was not saved in %s for `tinyforge report`: %s", path, exc)


def load_saved(project_dir: Path, model_sha256: str | None) -> dict[int, int] | None:
    """The per-op instructions of the last `profile` run of this project's model, if any."""
    path = Path(project_dir) / SAVED_PATH
    try:
        if path.stat().st_size > _MAX_SAVED_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (data.get("model") or {}).get("sha256") != model_sha256:
        return None
    rows = data.get("layers")
    if not isinstance(rows, list):
        return None
    counts = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("index"), int) \
                or not isinstance(row.get("instructions"), int):
            return None
        counts[row["index"]] = row["instructions"]
    return counts


# --- text ----------------------------------------------------------------------------------

def _shape(shapes: list[list[int]]) -> str:
    return " ".join("×".join(map(str, s)) if s else "scalar" for s in shapes)


def report_lines(report: ProfileReport) -> list[str]:
    """The table and figures, as `tinyforge profile` prints them."""
    summary = report.summary
    rows = summary["layers"]
    lines = [f"model     {report.model['name']} (sha256 {str(report.model['sha256'])[:16]}…) "
             f"on {report.board}, counted in {report.unit}"]
    header = f"{'#':>3}  {'op':<20} {'output':<14} {'MACs':>11} {'instructions':>13} {'share':>7}"
    if report.cycles is not None:
        header += f" {'cycles':>11} {'µs':>9}"
    lines.append(header)
    for row in rows:
        count = row["instructions"]
        line = (f"{row['index']:>3}  {row['op']:<20} {_shape(row['outputs']):<14} "
                f"{row['macs']:>11,} {(f'{count:,}' if count is not None else '-'):>13} "
                f"{(units.percent(row['instruction_share'], 1) if row['instruction_share'] is not None else '-'):>7}")
        if report.cycles is not None:
            cycles = report.cycles[row["index"]]
            line += f" {cycles:>11,} {report.profiler['seconds'][row['index']] * 1e6:>9.1f}"
        lines.append(line)
    totals = summary["totals"]
    instructions = totals["instructions"]
    lines.append(f"{'':>3}  {'total':<20} {'':<14} {totals['macs']:>11,} "
                 f"{(f'{instructions:,}' if instructions is not None else '-'):>13}")
    p = report.profiler
    lines.append(
        f"profiler  Invoke() {p['invoke_total']:,} {p['unit']}, ops {p['ops_sum']:,}, outside "
        f"the ops {p['unaccounted']:,}; the profiler's own cost {p['overhead_per_op']:,} per op "
        f"({p['overhead_total']:,} in all, measured at boot): "
        + ("the ops add up to the total within it" if p["within_overhead"] else
           "the ops do NOT add up to the total within it"))
    latency = summary["latency"]
    if latency:
        low, high = latency["seconds"]
        cpi = latency["cycles_per_instruction"]
        span = (units.millis(low * 1e3) if latency["measured"] else
                f"{units.millis(low * 1e3)} – {units.millis(high * 1e3)}")
        lines.append(f"latency   {span} on {report.target} at {latency['clock_hz'] / 1e6:g} MHz "
                     f"(CPI {cpi[0]:g}" + ("" if latency["measured"] else f"–{cpi[1]:g}")
                     + f": {latency['basis']})")
    for energy in summary["energy"] or []:
        e_low, e_high = energy["energy_j"]
        p_low, p_high = energy["average_power_w"]
        verdict = {True: "within", False: "over", None: "across"}[energy["within_budget"]]
        lines.append(f"energy    {energy['regulator'].upper():<5} {e_low * 1e6:.2f} – "
                     f"{e_high * 1e6:.2f} µJ per inference; {p_low * 1e6:.1f} – "
                     f"{p_high * 1e6:.1f} µW at {energy['decisions_per_s']:g} decisions/s "
                     f"({verdict} the 1 mW budget)")
    if summary["power_source"]:
        lines.append(f"          currents: {summary['power_source']}")
    lines.append(f"arena     {units.size(report.arena['arena_bytes'])} (the firmware's "
                 "kTensorArenaSize)")
    for limit in report.limits:
        state = "EXCEEDED" if limit["exceeded"] else "ok"
        lines.append(f"limit     {limit['name']} {limit['value']:,} of at most "
                     f"{limit['limit']:,}: {state}")
    return lines
