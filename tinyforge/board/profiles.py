"""Board profiles: TOML files in `boards/`, validated on load.

A profile says everything tinyforge needs to know about a board: its PlatformIO
platform/board/framework (pinned), its memory limits, its TFLM library (pinned) and
the table mapping TFLite ops to that library's resolver methods, its USB ids and serial
quirks, and its sensors. Adding a board is adding a file; see docs/boards.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .. import resources
from ..errors import BoardProfileError

PROFILE_SCHEMA_VERSION = 1
BOARDS_PATH_ENV = "TINYFORGE_BOARDS_PATH"
_USB_ID = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")
_BOARD_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# The schema: section -> field -> (type, required). Unknown fields are errors, so a typo
# ("flash_byte") cannot silently fall back to a default.
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "": {
        "schema_version": (int, True), "id": (str, True), "name": (str, True),
        "description": (str, False), "mcu": (str, True), "cpu": (str, True),
        "clock_hz": (int, True), "pointer_bytes": (int, True), "emulated": (bool, False),
    },
    "memory": {
        "flash_bytes": (int, True), "ram_bytes": (int, True),
        "framework_flash_bytes": (int, True), "framework_ram_bytes": (int, True),
        "notes": (str, False),
    },
    "platformio": {
        "platform": (str, True), "board": (str, True), "framework": (str, False),
        "build_flags": (list, False), "build_unflags": (list, False),
        "extra_options": (dict, False), "packages": (list, False),
        "board_definition": (dict, False),
    },
    "tflm": {
        "library": (str, True), "version": (str, True), "source": (str, True),
        "include": (str, False), "resolver_table": (str, True),
        "flash_base_bytes": (int, True), "flash_per_op_bytes": (int, True),
        "interpreter_bytes": (int, True), "resolver_base_bytes": (int, True),
        "resolver_per_op_bytes": (int, True),
        "exclude_sources": (list, False), "build_flags": (list, False),
        "per_channel_fully_connected": (bool, False),
    },
    "runtime": {"layer": (str, True)},
    "serial": {
        "baud": (int, True), "usb_app": (str, False), "usb_bootloader": (str, False),
        "touch_1200bps": (bool, False), "reenumerate_timeout_s": ((float, int), False),
        "transport": (str, False),
    },
    "sensors": {},  # free-form: revision -> list of parts
}
_REQUIRED_SECTIONS = ("memory", "platformio", "tflm", "runtime", "serial")


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    mcu: str
    cpu: str
    clock_hz: int
    pointer_bytes: int
    emulated: bool
    description: str
    memory: dict[str, Any]
    platformio: dict[str, Any]
    tflm: dict[str, Any]
    runtime: dict[str, Any]
    serial: dict[str, Any]
    sensors: dict[str, list[str]]
    path: Path = field(compare=False)

    @property
    def flash_bytes(self) -> int:
        return self.memory["flash_bytes"]

    @property
    def ram_bytes(self) -> int:
        return self.memory["ram_bytes"]

    def usb_ids(self) -> list[tuple[int, int, str]]:
        """(vid, pid, role) for the application and the bootloader, where known."""
        ids = []
        for role in ("app", "bootloader"):
            value = self.serial.get(f"usb_{role}")
            if value:
                vid, pid = value.split(":")
                ids.append((int(vid, 16), int(pid, 16), role))
        return ids

    def summary(self) -> dict[str, Any]:
        """The machine-readable description used by `tinyforge boards --json`."""
        return {
            "id": self.id, "name": self.name, "mcu": self.mcu, "cpu": self.cpu,
            "clock_hz": self.clock_hz, "emulated": self.emulated,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "platform": self.platformio["platform"], "pio_board": self.platformio["board"],
            "framework": self.platformio.get("framework"),
            "tflm": f'{self.tflm["library"]} {self.tflm["version"]}',
            "usb": {role: self.serial.get(f"usb_{role}") for role in ("app", "bootloader")},
            "sensors": self.sensors,
        }


def board_dirs() -> list[Path]:
    """Where profiles are looked up: $TINYFORGE_BOARDS_PATH folders first, then the built-ins.

    A folder of your own lets you add a board (or override one) without touching tinyforge.
    """
    extra = [Path(p).expanduser() for p in os.environ.get(BOARDS_PATH_ENV, "").split(os.pathsep)
             if p]
    return extra + [resources.boards_dir()]


def _profile_paths() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in reversed(board_dirs()):  # earlier folders override later ones
        for path in directory.glob("*.toml"):
            found[path.stem] = path
    return dict(sorted(found.items()))


def known_board_ids() -> list[str]:
    return list(_profile_paths())


def load_board(board_id: str) -> Board:
    """Load and validate the profile of `board_id`; unknown ids list the known ones."""
    path = _profile_paths().get(board_id)
    if not _BOARD_ID.match(board_id) or path is None:
        known = ", ".join(known_board_ids()) or "(none)"
        raise BoardProfileError(f"unknown board '{board_id}'",
                                hint=f"use one of: {known} (see `tinyforge boards`)")
    return load_profile(path)


def load_all() -> list[Board]:
    return [load_profile(path) for path in _profile_paths().values()]


def load_profile(path: Path) -> Board:
    """Parse and validate one profile file; every problem names the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BoardProfileError(f"cannot read board profile {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"board profile {path} is not valid TOML: {exc}",
                                hint="fix the syntax error at the position shown") from None
    problems = _validate(data, path)
    if problems:
        raise BoardProfileError(f"board profile {path} is invalid",
                                details="\n".join(f"  - {p}" for p in problems),
                                hint="see docs/boards.md for the profile format")
    return Board(
        id=data["id"], name=data["name"], mcu=data["mcu"], cpu=data["cpu"],
        clock_hz=data["clock_hz"], pointer_bytes=data["pointer_bytes"],
        emulated=data.get("emulated", False), description=data.get("description", ""),
        memory=data["memory"], platformio=data["platformio"], tflm=data["tflm"],
        runtime=data["runtime"], serial=data["serial"], sensors=data.get("sensors", {}),
        path=path,
    )


