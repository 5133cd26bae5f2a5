"""`tinyforge selftest`: build and run a firmware without TFLM that checks a board's link."""

from __future__ import annotations

from ._device import positive_int


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "selftest", parents=parents, help="check a board's runtime and serial link (no model)",
        description="Build the self-test firmware (no TFLM) for a board, run it (in QEMU for "
                    "qemu-m4; uploaded like `tinyforge flash` for a real board) and check its serial link: boot message, echo of checksummed "
                    "frames at full rate, error replies, the timer against the host's clock, "
                    "and IN/RES with a stand-in model. Exit status 0 when every check passes, "
                    "2 when one fails or the device misbehaves.")
    parser.add_argument("--board", default="qemu-m4", help="board id (default: qemu-m4)")
    parser.add_argument("--port", help="a real board's serial port (default: found by USB id)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--core-dir", metavar="DIR",
                        help="tinyforge's PlatformIO core dir (default: $TINYFORGE_PIO_CORE_DIR "
                             "or ~/.tinyforge/platformio); prepared on first use")
    parser.add_argument("--project-dir", metavar="DIR",
                        help="where to render the self-test project (default: "
                             "~/.cache/tinyforge/selftest/BOARD)")
    parser.add_argument("--frames", type=positive_int, metavar="N",
                        help="ECHO frames to send (default: 300)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random frames and inputs (default: 0)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout, units
    from ..board import profiles
    from ..errors import EXIT_DEVICE_ERROR, EXIT_OK
    from ..flows import selftest
    from ..toolchain import pio
    from ._device import port_chooser

    board = profiles.load_board(args.board)
    options = {"echo_frames": args.frames} if args.frames is not None else {}
    report = selftest.run_selftest(board, project_dir=args.project_dir, core_dir=args.core_dir,
                                   seed=args.seed, port=args.port, ask=port_chooser(),
                                   on_build_line=pio.progress_logger("self-test build"),
                                   **options)
    if args.json:
        jsonout.emit(report.to_json())
    else:
        build = report.build
        print(f"build: {units.seconds(build['seconds'])}, {units.count(build['compiled_files'])} "
              f"files compiled, flash {_size(build['flash_used'])}, RAM "
              f"{_size(build['ram_used'])} (PlatformIO)")
        for step in report.steps:
            print(f"{'PASS' if step.ok else 'FAIL'}  {step.name:<9}  {step.detail}")
        print(f"self-test {'passed' if report.passed else 'FAILED'} on {report.board}")
    return EXIT_OK if report.passed else EXIT_DEVICE_ERROR


def _size(value) -> str:
    from .. import units
    return units.size(value) if value is not None else "unknown"
