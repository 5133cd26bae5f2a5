"""`tinyforge validate`: does the board compute what the model computes on the PC?"""

from __future__ import annotations

from pathlib import Path

from ._device import (
    add_target_options,
    non_negative_int,
    port_chooser,
    positive_int,
    tolerance,
)


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "validate", parents=parents, help="compare the board's outputs with the host's",
        description="Send input vectors to the firmware over serial, run the same inputs "
                    "through the host TFLM runtime, and compare: exact matches, difference in "
                    "LSB and after dequantization, top-1 agreement, on-device latency. Exits 3 "
                    "when the difference exceeds the tolerance.")
    add_target_options(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path,
                        help=".npy/.npz inputs ([N, *input_shape]; floats are quantized), e.g. "
                             "the calibration set")
    source.add_argument("--random", type=positive_int, metavar="N",
                        help="N random inputs over the input's quantized range (default 32)")
    source.add_argument("--replay", type=Path, metavar="FILE",
                        help="a recording (WAV for the microphone; CSV, NPY or NPZ for the "
                             "IMU) streamed through the firmware's sensor pipeline and compared "
                             "with the host reference of the whole pipeline (docs/pipeline.md)")
    parser.add_argument("--features", action="store_true",
                        help="with --replay: also compare the features of every frame")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    parser.add_argument("--max-lsb", type=non_negative_int, default=0,
                        help="largest allowed difference for integer outputs (default 0)")
    parser.add_argument("--max-abs", type=tolerance, default=None,
                        help="largest allowed difference for float outputs (default 1e-4)")
    parser.add_argument("--tflm", type=Path, metavar="PATH",
                        help="the board's TFLM library tree, compiled for the host as the "
                             "reference (default: the tree of the last build, or "
                             "$TINYFORGE_TFLM)")
    parser.add_argument("--reference", choices=("auto", "tflm", "wheel"), default="auto",
                        help="what the board is compared with: the host build of its TFLM "
                             "tree (tflm), the tflite-micro wheel (wheel), or the tree when "
                             "there is one (auto, the default)")
    parser.add_argument("--layers", nargs="?", type=non_negative_int, const=0, default=None,
                        metavar="SAMPLE",
                        help="also compare every operator's output for one sample (default "
                             "the first) and name the first that differs; needs a firmware "
                             "built with `tinyforge build --debug-layers`")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..errors import ValidationFailed
    from ..flows import validate

    if args.replay is not None:
        return _replay(args)
    if args.features:
        from ..errors import InputError
        raise InputError("--features compares the frames of a replay",
                         hint="give the recording with --replay FILE")
    report = validate.validate_last_build(
        project_dir=args.project_dir, board_id=args.board, port=args.port, data=args.data,
        random_count=args.random, seed=args.seed, max_lsb=args.max_lsb,
        max_abs=args.max_abs if args.max_abs is not None else validate.DEFAULT_MAX_ABS_FLOAT,
        ask=port_chooser(), tflm=args.tflm, reference=args.reference, layers=args.layers)
    if not args.json:
        print("\n".join(report.lines()))
    try:
        validate.check(report)
    except ValidationFailed as failure:
        failure.result = report.to_json()   # with --json, printed beside the error
        raise
    if args.json:
        jsonout.emit(report.to_json())
    return 0


def _replay(args) -> int:
    from .. import jsonout
    from ..errors import ValidationFailed
    from ..flows import replay

    report = replay.validate_replay(
        args.replay, project_dir=args.project_dir, board_id=args.board, port=args.port,
        features=args.features, tflm=args.tflm, reference=args.reference, ask=port_chooser())
    if not args.json:
        print("\n".join(report.lines()))
    try:
        replay.check(report)
    except ValidationFailed as failure:
        failure.result = report.to_json()
        raise
    if args.json:
        jsonout.emit(report.to_json())
    return 0
