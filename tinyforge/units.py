"""How tinyforge writes numbers for people: one format in every summary and log line.

- sizes in bytes, with thousands separators and the unit: ``12,345 B`` (never KB or KiB,
  so figures from tinyforge, PlatformIO and the linker compare at a glance);
- counts with thousands separators: ``1,024``;
- shares with one decimal: ``15.0%``;
- durations in seconds with one decimal (``10.7 s``), milliseconds with two significant
  decimals (``0.41 ms``), and device timings in whole microseconds (``2,713 µs``).

JSON output carries plain numbers instead (see `tinyforge.jsonout`).
"""

from __future__ import annotations


def size(n: int) -> str:
    """A size in bytes: ``12,345 B``."""
    return f"{int(n):,} B"


def count(n: int) -> str:
    """A count: ``12,345``."""
    return f"{int(n):,}"


def percent(part: float, whole: float) -> str:
    """`part` as a share of `whole`: ``15.0%``."""
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def seconds(s: float) -> str:
    """A duration: ``10.7 s``."""
    return f"{s:.1f} s"


def millis(ms: float) -> str:
    """A short duration in milliseconds: ``0.41 ms``."""
    return f"{ms:.2f} ms"


def micros(us: float) -> str:
    """A device timing in microseconds: ``2,713 µs``."""
    return f"{round(us):,} µs"
