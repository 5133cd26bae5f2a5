"""Options and helpers shared by the commands that talk to a device (flash, monitor, validate)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import DeviceError


def add_target_options(parser) -> None:
    parser.add_argument("--board", help="board id (default: the board of the last build)")
    parser.add_argument("--project-dir", type=Path,
                        help="the project `tinyforge build` wrote (default: the newest under "
                             "./build/)")
    parser.add_argument("--port", help="serial port (default: found by the board's USB id)")


def add_monitor_options(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per message (for piping)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also log results to FILE")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N results")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds (with --count: fail if fewer arrived); "
                             "also bounds waiting for a board that went away")


def ask_port(matches):
    """Let the user pick one of several matching boards (only when stdin is a terminal)."""
    print("Several boards match:", file=sys.stderr)
    for number, match in enumerate(matches, 1):
        print(f"  {number}. {match.describe()}", file=sys.stderr)
    answer = input(f"Use which one [1-{len(matches)}]? ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(matches):
        raise DeviceError(f"no board chosen ('{answer}')", hint="choose one with --port")
    return matches[int(answer) - 1]


def port_chooser():
    return ask_port if sys.stdin.isatty() else None
