"""`tinyforge doctor`: check the environment (pio, toolchains, QEMU, TFLM source, network)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "doctor", parents=parents, help="check what this machine has and how to fix the rest",
        description="Check PlatformIO, the host TFLM runtime, the arm-none-eabi toolchain, "
                    "QEMU, tinyforge's PlatformIO core dir, the TFLM source and the network.")
    parser.add_argument("--tflm", type=Path, help="a TFLM library tree to check")
    parser.add_argument("--offline", action="store_true",
                        help="skip the registry reachability check")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..flows.doctor import run_checks

    checks = run_checks(tflm=args.tflm, network=not args.offline)
    if args.json:
        jsonout.emit([c.as_dict() for c in checks])
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<{width}}  {check.detail}")
            if not check.ok and check.hint:
                print(f"{'':<4} {'':<{width}}  fix: {check.hint}")
    return 0 if all(c.ok for c in checks) else 1
