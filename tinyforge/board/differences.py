"""Known kernel differences between a board's TFLM and the tflite-micro wheel (data).

`boards/tflm/known-differences.toml` lists, per library and version, the ops whose kernels
compute differently from the wheel's (measured: docs/reference.md). Read and validated here;
`model/known_differences.py` matches a model's operators against it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from .. import resources
from ..errors import BoardProfileError
from ..userfiles import read_text

TABLE = "tflm/known-differences.toml"
CONDITIONS = ("always", "rescale")
_MAX_TABLE_BYTES = 1 << 20
_KEYS = {"library": str, "version": str, "op": str, "dtype": str, "when": str, "wheel": str,
         "max_lsb": int, "measured": str, "why": str}


@dataclass(frozen=True)
class KnownDifference:
    library: str
    version: str
    op: str
    dtype: str
    when: str        # one of CONDITIONS
    wheel: str       # the wheel version it was measured against
    max_lsb: int     # the largest difference measured in a model's output
    measured: str
    why: str


def load(library: str, version: str) -> list[KnownDifference]:
    """The known differences of one library version (none when the table lists none)."""
    return [d for d in load_all() if d.library.lower() == library.lower()
            and d.version == version]


def load_all() -> list[KnownDifference]:
    path = resources.boards_dir() / TABLE
    hint = "reinstall tinyforge: the table ships with it"
    text = read_text(path, what="known-differences table", limit=_MAX_TABLE_BYTES,
                     error=BoardProfileError, hint=hint)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BoardProfileError(f"{path} is invalid: {error}", hint=hint) from None
    entries = data.get("difference", [])
    if data.get("schema_version") != 1 or not isinstance(entries, list):
        raise BoardProfileError(f"{path} is invalid: schema_version 1 and a list of "
                                "[[difference]] tables expected", hint=hint)
    return [_entry(entry, number, path, hint) for number, entry in enumerate(entries)]


def _entry(entry, number: int, path, hint: str) -> KnownDifference:
    problems = [key for key, kind in _KEYS.items()
                if not isinstance(entry, dict) or not isinstance(entry.get(key), kind)]
    if not problems and entry["when"] not in CONDITIONS:
        problems = [f"when (one of {', '.join(CONDITIONS)})"]
    if problems:
        raise BoardProfileError(f"{path}: difference #{number + 1} lacks or mistypes "
                                f"{', '.join(problems)}", hint=hint)
    return KnownDifference(**{key: entry[key] for key in _KEYS})
