"""`tinyforge flash`: upload the last build (for qemu-m4: run it in QEMU)."""

from __future__ import annotations

from ._device import add_monitor_options, add_target_options, port_chooser


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "flash", parents=parents, help="upload the last build to the board",
        description="Upload the firmware of the last `tinyforge build` through PlatformIO and "
                    "wait for the board to come back. For qemu-m4, start it in QEMU and check "
                    "it boots. With --monitor, continue into `tinyforge monitor`.")
    add_target_options(parser)
    parser.add_argument("--monitor", action="store_true", help="monitor after flashing")
    add_monitor_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..device.sources import SerialSource
    from ..flows import flash, monitor
    from ..project.last_build import find

    # With --monitor, --json is one object per line: the flash result, then the messages.
    args.json_lines = args.monitor
    build = find(args.project_dir, args.board)
    options = monitor.MonitorOptions(
        json=args.json, csv=args.csv, count=args.count, timeout=args.timeout,
        expected_sha256=build.model_sha256, labels=build.labels,
        reconnect_timeout=args.timeout or monitor.DEFAULT_RECONNECT_S,
        demo_input=build.demo_input)
    if build.board.emulated:
        result, source, conversation = flash.run_in_emulator(build)
        try:
            _report(result, args.json, lines=args.monitor)
            if args.monitor:  # the same conversation: nothing QEMU sent since BOOT is lost
                monitor.run(source, options, conversation=conversation)
        finally:
            source.close(source.link)
        return 0
    result = flash.upload(build, args.port, ask=port_chooser())
    _report(result, args.json, lines=args.monitor)
    if args.monitor:
        monitor.run(SerialSource(build.board, result.port), options)
    return 0


def _report(result, as_json: bool, *, lines: bool) -> None:
    from .. import jsonout, units

    if as_json:
        jsonout.emit(dict(result.to_json(), type="flash"), lines=lines)
    else:
        where = f" on {result.port}" if result.port else ""
        print(f"flashed {result.firmware} to {result.board}{where} in "
              f"{units.seconds(result.seconds)}")
