"""The memory figures of a model and its offline plan: one call each for build and inspect.

- `memory_figures(data, name)`: the dict `inspect --json` shows (TFLM's greedy head, the
  plan's, the lower bound, the planning time, for the board's kernels and the host's);
- `apply_memory_plan(data, name, mode)`: what `build --memory-plan auto|off|replace` embeds;
- `plan_in_model(data)`: which plan a model (and so the firmware built from it) runs;
- `host_head_bytes(data)`: the head the real host runtime planned, to check the emulation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import units
from ..errors import UnsupportedFeatureError
from . import memory, memory_embed, memory_planner
from .memory_scratch import KERNELS

MODES = ("auto", "off", "replace")
BOARD_KERNELS = "cmsis-nn"
HOST_KERNELS = "reference"
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")


@dataclass
class PlanOutcome:
    """What `apply_memory_plan` did to a model, and why."""

    model: bytes               # the model to embed in the firmware
    action: str                # "embedded", "kept-own-plan", "unchanged" or "off"
    plan: memory_planner.MemoryPlan | None
    reason: str

    def to_json(self, *, stable: bool = False) -> dict:
        """For `build --json`; `stable=True` (no timings) for the project's manifest."""
        plan = None
        if self.plan is not None:
            plan = self.plan.to_json_stable() if stable else self.plan.to_json()
        return {"action": self.action, "reason": self.reason, "plan": plan,
                "runs": plan_in_model(self.model)}


def analyze_pair(data: bytes, name: str, *, kernels: str = BOARD_KERNELS,
                 secondary: str | None = HOST_KERNELS):
    """The graph's memory for `kernels` and, if given, for the `secondary` kernel set."""
    primary = memory.analyze(data, name, kernels=kernels)
    other = memory.analyze(data, name, kernels=secondary) if secondary else None
    return primary, other


def plan_model(data: bytes, name: str, *, kernels: str = BOARD_KERNELS,
               secondary: str | None = HOST_KERNELS,
               time_limit_s: float = memory_planner.DEFAULT_TIME_LIMIT_S
               ) -> memory_planner.MemoryPlan:
    """The offline plan for a model, for the board's kernels and no worse for the host's."""
    primary, other = analyze_pair(data, name, kernels=kernels, secondary=secondary)
    return memory_planner.plan(primary, secondary=other, time_limit_s=time_limit_s)


def apply_memory_plan(data: bytes, name: str, mode: str = "auto", *,
                      kernels: str = BOARD_KERNELS,
                      time_limit_s: float = memory_planner.DEFAULT_TIME_LIMIT_S) -> PlanOutcome:
    """The model a firmware should embed under `--memory-plan MODE`.

    auto: plan and embed when the plan beats TFLM's greedy plan; a model that carries its
    own plan keeps it. replace: the same, but a plan already in the model is replaced.
    off: the model as given.
    """
    if mode not in MODES:
        raise ValueError(f"unknown memory-plan mode {mode!r}")
    if mode == "off":
        return PlanOutcome(data, "off", None, "the model as given, not planned")
    existing = memory_embed.read_offline_plan(data, name)
    if existing is not None and mode == "auto":
        return PlanOutcome(data, "kept-own-plan", None,
                           "the model carries an offline plan of its own, which is kept")
    result = plan_model(data, name, kernels=kernels, time_limit_s=time_limit_s)
    if not result.improves:
        reason = (result.notes[-1] if result.notes else
                  "no plan smaller than TFLM's greedy plan was found")
        if existing is not None:
            # Nothing better to put in its place; without it TFLM would plan greedily, which
            # is no smaller, and the firmware would lose its compiled-in layout.
            reason = ("no plan smaller than TFLM's greedy plan was found, so the model's own "
                      "plan is kept")
        return PlanOutcome(data, "unchanged", result, reason)
    try:
        model = memory_embed.embed_offline_plan(data, result.offsets, name=name,
                                                replace=existing is not None)
    except UnsupportedFeatureError as error:
        if mode != "auto":
            raise
        # auto never fails a build over an optimisation: say why and keep the model.
        return PlanOutcome(data, "unchanged", result, error.message)
    return PlanOutcome(model, "embedded", result,
                       f"planned head {units.size(result.planned_bytes)} instead of TFLM's "
                       f"{units.size(result.greedy_bytes)}")


def plan_in_model(data: bytes, name: str = "model") -> dict:
    """Which arena plan the firmware built from a model runs (BOOT's `plan=`).

    "tflm-greedy": TFLM plans at run time; "offline": the model's plan, TFLM's greedy
    planner placing the scratch buffers around it; "fixed": the model's plan and every
    scratch buffer compiled into the firmware (`fixed_layout`), no planner in the arena.
    """
    existing = memory_embed.read_offline_plan(data, name)
    if existing is None:
        return {"planner": "tflm-greedy", "offline_offsets": 0}
    planned = sum(1 for offset in existing.offsets if offset != memory.ONLINE)
    graph = memory.analyze(data, name, kernels=BOARD_KERNELS)
    head = _head_with(graph, existing.offsets)
    layout = _layout(graph, existing.offsets)
    return {"planner": "offline" if layout is None else "fixed", "offline_offsets": planned,
            "entries": len(existing.offsets), "format_version": existing.version,
            "board_head_bytes": head}


@dataclass(frozen=True)
class PlannedBuffer:
    """One buffer TFLM's allocator hands its planner on the board, and where it goes."""

    offset: int
    bytes: int
    first: int
    last: int
    label: str


@dataclass(frozen=True)
class FixedLayout:
    """The whole head of a planned model on the board: what `FixedMemoryPlanner` places."""

    buffers: tuple[PlannedBuffer, ...]   # in the order of TFLM's AddBuffer calls
    head_bytes: int


