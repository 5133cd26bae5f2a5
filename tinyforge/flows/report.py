"""`tinyforge report` as a library: one HTML page (and PNGs) about the last build.

It takes what exists for the last build: its model (MACs per layer), its firmware's linker
map (the flash/RAM breakdown, checked against the ELF), the last saved `validate` report,
and, when given, per-operator instruction counts and the graph's tensor lifetimes. What is
missing is said on the page.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..board import profiles
from ..board.profiles import Board
from ..errors import InputError, ProjectError, TinyforgeError, ToolMissingError
from ..project import cycle_ratios, last_build, writer
from ..report.data import Lifetimes, ReportData, TensorLifetime

log = logging.getLogger(__name__)

# Where the report goes without --output: a folder of the project.
DEFAULT_DIR = "report"
HTML_NAME = "report.html"
DEFAULT_DECISIONS_PER_S = 1.0
# qemu-m4 emulates the Nano 33 BLE's limits; its latency and energy are estimated for that
# board, whose profile holds the nRF52840's figures.
EMULATED_TARGET = "nano33ble"


@dataclass
class ReportResult:
    html: Path
    pngs: list[Path]
    sections: dict[str, str]
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"html": str(self.html), "pngs": [str(p) for p in self.pngs],
                "sections": self.sections}


def report_last_build(*, project_dir: Path | None = None, board_id: str | None = None,
                      output_dir: Path | None = None,
                      decisions_per_s: float = DEFAULT_DECISIONS_PER_S,
                      instructions: dict[int, int] | None = None,
                      lifetimes: Lifetimes | None = None) -> ReportResult:
    """Write the report of the last build; returns where it went and what each section has."""
    if not math.isfinite(decisions_per_s) or decisions_per_s <= 0:
        raise InputError(f"the decision rate must be positive, not {decisions_per_s}",
                         hint="give decisions per second, e.g. --rate 1")
    build = last_build.find(project_dir, board_id)
    data = collect(build, decisions_per_s=decisions_per_s, instructions=instructions,
                   lifetimes=lifetimes)
    return write(data, Path(output_dir) if output_dir else build.project_dir / DEFAULT_DIR)


def collect(build: last_build.LastBuild, *, decisions_per_s: float = DEFAULT_DECISIONS_PER_S,
            instructions: dict[int, int] | None = None,
            lifetimes: Lifetimes | None = None) -> ReportData:
    """Everything the report shows about one build, with the reason for each missing part."""
    board = build.board
    model = build.manifest.get("model") or {}
    data = ReportData(
        title=f"{model.get('name', 'firmware without a model')} on {board.name}",
        board={"id": board.id, "name": board.name, "flash_bytes": board.flash_bytes,
               "ram_bytes": board.ram_bytes},
        model={k: model.get(k) for k in ("name", "sha256", "bytes")} if model else None)
    if instructions is None:
        from .profile import load_saved
        # The last `tinyforge profile` run of this build's model, if there was one.
        instructions = load_saved(build.project_dir, build.model_sha256)
    data.cost = _cost(build, data, decisions_per_s, instructions)
    _breakdown(build, data)
    data.validation, why = last_build.load_validation(build)
    if data.validation is None:
        data.missing["validation"] = why
    data.lifetimes = lifetimes if lifetimes is not None else _lifetimes(build, data)
    return data


def _lifetimes(build: last_build.LastBuild, data: ReportData) -> Lifetimes | None:
    """The arena tensors of the build's model as the board's TFLM lays them out (with the
    model's offline plan when it carries one), the lower bound and the plan's figures."""
    from ..model.reader import read_model_file

    path = build.model_path
    if path is None or not path.is_file():
        data.missing["lifetimes"] = (f"the build's model file {path} is not there" if path else
                                     "this firmware has no model (the self-test firmware)")
        return None
    model_bytes, _ = read_model_file(path)
    try:
        return lifetimes_of(model_bytes, path.name)
    except TinyforgeError as exc:
        data.missing["lifetimes"] = f"the model's graph could not be analysed: {exc.message}"
        return None


def lifetimes_of(model: bytes, name: str) -> Lifetimes:
    """Lifetimes, occupancy and plan figures of a model for the board's kernels (CMSIS-NN)."""
    from ..model import memory, memory_embed, memory_planner, memory_report

    graph = memory.analyze(model, name, kernels=memory_report.BOARD_KERNELS)
    existing = memory_embed.read_offline_plan(model, name)
    offline = existing is not None and len(existing.offsets) == graph.tensor_count
    buffers = (memory_planner.buffers_as_read(graph, existing.offsets, "board") if offline
               else graph.buffers())
    placement = memory.greedy_plan(buffers)
    # The planner again on the same graph (an embedded plan does not change it): its figures
    # and the time it takes, which the project's manifest does not record.
    planned = memory_report.plan_model(model, name)
    single = len(graph.subgraphs) == 1
    names = {f"s{t.subgraph}t{t.index}": t.name for t in graph.planned_tensors}

    def step(scope: int) -> int:
        # Scope 0 holds the inputs before the first operator runs; scope k is operator k-1.
        return max(scope - 1, 0) if single else max(scope, 0)

    tensors = []
    for buffer, offset in zip(buffers, placement.offsets):
        if buffer.label.startswith("scratch"):
            request = graph.scratch[int(buffer.label[len("scratch"):])]
            label = f"scratch of {request.op} #{request.operator}"
        else:
            label = _short(names.get(buffer.label, buffer.label))
        tensors.append(TensorLifetime(label, step(buffer.first), step(buffer.last),
                                      buffer.size, offset))
    return Lifetimes(
        tensors, operator_count=len(graph.operators[0]) if single else graph.scopes,
        lower_bound=graph.lower_bound(), planned_bytes=placement.size,
        greedy_bytes=planned.greedy_bytes,
        offline_bytes=planned.planned_bytes if planned.improves else None,
        plan_seconds=planned.seconds, planner=memory_report.plan_in_model(model, name)["planner"],
        step_label="operator" if single else "allocation scope")


def _short(name: str, limit: int = 32) -> str:
    """A tensor's name for a plot: TensorFlow's fused names keep their last part."""
    name = name.split(";")[-1] or name
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _cost(build, data: ReportData, decisions_per_s: float,
          instructions: dict[int, int] | None) -> dict[str, Any] | None:
    from ..model import cost, macs
    from ..model.reader import read_model_file

    path = build.model_path
    if path is None or not path.is_file():
        data.missing["layers"] = data.missing["cost"] = (
            f"the build's model file {path} is not there" if path else
            "this firmware has no model (the self-test firmware)")
        return None
    model_bytes, _ = read_model_file(path)
    layers = macs.layer_costs(model_bytes, path.name)
    target = _estimate_board(build.board)
    ratio = cycle_ratios.lookup(target.id, build.model_sha256) if target else None
    return cost.summary(
        layers, target or build.board, instructions=instructions,
        power=cost.PowerFigures.from_board(target) if target else None,
        decisions_per_s=decisions_per_s,
        measured_cpi=ratio.cycles_per_instruction if ratio else None,
        measured_basis=f"measured on {ratio.board}: {ratio.cycles:,} cycles for "
                       f"{ratio.instructions:,} instructions ({ratio.source})" if ratio else "")


def _estimate_board(board: Board) -> Board | None:
    if board.power:
        return board
    if board.emulated:
        return profiles.load_board(EMULATED_TARGET)
    return None


def _breakdown(build, data: ReportData) -> None:
    from ..toolchain import linkmap

    map_path = build.elf.with_suffix(".map")
    if not map_path.is_file():
        data.missing["memory"] = (f"no linker map at {map_path}: build the firmware first "
                                  "(`tinyforge build`); the nano33ble platform writes one only "
                                  "with `-Wl,-Map` in its build flags")
        return
    parsed = linkmap.read_map(map_path)
    result = linkmap.breakdown(parsed, build.board.platformio["platform"],
                               tflm_library=build.board.tflm["library"], map_path=str(map_path))
    data.breakdown = result.to_json()
    if build.elf.is_file():
        try:
            data.breakdown_check = linkmap.check_against_elf(
                result, linkmap.elf_section_sizes(build.elf))
        except ToolMissingError as exc:
            log.warning("not checked against the ELF: %s", exc.message)


def write(data: ReportData, output_dir: Path) -> ReportResult:
    """Render `data` and write the page and its PNGs into `output_dir`."""
    from ..report import page

    rendered = page.render(data)
    output_dir = Path(output_dir)
    pngs = [output_dir / name for name in sorted(rendered.pngs)]
    html = output_dir / HTML_NAME
    try:
        for path in pngs:
            writer.atomic_write_bytes(path, rendered.pngs[path.name])
        # A plot whose data went missing since the last report must not linger beside it.
        for name in set(page.PNG_NAMES.values()) - set(rendered.pngs):
            (output_dir / name).unlink(missing_ok=True)
        writer.atomic_write_text(html, rendered.html)
    except OSError as exc:
        raise ProjectError(f"cannot write the report in {output_dir}: {exc.strerror or exc}",
                           hint="choose a writable --output folder") from None
    return ReportResult(html, pngs, rendered.sections)