def _validate(data: dict[str, Any], path: Path) -> list[str]:
    problems = []
    for section, fields in _SCHEMA.items():
        table = data if section == "" else data.get(section)
        if table is None:
            if section in _REQUIRED_SECTIONS:
                problems.append(f"missing section [{section}]")
            continue
        if not isinstance(table, dict):
            problems.append(f"'{section}' must be a table")
            continue
        if section == "sensors":
            problems += _validate_sensors(table)
            continue
        problems += _validate_fields(section, table, fields)
    if problems:
        return problems
    return _validate_values(data, path)


def _validate_fields(section, table, fields) -> list[str]:
    problems = []
    prefix = f"{section}." if section else ""
    for name, value in table.items():
        if section == "" and name in _SCHEMA:
            continue  # a sub-table, validated on its own
        if name not in fields:
            problems.append(f"unknown field '{prefix}{name}'")
            continue
        expected = fields[name][0]
        if isinstance(value, bool) and expected is not bool:
            problems.append(f"'{prefix}{name}' must be {_type_name(expected)}, not a boolean")
        elif not isinstance(value, expected):
            problems.append(f"'{prefix}{name}' must be {_type_name(expected)}, "
                            f"not {type(value).__name__}")
    for name, (_, required) in fields.items():
        if required and name not in table:
            problems.append(f"missing field '{prefix}{name}'")
    return problems


def _validate_sensors(table) -> list[str]:
    return [f"'sensors.{rev}' must be a list of part names" for rev, parts in table.items()
            if not (isinstance(parts, list) and all(isinstance(p, str) for p in parts))]


def _validate_values(data, path: Path) -> list[str]:
    problems = []
    if data["schema_version"] != PROFILE_SCHEMA_VERSION:
        problems.append(f"schema_version is {data['schema_version']}; this tinyforge reads "
                        f"version {PROFILE_SCHEMA_VERSION}")
    if data["id"] != path.stem:
        problems.append(f"id '{data['id']}' must match the file name '{path.stem}'")
    if not _BOARD_ID.match(data["id"]):
        problems.append("id must be lower-case letters, digits and '-'")
    for key in ("flash_bytes", "ram_bytes"):
        if data["memory"][key] <= 0:
            problems.append(f"memory.{key} must be positive")
    for role in ("usb_app", "usb_bootloader"):
        value = data["serial"].get(role)
        if value is not None and not _USB_ID.match(value):
            problems.append(f"serial.{role} must look like '2341:805a', not '{value}'")
    table = data["tflm"]["resolver_table"]
    if not any((d / table).is_file() for d in (path.parent, resources.boards_dir())):
        problems.append(f"tflm.resolver_table '{table}' not found next to the profile or in "
                        "tinyforge's boards/ (generate one with `tinyforge resolver-table`)")
    if data["pointer_bytes"] not in (4, 8):
        problems.append("pointer_bytes must be 4 or 8")
    for key in ("build_flags", "build_unflags", "packages"):
        values = data["platformio"].get(key, [])
        if not all(isinstance(v, str) for v in values):
            problems.append(f"platformio.{key} must be a list of strings")
    return problems


def _type_name(expected) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "a list",
             dict: "a table", float: "a number"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, getattr(expected, "__name__", str(expected)))
