"""One self-contained HTML page: inline CSS, plots as embedded PNGs, no scripts, no network.

Every string that comes from a model, a map file or a report is escaped. A section whose data
is missing stays on the page and says why.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from typing import Any

from .. import __version__, units
from . import plots
from .data import ReportData

SECTIONS = ("lifetimes", "layers", "cost", "memory", "validation")
PNG_NAMES = {"lifetimes": "lifetimes.png", "layers": "layers.png", "memory": "memory.png",
             "validation": "validation.png"}


@dataclass
class RenderedReport:
    html: str
    pngs: dict[str, bytes]            # file name -> PNG bytes
    sections: dict[str, str]          # section -> "ok" or why it is missing


def render(data: ReportData) -> RenderedReport:
    """The page and its PNGs (the same plots as files)."""
    pngs: dict[str, bytes] = {}
    sections: dict[str, str] = {}
    parts = [_header(data), _summary(data)]
    for name, builder in (("lifetimes", _lifetimes), ("layers", _layers), ("cost", _cost),
                          ("memory", _memory), ("validation", _validation)):
        body, png = builder(data)
        if body is None:
            reason = data.missing.get(name) or _DEFAULT_MISSING.get(name, "no data")
            sections[name] = f"missing: {reason}"
            parts.append(_missing(name, reason))
            continue
        sections[name] = "ok"
        if png is not None:
            pngs[PNG_NAMES[name]] = png
        parts.append(body)
    html = _PAGE.format(title=escape(data.title), style=_STYLE, body="\n".join(parts),
                        version=escape(__version__))
    return RenderedReport(html, pngs, sections)


_DEFAULT_MISSING = {"cost": "latency and energy need the per-operator instruction counts of "
                            "the emulated Cortex-M4 (`tinyforge profile`)"}
_TITLES = {"lifetimes": "Tensor lifetimes and arena occupancy", "layers": "Per-layer cost",
           "cost": "Latency and energy on the nRF52840", "memory": "Flash and RAM breakdown",
           "validation": "Last validate run: device against host"}


def _section(name: str, inner: str) -> str:
    return f'<section id="{name}"><h2>{escape(_TITLES[name])}</h2>\n{inner}\n</section>'


def _missing(name: str, reason: str) -> str:
    return _section(name, f'<p class="missing">Not available: {escape(reason)}</p>')


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = ("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>"
            if any(headers) else "")
    body = "\n".join("<tr>" + "".join(
        f'<td class="num">{escape(_cell(v))}</td>' if i in numeric else f"<td>{escape(_cell(v))}</td>"
        for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>\n{body}\n</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _shape(shape: list[int]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


# --- header and summary cards --------------------------------------------------------------

def _header(data: ReportData) -> str:
    model = data.model or {}
    facts = [f"board <b>{escape(str(data.board.get('name', data.board.get('id', '?'))))}</b>"]
    if model:
        facts.append(f"model <b>{escape(str(model.get('name', '?')))}</b> "
                     f"({_cell(model.get('bytes'))} B, sha256 "
                     f"<code>{escape(str(model.get('sha256', ''))[:12])}…</code>)")
    return (f"<header><h1>{escape(data.title)}</h1><p>{' · '.join(facts)}</p></header>")


def _summary(data: ReportData) -> str:
    cards = []
    if data.breakdown:
        for region, limit_key, label in (("flash", "flash_bytes", "Flash"),
                                         ("ram", "ram_bytes", "RAM")):
            used, limit = data.breakdown[region]["total"], data.board.get(limit_key)
            share = f"{units.percent(used, limit)} of {units.size(limit)}" if limit else ""
            cards.append((label, units.size(used), share))
    if data.cost:
        cards.append(("MACs per inference", f"{data.cost['totals']['macs']:,}",
                      f"{data.cost['totals']['operators']} operators"))
        latency = data.cost.get("latency")
        if latency:
            low, high = (1e3 * s for s in latency["seconds"])
            value = (units.millis(low) if latency["measured"]
                     else f"{units.millis(low)} – {units.millis(high)}")
            cards.append(("Latency", value, "measured ratio" if latency["measured"]
                          else "estimated band"))
    if data.validation:
        passed = data.validation.get("passed")
        cards.append(("Validate", "PASS" if passed else "FAIL",
                      f"{_cell(data.validation.get('exact_matches'))} of "
                      f"{_cell(data.validation.get('samples'))} identical"))
    if data.lifetimes:
        cards.append(("Arena lower bound", f"{data.lifetimes.lower_bound:,} B",
                      f"planned {data.lifetimes.planned_bytes:,} B"
                      if data.lifetimes.planned_bytes else ""))
    inner = "".join(f'<div class="card"><div class="label">{escape(a)}</div>'
                    f'<div class="value">{escape(b)}</div><div class="note">{escape(c)}</div>'
                    f"</div>" for a, b, c in cards)
    return f'<div class="cards">{inner}</div>'


# --- sections ------------------------------------------------------------------------------

def _op_names(data: ReportData) -> list[str] | None:
    if data.cost:
        return [row["op"] for row in data.cost["layers"]]
    return None


def _lifetimes(data: ReportData):
    lifetimes = data.lifetimes
    if lifetimes is None:
        return None, None
    by_operator = lifetimes.step_label == "operator"
    png = plots.lifetimes_png(lifetimes, _op_names(data) if by_operator else None)
    efficiency = (f"; the plan uses {lifetimes.planned_bytes:,} B, "
                  f"{100 * lifetimes.lower_bound / lifetimes.planned_bytes:.1f}% efficient"
                  if lifetimes.planned_bytes else "")
    text = (f"<p>{len(lifetimes.tensors)} arena buffers over {lifetimes.operator_count} "
            f"{escape(lifetimes.step_label)}s. Lower bound (the most bytes alive at once): "
            f"<b>{lifetimes.lower_bound:,} B</b>{escape(efficiency)}.</p>")
    return _section("lifetimes", text + _plan_table(lifetimes)
                    + _image(png, "tensor lifetimes")), png


def _plan_table(lifetimes) -> str:
    """TFLM's greedy head, tinyforge's offline plan, the lower bound, the time to plan."""
    if lifetimes.greedy_bytes is None:
        return ""
    runs = {"offline": "an offline plan (OfflineMemoryAllocation in the model)",
            "fixed": "the model's offline plan, every buffer's place compiled into the firmware",
            "tflm-greedy": "TFLM's greedy plan"}.get(lifetimes.planner or "", lifetimes.planner)
    rows = [["TFLM's greedy plan", f"{lifetimes.greedy_bytes:,} B"],
            ["tinyforge's offline plan", f"{lifetimes.offline_bytes:,} B"
             if lifetimes.offline_bytes is not None else "none smaller than greedy"],
            ["lower bound", f"{lifetimes.lower_bound:,} B"],
            ["time to plan", None if lifetimes.plan_seconds is None
             else f"{1000 * lifetimes.plan_seconds:.1f} ms"],
            ["the firmware runs", runs]]
    return ("<h3>Arena head (board kernels, CMSIS-NN)</h3>" + _table(["", ""], rows)
            + '<p class="source">The plot shows where the board\'s TFLM puts each buffer: '
            "the head holds tensors and scratch buffers, not TFLM's own structures "
            "(docs/memory.md).</p>")


def _layers(data: ReportData):
    if not data.cost:
        return None, None
    rows = data.cost["layers"]
    png = plots.layers_png(rows)
    table = _table(["#", "op", "inputs", "outputs", "MACs", "MAC share", "instructions",
                    "instruction share", "how MACs are counted"],
                   [[r["index"], r["op"], ", ".join(_shape(s) for s in r["inputs"]),
                     ", ".join(_shape(s) for s in r["outputs"]), r["macs"],
                     _percent(r.get("mac_share")), r.get("instructions"),
                     _percent(r.get("instruction_share")), r.get("basis", "")] for r in rows],
                   numeric={0, 4, 5, 6, 7})
    note = ("" if data.cost["totals"].get("instructions") is not None else
            '<p class="missing">Instructions per operator: not measured yet (they come from '
            "the emulator's profiler, `tinyforge profile`).</p>")
    return _section("layers", _image(png, "per-layer cost") + note + table), png


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def _cost(data: ReportData):
    cost = data.cost
    if not cost:
        return None, None
    latency, energy = cost.get("latency"), cost.get("energy")
    if latency is None:
        return None, None
    low, high = latency["seconds"]
    cpi = latency["cycles_per_instruction"]
    rows = [["instructions", f"{latency['instructions']:,}"],
            ["cycles per instruction", f"{cpi[0]:g}" if latency["measured"]
             else f"{cpi[0]:g} – {cpi[1]:g}"],
            ["basis", latency["basis"]],
            ["clock", f"{latency['clock_hz'] / 1e6:g} MHz"],
            ["latency", units.millis(1e3 * low) if latency["measured"]
             else f"{units.millis(1e3 * low)} – {units.millis(1e3 * high)}"]]
    parts = [_table(["", ""], rows)]
    if energy:
        parts.append(_table(
            ["regulator", "decisions / s", "energy per inference", "average power",
             "1 mW budget"],
            [[e["regulator"].upper().replace("DCDC", "DC/DC"), e["decisions_per_s"],
              _range(e["energy_j"], 1e6, "µJ"), _range(e["average_power_w"], 1e3, "mW"),
              _budget(e)] for e in energy], numeric={1}))
        parts.append(f'<p class="source">Currents: {escape(cost.get("power_source") or "")}. '
                     "The nRF52840 alone: sensors, radio and the board's regulator and "
                     "LEDs are not included.</p>")
    return _section("cost", "\n".join(parts)), None


def _range(values: list[float], scale: float, unit: str) -> str:
    low, high = (v * scale for v in values)
    return f"{low:.3g} {unit}" if abs(high - low) <= 1e-12 * max(abs(high), 1) else \
        f"{low:.3g} – {high:.3g} {unit}"


def _budget(estimate: dict[str, Any]) -> str:
    if not estimate.get("feasible", True):
        return "no: an inference outlasts the decision period"
    return {True: "within", False: "over", None: "depends on the CPI"}[estimate["within_budget"]]


def _memory(data: ReportData):
    breakdown = data.breakdown
    if not breakdown:
        return None, None
    png = plots.memory_png(breakdown, data.board)
    labels = breakdown.get("categories", {})
    rows = []
    for key in labels:
        flash, ram = breakdown["flash"]["categories"].get(key, 0), \
            breakdown["ram"]["categories"].get(key, 0)
        if flash or ram:
            rows.append([labels[key], flash, ram])
    rows.append(["total (PlatformIO's Flash / RAM)", breakdown["flash"]["total"],
                 breakdown["ram"]["total"]])
    parts = [_image(png, "flash and RAM breakdown"),
             _table(["category", "flash (B)", "RAM (B)"], rows, numeric={1, 2})]
    kernels = breakdown["flash"].get("kernels") or {}
    if kernels:
        parts.append("<h3>TFLM kernels by op (flash)</h3>")
        parts.append(_table(["op", "bytes"], [[op, size] for op, size in kernels.items()],
                            numeric={1}))
    for region in ("flash", "ram"):
        other = breakdown[region].get("other") or {}
        if other:
            parts.append(f"<h3>Other ({region})</h3>")
            parts.append(_table(["origin", "bytes"], [[o, s] for o, s in other.items()],
                                numeric={1}))
    not_counted = breakdown.get("ram_not_counted") or {}
    if not_counted:
        parts.append("<p>Also reserved in RAM, not in PlatformIO's RAM figure: "
                     + ", ".join(f"<code>{escape(n)}</code> {s:,} B"
                                 for n, s in not_counted.items()) + ".</p>")
    parts.append(_arena_head_note(data.lifetimes))
    if data.breakdown_check is not None:
        parts.append('<p class="ok">The categories add up to the ELF\'s section sizes.</p>'
                     if not data.breakdown_check else
                     '<p class="missing">The map and the ELF disagree: '
                     + escape("; ".join(data.breakdown_check)) + "</p>")
    return _section("memory", "\n".join(parts)), png


def _arena_head_note(lifetimes) -> str:
    """The arena's planned part, beside the RAM it is counted in (details: the lifetimes)."""
    if lifetimes is None or lifetimes.greedy_bytes is None:
        return ""
    plan = (f"tinyforge's offline plan {lifetimes.offline_bytes:,} B"
            if lifetimes.offline_bytes is not None else "no offline plan smaller")
    runs = ("the offline plan" if lifetimes.planner in ("offline", "fixed")
            else "TFLM's greedy plan")
    return (f"<p>Of the arena, the head (tensors and scratch buffers) takes "
            f"{lifetimes.planned_bytes:,} B with {escape(runs)}, which the firmware runs: TFLM's "
            f"greedy plan {lifetimes.greedy_bytes:,} B, {escape(plan)}, lower bound "
            f"{lifetimes.lower_bound:,} B (see the tensor lifetimes).</p>")


