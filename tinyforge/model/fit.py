"""Does the firmware fit the board? Checked before anything is compiled.

Flash: the framework (board core), the TFLM runtime (a base plus an average per registered
op, from the board profile), the sketch's own code and constants, and the model array. RAM:
what the framework needs, the sketch's own statics (its serial line buffer, the interpreter,
the op resolver and the protocol's state), the sensor pipeline's (its window, buffers and the
audio frontend's heap, counted by `tinyforge.pipeline.ram` and passed in) and the tensor arena.
The framework and TFLM code
figures are estimates; PlatformIO's own RAM/Flash report after the build is the measured
truth and `tinyforge build` shows it. After one real build for a board, its linker map gives
the framework's true figures (`MeasuredFramework`, kept by `flows.fit_learning`), and later
estimates for that board and toolchain use them instead of the profile's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import units
from ..board.profiles import Board
from ..errors import DoesNotFitError
from .reader import ModelInfo

# The longest host message the firmware reads: `project.firmware` renders it into the sketch
# as kMaxLineLength, so the estimate counts the buffer the firmware declares. It does not grow
# with the model: inputs that do not fit one IN line arrive in chunks (docs/protocol.md).
HOST_LINE_BYTES = 512

# The statics of firmware_templates/project/src/main.cpp.j2 besides the arena, the line
# buffer, the interpreter and the resolver, for 32-bit pointers: the LineParser and the
# InputAssembler, the start-up state and flags (fixed), one TensorView (28 B) per tensor and
# one InputBuffer (8 B) per input. Checked against the symbols of a qemu-m4 build by
# tests/test_qemu_models.py.
SKETCH_STATE_BYTES = 96
TENSOR_VIEW_BYTES = 28
INPUT_BUFFER_BYTES = 8

# The sketch's own code and constants (main.cpp, the protocol in tf_protocol.cpp, the tables of
# model_settings.cpp), as linked on qemu-m4: 8,748 B for the bundled gesture model (main
# 2,737 B, protocol 5,833 B, settings 178 B) before RESET and BOOT's plan key; 9,038 B for the
# tests' 96x96 model after them (tests/test_qemu_models.py reads the linker map); rounded up. The board runtime layer belongs to the framework figure. A demo input adds its
# bytes (kDemoInput); without one the linker drops the array with the code that reads it.
SKETCH_CODE_BYTES = 9_600


@dataclass(frozen=True)
class MeasuredFramework:
    """The framework's flash and RAM as the linker map of a real build showed them."""

    flash_bytes: int
    ram_bytes: int
    source: str     # which build, toolchain and framework it was measured on

    def to_json(self) -> dict:
        return {"flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
                "source": self.source}


@dataclass
class FitReport:
    flash_limit: int
    flash_framework: int
    flash_tflm: int
    flash_sketch: int
    flash_model: int
    ram_limit: int
    ram_framework: int
    ram_sketch: int
    ram_arena: int
    # What ram_sketch is made of: line_buffer, interpreter, resolver, protocol_state.
    ram_sketch_parts: dict[str, int] = field(default_factory=dict)
    # The sensor pipeline's RAM by part (tinyforge.pipeline.ram.static_ram); empty for a
    # firmware whose inputs come from the host.
    ram_pipeline_parts: dict[str, int] = field(default_factory=dict)
    # Where the framework figures come from: None for the board profile's estimate.
    framework_measured: MeasuredFramework | None = None

    @property
    def flash_total(self) -> int:
        return self.flash_framework + self.flash_tflm + self.flash_sketch + self.flash_model

    @property
    def ram_pipeline(self) -> int:
        return sum(self.ram_pipeline_parts.values())

    @property
    def ram_total(self) -> int:
        return self.ram_framework + self.ram_sketch + self.ram_pipeline + self.ram_arena

    @property
    def fits_flash(self) -> bool:
        return self.flash_total <= self.flash_limit

    @property
    def fits_ram(self) -> bool:
        return self.ram_total <= self.ram_limit

    @property
    def fits(self) -> bool:
        return self.fits_flash and self.fits_ram

    def to_json(self) -> dict:
        return {"flash_limit": self.flash_limit, "flash_framework": self.flash_framework,
                "flash_tflm": self.flash_tflm, "flash_sketch": self.flash_sketch,
                "flash_model": self.flash_model, "flash_total": self.flash_total,
                "ram_limit": self.ram_limit, "ram_framework": self.ram_framework,
                "ram_sketch": self.ram_sketch, "ram_sketch_parts": dict(self.ram_sketch_parts),
                "ram_pipeline": self.ram_pipeline,
                "ram_pipeline_parts": dict(self.ram_pipeline_parts),
                "ram_arena": self.ram_arena, "ram_total": self.ram_total,
                "fits_flash": self.fits_flash, "fits_ram": self.fits_ram, "fits": self.fits,
                "framework_measured": (self.framework_measured.to_json()
                                       if self.framework_measured else None)}

    def lines(self) -> list[str]:
        # "~" marks an estimate; a framework figure from a real build's map is exact.
        fw = "" if self.framework_measured else "~"
        sketch = _named_sizes(self.ram_sketch_parts)
        pipeline = (f", pipeline {units.size(self.ram_pipeline)} "
                    f"({_named_sizes(self.ram_pipeline_parts)})"
                    if self.ram_pipeline_parts else "")
        return [
            f"flash ~{units.size(self.flash_total)} of {units.size(self.flash_limit)} "
            f"({units.percent(self.flash_total, self.flash_limit)}): model "
            f"{units.size(self.flash_model)}, sketch ~{units.size(self.flash_sketch)}, TFLM "
            f"~{units.size(self.flash_tflm)}, framework {fw}{units.size(self.flash_framework)}",
            f"RAM   ~{units.size(self.ram_total)} of {units.size(self.ram_limit)} "
            f"({units.percent(self.ram_total, self.ram_limit)}): arena "
            f"{units.size(self.ram_arena)}, sketch {units.size(self.ram_sketch)}"
            + (f" ({sketch})" if sketch else "") + pipeline
            + f", framework {fw}{units.size(self.ram_framework)}",
        ] + ([f"framework measured: {self.framework_measured.source}"]
             if self.framework_measured else [])


