"""What an inference costs on the board: a per-layer table, a latency band, energy and power.

- The per-layer table joins the host's MACs per operator (`macs.layer_costs`) with per-op
  instruction counts when the emulator has measured them (`{op index: instructions}`).
- Latency is estimated from an instruction count as a band: cycles = instructions × CPI,
  with CPI (cycles per instruction) between `CPI_BAND` until a real board has reported cycles
  for the same model; then its measured ratio replaces the band (`project.cycle_ratios`).
- Energy per inference and average power at a decision rate come from the board profile's
  [power] figures (run current from flash with DC/DC and with the LDO, System ON sleep
  current with the RTC running, supply voltage), compared with the 1 mW TinyML budget.
Every figure and its source is in docs/cost.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..board.profiles import Board
from .macs import LayerCost

__all__ = ["CPI_BAND", "CPI_BASIS", "TINYML_BUDGET_W", "EnergyEstimate", "LatencyBand",
           "PowerFigures", "energy_estimates", "latency_band", "layer_table", "summary"]

# Cycles per instruction of a Cortex-M4 running TFLM's CMSIS-NN kernels: an unmeasured
# estimate (single-cycle ALU and MAC instructions, 2-cycle loads and multi-cycle branches,
# flash wait states mostly hidden by the nRF52840's cache). Replaced by a measured ratio as
# soon as a real board reports DWT cycles for the same model.
CPI_BAND = (1.2, 2.0)
CPI_BASIS = ("assumed, not measured: 1.2-2.0 cycles per instruction for a Cortex-M4 running "
             "CMSIS-NN kernels (single-cycle ALU/MAC, 2-cycle loads, branch refills)")
# The usual TinyML power budget: always-on inference under a milliwatt on average.
TINYML_BUDGET_W = 1e-3


@dataclass(frozen=True)
class LatencyBand:
    instructions: int
    clock_hz: int
    cpi_low: float
    cpi_high: float
    basis: str
    measured: bool = False

    @property
    def seconds_low(self) -> float:
        return self.instructions * self.cpi_low / self.clock_hz

    @property
    def seconds_high(self) -> float:
        return self.instructions * self.cpi_high / self.clock_hz

    def to_json(self) -> dict[str, Any]:
        return {"instructions": self.instructions, "clock_hz": self.clock_hz,
                "cycles_per_instruction": [self.cpi_low, self.cpi_high],
                "cycles": [round(self.instructions * self.cpi_low),
                           round(self.instructions * self.cpi_high)],
                "seconds": [self.seconds_low, self.seconds_high],
                "measured": self.measured, "basis": self.basis}


def latency_band(instructions: int, clock_hz: int, *, measured_cpi: float | None = None,
                 measured_basis: str = "") -> LatencyBand:
    """The band of latencies `instructions` take at `clock_hz`; a measured cycles-per-
    instruction ratio for this board and model collapses it to one value."""
    if instructions < 0 or clock_hz <= 0:
        raise ValueError("instructions must be >= 0 and clock_hz > 0")
    if measured_cpi is not None:
        return LatencyBand(instructions, clock_hz, measured_cpi, measured_cpi,
                           measured_basis or "measured on the board", measured=True)
    return LatencyBand(instructions, clock_hz, *CPI_BAND, CPI_BASIS)


@dataclass(frozen=True)
class PowerFigures:
    """A board profile's [power] table, in SI units."""

    supply_v: float
    run_dcdc_a: float
    run_ldo_a: float
    sleep_a: float
    source: str

    @classmethod
    def from_board(cls, board: Board) -> PowerFigures | None:
        power = board.power
        if not power:
            return None
        return cls(supply_v=float(power["supply_v"]), run_dcdc_a=power["run_dcdc_ma"] * 1e-3,
                   run_ldo_a=power["run_ldo_ma"] * 1e-3, sleep_a=power["sleep_ua"] * 1e-6,
                   source=power["source"])

    def run_current(self, regulator: str) -> float:
        return {"dcdc": self.run_dcdc_a, "ldo": self.run_ldo_a}[regulator]