def _validation(data: ReportData):
    report = data.validation
    if not report:
        return None, None
    png = plots.validation_png(report)
    latency = report.get("latency_us") or {}
    rows = [["result", "PASS" if report.get("passed") else "FAIL"],
            ["reference", report.get("reference")],
            ["samples", report.get("samples")],
            ["identical samples", report.get("exact_matches")],
            ["largest difference", None if report.get("max_lsb") is None
             else f"{report['max_lsb']} LSB (allowed {report.get('max_lsb_allowed')})"],
            ["dequantized difference", f"max {_cell(report.get('max_abs'))}, mean "
                                       f"{_cell(report.get('mean_abs'))}"],
            ["top-1 agreement", _percent(report.get("top1_agreement"))],
            ["latency on the device", f"median {_cell(latency.get('median'))} µs"
             if latency else None]]
    return _section("validation", _image(png, "device against host")
                    + _table(["", ""], rows)), png


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #222; background: #f6f7f9; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { font-size: 26px; margin: 8px 0 4px; }
header p { color: #555; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 16px 20px;
          margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 16px 0 6px; color: #444; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eceef1; text-align: left;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; background: #f0f2f5; padding: 1px 4px; border-radius: 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 10px 16px;
        min-width: 150px; }
.card .label { font-size: 12px; color: #666; }
.card .value { font-size: 22px; font-weight: 600; margin: 2px 0; }
.card .note { font-size: 12px; color: #777; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #f2b134;
           padding: 8px 12px; }
.ok { color: #1e6b34; }
.source { font-size: 12px; color: #666; }
footer { color: #888; font-size: 12px; margin-top: 24px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
<footer>Made by tinyforge {version}. Figures and their sources: docs/cost.md.</footer>
</main>
</body>
</html>
"""