def _named_sizes(parts: dict[str, int]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {units.size(value)}"
                     for name, value in parts.items())


def sketch_ram(board: Board, info: ModelInfo, op_count: int) -> dict[str, int]:
    """The sketch's statics besides the arena, by what main.cpp.j2 declares."""
    tflm = board.tflm
    return {
        "line_buffer": HOST_LINE_BYTES + 1,
        "interpreter": tflm["interpreter_bytes"],
        "resolver": tflm["resolver_base_bytes"] + tflm["resolver_per_op_bytes"] * op_count,
        "protocol_state": (SKETCH_STATE_BYTES
                           + TENSOR_VIEW_BYTES * (len(info.inputs) + len(info.outputs))
                           + INPUT_BUFFER_BYTES * len(info.inputs)),
    }


def estimate(board: Board, info: ModelInfo, *, op_count: int, arena_bytes: int,
             demo_input_bytes: int = 0,
             measured: MeasuredFramework | None = None,
             pipeline_ram: dict[str, int] | None = None) -> FitReport:
    """The flash and RAM the firmware for `info` needs on `board`, part by part
    (`demo_input_bytes`: the built-in demo input, if the firmware has one; `measured`: the
    framework's figures from a real build for this board, instead of the profile's;
    `pipeline_ram`: the sensor pipeline's RAM by part, `tinyforge.pipeline.ram.static_ram`)."""
    tflm = board.tflm
    ram_parts = sketch_ram(board, info, op_count)
    return FitReport(
        flash_limit=board.flash_bytes,
        flash_framework=(measured.flash_bytes if measured
                         else board.memory["framework_flash_bytes"]),
        flash_tflm=tflm["flash_base_bytes"] + tflm["flash_per_op_bytes"] * op_count,
        flash_sketch=SKETCH_CODE_BYTES + demo_input_bytes,
        flash_model=info.size,
        ram_limit=board.ram_bytes,
        ram_framework=measured.ram_bytes if measured else board.memory["framework_ram_bytes"],
        ram_sketch=sum(ram_parts.values()),
        ram_arena=arena_bytes,
        ram_sketch_parts=ram_parts, ram_pipeline_parts=dict(pipeline_ram or {}),
        framework_measured=measured)


def check(report: FitReport, board: Board, model_name: str) -> None:
    """Raise `DoesNotFitError` with the numbers when the estimate exceeds the board."""
    if report.fits:
        return
    problems = []
    if not report.fits_flash:
        over = report.flash_total - report.flash_limit
        problems.append(f"flash: needs ~{units.size(report.flash_total)}, the board has "
                        f"{units.size(report.flash_limit)} (over by {units.size(over)}; the "
                        f"model alone is {units.size(report.flash_model)})")
    if not report.fits_ram:
        over = report.ram_total - report.ram_limit
        problems.append(f"RAM: needs ~{units.size(report.ram_total)}, the board has "
                        f"{units.size(report.ram_limit)} (over by {units.size(over)}; the "
                        f"tensor arena alone is {units.size(report.ram_arena)}"
                        + (f", the sensor pipeline {units.size(report.ram_pipeline)}"
                           if report.ram_pipeline else "") + ")")
    raise DoesNotFitError(
        f"{model_name} does not fit {board.name} ({board.id})",
        details="\n".join(f"  - {p}" for p in problems),
        hint="make the model smaller (fewer or narrower layers, int8 quantization), or pass "
             "--force to build anyway (the runtime figures are estimates)")