def fixed_layout(data: bytes, name: str = "model") -> FixedLayout | None:
    """The layout TFLM's greedy planner would make on the board for a model that carries an
    offline plan: the planned tensors at their offsets, the scratch buffers placed around
    them. Compiled into the firmware, it spares the arena the greedy planner's working
    arrays (docs/memory.md). None when the model has no plan, or when a kernel's scratch
    needs are not modelled (the firmware then lets TFLM place them).
    """
    existing = memory_embed.read_offline_plan(data, name)
    if existing is None:
        return None
    return _layout(memory.analyze(data, name, kernels=BOARD_KERNELS), existing.offsets)


def _layout(graph: memory.GraphMemory, offsets: list[int]) -> FixedLayout | None:
    if graph.unknown_scratch or len(offsets) != graph.tensor_count:
        return None
    buffers = memory_planner.buffers_as_read(graph, offsets, "board")
    placement = memory.greedy_plan(buffers)
    # buffers_as_read lists the planned tensors first, in graph order, then the scratch.
    tensors = [PlannedBuffer(offset, buffer.size, buffer.first, buffer.last,
                             f"subgraph {tensor.subgraph} tensor {tensor.index}: {tensor.name}")
               for offset, buffer, tensor in zip(placement.offsets, buffers,
                                                  graph.planned_tensors)]
    placed_scratch = iter([offset for offset, buffer in zip(placement.offsets, buffers)
                           if buffer.label.startswith("scratch")])
    scratch = []
    for number, request in enumerate(graph.scratch):
        # TFLM adds every scratch request, even an empty one; an empty one takes no room.
        offset = next(placed_scratch) if request.bytes else 0
        scratch.append(PlannedBuffer(offset, request.aligned_bytes, request.first, request.last,
                                     f"scratch {number}: {request.op} (operator "
                                     f"{request.operator})"))
    return FixedLayout(tuple(tensors + scratch), placement.size)


def _head_with(graph: memory.GraphMemory, offsets: list[int]) -> int | None:
    if len(offsets) != graph.tensor_count:
        return None              # TFLM refuses such a plan ("Nbr of offline buffer offsets")
    return memory.greedy_plan(memory_planner.buffers_as_read(graph, offsets, "board")).size


def memory_figures(data: bytes, name: str, *, time_limit_s: float =
                   memory_planner.DEFAULT_TIME_LIMIT_S,
                   result: memory_planner.MemoryPlan | None = None) -> dict:
    """For `inspect --json`: per kernel set, TFLM's greedy head, the plan's, the lower bound.

    `result` is a plan already made for this model by `plan_model` (build's), so it is not
    searched for twice."""
    board, host = analyze_pair(data, name)
    if result is None:
        result = memory_planner.plan(board, secondary=host, time_limit_s=time_limit_s)
    return {
        "kernels": {BOARD_KERNELS: KERNELS[BOARD_KERNELS], HOST_KERNELS: KERNELS[HOST_KERNELS]},
        "board": {"greedy_bytes": result.greedy_bytes, "planned_bytes": result.planned_bytes,
                  "lower_bound_bytes": result.lower_bound_bytes,
                  "scratch_bytes": sum(r.aligned_bytes for r in board.scratch)},
        "host": dict(result.secondary or {}),
        "plan": result.to_json(),
        "runs": plan_in_model(data, name),
        "tensors": board.tensors_json(),
        "scratch": [{"subgraph": r.subgraph, "operator": r.operator, "op": r.op,
                     "bytes": r.bytes, "first": r.first, "last": r.last}
                    for r in board.scratch],
        "occupancy": board.occupancy(),
    }


def human_lines(figures: dict) -> list[str]:
    """A few lines for `inspect`'s text output."""
    plan = figures["plan"]
    board, host = figures["board"], figures["host"]
    size = units.size
    lines = [(f"arena head (board kernels): TFLM greedy {size(board['greedy_bytes'])}, "
              f"lower bound {size(board['lower_bound_bytes'])} "
              f"(greedy efficiency "
              f"{units.percent(board['lower_bound_bytes'], board['greedy_bytes'])})")]
    if plan["improves"]:
        lines.append(f"offline plan: {size(plan['planned_bytes'])}, saves "
                     f"{size(plan['saved_bytes'])}{' (optimal)' if plan['optimal'] else ''}, "
                     f"planned in {planning_time(plan['seconds'])} ({plan['method']})")
    else:
        lines.append(f"offline plan: none ({plan['notes'][-1]}; "
                     f"searched in {planning_time(plan['seconds'])})")
    if host:
        lines.append(f"host runtime head: greedy {size(host['greedy_bytes'])}, with the plan "
                     f"{size(host['planned_bytes'])}")
    return lines


def planning_time(seconds: float) -> str:
    """The planner's time: milliseconds for most models, seconds for the slow ones."""
    return units.seconds(seconds) if seconds >= 1 else units.millis(1000 * seconds)


def host_head_bytes(data: bytes, arena_size: int | None = None) -> int | None:
    """The head the host TFLM runtime planned for `data` (its RecordingMicroAllocator), or None
    if the model did not run."""
    from . import host_runtime
    from .isolated import call_isolated

    size = arena_size or host_runtime.generous_arena(len(data))
    host_runtime.runtime_module()        # loaded before the fork, so the child inherits it
    result = call_isolated(_print_allocations, data, size)
    match = _HEAD.search(result.output)
    return int(match.group(1)) if result.ok and match else None


def _print_allocations(data: bytes, arena_size: int) -> bool:
    from . import host_runtime

    interpreter = host_runtime.runtime_module().Interpreter.from_bytes(data,
                                                                       arena_size=arena_size)
    interpreter.print_allocations()
    return True
