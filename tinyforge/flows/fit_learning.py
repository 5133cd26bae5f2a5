"""The fit estimate learns the framework's true size from a real build's linker map.

The board profile's framework figures (`[memory] framework_flash_bytes`/`framework_ram_bytes`)
are estimates. After `tinyforge build` links a firmware, its map's breakdown
(`toolchain.linkmap`) says exactly what the framework took: everything that is not the model,
the arena, TFLM, the protocol or the sketch (the board runtime or Arduino core, libc, libm,
libgcc, libstdc++, fill; in RAM also the stack reserve the linker script keeps). That figure
is kept in tinyforge's cache, keyed by board, PlatformIO platform, framework and the GCC
version the map names, and later estimates for the same board use it (`inspect` and `build`
say the figure is measured, and from which build).

The file is JSON, written atomically; a cache: unreadable means "not measured yet".
    {"version": 1, "entries": {"<board>|<platform>|<framework>|<gcc>": {"board": ...,
     "platform": ..., "framework": ..., "toolchain": "gcc 12.2.1", "flash_bytes": N,
     "ram_bytes": N, "firmware": "<project>/.pio/build/<env>/firmware.elf", "order": N}}}
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .. import storage
from ..board.profiles import Board
from ..errors import TinyforgeError
from ..model.fit import MeasuredFramework
from ..project import writer

log = logging.getLogger(__name__)

FILE_NAME = "fit-measured.json"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 20
# What the estimate counts apart from the framework; everything else in a region is framework.
NOT_FRAMEWORK = ("model", "arena", "tflm_kernels", "tflm_runtime", "protocol", "sketch")
# Reserved by qemu-m4's linker script for the stack, outside PlatformIO's RAM figure, and part
# of the profile's framework RAM estimate. (The mbed core's .heap fills the rest of RAM and is
# not counted: it is what is left, not what is used.)
STACK_RESERVE_SECTIONS = ("._stack_reserve",)
_GCC_VERSION = re.compile(r"/gcc/arm-none-eabi/(\d+\.\d+(?:\.\d+)?)/")


def measure(board: Board, map_path: Path) -> tuple[int, int, str]:
    """The framework's (flash, RAM) bytes in a linked firmware, and the GCC its map names."""
    from ..toolchain import linkmap

    parsed = linkmap.read_map(map_path)
    result = linkmap.breakdown(parsed, board.platformio["platform"],
                               tflm_library=board.tflm["library"], map_path=str(map_path))
    flash = sum(v for k, v in result.flash.categories.items() if k not in NOT_FRAMEWORK)
    ram = sum(v for k, v in result.ram.categories.items() if k not in NOT_FRAMEWORK)
    ram += sum(result.ram_not_counted.get(name, 0) for name in STACK_RESERVE_SECTIONS)
    match = _GCC_VERSION.search(Path(map_path).read_text(encoding="utf-8", errors="replace"))
    return flash, ram, f"gcc {match[1]}" if match else "gcc (version not in the map)"


def record(board: Board, firmware: Path, *, path: Path | None = None) -> MeasuredFramework | None:
    """Learn from a firmware just linked (its map beside it); None when there is no map or it
    cannot be read, since the estimate then simply stays the profile's."""
    map_path = Path(firmware).with_suffix(".map")
    if not map_path.is_file():
        return None
    try:
        flash, ram, toolchain = measure(board, map_path)
    except (TinyforgeError, OSError, ValueError) as exc:
        log.warning("the fit estimate did not learn from %s: %s", map_path, exc)
        return None
    path = path or default_path()
    entries = _read(path)
    key = _key(board, toolchain)
    order = max((e.get("order", 0) for e in entries.values()), default=0) + 1
    entries[key] = {"board": board.id, "platform": board.platformio["platform"],
                    "framework": board.platformio.get("framework", ""), "toolchain": toolchain,
                    "flash_bytes": flash, "ram_bytes": ram, "firmware": str(Path(firmware).resolve()),
                    "order": order}
    try:
        writer.atomic_write_text(path, json.dumps(
            {"version": FORMAT_VERSION, "entries": dict(sorted(entries.items()))},
            indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("the measured framework figures were not kept in %s: %s", path, exc)
    return _measured(entries[key])


def lookup(board: Board, *, path: Path | None = None) -> MeasuredFramework | None:
    """The framework figures a real build measured for this board, platform and framework;
    of several toolchains, the one measured last."""
    candidates = [e for e in _read(path or default_path()).values()
                  if e["board"] == board.id and e["platform"] == board.platformio["platform"]
                  and e["framework"] == board.platformio.get("framework", "")]
    if not candidates:
        return None
    return _measured(max(candidates, key=lambda e: e.get("order", 0)))


def default_path() -> Path:
    return storage.cache_root() / FILE_NAME


def _measured(entry: dict) -> MeasuredFramework:
    return MeasuredFramework(
        entry["flash_bytes"], entry["ram_bytes"],
        f"the linker map of {entry['firmware']} ({entry['platform']}"
        + (f", {entry['framework']}" if entry["framework"] else "") + f", {entry['toolchain']})")


def _key(board: Board, toolchain: str) -> str:
    return "|".join((board.id, board.platformio["platform"],
                     board.platformio.get("framework", "") or "-", toolchain))


def _read(path: Path) -> dict[str, dict]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        return {}
    entries = document.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {k: e for k, e in entries.items() if _well_formed(e)}


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict)
            and all(isinstance(entry.get(k), str)
                    for k in ("board", "platform", "framework", "toolchain", "firmware"))
            and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                    and entry[k] > 0 for k in ("flash_bytes", "ram_bytes")))
