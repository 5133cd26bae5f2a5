"""`tinyforge setup`: prepare tinyforge's own PlatformIO core dir for offline qemu-m4 builds."""

from __future__ import annotations


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "setup", parents=parents, help="prepare PlatformIO for offline builds (qemu-m4)",
        description="Seed tinyforge's PlatformIO core dir (default ~/.tinyforge/platformio, or "
                    "$TINYFORGE_PIO_CORE_DIR) with SCons and the Debian arm-none-eabi toolchain, "
                    "so `pio run` for qemu-m4 never needs PlatformIO's registry. Safe to run "
                    "again; never touches ~/.platformio.")
    parser.add_argument("--core-dir", metavar="DIR",
                        help="PlatformIO core dir to prepare (default: $TINYFORGE_PIO_CORE_DIR "
                             "or ~/.tinyforge/platformio)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..toolchain import offline_core

    report = offline_core.setup(args.core_dir)
    for action, name, path in report.actions:
        print(f"{action:<9}  {name}  {path}")
    state = "prepared" if report.changed else "already prepared"
    print(f"PlatformIO core dir {report.core_dir} {state} for qemu-m4")
    return 0
