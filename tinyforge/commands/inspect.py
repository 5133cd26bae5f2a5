"""`tinyforge inspect`: what is in a .tflite and whether it runs and fits on a board."""

from __future__ import annotations

from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "inspect", parents=parents, help="show a .tflite's ops, tensors, arena and fit",
        description="Inspect a .tflite model without TensorFlow: ops, tensors, quantization, "
                    "size, sha256, the ops the board's TFLM cannot resolve, a host TFLM run, "
                    "the measured arena and the fit on the board.")
    parser.add_argument("model", type=Path, help="a .tflite file")
    parser.add_argument("--board", default="nano33ble", help="board id (see `tinyforge boards`)")
    parser.add_argument("--tflm", type=Path,
                        help="local TFLM library tree (its resolver header is used)")
    parser.add_argument("--arena", choices=("auto", "host", "device"), default="auto",
                        help="measure the arena on the emulated Cortex-M4 when a TFLM tree is "
                             "given and it can be built (auto), only on the host, or require "
                             "the device measurement")
    parser.add_argument("--memory-plan", choices=("auto", "off", "replace"), default="auto",
                        help="what `build --memory-plan` would embed: the arena and the fit "
                             "shown are those of that model (default auto; docs/memory.md)")
    parser.add_argument("--input", choices=("host", "imu", "microphone"),
                        help="the sensor pipeline `build --input` would compile in: its RAM is "
                             "part of the fit (default: tinyforge.toml's pipeline.input, else "
                             "host)")
    parser.add_argument("--config", type=Path,
                        help="the pipeline's tinyforge.toml (default: the one beside the model)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..flows.inspection import inspect_model, summary_lines

    report = inspect_model(args.model, board_id=args.board, tflm=args.tflm, arena=args.arena,
                           memory_plan=args.memory_plan, input=args.input,
                           config=args.config)
    if args.json:
        jsonout.emit(report)
    else:
        print("\n".join(summary_lines(report)))
    return 0
