"""`tinyforge monitor`: watch what the firmware reports, live."""

from __future__ import annotations

from ._device import add_monitor_options, add_target_options, port_chooser, positive_int


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "monitor", parents=parents, help="show the firmware's results as they arrive",
        description="Decode the firmware's protocol messages into a live view (or JSON lines, "
                    "or CSV); other lines pass through as device log. Reconnects after a reset "
                    "or unplug. For qemu-m4, runs the last build in QEMU.")
    add_target_options(parser)
    add_monitor_options(parser)
    parser.add_argument("--baud", type=positive_int, help="serial speed (default: the board's)")
    # --json is a stream of one object per line, an error included (docs/cli.md).
    parser.set_defaults(run=run, json_lines=True)


def run(args) -> int:
    from ..device.sources import SerialSource, source_for
    from ..flows import monitor
    from ..project.last_build import find

    if args.port and args.project_dir is None and args.board:
        # A bare `monitor --board B --port P` works without a build (nothing to compare with).
        from ..board.profiles import load_board
        board, elf, manifest = load_board(args.board), None, None
    else:
        build = find(args.project_dir, args.board)
        board, elf, manifest = build.board, build.elf, build
    source = source_for(board, elf, args.port, ask=port_chooser())
    if isinstance(source, SerialSource) and args.baud:
        source.baud = args.baud
    options = monitor.MonitorOptions(
        json=args.json, csv=args.csv, count=args.count, timeout=args.timeout,
        expected_sha256=manifest.model_sha256 if manifest else None,
        labels=manifest.labels if manifest else [],
        reconnect_timeout=args.timeout or monitor.DEFAULT_RECONNECT_S,
        demo_input=manifest.demo_input if manifest else None)
    monitor.run(source, options)
    return 0