@dataclass(frozen=True)
class EnergyEstimate:
    regulator: str                  # "dcdc" or "ldo"
    decisions_per_s: float
    energy_j: tuple[float, float]   # per inference, for the latency band's two ends
    power_w: tuple[float, float]    # average at the decision rate
    feasible: bool                  # False when one inference outlasts a decision period

    @property
    def within_budget(self) -> bool | None:
        """True below the TinyML budget across the band, False above it, None across it."""
        if not self.feasible or self.power_w[0] > TINYML_BUDGET_W:
            return False
        if self.power_w[1] <= TINYML_BUDGET_W:
            return True
        return None

    def to_json(self) -> dict[str, Any]:
        return {"regulator": self.regulator, "decisions_per_s": self.decisions_per_s,
                "energy_j": list(self.energy_j), "average_power_w": list(self.power_w),
                "feasible": self.feasible, "budget_w": TINYML_BUDGET_W,
                "within_budget": self.within_budget}


def energy_estimates(latency: LatencyBand, power: PowerFigures,
                     decisions_per_s: float) -> list[EnergyEstimate]:
    """Energy per inference and average power, with the DC/DC regulator and with the LDO.

    The core runs at the run current for the inference and sleeps (System ON, RTC running)
    for the rest of each decision period; sensors, radio and the board's other parts are
    not included.
    """
    if decisions_per_s <= 0:
        raise ValueError("decisions_per_s must be positive")
    estimates = []
    for regulator in ("dcdc", "ldo"):
        run = power.run_current(regulator)
        energy, average = [], []
        for seconds in (latency.seconds_low, latency.seconds_high):
            busy = min(seconds * decisions_per_s, 1.0)
            energy.append(power.supply_v * run * seconds)
            average.append(power.supply_v * (run * busy + power.sleep_a * (1.0 - busy)))
        feasible = latency.seconds_high * decisions_per_s <= 1.0
        estimates.append(EnergyEstimate(regulator, decisions_per_s, tuple(energy),
                                        tuple(average), feasible))
    return estimates


def layer_table(layers: list[LayerCost],
                instructions: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """One row per operator: op, shapes, MACs, instructions (when measured) and shares."""
    total_macs = sum(layer.macs for layer in layers)
    total_instructions = sum(instructions.values()) if instructions else 0
    rows = []
    for layer in layers:
        row = layer.to_json()
        row["mac_share"] = layer.macs / total_macs if total_macs else None
        count = instructions.get(layer.index) if instructions else None
        row["instructions"] = count
        row["instruction_share"] = (count / total_instructions
                                    if count is not None and total_instructions else None)
        rows.append(row)
    return rows


def summary(layers: list[LayerCost], board: Board, *,
            instructions: dict[int, int] | None = None, power: PowerFigures | None = None,
            decisions_per_s: float = 1.0, measured_cpi: float | None = None,
            measured_basis: str = "") -> dict[str, Any]:
    """The table, totals, latency band and energy for `profile` and `report`.

    Latency and energy need instruction counts; without them those parts are None.
    """
    if instructions:
        unknown = sorted(set(instructions) - {layer.index for layer in layers})
        if unknown:
            raise ValueError(f"instruction counts for operators the graph does not have: "
                             f"{unknown}")
    total_instructions = sum(instructions.values()) if instructions else None
    latency = (latency_band(total_instructions, board.clock_hz, measured_cpi=measured_cpi,
                            measured_basis=measured_basis)
               if total_instructions is not None else None)
    energy = (energy_estimates(latency, power, decisions_per_s)
              if latency is not None and power is not None else None)
    return {
        "board": board.id, "clock_hz": board.clock_hz,
        "layers": layer_table(layers, instructions),
        "totals": {"operators": len(layers), "macs": sum(layer.macs for layer in layers),
                   "instructions": total_instructions},
        "latency": latency.to_json() if latency else None,
        "energy": [e.to_json() for e in energy] if energy else None,
        "power_source": power.source if power else None,
    }
