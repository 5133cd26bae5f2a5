"""Measured cycles per instruction: what a real board reported, kept for later estimates.

The latency band (`model.cost`) assumes 1.2-2.0 cycles per instruction. Once a real board
has run a model and reported its DWT cycle count, and the emulator has counted the same
model's instructions, their ratio is recorded here, keyed by board and model sha256, and
replaces the band for that board and model.

The file is JSON, written atomically:
    {"version": 1,
     "ratios": {"nano33ble/<model sha256>": {"board": "nano33ble", "model_sha256": "...",
                "instructions": 2390000, "cycles": 3107000, "cycles_per_instruction": 1.3,
                "source": "DWT->CYCCNT, tinyforge 0.1.0"}}}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from . import writer

ENV_PATH = "TINYFORGE_CYCLE_RATIOS"
DEFAULT_PATH = Path("~/.tinyforge/cycles-per-instruction.json")
FORMAT_VERSION = 1
MAX_FILE_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class MeasuredRatio:
    board: str
    model_sha256: str
    instructions: int
    cycles: int
    source: str

    @property
    def cycles_per_instruction(self) -> float:
        return self.cycles / self.instructions

    def to_json(self) -> dict:
        return dict(asdict(self), cycles_per_instruction=self.cycles_per_instruction)


def default_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH).expanduser()


def record(board: str, model_sha256: str, instructions: int, cycles: int, *, source: str,
           path: Path | None = None) -> MeasuredRatio:
    """Keep a board's measured cycle count for a model (replaces an earlier one)."""
    if instructions <= 0 or cycles <= 0:
        raise InputError(f"a measured ratio needs positive counts (instructions {instructions}, "
                         f"cycles {cycles})",
                         hint="measure the model on the board again; both counts come from it")
    if not _SHA256.match(model_sha256):
        raise InputError(f"'{model_sha256}' is not a model sha256 (64 lower-case hex digits)",
                         hint="give the sha256 `tinyforge inspect MODEL` prints")
    path = path or default_path()
    ratios = _read(path)
    ratio = MeasuredRatio(board, model_sha256, int(instructions), int(cycles), source)
    ratios[_key(board, model_sha256)] = ratio.to_json()
    document = {"version": FORMAT_VERSION, "ratios": dict(sorted(ratios.items()))}
    writer.atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return ratio


def lookup(board: str, model_sha256: str | None, *, path: Path | None = None
           ) -> MeasuredRatio | None:
    """The recorded ratio for this board and model, if a board has reported one."""
    if not model_sha256:
        return None
    entry = _read(path or default_path()).get(_key(board, model_sha256))
    if entry is None:
        return None
    return MeasuredRatio(entry["board"], entry["model_sha256"], int(entry["instructions"]),
                         int(entry["cycles"]), str(entry.get("source", "")))


def _key(board: str, model_sha256: str) -> str:
    return f"{board}/{model_sha256}"


def _read(path: Path) -> dict[str, dict]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{path} is too large to be a file of measured ratios",
                             hint="delete it; the ratios are measured again on the board")
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"the measured cycle ratios in {path} are unreadable: {exc}",
                         hint=f"delete {path}: the latency band is used until a board "
                              "reports cycles again") from None
    if not _well_formed(document):
        raise InputError(f"{path} is not a file of measured cycle ratios (version "
                         f"{FORMAT_VERSION})",
                         hint=f"delete {path}: the latency band is used until a board reports "
                              "cycles again")
    return document["ratios"]


def _well_formed(document) -> bool:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        return False
    ratios = document.get("ratios")
    return isinstance(ratios, dict) and all(_well_formed_entry(e) for e in ratios.values())


def _well_formed_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("board"), str)
            and isinstance(entry.get("model_sha256"), str)
            and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                    and entry[k] > 0 for k in ("instructions", "cycles")))
