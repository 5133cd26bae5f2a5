"""Options and helpers shared by the commands that talk to a device (flash, monitor, validate)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import DeviceError

# The longest --timeout accepted: a day. Longer is a typo, and "forever" is no --timeout.
MAX_TIMEOUT_S = 86400.0


def seconds(text: str) -> float:
    """An argparse type: a timeout in seconds, > 0 and finite (0, negatives, NaN and inf
    would mean "stop at once" or "never" in ways nobody means)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a timeout: give seconds above 0, at most {MAX_TIMEOUT_S:g} "
            "(leave the option out to wait without a limit)")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1."""
    return _whole_number(text, minimum=1, bound="at least 1")


def non_negative_int(text: str) -> int:
    """An argparse type: 0 or more (a tolerance in LSB)."""
    return _whole_number(text, minimum=0, bound="0 or more")


def _whole_number(text: str, *, minimum: int, bound: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"'{text}' must be {bound}")
    return value


def tolerance(text: str) -> float:
    """An argparse type: a finite difference of 0 or more (NaN would let everything pass)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be a finite number, 0 or more")
    return value


def add_target_options(parser) -> None:
    parser.add_argument("--board", help="board id (default: the board of the last build)")
    parser.add_argument("--project-dir", type=Path,
                        help="the project `tinyforge build` wrote (default: the last build "
                             "recorded in ./build/last-build.json)")
    parser.add_argument("--port", help="serial port (default: found by the board's USB id)")


def add_monitor_options(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per message (for piping)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also log results to FILE")
    parser.add_argument("--count", type=positive_int, metavar="N", help="stop after N results")
    parser.add_argument("--timeout", type=seconds, metavar="S",
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
