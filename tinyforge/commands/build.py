"""`tinyforge build`: render, check and build the firmware project for a model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("tinyforge")


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
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="stop after rendering and checks")
    parser.add_argument("--force", action="store_true",
                        help="build even if the estimate says it does not fit")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace generated files you edited")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..flows import build

    options = build.BuildOptions(
        board=args.board, model=args.model, calibration=args.calibration,
        labels=args.labels, demo_input=args.demo_input, quantize=args.quantize,
        project_dir=args.project_dir, tflm=args.tflm, compile=args.compile,
        force=args.force, overwrite=args.overwrite, arena=args.arena)
    result = build.build(options)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        _print_summary(result)
    return 0


def _print_summary(result) -> None:
    model, plan = result.model, result.plan
    counts = ", ".join(f"{n} {action}" for action, n in plan.summary().items())
    print(f"project  {result.project_dir}  ({counts})")
    print(f"model    {model.info.name}  {model.info.size:,} B  sha256 {model.info.sha256[:16]}…")
    print(f"ops      {len(model.ops)}: {', '.join(op.name for op in model.ops)}")
    if model.conversion:
        for line in model.conversion.get("summary", []):
            print(f"convert  {line}")
    print(f"arena    {model.arena.arena_bytes:,} B  ({model.arena.note})")
    if model.reference:
        print(f"host     dry run and arena on the {model.reference.description}")
    for line in model.fit.lines():
        print(f"estimate {line}")
    if result.build:
        report = result.build
        print(f"built    in {report.seconds:.1f} s: {report.firmware}")
        if report.flash_used is not None:
            print(f"         Flash {report.flash_used:,} of {report.flash_total:,} B, "
                  f"RAM {report.ram_used:,} of {report.ram_total:,} B (PlatformIO)")
    else:
        print("built    not compiled (--no-compile)")
