"""What a report is made of: plain data, so every section can be built and tested on its own.

Each field is None when its data does not exist; `missing` then says why and how to get it,
and the page shows that instead of the section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorLifetime:
    """One arena tensor: alive from the operator that writes it to the last that reads it."""

    name: str
    first_op: int
    last_op: int
    size: int
    offset: int | None = None   # where the plan puts it in the arena, if planned


@dataclass(frozen=True)
class Lifetimes:
    tensors: list[TensorLifetime]
    operator_count: int
    lower_bound: int            # the largest sum of sizes of tensors alive at the same time
    planned_bytes: int | None = None  # the planner's arena (head) size, if known
    # The memory plan (docs/memory.md), when the lifetimes come from a build's model:
    greedy_bytes: int | None = None   # TFLM's greedy head without an offline plan
    offline_bytes: int | None = None  # tinyforge's offline plan's head (None: none beats greedy)
    plan_seconds: float | None = None  # time to plan
    planner: str | None = None        # what the firmware runs: "fixed", "offline" or "tflm-greedy" (memory_report.plan_in_model)
    step_label: str = "operator"      # what the x axis counts ("allocation scope" for control flow)

    def occupancy(self) -> list[int]:
        """Bytes of tensors alive at each operator."""
        alive = [0] * self.operator_count
        for tensor in self.tensors:
            for op in range(max(tensor.first_op, 0), min(tensor.last_op, self.operator_count - 1)
                            + 1):
                alive[op] += tensor.size
        return alive

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lifetimes:
        """From a plain dict: {"tensors": [{"name", "first_op", "last_op", "size"/"bytes",
        "offset"}], "operator_count", "lower_bound", "planned_bytes"}."""
        tensors = [TensorLifetime(str(t.get("name", f"t{i}")), int(t["first_op"]),
                                  int(t["last_op"]), int(t.get("size", t.get("bytes", 0))),
                                  None if t.get("offset") is None else int(t["offset"]))
                   for i, t in enumerate(data["tensors"])]
        count = int(data.get("operator_count")
                    or max((t.last_op for t in tensors), default=-1) + 1)
        return cls(tensors, count, int(data["lower_bound"]),
                   None if data.get("planned_bytes") is None else int(data["planned_bytes"]))


@dataclass
class ReportData:
    title: str
    board: dict[str, Any]                      # id, name, flash_bytes, ram_bytes
    model: dict[str, Any] | None = None        # name, sha256, bytes
    lifetimes: Lifetimes | None = None
    cost: dict[str, Any] | None = None         # model.cost.summary()
    breakdown: dict[str, Any] | None = None    # toolchain.linkmap.Breakdown.to_json()
    breakdown_check: list[str] | None = None   # check_against_elf(): empty = adds up
    validation: dict[str, Any] | None = None   # flows.validate.ValidationReport.to_json()
    missing: dict[str, str] = field(default_factory=dict)  # section -> why it is missing
