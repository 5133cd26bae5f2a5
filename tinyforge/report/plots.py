"""The report's plots, drawn with matplotlib's Agg canvas into PNG bytes.

No pyplot: figures are made with `matplotlib.figure.Figure` on their own canvas, so nothing
global (backend, open figures) changes, and matplotlib is imported only when a report is
made. PNGs carry no timestamp or software tag, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
from typing import Any

from .data import Lifetimes

DPI = 120
# One colour per breakdown category (the keys of toolchain.linkmap.CATEGORIES).
CATEGORY_COLOURS = {
    "model": "#4e79a7", "arena": "#f28e2b", "tflm_kernels": "#e15759", "tflm_runtime": "#ff9d9a",
    "protocol": "#76b7b2", "sketch": "#59a14f", "board": "#8cd17d", "libc": "#b07aa1",
    "libm": "#d4a6c8", "libgcc": "#9d7660", "libstdcxx": "#d7b5a6", "padding": "#bab0ac",
    "other": "#79706e", "not_counted": "#ffffff",
}
_INK = "#333333"
_GRID = "#dddddd"
_OP_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
               "#ff9da7", "#9c755f", "#bab0ac"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style(axes) -> None:
    axes.spines[["top", "right"]].set_visible(False)
    axes.tick_params(colors=_INK, labelsize=8)
    axes.grid(True, axis="x", color=_GRID, linewidth=0.6)
    axes.set_axisbelow(True)


def kib(value: float, _position=None) -> str:
    if abs(value) >= 1024 and value % 1024 == 0:
        return f"{value / 1024:,.0f} KiB"
    return f"{value:,.0f} B"


def _byte_ticks(axes, top: float, most: int = 8) -> None:
    """Ticks at round numbers of KiB (or bytes for small ranges), at most `most` of them."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    steps = [1, 2, 5, 10, 20, 50, 100, 200, 500] + [1024 * k for k in
                                                   (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)]
    step = next((s for s in steps if top / s <= most), steps[-1])
    axes.xaxis.set_major_locator(MultipleLocator(step))
    axes.xaxis.set_major_formatter(FuncFormatter(kib))


