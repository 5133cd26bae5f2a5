"""The one JSON writer of tinyforge's `--json` output (docs/cli.md, "JSON output").

JSON has no NaN or infinities, and Python's `json` writes them as the invalid tokens `NaN`
and `Infinity`. tinyforge writes them as the strings ``"nan"``, ``"inf"`` and ``"-inf"``,
the spelling the serial protocol uses for them (docs/protocol.md), so every document it
prints is valid JSON. Numpy scalars and arrays become numbers and lists, paths strings.
Non-ASCII text is escaped (``\u00b5``), so the output survives any terminal encoding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import PurePath
from typing import Any, TextIO

NAN = "nan"
INFINITY = "inf"
NEGATIVE_INFINITY = "-inf"


def encodable(value: Any) -> Any:
    """`value` with only what JSON can hold: non-finite floats as strings, numpy values as
    Python numbers and lists, tuples as lists, paths as strings, dataclasses as dicts."""
    if isinstance(value, float):
        return _float(value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, dict):
        return {str(key): encodable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encodable(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encodable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):          # numpy arrays and scalars, without importing numpy
        return encodable(value.tolist())
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _float(value: float) -> float | str:
    if math.isnan(value):
        return NAN
    if math.isinf(value):
        return INFINITY if value > 0 else NEGATIVE_INFINITY
    return value


def dumps(value: Any, *, lines: bool = False) -> str:
    """One JSON document: indented, or on a single line for JSON-lines streams."""
    data = encodable(value)
    if lines:
        return json.dumps(data, allow_nan=False, separators=(", ", ": "))
    return json.dumps(data, allow_nan=False, indent=2, sort_keys=True)


def emit(value: Any, *, lines: bool = False, out: TextIO | None = None) -> None:
    """Print one document to stdout (or `out`) and flush it: a reader sees it at once."""
    stream = out if out is not None else sys.stdout
    print(dumps(value, lines=lines), file=stream, flush=True)


def error_object(kind: str, message: str, *, details: str | None = None,
                 hint: str | None = None, exit_code: int) -> dict:
    """What a failing command prints with --json: ``{"error": {...}}`` (docs/cli.md)."""
    return {"error": {"type": kind, "message": message, "details": details, "hint": hint,
                      "exit_code": exit_code}}
