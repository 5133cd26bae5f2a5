"""Does the firmware fit the board? Checked before anything is compiled.

Flash: the framework (board core), the TFLM runtime (a base plus an average per registered
op, from the board profile), and the model array. RAM: what the framework needs plus the
tensor arena. The runtime figures are estimates; PlatformIO's own RAM/Flash report after
the build is the measured truth and `tinyforge build` shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..board.profiles import Board
from ..errors import DoesNotFitError


@dataclass
class FitReport:
    flash_limit: int
    flash_framework: int
    flash_tflm: int
    flash_model: int
    ram_limit: int
    ram_framework: int
    ram_arena: int

    @property
    def flash_total(self) -> int:
        return self.flash_framework + self.flash_tflm + self.flash_model

    @property
    def ram_total(self) -> int:
        return self.ram_framework + self.ram_arena

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
        data = asdict(self)
        data.update(flash_total=self.flash_total, ram_total=self.ram_total,
                    fits_flash=self.fits_flash, fits_ram=self.fits_ram, fits=self.fits)
        return data

    def lines(self) -> list[str]:
        return [
            f"flash: {self.flash_total:,} of {self.flash_limit:,} B "
            f"({_percent(self.flash_total, self.flash_limit)}): model {self.flash_model:,}, "
            f"TFLM ~{self.flash_tflm:,}, framework ~{self.flash_framework:,}",
            f"RAM:   {self.ram_total:,} of {self.ram_limit:,} B "
            f"({_percent(self.ram_total, self.ram_limit)}): arena {self.ram_arena:,}, "
            f"framework ~{self.ram_framework:,}",
        ]


def estimate(board: Board, *, model_bytes: int, op_count: int, arena_bytes: int) -> FitReport:
    tflm = board.tflm
    return FitReport(
        flash_limit=board.flash_bytes,
        flash_framework=board.memory["framework_flash_bytes"],
        flash_tflm=tflm["flash_base_bytes"] + tflm["flash_per_op_bytes"] * op_count,
        flash_model=model_bytes,
        ram_limit=board.ram_bytes,
        ram_framework=board.memory["framework_ram_bytes"],
        ram_arena=arena_bytes)


def check(report: FitReport, board: Board, model_name: str) -> None:
    """Raise `DoesNotFitError` with the numbers when the estimate exceeds the board."""
    if report.fits:
        return
    problems = []
    if not report.fits_flash:
        over = report.flash_total - report.flash_limit
        problems.append(f"flash: needs ~{report.flash_total:,} B, the board has "
                        f"{report.flash_limit:,} B (over by {over:,} B; the model alone is "
                        f"{report.flash_model:,} B)")
    if not report.fits_ram:
        over = report.ram_total - report.ram_limit
        problems.append(f"RAM: needs ~{report.ram_total:,} B, the board has "
                        f"{report.ram_limit:,} B (over by {over:,} B; the tensor arena alone "
                        f"is {report.ram_arena:,} B)")
    raise DoesNotFitError(
        f"{model_name} does not fit {board.name} ({board.id})",
        details="\n".join(f"  - {p}" for p in problems),
        hint="make the model smaller (fewer or narrower layers, int8 quantization), or pass "
             "--force to build anyway (the runtime figures are estimates)")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%"
