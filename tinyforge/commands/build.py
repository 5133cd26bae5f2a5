"""`tinyforge build`: render, check and build the firmware project for a model."""

from __future__ import annotations

from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "build", parents=parents, help="make (and compile) the firmware project for a model",
        description="Convert and check a model, size its arena, render a PlatformIO project "
                    "and build it. Without --model, builds the bundled gesture example.")
    parser.add_argument("--board", default="nano33ble", help="board id (see `tinyforge boards`)")
    parser.add_argument("--model", type=Path,
                        help=".tflite, .keras/.h5 or a SavedModel directory "
                             "(default: the bundled example)")
    parser.add_argument("--calibration", type=Path,
                        help=".npy/.npz samples for int8 quantization and the accuracy report")
    parser.add_argument("--quantize", choices=("int8", "float32"), default="int8",
                        help="int8: full-integer model (default); float32: keep floats")
    parser.add_argument("--labels", type=Path, help="text file, one class label per line")
    parser.add_argument("--demo-input", type=Path,
                        help=".npy sample the firmware runs at boot without a host")
    parser.add_argument("--project-dir", type=Path,
                        help="where to write the project (default: build/BOARD)")
    parser.add_argument("--tflm", type=Path,
                        help="local TFLM library tree instead of the pinned dependency "
                             "(or set TINYFORGE_TFLM)")
    parser.add_argument("--arena", choices=("auto", "host", "device"), default="auto",
                        help="where the arena size is measured: on the emulated Cortex-M4 "
                             "when it can be built (auto, the default), always on the host, "
                             "or required on the device (docs/arena.md)")
    parser.add_argument("--memory-plan", choices=("auto", "off", "replace"), default="auto",
                        help="embed an offline arena plan computed by tinyforge when it beats "
                             "TFLM's greedy plan (auto, the default; a plan the model already "
                             "carries is kept), never (off), or also over a plan the model "
                             "carries (replace); docs/memory.md")
    parser.add_argument("--profile", action="store_true",
                        help="compile in the per-op profiler: a PROF message with every op's "
                             "instructions (qemu-m4) or cycles (a board) after each result; "
                             "`tinyforge profile` reads it (docs/cost.md)")
    parser.add_argument("--debug-layers", action="store_true",
                        help="a debug firmware that keeps every tensor and reports each "
                             "operator's output, for `tinyforge validate --layers` (a "
                             "bigger arena)")
    parser.add_argument("--input", choices=("host", "imu", "microphone"),
                        help="where the model's input comes from: sent over serial (host, the "
                             "default), or the board's IMU or microphone through the sensor "
                             "pipeline (docs/pipeline.md; default: tinyforge.toml's "
                             "pipeline.input)")
    parser.add_argument("--config", type=Path,
                        help="the pipeline's tinyforge.toml (default: the one beside the model "
                             "or in the project)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="stop after rendering and checks")
    parser.add_argument("--force", action="store_true",
                        help="build even if the estimate says it does not fit")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace generated files you edited")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..flows import build

    options = build.BuildOptions(
        board=args.board, model=args.model, calibration=args.calibration,
        labels=args.labels, demo_input=args.demo_input, quantize=args.quantize,
        project_dir=args.project_dir, tflm=args.tflm, compile=args.compile,
        force=args.force, overwrite=args.overwrite, arena=args.arena,
        memory_plan=args.memory_plan, profile=args.profile, debug_layers=args.debug_layers,
        input=args.input, config=args.config)
    result = build.build(options)
    if args.json:
        jsonout.emit(result.to_json())
    else:
        print("\n".join(summary_lines(result)))
    return 0


def summary_lines(result) -> list[str]:
    """The human-readable result of a build: each fact once (the log only shows progress)."""
    from .. import units
    from ..model import arena

    model = result.model
    lines = [f"project   {result.project_dir} ({result.plan.summary_text()})",
             f"model     {model.info.name}, {units.size(model.info.size)}, sha256 "
             f"{model.info.sha256[:16]}…",
             f"ops       {len(model.ops)}: {', '.join(op.name for op in model.ops)}"]
    for line in (model.conversion or {}).get("summary", []):
        lines.append(f"convert   {line}")
    note = model.arena.note
    if model.reference:  # its own line names the host runtime
        host = model.arena.host
        note = arena.summary_note(note, host.runtime if host else None)
    lines.append(f"arena     {units.size(model.arena.arena_bytes)} ({note})")
    lines.extend(f"{'memory' if n == 0 else '':<9} {line}"
                 for n, line in enumerate(result.memory_plan.lines()))
    pipeline = result.pipeline_json()
    if pipeline["input"] != "host":
        lines.append(f"pipeline  {pipeline['summary']}")
    if model.reference:
        lines.append(f"host      dry run and arena on the {model.reference.description}")
    lines.extend(f"estimate  {line}" for line in model.fit.lines())
    report = result.build
    if report is None:
        lines.append("built     not compiled (--no-compile)")
        return lines
    lines.append(f"built     in {units.seconds(report.seconds)}: {report.firmware}")
    if report.flash_used is not None:
        lines.append(f"          flash {units.size(report.flash_used)} of "
                     f"{units.size(report.flash_total)}, RAM {units.size(report.ram_used)} of "
                     f"{units.size(report.ram_total)} (PlatformIO)")
    return lines
