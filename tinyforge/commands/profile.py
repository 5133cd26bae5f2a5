"""`tinyforge profile`: what each layer costs on the device, latency and energy, CI limits."""

from __future__ import annotations

from pathlib import Path

from ._device import add_target_options, positive_int


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "profile", parents=parents, help="per-layer instructions, latency and energy",
        description="Run one input through a firmware built with `tinyforge build --profile` "
                    "(the last build, or with --model a qemu-m4 profiling build of that model) "
                    "and print a per-layer table: op, shapes, MACs, instructions counted "
                    "under QEMU (-icount, identical in every run) or cycles on a board, their "
                    "share; the profiler's own overhead; the nRF52840's latency band at 64 MHz "
                    "and energy per inference and average power at --rate. --max-instructions "
                    "and --max-arena fail with exit code 4 when exceeded (docs/cost.md).")
    add_target_options(parser)
    parser.add_argument("--model", type=Path,
                        help="build a profiling firmware of this model for qemu-m4 "
                             "(in build/qemu-m4-profile) and profile it")
    parser.add_argument("--tflm", type=Path,
                        help="local TFLM library tree for --model's build (or TINYFORGE_TFLM)")
    parser.add_argument("--rate", type=float, default=1.0, metavar="HZ",
                        help="decisions per second for the average power (default 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the pseudo-random input (default 0)")
    parser.add_argument("--max-instructions", type=positive_int, metavar="N",
                        help="fail with exit code 4 when one inference takes more "
                             "instructions than N")
    parser.add_argument("--max-arena", type=positive_int, metavar="BYTES",
                        help="fail with exit code 4 when the firmware's tensor arena is "
                             "larger than BYTES")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..errors import ProfileLimitExceeded
    from ..flows import profile
    from ._device import port_chooser

    report = profile.profile(profile.ProfileOptions(
        project_dir=args.project_dir, board=args.board, model=args.model, tflm=args.tflm,
        port=args.port, decisions_per_s=args.rate, seed=args.seed,
        max_instructions=args.max_instructions, max_arena=args.max_arena), ask=port_chooser())
    if not args.json:
        print("\n".join(report.lines()))
    try:
        profile.check_limits(report)
    except ProfileLimitExceeded as failure:
        failure.result = report.to_json()   # with --json, printed beside the error
        raise
    if args.json:
        jsonout.emit(report.to_json())
    return 0
