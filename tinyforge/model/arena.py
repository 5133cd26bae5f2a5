"""Sizing the tensor arena by measurement instead of "by experimentation".

The host TFLM runtime tells how much it allocated (RecordingMicroAllocator), but that total
is not a safe arena: planning needs temporaries on top (measured: sine 1,536 reported vs
1,936 needed). So the arena is the smallest size that actually allocates and invokes,
found by binary search in 16-byte steps, each probe in a forked child because too-small
arenas can segfault the runtime.

The host runtime is the tflite-micro wheel, or the board's own TFLM compiled for the host
when a tree is given (reference.py). Either is 64-bit (8-byte pointers), so it over-estimates
the pointer-heavy parts of a 32-bit device's arena, but the device's CMSIS-NN kernels ask for
scratch buffers the wheel's reference kernels do not, and even the board's own CMSIS-NN asks
for less on the host, where it takes its plain-C path (docs/arena.md). `HOST_MARGIN` covers
that and, for the wheel, the difference of TFLM versions. A measurement on the emulated
Cortex-M4 (qemu-m4) replaces this estimate when it is available.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from .. import units
from ..errors import HostRuntimeError
from . import host_runtime

log = logging.getLogger(__name__)

ALIGNMENT = 16
# Margin on the host figure: 10% plus 1 KiB (see the module docstring and docs/arena.md).
HOST_MARGIN_FRACTION = 0.10
HOST_MARGIN_BYTES = 1024
# Margin on a figure measured on the emulated Cortex-M4 with the board's own TFLM library and
# kernels: only for what emulation cannot see (the real board's compiler, alignment luck).
DEVICE_MARGIN_FRACTION = 0.02
DEVICE_MARGIN_BYTES = 64


@dataclass
class ArenaMeasurement:
    minimum_bytes: int        # smallest arena that allocated and invoked
    reported_bytes: int       # what TFLM's recording allocator reported at a generous size
    probes: int
    seconds: float
    source: str               # "host" (a 64-bit host TFLM) or "device" (qemu-m4)
    runtime: str = ""         # for "host": which host TFLM (reference.HostRuntime.label)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ArenaPlan:
    """The arena a firmware is built with, and where that number came from."""

    arena_bytes: int
    margin_bytes: int
    used: ArenaMeasurement
    host: ArenaMeasurement | None
    device: ArenaMeasurement | None
    note: str

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "margin_bytes": self.margin_bytes,
                "source": self.used.source, "note": self.note,
                "host": self.host.to_json() if self.host else None,
                "device": self.device.to_json() if self.device else None}

    def to_json_stable(self) -> dict:
        """`to_json()` without timings: what a generated project may record."""
        data = self.to_json()
        for key in ("host", "device"):
            if data[key]:
                data[key] = {k: v for k, v in data[key].items() if k != "seconds"}
        return data


def align(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def host_margin(minimum: int) -> int:
    return align(int(minimum * HOST_MARGIN_FRACTION) + HOST_MARGIN_BYTES)


def device_margin(minimum: int) -> int:
    return align(int(minimum * DEVICE_MARGIN_FRACTION) + DEVICE_MARGIN_BYTES)


def summary_note(note: str, host_runtime: str | None) -> str:
    """A plan's `note` without the host runtime's name, for summaries that name the runtime
    on a line of their own (each fact once)."""
    return note.replace(f"host TFLM ({host_runtime or _WHEEL}) ", "host TFLM ", 1)


_WHEEL = "tflite-micro wheel"


def plan_from_host(host: ArenaMeasurement) -> ArenaPlan:
    margin = host_margin(host.minimum_bytes)
    return ArenaPlan(
        arena_bytes=align(host.minimum_bytes + margin), margin_bytes=margin, used=host,
        host=host, device=None,
        note=(f"host TFLM ({host.runtime or _WHEEL}) minimum "
              f"{units.size(host.minimum_bytes)} + margin {units.size(margin)} "
              f"({HOST_MARGIN_FRACTION:.0%} + {units.size(HOST_MARGIN_BYTES)}); the 64-bit "
              "host over-estimates a 32-bit device"))


def plan_from_device(device: ArenaMeasurement, host: ArenaMeasurement | None) -> ArenaPlan:
    margin = device_margin(device.minimum_bytes)
    return ArenaPlan(
        arena_bytes=align(device.minimum_bytes + margin), margin_bytes=margin, used=device,
        host=host, device=device,
        note=(f"measured on the emulated Cortex-M4 (qemu-m4): minimum "
              f"{units.size(device.minimum_bytes)} + margin {units.size(margin)} "
              f"({DEVICE_MARGIN_FRACTION:.0%} + {units.size(DEVICE_MARGIN_BYTES)})"))


# TFLM's LinearMemoryPlanner holds 1,024 offsets (size_t) and a few counters; a debug build
# puts it in the arena's persistent tail (8 bytes per offset covers a 64-bit host too).
LINEAR_PLANNER_BYTES = 1024 * 8 + 64


def preserving_all_tensors(plan: ArenaPlan, model: bytes, model_name: str) -> ArenaPlan:
    """The arena of a debug build (`build --debug-layers`), whose planner gives every tensor
    and scratch buffer a place of its own so that all of them can be read after an inference:
    the plan's arena plus every planned buffer laid end to end plus the planner (an upper
    bound: the plan's own head is counted twice)."""
    from . import memory
    from .memory_report import BOARD_KERNELS

    graph = memory.analyze(model, model_name, kernels=BOARD_KERNELS)
    linear = sum(buffer.size for buffer in graph.buffers())
    extra = align(linear + LINEAR_PLANNER_BYTES)
    return replace(plan, arena_bytes=plan.arena_bytes + extra,
                   note=f"{plan.note}; + {units.size(extra)} for the debug build's layer "
                        f"report (every tensor kept: {units.size(linear)} of buffers and "
                        f"the linear planner)")


