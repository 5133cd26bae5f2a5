"""`--memory-plan auto|off|replace` for `build` and `inspect`: which model the firmware embeds.

The offline plan (docs/memory.md) is computed for the board's kernels and written into the
model's metadata; the planned model then goes through the same checks and arena measurement
as any model, so the arena the firmware gets is the one measured with the plan, and the
model `validate` runs on the host is the one the firmware embeds.

A plan is kept only when the smallest arena measured with it (on the emulated Cortex-M4 when
that is where the arena comes from, else on the host) is no larger than without it: the
emulated head can shrink while TFLM's planning temporaries still set the minimum, and it
must never grow.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import units
from ..board import profiles
from ..errors import TinyforgeError
from ..model import checks, memory_report
from ..model.arena import ArenaPlan

log = logging.getLogger(__name__)

MODES = memory_report.MODES
DEFAULT_MODE = "auto"


@dataclass
class MemoryPlanChoice:
    """What `--memory-plan MODE` did: the outcome of planning and the arenas it was judged by."""

    mode: str
    outcome: memory_report.PlanOutcome
    source_sha256: str                   # the model as given
    arena_with_plan: ArenaPlan | None = None     # measured on the planned model
    arena_without_plan: ArenaPlan | None = None  # measured on the model as given
    dropped: str | None = None           # why a computed plan was not embedded after all

    @property
    def embedded(self) -> bool:
        return self.outcome.action == "embedded"

    def to_json(self, *, stable: bool = False) -> dict:
        """For `build --json`, `inspect --json`; `stable=True` (no timings) for the manifest."""
        data = {"mode": self.mode, "source_sha256": self.source_sha256,
                "model_sha256": hashlib.sha256(self.outcome.model).hexdigest()}
        data.update(self.outcome.to_json(stable=stable))
        data["dropped"] = self.dropped
        data["arena"] = {
            "with_plan": _arena_json(self.arena_with_plan, stable),
            "without_plan": _arena_json(self.arena_without_plan, stable)}
        if not stable:
            data["summary"] = self.lines(figures=False)
        return data

    def lines(self, *, figures: bool = True) -> list[str]:
        """The human-readable facts, for `build` (with the plan's figures) and `inspect` (which
        shows the figures on their own lines)."""
        runs = memory_report.plan_in_model(self.outcome.model)
        if runs["planner"] == "tflm-greedy":
            what = "TFLM's greedy plan"
        else:
            whose = "tinyforge's" if self.embedded else "the model's own"
            what = f"{whose} offline plan ({runs['offline_offsets']} tensor offsets)"
            if runs["planner"] == "fixed":
                what += (", every buffer's place compiled into the firmware (no greedy "
                         "planner in the arena)")
        first = f"--memory-plan {self.mode}: the firmware runs {what}"
        if not self.embedded:
            first += f"; {self.outcome.reason}"
        lines = [first]
        plan = self.outcome.plan
        if figures and plan is not None:
            lines.append(f"arena head: TFLM greedy {units.size(plan.greedy_bytes)}, "
                         f"tinyforge's plan {units.size(plan.planned_bytes)}, lower bound "
                         f"{units.size(plan.lower_bound_bytes)}, planned in "
                         f"{memory_report.planning_time(plan.seconds)}")
        if self.dropped:
            lines.append(f"plan not embedded: {self.dropped}")
        with_plan, without = self.arena_with_plan, self.arena_without_plan
        if with_plan is not None and without is not None:
            lines.append(f"smallest arena ({_where(with_plan)}): "
                         f"{units.size(without.used.minimum_bytes)} with TFLM's greedy plan, "
                         f"{units.size(with_plan.used.minimum_bytes)} with tinyforge's plan")
        return lines


def _arena_json(plan: ArenaPlan | None, stable: bool) -> dict | None:
    if plan is None:
        return None
    return plan.to_json_stable() if stable else plan.to_json()


def _where(plan: ArenaPlan) -> str:
    return "emulated Cortex-M4" if plan.used.source == "device" else "host TFLM"


def plan_model(prepared: checks.PreparedModel, board: profiles.Board, mode: str, *,
               quantize: str = "int8", tflm_root: Path | None = None, strict: bool,
               force: bool = False) -> tuple[checks.PreparedModel, MemoryPlanChoice]:
    """The model to embed under `--memory-plan MODE`, checked like the model it came from.

    Returns the prepared planned model (or `prepared` itself when nothing changes) and the
    choice; the arenas are compared later by `settle`, once they are measured.
    """
    if mode not in MODES:
        raise ValueError(f"unknown memory-plan mode {mode!r}")
    name = prepared.info.name
    try:
        outcome = memory_report.apply_memory_plan(prepared.data, name, mode)
    except TinyforgeError as error:
        if mode != "auto":
            raise
        # auto never fails a build over an optimisation: say why and keep the model.
        outcome = memory_report.PlanOutcome(prepared.data, "unchanged", None,
                                            f"not planned: {error.message}")
    choice = MemoryPlanChoice(mode, outcome, prepared.info.sha256)
    if outcome.model == prepared.data:
        return prepared, choice
    planned = checks.prepare(outcome.model, name, board, quantize=quantize,
                             tflm_root=tflm_root, strict=strict, force=force)
    planned.conversion = prepared.conversion
    if planned.arena is None:   # inspect: the host runtime refused the planned model
        choice.dropped = f"the host TFLM did not run the planned model: {planned.host_error}"
        choice.outcome = memory_report.PlanOutcome(prepared.data, "unchanged", outcome.plan,
                                                   choice.dropped)
        return prepared, choice
    log.debug("memory plan: head %s instead of TFLM's %s (%s, %s)",
             units.size(outcome.plan.planned_bytes), units.size(outcome.plan.greedy_bytes),
             outcome.plan.method, units.seconds(outcome.plan.seconds))
    return planned, choice


def settle(choice: MemoryPlanChoice, planned: checks.PreparedModel,
           original: checks.PreparedModel,
           measure: Callable[[checks.PreparedModel], None]) -> checks.PreparedModel:
    """Measure the arena of the planned and the original model (`measure` sets
    `prepared.arena`), and keep the plan only if its smallest arena is no larger.

    Returns the model to embed. Without a plan to judge, only `original` is measured.
    """
    if planned is original:
        measure(original)
        return original
    measure(original)
    measure(planned)
    choice.arena_without_plan, choice.arena_with_plan = original.arena, planned.arena
    with_plan, without = planned.arena.used, original.arena.used
    if with_plan.source == without.source:
        larger = with_plan.minimum_bytes > without.minimum_bytes
        detail = (f"its smallest arena on the {_where(planned.arena)} is "
                  f"{units.size(with_plan.minimum_bytes)}, TFLM's greedy plan needs "
                  f"{units.size(without.minimum_bytes)}")
    else:
        # One of them could only be measured on the host (a device figure from the cache for
        # the other): the arenas the two firmwares would get decide.
        larger = planned.arena.arena_bytes > original.arena.arena_bytes
        detail = (f"the arena with it ({units.size(planned.arena.arena_bytes)}, "
                  f"{_where(planned.arena)}) would be larger than without it "
                  f"({units.size(original.arena.arena_bytes)}, {_where(original.arena)})")
    if larger:
        choice.dropped = f"{detail}: the model is left as it is"
        choice.outcome = memory_report.PlanOutcome(original.data, "unchanged",
                                                   choice.outcome.plan, choice.dropped)
        return original
    return planned