def lifetimes_png(lifetimes: Lifetimes, op_names: list[str] | None = None) -> bytes:
    """Tensors over the graph (arena offset × operator) and the arena occupancy per operator,
    with the lower bound and the planned arena marked."""
    from matplotlib.ticker import FuncFormatter

    figure = _figure(9.0, 6.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    planned = all(t.offset is not None for t in lifetimes.tensors)
    for number, tensor in enumerate(lifetimes.tensors):
        colour = _OP_COLOURS[number % len(_OP_COLOURS)]
        y = tensor.offset if planned else number
        height = tensor.size if planned else 0.8
        top.add_patch(_rectangle(tensor.first_op - 0.45, y, tensor.last_op - tensor.first_op
                                 + 0.9, height, colour))
        if planned and tensor.size >= 0.04 * max(lifetimes.lower_bound, 1):
            top.text((tensor.first_op + tensor.last_op) / 2, y + tensor.size / 2, tensor.name,
                     ha="center", va="center", fontsize=7, color="white", clip_on=True)
    count = lifetimes.operator_count
    top.set_xlim(-0.6, count - 0.4)
    if planned:
        extent = max((t.offset + t.size for t in lifetimes.tensors), default=1)
        top.set_ylim(0, max(extent, lifetimes.planned_bytes or 0) * 1.05)
        top.yaxis.set_major_formatter(FuncFormatter(kib))
        top.set_ylabel("arena offset", fontsize=9, color=_INK)
        if lifetimes.planned_bytes:
            top.axhline(lifetimes.planned_bytes, color=_INK, linestyle="--", linewidth=1)
            top.text(count - 0.45, lifetimes.planned_bytes, " planned arena", fontsize=8,
                     va="bottom", ha="right", color=_INK)
    else:
        top.set_ylim(-0.5, len(lifetimes.tensors) + 0.3)
        top.set_yticks(range(len(lifetimes.tensors)),
                       [t.name for t in lifetimes.tensors], fontsize=7)
        top.set_ylabel("tensor", fontsize=9, color=_INK)
    top.set_title("Tensor lifetimes", loc="left", fontsize=11, color=_INK)
    _style(top)

    occupancy = lifetimes.occupancy()
    bottom.bar(range(count), occupancy, width=0.8, color="#4e79a7", label="alive tensors")
    bottom.axhline(lifetimes.lower_bound, color="#e15759", linewidth=1.5,
                   label=f"lower bound {lifetimes.lower_bound:,} B")
    if lifetimes.planned_bytes:
        bottom.axhline(lifetimes.planned_bytes, color=_INK, linestyle="--", linewidth=1,
                       label=f"planned arena {lifetimes.planned_bytes:,} B")
    bottom.yaxis.set_major_formatter(FuncFormatter(kib))
    bottom.set_ylabel("bytes alive", fontsize=9, color=_INK)
    bottom.set_xlabel(lifetimes.step_label, fontsize=9, color=_INK)
    labels = [f"{i} {op_names[i]}" if op_names and i < len(op_names) else str(i)
              for i in range(count)]
    bottom.set_xticks(range(count), labels, fontsize=7, rotation=35 if count > 6 else 0,
                      ha="right" if count > 6 else "center", rotation_mode="anchor")
    bottom.legend(fontsize=8, frameon=False, loc="upper right")
    bottom.set_title("Arena occupancy", loc="left", fontsize=11, color=_INK)
    _style(bottom)
    return _png(figure)


def _rectangle(x, y, width, height, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, facecolor=colour, edgecolor="white", linewidth=0.8)


def layers_png(rows: list[dict[str, Any]]) -> bytes:
    """MACs per operator and, when measured, instructions per operator."""
    from matplotlib.ticker import FuncFormatter

    has_instructions = any(r.get("instructions") is not None for r in rows)
    height = max(2.4, 0.32 * len(rows) + 1.2)
    figure = _figure(9.0, height)
    panels = figure.subplots(1, 2 if has_instructions else 1, sharey=True, squeeze=False)[0]
    labels = [f"#{r['index']} {r['op']}" for r in rows]
    positions = list(range(len(rows)))
    series = [("macs", "MACs (host)", "#4e79a7")]
    if has_instructions:
        series.append(("instructions", "instructions (emulated Cortex-M4)", "#f28e2b"))
    for axes, (key, title, colour) in zip(panels, series):
        values = [r.get(key) or 0 for r in rows]
        axes.barh(positions, values, color=colour, height=0.7)
        total = sum(values)
        for y, value in zip(positions, values):
            if value and total:
                axes.text(value, y, f" {value:,} ({100 * value / total:.0f}%)", va="center",
                          fontsize=7, color=_INK)
        axes.set_xlim(0, max(values + [1]) * 1.35)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
        axes.set_title(title, loc="left", fontsize=10, color=_INK)
        _style(axes)
    panels[0].set_yticks(positions, labels, fontsize=8)
    panels[0].invert_yaxis()
    return _png(figure)


def memory_png(breakdown: dict[str, Any], board: dict[str, Any]) -> bytes:
    """Flash and RAM, stacked by category, against the board's limits; below, each region's
    categories by size (a firmware far below its limits is a sliver in the top bars)."""
    labels = breakdown.get("categories", {})
    figure = _figure(9.0, 6.4)
    panels = figure.subplot_mosaic([["flash", "flash"], ["ram", "ram"],
                                    ["flash_parts", "ram_parts"]],
                                   height_ratios=[1, 1, 2.8])
    limits = {"flash": board.get("flash_bytes"), "ram": board.get("ram_bytes")}
    for region in ("flash", "ram"):
        _against_limit(panels[region], region, breakdown, limits[region], board.get("id"))
        _by_category(panels[f"{region}_parts"], breakdown[region]["categories"], labels,
                     "Flash" if region == "flash" else "RAM")
    return _png(figure)


def _against_limit(axes, region: str, breakdown: dict[str, Any], limit: int | None,
                   board_id: str | None) -> None:
    data = breakdown[region]
    left = 0
    for key, size in data["categories"].items():
        if size > 0:
            axes.barh(0, size, left=left, color=CATEGORY_COLOURS.get(key, "#999999"),
                      edgecolor="white", linewidth=0.6, height=0.6)
            left += size
    if region == "ram":
        for name, size in breakdown.get("ram_not_counted", {}).items():
            axes.barh(0, size, left=left, color="white", edgecolor="#999999", hatch="///",
                      height=0.6, linewidth=0.6)
            axes.text(left + size, 0, f" {name} {size:,} B (reserved, not in PlatformIO's RAM)",
                      fontsize=7, va="center", color="#777777")
            left += size
    if limit:
        axes.axvline(limit, color="#e15759", linewidth=1.5)
        axes.text(limit, 0.42, f" {board_id or 'board'} limit {limit:,} B", fontsize=8,
                  color="#e15759", ha="right", va="bottom")
    right = max(limit or 0, left) * 1.02
    axes.set_xlim(0, right)
    used = data["total"]
    share = f" ({100 * used / limit:.1f}% of {limit:,} B)" if limit else ""
    axes.set_title(f"{'Flash' if region == 'flash' else 'RAM'}: {used:,} B used{share}",
                   loc="left", fontsize=10, color=_INK)
    axes.set_yticks([])
    axes.set_ylim(-0.5, 0.75)
    _byte_ticks(axes, right)
    _style(axes)
    axes.spines["left"].set_visible(False)


def _by_category(axes, categories: dict[str, int], labels: dict[str, str], title: str) -> None:
    parts = sorted(((size, key) for key, size in categories.items() if size > 0), reverse=True)
    positions = list(range(len(parts)))
    axes.barh(positions, [size for size, _ in parts], height=0.7,
              color=[CATEGORY_COLOURS.get(key, "#999999") for _, key in parts])
    top = max([size for size, _ in parts] + [1])
    for y, (size, _) in enumerate(parts):
        axes.text(size, y, f" {size:,}", va="center", fontsize=7, color=_INK)
    axes.set_yticks(positions, [labels.get(key, key) for _, key in parts], fontsize=7)
    axes.set_ylim(len(parts) - 0.4, -0.6)
    axes.set_xlim(0, top * 1.3)
    _byte_ticks(axes, top * 1.3, most=4)
    axes.set_title(f"{title} by category (bytes)", loc="left", fontsize=10, color=_INK)
    _style(axes)


def validation_png(validation: dict[str, Any]) -> bytes:
    """Per output: how many samples differ between device and host, and by how much."""
    per_output = output_summary(validation)
    outputs = sorted(per_output)
    figure = _figure(9.0, 1.5 + 0.45 * len(outputs))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = list(range(len(outputs)))
    samples = int(validation.get("samples") or 0)
    differing = [per_output[o]["samples_differing"] for o in outputs]
    same = [max(samples - d, 0) for d in differing]
    left.barh(positions, same, height=0.5, color="#59a14f", label="identical")
    left.barh(positions, differing, left=same, height=0.5, color="#e15759", label="differ")
    for y, (ok, bad) in enumerate(zip(same, differing)):
        left.text(ok + bad, y, f" {ok} / {ok + bad}", va="center", fontsize=8, color=_INK)
    left.set_xlim(0, max(samples, 1) * 1.25)
    left.set_title(f"Identical samples per output ({samples} sent)", loc="left", fontsize=10,
                   color=_INK)
    left.set_yticks(positions, [f"output {o}" for o in outputs], fontsize=8)
    left.set_ylim(len(outputs) - 0.4, -0.6)
    _style(left)
    lsb = [per_output[o]["max_lsb"] for o in outputs]
    allowed = validation.get("max_lsb_allowed")
    right.barh(positions, lsb, height=0.5, color="#f28e2b")
    for y, value in enumerate(lsb):
        right.text(value, y, f" {value} LSB", va="center", fontsize=8, color=_INK)
    if allowed is not None:
        right.axvline(allowed, color="#e15759", linewidth=1.2, linestyle="--")
    limit = f" (allowed: {allowed} LSB, dashed)" if allowed is not None else ""
    right.set_xlim(0, max(lsb + [allowed or 0, 1]) * 1.4)
    right.set_title(f"Largest difference{limit}", loc="left", fontsize=10, color=_INK)
    _style(right)
    return _png(figure)


def output_summary(validation: dict[str, Any]) -> dict[int, dict[str, int]]:
    """{output index: samples_differing, max_lsb} from a validate report.

    A report that gives per-output figures ("outputs": [{"index", "samples_differing",
    "max_lsb"}]) is used as is; otherwise they are derived from its "mismatches" (the first
    few differing samples), and outputs without a mismatch count as identical.
    """
    given = validation.get("outputs")
    if isinstance(given, list) and given and all(isinstance(o, dict) for o in given):
        return {int(o.get("index", i)): {"samples_differing": int(o.get("samples_differing", 0)),
                                         "max_lsb": int(o.get("max_lsb") or 0)}
                for i, o in enumerate(given)}
    summary: dict[int, dict[str, int]] = {}
    for mismatch in validation.get("mismatches") or []:
        output = int(mismatch.get("output", 0))
        entry = summary.setdefault(output, {"samples_differing": 0, "max_lsb": 0})
        entry["samples_differing"] += 1
        device, host = mismatch.get("device") or [], mismatch.get("host") or []
        if all(isinstance(v, int) for v in list(device) + list(host)):
            entry["max_lsb"] = max([entry["max_lsb"]] + [abs(d - h) for d, h in zip(device, host)])
    for output in range(int(validation.get("output_count") or 1)):
        summary.setdefault(output, {"samples_differing": 0, "max_lsb": 0})
    return summary