def measure_on_host(model: bytes, model_name: str, runtime=None) -> ArenaMeasurement:
    """Binary-search the smallest arena the host TFLM runtime can run `model` with.

    `runtime` is a `reference.HostRuntime` (the host build of the board's TFLM tree, or the
    tflite-micro wheel when None).
    """
    if runtime is None:
        from .reference import WheelRuntime
        runtime = WheelRuntime()
    started = time.monotonic()
    reported = runtime.reported_arena_total(model, host_runtime.generous_arena(len(model)))
    if reported is None:
        runtime.dry_run(model, model_name)  # raises with TFLM's own explanation
        raise HostRuntimeError(f"the host TFLM runtime did not report an arena for {model_name}",
                               hint="check the tflite-micro package (`tinyforge doctor`); "
                                    "--arena device measures on the emulated Cortex-M4")
    probes = 0

    def runs(size: int) -> bool:
        nonlocal probes
        probes += 1
        return runtime.probe(model, size).ok

    ceiling = host_runtime.generous_arena(len(model))
    minimum = smallest_fitting(runs, start=reported, ceiling=ceiling)
    if minimum is None:
        raise HostRuntimeError(
            f"the model does not run in host TFLM even with a {units.size(ceiling)} arena",
            hint="make the model's activations smaller (narrower layers, a smaller input)")
    measurement = ArenaMeasurement(minimum_bytes=minimum, reported_bytes=reported,
                                   probes=probes, seconds=time.monotonic() - started,
                                   source="host", runtime=runtime.label)
    log.debug("arena: reported %d, minimum %d after %d probes in %.2f s", reported, minimum,
              probes, measurement.seconds)
    return measurement


def smallest_fitting(fits: Callable[[int], bool], *, start: int, ceiling: int) -> int | None:
    """The smallest multiple of 16 bytes for which `fits(size)` holds, or None up to `ceiling`.

    `start` is TFLM's own report of what it used: the minimum is usually that or a little
    more, so the search grows from there when it does not fit, and otherwise checks the size
    just below it first (one probe when the report is exact) before bisecting down.
    Assumes that a size that fits stays fitting when it grows.
    """
    size = align(start)
    if fits(size):
        if size <= ALIGNMENT or not fits(size - ALIGNMENT):
            return size
        low, high = 0, size - ALIGNMENT          # 0 never fits
    else:
        # Small steps first (the minimum is usually within a quarter of the report), then
        # doubling ones, so a report that is far off still costs only a few probes.
        low, step = size, max(256, size // 8)
        while True:
            if size >= ceiling:
                return None
            size = min(ceiling, align(size + step))
            step *= 2
            if fits(size):
                break
            low = size
        high = size
    while high - low > ALIGNMENT:
        middle = align((low + high) // 2)
        if middle >= high:
            middle = high - ALIGNMENT
        if fits(middle):
            high = middle
        else:
            low = middle
    return high
