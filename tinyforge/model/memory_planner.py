"""An offline memory plan for TFLM's arena head: an offset for every planned tensor.

What TFLM does with a plan (the board's `micro_allocation_info.cpp` and
`greedy_memory_planner.cpp`): tensors with an offset are placed there as they are, and
everything else (tensors marked -1, every scratch buffer) is placed greedily around them.
So the figure a plan gives is what `memory.greedy_plan` computes with the plan's offsets:
that emulation is the planner's objective, and the plan is kept only when it is smaller than
TFLM's own greedy plan.

The search:
- a branch and bound that is exact for the whole set of buffers (tensors and scratch). It
  places buffers one at a time at the lowest offset that fits, in non-decreasing order of
  offset: every plan can be pushed down into one such sequence without growing, so the
  search misses no optimum. Bounds: the graph's peak load, and for each scope the offset of
  the last placed buffer plus all that must still fit above it;
- for larger models, and to seed the bound, orderings (TFLM's, by size, by lifetime, by
  area, by start, by conflicts) placed lowest-fit, then a seeded local search on the best.

Work is bounded by counts (nodes, iterations), so a plan is deterministic; the wall-clock
limit is only a safety net and the result says when it was hit.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .memory import ONLINE, Buffer, GraphMemory, greedy_plan, peak_load, place_in_order

DEFAULT_TIME_LIMIT_S = 10.0
EXACT_NODE_BUDGET = 200_000
LOCAL_SEARCH_ITERATIONS = 3_000


@dataclass
class MemoryPlan:
    """An offline plan and the figures that go with it (bytes of the arena's head)."""

    offsets: list[int]         # one per tensor of every subgraph, concatenated; -1: TFLM's
    greedy_bytes: int          # TFLM's greedy plan without an offline plan
    planned_bytes: int         # TFLM's head with this plan (its greedy placing the rest)
    lower_bound_bytes: int     # the peak load: no plan is smaller
    minimum_bytes: int | None  # the smallest head any placement has, when the search proved it
    optimal: bool              # planned_bytes is proven to be the smallest possible
    method: str                # "exact", "heuristic" or "greedy" (nothing beat TFLM)
    seconds: float
    time_limit_s: float
    time_limit_hit: bool
    kernels: str               # whose scratch buffers were planned around
    nodes: int = 0             # branch-and-bound nodes visited
    notes: list[str] = field(default_factory=list)
    # The same figures for the secondary kernel set (the host runtime's), if one was given.
    secondary: dict | None = None

    @property
    def improves(self) -> bool:
        return self.planned_bytes < self.greedy_bytes

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("offsets")
        data["improves"] = self.improves
        data["saved_bytes"] = self.greedy_bytes - self.planned_bytes
        data["efficiency_greedy"] = _ratio(self.lower_bound_bytes, self.greedy_bytes)
        data["efficiency_planned"] = _ratio(self.lower_bound_bytes, self.planned_bytes)
        return data

    def to_json_stable(self) -> dict:
        """`to_json()` without the timing: what a generated project's manifest may record."""
        data = self.to_json()
        data.pop("seconds")
        return data


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 1.0


def offline_plannable(graph: GraphMemory) -> list[bool]:
    """Which tensors (concatenated over subgraphs) may carry an offset in the plan.

    The board's library (Chirale 2.0.0) reads entry `i` of the plan for tensor `i` of EVERY
    subgraph, while newer TFLM (the host runtime) reads the subgraphs' entries one after the
    other. A plan both read the same way gives offsets only to subgraph 0's tensors, and only
    to those whose index no other subgraph's planned or variable tensor shares. Variables
    always stay -1: newer TFLM would plan a variable given an offset, the board's would not.
    """
    shared = set()
    for tensors in graph.subgraphs[1:]:
        shared |= {t.index for t in tensors if t.planned or t.kind == "variable"}
    flags = []
    for s, tensors in enumerate(graph.subgraphs):
        flags += [s == 0 and t.planned and t.index not in shared for t in tensors]
    return flags


def buffers_as_read(graph: GraphMemory, offsets: Sequence[int], reader: str) -> list[Buffer]:
    """The buffers TFLM's planner gets from an offline plan, read by a given TFLM version.

    "board" is Chirale 2.0.0 (entry i for tensor i of each subgraph; variables never planned);
    "host" is the tflite-micro wheel (entries concatenated; a variable given an offset is
    planned there).
    """
    result = []
    flat = 0
    for tensors in graph.subgraphs:
        for tensor in tensors:
            entry = offsets[tensor.index] if reader == "board" else offsets[flat]
            flat += 1
            planned = tensor.planned or (reader == "host" and tensor.kind == "variable"
                                         and entry != ONLINE)
            if planned:
                result.append(Buffer(tensor.aligned_bytes, tensor.first, tensor.last,
                                     f"s{tensor.subgraph}t{tensor.index}", entry))
    result += [b for b in graph.buffers() if b.label.startswith("scratch")]
    return result


def plan(graph: GraphMemory, *, secondary: GraphMemory | None = None,
         secondary_must_not_grow: bool = False,
         time_limit_s: float = DEFAULT_TIME_LIMIT_S, node_budget: int = EXACT_NODE_BUDGET,
         iterations: int = LOCAL_SEARCH_ITERATIONS) -> MemoryPlan:
    """The best offline plan found for `graph`, never larger than TFLM's greedy plan.

    `secondary` is the same model with another kernel set's scratch buffers (the host
    runtime's, when `graph` is the board's): among the best plans for `graph` the smallest
    for it wins, and with `secondary_must_not_grow` a plan that makes it larger than its own
    greedy plan is refused.
    """
    started = time.monotonic()
    buffers = graph.buffers()
    greedy = greedy_plan(buffers).size
    bound = peak_load(buffers)
    tensor_of_buffer = _tensor_positions(graph)
    plannable = offline_plannable(graph)
    free = [i for i, position in enumerate(tensor_of_buffer)
            if position is not None and plannable[position]]
    others = secondary.buffers() if secondary is not None else None
    search = _Search(buffers, free, started + time_limit_s, others, secondary_must_not_grow)
    planned_count = sum(1 for p in tensor_of_buffer if p is not None)
    notes = []
    if len(free) < planned_count:
        notes.append(f"{planned_count - len(free)} tensors left to TFLM (-1): other subgraphs "
                     "share their index")
    for memory in (graph, secondary):
        if memory is not None and memory.unknown_scratch:
            notes.append(f"scratch needs of {', '.join(memory.unknown_scratch)} not modelled for "
                         f"the {memory.kernels} kernels: the figures leave them out")
    if free and search.best.size > bound:
        search.orderings()
        search.local_search(iterations, bound)
        search.exact(node_budget, bound)
    best = search.best
    improves = best.acceptable and best.size < greedy
    offsets = [ONLINE] * graph.tensor_count
    if improves:
        for index in free:
            offsets[tensor_of_buffer[index]] = best.offsets[index]
    planned = best.size if improves else greedy
    optimal = planned in (bound, search.proven_optimum)
    method = ("exact" if search.exact_found_best else "heuristic") if improves else "greedy"
    if not improves:
        notes.append("TFLM's greedy plan is already " +
                     ("optimal" if optimal else "the best found") + ": the model is left as it is")
    result = MemoryPlan(
        offsets=offsets, greedy_bytes=greedy, planned_bytes=planned, lower_bound_bytes=bound,
        minimum_bytes=planned if optimal else search.proven_optimum, optimal=optimal,
        method=method, seconds=round(time.monotonic() - started, 4),
        time_limit_s=time_limit_s, time_limit_hit=search.time_limit_hit,
        kernels=graph.kernels, nodes=search.nodes, notes=notes)
    if secondary is not None:
        result.secondary = {"kernels": secondary.kernels, "greedy_bytes": search.other_greedy,
                            "planned_bytes": best.other if improves else search.other_greedy,
                            "lower_bound_bytes": peak_load(others)}
    return result


@dataclass
class Solution:
    """The best placement `optimise` found for a list of buffers."""

    size: int                  # TFLM's head with the free buffers at these offsets
    offsets: list[int]         # one per buffer: where TFLM ends up placing it
    proven_minimum: int | None  # the smallest possible head, when the search proved it
    nodes: int
    time_limit_hit: bool


def optimise(buffers: list[Buffer], free: list[int] | None = None, *,
             heuristics: bool = True, time_limit_s: float = DEFAULT_TIME_LIMIT_S,
             node_budget: int = EXACT_NODE_BUDGET,
             iterations: int = LOCAL_SEARCH_ITERATIONS) -> Solution:
    """Place `buffers` (the planner's input, in TFLM's order); `free` ones (default: all) get
    fixed offsets and TFLM's greedy places the rest around them. `heuristics=False` runs the
    exact search alone (from TFLM's greedy plan as the first incumbent)."""
    free = list(range(len(buffers))) if free is None else free
    bound = peak_load(buffers)
    search = _Search(buffers, free, time.monotonic() + time_limit_s, None, False)
    if free and search.best.size > bound:
        if heuristics:
            search.orderings()
            search.local_search(iterations, bound)
        search.exact(node_budget, bound)
    proven = search.best.size if search.best.size == bound else search.proven_optimum
    return Solution(search.best.size, search.best.offsets, proven, search.nodes,
                    search.time_limit_hit)


def _tensor_positions(graph: GraphMemory) -> list[int | None]:
    """For each of graph.buffers(): its tensor's position in the concatenated plan."""
    positions: list[int | None] = []
    flat = 0
    for tensors in graph.subgraphs:
        for tensor in tensors:
            if tensor.planned:
                positions.append(flat)
            flat += 1
    positions += [None] * (len(graph.buffers()) - len(positions))
    return positions


@dataclass
class _Candidate:
    size: int                 # TFLM's head for the primary kernels
    other: int                # and for the secondary ones (0 without)
    acceptable: bool          # not worse for the secondary kernels, when that is required
    offsets: list[int]

    @property
    def key(self) -> tuple:
        return (not self.acceptable, self.size, self.other)


class _Search:
    """Plans for `buffers`, of which `free` get offline offsets; TFLM places the others.

    `others` are the buffers of the same tensors with the secondary kernels' scratch (the
    tensors come first in both lists, in the same order).
    """

    def __init__(self, buffers: list[Buffer], free: list[int], deadline: float,
                 others: list[Buffer] | None, strict: bool):
        self.strict = strict
        self.buffers = buffers
        self.others = others
        self.free = free
        self.free_set = set(free)
        self.all_free = len(self.free_set) == len(buffers)
        self.deadline = deadline
        self.time_limit_hit = False
        self.nodes = 0
        self.proven_optimum: int | None = None
        self.exact_found_best = False
        self.other_greedy = greedy_plan(others).size if others is not None else 0
        self.other_floor = peak_load(others) if others is not None else 0
        greedy = greedy_plan(buffers)
        self.best = _Candidate(greedy.size, self.other_greedy, True, greedy.offsets)

    def out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.time_limit_hit = True
        return self.time_limit_hit

    def _emulate(self, buffers: list[Buffer], joint_offsets: Sequence[int]):
        with_plan = [Buffer(b.size, b.first, b.last, b.label,
                            joint_offsets[i] if i in self.free_set else ONLINE)
                     for i, b in enumerate(buffers)]
        return greedy_plan(with_plan)

    def evaluate(self, joint_offsets: Sequence[int]) -> _Candidate:
        """What TFLM makes of the free buffers at these offsets: its greedy places the rest."""
        if self.all_free and self.others is None:
            # Nothing is left to TFLM: the offsets are the plan as they are.
            size = max(o + b.size for o, b in zip(joint_offsets, self.buffers))
            return _Candidate(size, 0, True, list(joint_offsets))
        placement = self._emulate(self.buffers, joint_offsets)
        other = self._emulate(self.others, joint_offsets).size if self.others else 0
        acceptable = other <= self.other_greedy or not self.strict
        return _Candidate(placement.size, other, acceptable, placement.offsets)

    def consider(self, joint_offsets: Sequence[int], *, exact: bool = False) -> None:
        candidate = self.evaluate(joint_offsets)
        if candidate.key < self.best.key:
            self.best = candidate
            self.exact_found_best = exact

    def order_size(self, order: Sequence[int]) -> list[int]:
        return place_in_order(self.buffers, order).offsets

    def orderings(self) -> None:
        b = self.buffers
        n = range(len(b))
        conflict = [sum(o.size for o in b if o.overlaps_in_time(x)) for x in b]
        keys = [
            lambda i: (-b[i].size, b[i].first),
            lambda i: (-(b[i].last - b[i].first), -b[i].size),
            lambda i: (-b[i].size * (b[i].last - b[i].first + 1), i),
            lambda i: (b[i].first, -b[i].size),
            lambda i: (-conflict[i], -b[i].size),
            lambda i: (-b[i].size, -(b[i].last - b[i].first)),
        ]
        self.orders = [sorted(n, key=key) for key in keys]
        for order in self.orders:
            if self.out_of_time():
                return
            self.consider(self.order_size(order))

    def local_search(self, iterations: int, bound: int) -> None:
        """Seeded moves on the best ordering: swap two buffers or move one earlier.

        It stops at half the time left, so that the exact search gets its turn."""
        rng = random.Random(0)
        stop = time.monotonic() + (self.deadline - time.monotonic()) / 2
        scored = [(self.evaluate(self.order_size(o)).key, o) for o in self.orders]
        current_key, current = min(scored, key=lambda item: item[0])
        if len(current) < 2:
            return
        for _ in range(iterations):
            if (self.best.acceptable and self.best.size <= bound
                    and self.best.other <= self.other_floor) or self.out_of_time():
                return
            if time.monotonic() > stop:
                return
            trial = list(current)
            i, j = rng.sample(range(len(trial)), 2)
            if rng.random() < 0.5:
                trial[i], trial[j] = trial[j], trial[i]
            else:
                trial.insert(min(i, j), trial.pop(max(i, j)))
            joint = self.order_size(trial)
            candidate = self.evaluate(joint)
            if candidate.key <= current_key:
                current_key, current = candidate.key, trial
                if candidate.key < self.best.key:
                    self.best = candidate
                    self.exact_found_best = False

    def exact(self, node_budget: int, bound: int) -> None:
        solver = _BranchAndBound(self.buffers, bound, self, node_budget)
        finished = solver.run()
        self.nodes = solver.nodes
        if finished:
            self.proven_optimum = solver.best_joint


class _BranchAndBound:
    """Exact search over placement sequences with non-decreasing offsets (see module doc)."""

    def __init__(self, buffers: list[Buffer], bound: int, search: _Search, node_budget: int):
        self.b = buffers
        self.n = len(buffers)
        self.search = search
        self.bound = bound
        self.node_budget = node_budget
        self.nodes = 0
        # The incumbent for the joint problem is the joint size of the best plan so far.
        self.best_joint = min(search.best.size, place_in_order(buffers, range(self.n)).size)
        self.times = sorted({t for x in buffers for t in (x.first, x.last)})
        span = {t: k for k, t in enumerate(self.times)}
        self.live = [list(range(span[x.first], span[x.last] + 1)) for x in buffers]
        # Identical buffers are interchangeable: only the first unplaced one is branched on.
        seen: dict[tuple, int] = {}
        self.twin_of = []
        for i, x in enumerate(buffers):
            key = (x.size, x.first, x.last)
            self.twin_of.append(seen.setdefault(key, i))
        self.offsets = [ONLINE] * self.n
        self.aborted = False

    def run(self) -> bool:
        if self.best_joint <= self.bound:
            return True
        self._dfs(0, -1, 0, 0)
        return not self.aborted

    def _fit(self, i: int) -> int:
        wanted = self.b[i]
        blocks = sorted((self.offsets[j], self.offsets[j] + self.b[j].size)
                        for j in range(self.n) if self.offsets[j] != ONLINE
                        and self.b[j].overlaps_in_time(wanted))
        candidate = 0
        for start, end in blocks:
            if start - candidate >= wanted.size:
                break
            candidate = max(candidate, end)
        return candidate

    def _lower(self, level: int, height: int) -> int:
        load = [0] * len(self.times)
        for j in range(self.n):
            offset = self.offsets[j]
            if offset == ONLINE:
                extra = self.b[j].size
            else:
                extra = max(0, offset + self.b[j].size - level)
            if extra:
                for k in self.live[j]:
                    load[k] += extra
        return max(height, level + max(load, default=0))

    def _dfs(self, level: int, last: int, height: int, placed: int) -> None:
        if self.aborted:
            return
        self.nodes += 1
        if self.nodes > self.node_budget or self.search.out_of_time():
            self.aborted = True
            return
        if placed == self.n:
            if height < self.best_joint:
                self.best_joint = height
                self.search.consider(self.offsets, exact=True)
            return
        if self._lower(level, height) >= self.best_joint:
            return
        choices = []
        for i in range(self.n):
            if self.offsets[i] != ONLINE:
                continue
            twin = self.twin_of[i]
            if twin != i and self.offsets[twin] == ONLINE:
                continue
            x = self._fit(i)
            if x + self.b[i].size <= level:
                return      # a gap below the level no later buffer can close: not canonical
            if x > level or (x == level and i > last):
                choices.append((x, -self.b[i].size, i))
        for x, _, i in sorted(choices):
            top = max(height, x + self.b[i].size)
            if top >= self.best_joint:
                continue
            self.offsets[i] = x
            self._dfs(x, i, top, placed + 1)
            self.offsets[i] = ONLINE
            if self.best_joint <= self.bound or self.aborted:
                return
