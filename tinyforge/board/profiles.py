"""Board profiles: TOML files in `boards/`, validated on load.

A profile says everything tinyforge needs to know about a board: its PlatformIO
platform/board/framework (pinned), its memory limits, its TFLM library (pinned) and
the table mapping TFLite ops to that library's resolver methods, its USB ids and serial
quirks, and its sensors. Adding a board is adding a file; see docs/boards.md.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import tomllib

from .. import resources, userfiles
from ..errors import BoardProfileError
from .resolver import resolver_table_path

PROFILE_SCHEMA_VERSION = 1
BOARDS_PATH_ENV = "TINYFORGE_BOARDS_PATH"
_USB_ID = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")
_BOARD_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_MAX_PROFILE_BYTES = 1 << 20

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
        "reenumerate_timeout_s": ((float, int), False),
    },
    "sensors": {},  # free-form: revision -> list of parts
    # Datasheet currents for the energy estimate (docs/cost.md); optional.
    "power": {
        "source": (str, True), "supply_v": ((float, int), True),
        "run_dcdc_ma": ((float, int), True), "run_ldo_ma": ((float, int), True),
        "sleep_ua": ((float, int), True), "notes": (str, False),
    },
}
_REQUIRED_SECTIONS = ("memory", "platformio", "tflm", "runtime", "serial")


@dataclass(frozen=True)
class SensorLibrary:
    """A library a firmware compiles when its pipeline reads `input` (`[[sensors.libraries]]`)."""

    input: str
    name: str
    version: str
    source: str

    @property
    def dependency(self) -> str:
        """The `lib_deps` entry: the library's name and its pinned source."""
        return f"{self.name}={self.source}"


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
    sensors: dict[str, list[str]]   # revision -> parts
    path: Path = field(compare=False)
    # `sensors.inputs`: the sensor pipelines the firmware can feed (docs/pipeline.md).
    inputs: tuple[str, ...] = ()
    power: dict[str, Any] = field(default_factory=dict)
    # `[[sensors.libraries]]`: what a sensor pipeline adds to lib_deps (docs/boards.md).
    sensor_libraries: tuple[SensorLibrary, ...] = ()

    def sensor_dependencies(self, pipeline_input: str) -> list[str]:
        """The `lib_deps` entries a firmware whose pipeline reads `pipeline_input` (host, imu,
        microphone) adds to the TFLM library, in profile order; none for `host`."""
        return [lib.dependency for lib in self.sensor_libraries if lib.input == pipeline_input]

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
            "sensors": self.sensors, "inputs": list(self.inputs),
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
    text = userfiles.read_text(path, what="board profile", limit=_MAX_PROFILE_BYTES,
                               error=BoardProfileError,
                               hint=f"a profile is a TOML file; fix or remove {path} (folders "
                                    f"in ${BOARDS_PATH_ENV} are searched first)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"board profile {path} is not valid TOML: {exc}",
                                hint="fix the syntax error at the position shown") from None
    problems = _validate(data, path)
    if problems:
        raise BoardProfileError(f"board profile {path} is invalid",
                                details="\n".join(f"  - {p}" for p in problems),
                                hint="see docs/boards.md for the profile format")
    sensors = dict(data.get("sensors", {}))
    inputs = tuple(sensors.pop("inputs", ()))
    libraries = tuple(SensorLibrary(**entry) for entry in sensors.pop("libraries", ()))
    return Board(
        id=data["id"], name=data["name"], mcu=data["mcu"], cpu=data["cpu"],
        clock_hz=data["clock_hz"], pointer_bytes=data["pointer_bytes"],
        emulated=data.get("emulated", False), description=data.get("description", ""),
        memory=data["memory"], platformio=data["platformio"], tflm=data["tflm"],
        runtime=data["runtime"], serial=data["serial"], sensors=sensors,
        path=path, inputs=inputs, power=data.get("power", {}), sensor_libraries=libraries,
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


SENSOR_INPUTS = ("imu", "microphone")


_SENSOR_LIBRARY_FIELDS = ("input", "name", "version", "source")


def _validate_sensors(table) -> list[str]:
    problems = [f"'sensors.{rev}' must be a list of part names" for rev, parts in table.items()
                if rev != "libraries"
                and not (isinstance(parts, list) and all(isinstance(p, str) for p in parts))]
    problems += _validate_sensor_libraries(table.get("libraries", []),
                                           table.get("inputs", []))
    unknown = [i for i in table.get("inputs", []) if i not in SENSOR_INPUTS]
    if unknown and not problems:
        problems.append(f"'sensors.inputs' has unknown inputs {unknown}; use "
                        f"{', '.join(SENSOR_INPUTS)}")
    return problems


def _validate_sensor_libraries(libraries, inputs) -> list[str]:
    """`[[sensors.libraries]]`: tables of input, name, version and a pinned source, each a
    string that reaches platformio.ini (the same character sets as the TFLM library's)."""
    if not isinstance(libraries, list) or not all(isinstance(e, dict) for e in libraries):
        return ["'sensors.libraries' must be an array of tables ([[sensors.libraries]])"]
    problems = []
    for index, entry in enumerate(libraries):
        name = f"sensors.libraries[{index}]"
        unknown = sorted(set(entry) - set(_SENSOR_LIBRARY_FIELDS))
        missing = [f for f in _SENSOR_LIBRARY_FIELDS if f not in entry]
        if unknown or missing or not all(isinstance(entry[f], str) for f in entry):
            problems.append(f"'{name}' must have exactly the string fields "
                            f"{', '.join(_SENSOR_LIBRARY_FIELDS)}"
                            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                            + (f" (missing: {', '.join(missing)})" if missing else ""))
            continue
        if entry["input"] not in inputs:
            problems.append(f"{name}.input '{entry['input']}' is not one of sensors.inputs "
                            f"({', '.join(inputs) or 'none'})")
        if _CONTROL.search("".join(entry.values())):
            problems.append(f"{name} has a control character in a value")
            continue
        if not _LIBRARY.match(entry["name"]):
            problems.append(f"{name}.name '{entry['name']}' must be letters, digits, '_ . -'")
        if not _VERSION.match(entry["version"]):
            problems.append(f"{name}.version '{entry['version']}' must be letters, digits, "
                            "'_ . + -'")
        problems += _check_remote_spec(entry["source"], f"{name}.source")
    return problems


def _validate_values(data, path: Path) -> list[str]:
    """The values, checked as untrusted data: a profile may come from any folder in
    $TINYFORGE_BOARDS_PATH, and its strings end up in platformio.ini, in C++ and in paths."""
    problems = []
    if data["schema_version"] != PROFILE_SCHEMA_VERSION:
        problems.append(f"schema_version is {data['schema_version']}; this tinyforge reads "
                        f"version {PROFILE_SCHEMA_VERSION}")
    if data["id"] != path.stem:
        problems.append(f"id '{data['id']}' must match the file name '{path.stem}'")
    if not _BOARD_ID.match(data["id"]):
        problems.append("id must be lower-case letters, digits and '-'")
    if data["pointer_bytes"] not in (4, 8):
        problems.append("pointer_bytes must be 4 or 8")
    problems += _check_text(data)
    if problems:
        return problems  # the checks below assume one-line, printable strings
    for check in (_check_numbers, _check_platformio, _check_tflm, _check_runtime,
                  _check_serial):
        problems += check(data, path)
    return problems


# --- strings ------------------------------------------------------------------------------

# Every string of a profile is one line of printable text: a newline in a name would start a
# new line (an option, a section) in platformio.ini, an escape sequence would reach the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_TEXT = 1000
# Strings that reach platformio.ini or C++ get a character set of their own. None allows white
# space (PlatformIO reads " ;" and " #" as the start of a comment), quotes, backslashes, '$'
# (PlatformIO and SCons expand ${...}) or a leading '!' (PlatformIO runs such build flags as
# shell commands).
_PIO_BOARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FRAMEWORK = re.compile(r"^[a-z0-9][a-z0-9_-]*(,[a-z0-9][a-z0-9_-]*)*$")
# A package spec: `name@1.2.3`, `owner/name@^1.2`, or a URL pinned with `#ref`.
_PACKAGE_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@/:+#~^=<>!,%-]*$")
_REMOTE_SCHEMES = ("https://", "http://", "git+https://", "git+ssh://", "ssh://", "git@")
_FLAG = re.compile(r"^-[A-Za-z0-9_][A-Za-z0-9_.,:/=+-]*$")
_OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.,:/=+@~^*-]+$")
_LIBRARY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_PATTERN_PART = re.compile(r"^[A-Za-z0-9_*?][A-Za-z0-9_.*?+-]*$")
_HEADER = re.compile(r"\.(h|hh|hpp)$")
_CORE_PACKAGE = re.compile(r"^(platforms|packages)/[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
_LAYER = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TINYFORGE_PLATFORM = re.compile(r"^tinyforge:([a-z0-9][a-z0-9_]*)$")

# platformio.ini options a profile may add ([platformio.extra_options]). Options that run
# programs or scripts (extra_scripts, upload_command, platform_packages, debug_server...) or
# name files and folders (*_dir, board_build.ldscript...) are not here: a profile is data, and
# the project must stay the project tinyforge rendered. Options tinyforge writes itself are not
# here either. A board that needs another harmless option gets it added in this list.
EXTRA_OPTIONS = frozenset({
    "monitor_speed", "monitor_rts", "monitor_dtr",
    "lib_compat_mode", "lib_ldf_mode", "lib_archive",
    "upload_protocol", "upload_speed", "build_type",
    "board_build.mcu", "board_build.f_cpu",
    "board_upload.maximum_size", "board_upload.maximum_ram_size",
    "board_upload.use_1200bps_touch", "board_upload.wait_for_upload_port",
})


def _strings(value, name: str) -> Iterator[tuple[str, str]]:
    """(dotted field name, string) for every string in a profile, keys of tables included."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{name}.{key}" if name else str(key)
            yield f"key of {child}", str(key)
            yield from _strings(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{name}[{index}]")


def _check_text(data) -> list[str]:
    problems = []
    for name, text in _strings(data, ""):
        if _CONTROL.search(text):
            # A key can hold the control character itself: show it escaped.
            shown = name.encode("unicode_escape").decode("ascii")
            problems.append(f"'{shown}' holds a control character (a newline, tab or escape): "
                            "profile strings are one line of printable text")
        elif len(text) > _MAX_TEXT:
            problems.append(f"'{name}' is {len(text):,} characters long; at most {_MAX_TEXT:,}")
    return problems


def _check_remote_spec(value: str, name: str) -> list[str]:
    """A package spec PlatformIO downloads: no local paths (those would copy any folder of this
    machine into the project; a local TFLM tree is `--tflm`'s job)."""
    if not _PACKAGE_SPEC.match(value):
        return [f"{name} '{value}' is not a package spec (a name@version or a URL, without "
                "spaces, quotes, '$', ';' or backslashes)"]
    if "://" in value and not value.startswith(_REMOTE_SCHEMES):
        return [f"{name} '{value}' must be a registry package or a remote URL "
                f"({', '.join(s for s in _REMOTE_SCHEMES if '://' in s)}), not a local one"]
    if value.startswith((".", "/", "~")) or ".." in PurePosixPath(value.split("#")[0]).parts:
        return [f"{name} '{value}' must be a registry package or a remote URL, not a path"]
    return []


def _relative_path_problem(value: str, name: str, part: re.Pattern) -> str | None:
    """Why `value` is not a plain relative path (each part matching `part`), or None."""
    parts = value.split("/")
    if not value or value.startswith("/") or not all(part.match(p) for p in parts):
        return (f"{name} '{value}' must be a relative path of letters, digits and "
                "'_ . + -' (no '..', no leading '/', no backslashes)")
    return None


# --- numbers ------------------------------------------------------------------------------

MIN_CLOCK_HZ, MAX_CLOCK_HZ = 1_000_000, 2_000_000_000
MIN_FLASH_BYTES, MIN_RAM_BYTES, MAX_MEMORY_BYTES = 16 * 1024, 2 * 1024, 256 * 1024 * 1024
MAX_REENUMERATE_S = 120.0
# Rates the host's serial driver sets without a custom divisor (termios B*; pyserial's list).
STANDARD_BAUDS = (300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200,
                  230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000,
                  2500000, 3000000, 3500000, 4000000)


def _check_numbers(data, path: Path) -> list[str]:
    problems = []
    if not MIN_CLOCK_HZ <= data["clock_hz"] <= MAX_CLOCK_HZ:
        problems.append(f"clock_hz is {data['clock_hz']:,}; a microcontroller runs at "
                        f"{MIN_CLOCK_HZ:,} to {MAX_CLOCK_HZ:,} Hz")
    memory = data["memory"]
    for key, minimum in (("flash_bytes", MIN_FLASH_BYTES), ("ram_bytes", MIN_RAM_BYTES)):
        if not minimum <= memory[key] <= MAX_MEMORY_BYTES:
            problems.append(f"memory.{key} is {memory[key]:,}; it must be positive, from "
                            f"{minimum:,} to {MAX_MEMORY_BYTES:,} bytes")
    if problems:
        return problems
    # What the framework and TFLM take must leave room for the model and the arena.
    for key, total in (("framework_flash_bytes", "flash_bytes"),
                       ("framework_ram_bytes", "ram_bytes")):
        if not 0 <= memory[key] < memory[total]:
            problems.append(f"memory.{key} is {memory[key]:,}; it must be at least 0 and less "
                            f"than memory.{total} ({memory[total]:,})")
    for key in ("supply_v", "run_dcdc_ma", "run_ldo_ma", "sleep_ua"):
        value = data.get("power", {}).get(key)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"power.{key} is {value}; it must be a positive number")
    tflm = data["tflm"]
    for key in ("flash_base_bytes", "flash_per_op_bytes"):
        if not 0 <= tflm[key] < memory["flash_bytes"]:
            problems.append(f"tflm.{key} is {tflm[key]:,}; it must be at least 0 and less than "
                            f"memory.flash_bytes ({memory['flash_bytes']:,})")
    return problems


# --- sections -----------------------------------------------------------------------------

def _check_platformio(data, path: Path) -> list[str]:
    pio = data["platformio"]
    problems = []
    platform = pio["platform"]
    if (own := _TINYFORGE_PLATFORM.match(platform)):
        if not (resources.platforms_dir() / own.group(1)).is_dir():
            known = sorted(p.name for p in resources.platforms_dir().iterdir() if p.is_dir())
            problems.append(f"platformio.platform '{platform}': tinyforge ships no dev-platform "
                            f"'{own.group(1)}' (it has: {', '.join(known)})")
    elif platform.startswith("tinyforge:"):
        problems.append(f"platformio.platform '{platform}' must be 'tinyforge:NAME' with NAME "
                        "of lower-case letters, digits and '_'")
    else:
        problems += _check_remote_spec(platform, "platformio.platform")
    if not _PIO_BOARD.match(pio["board"]):
        problems.append(f"platformio.board '{pio['board']}' must be letters, digits, '_ . -'")
    if "framework" in pio and not _FRAMEWORK.match(pio["framework"]):
        problems.append(f"platformio.framework '{pio['framework']}' must be lower-case letters, "
                        "digits, '_ -' (several separated by ',')")
    for key in ("build_flags", "build_unflags"):
        problems += _check_flags(pio.get(key, []), f"platformio.{key}")
    for index, entry in enumerate(pio.get("packages", [])):
        if not isinstance(entry, str) or not _CORE_PACKAGE.match(entry):
            problems.append(f"platformio.packages[{index}] must be 'platforms/NAME' or "
                            f"'packages/NAME' (a folder of PlatformIO's core dir)")
    problems += _check_extra_options(pio.get("extra_options", {}))
    return problems


def _check_flags(flags, name: str) -> list[str]:
    if not all(isinstance(flag, str) for flag in flags):
        return [f"{name} must be a list of strings"]
    return [f"{name}[{index}] '{flag}' must be one compiler flag: '-' then letters, digits "
            "and '_ . , : / = + -' (no spaces, quotes, '$', ';', '#' or backslashes)"
            for index, flag in enumerate(flags) if not _FLAG.match(flag)]


def _check_extra_options(options: dict) -> list[str]:
    problems = []
    for key, value in options.items():
        if key not in EXTRA_OPTIONS:
            problems.append(f"platformio.extra_options: '{key}' is not an option a profile may "
                            f"set (allowed: {', '.join(sorted(EXTRA_OPTIONS))})")
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            problems.append(f"platformio.extra_options.{key} must be a string or a list of "
                            "strings")
        elif not all(_OPTION_VALUE.match(v) for v in values):
            problems.append(f"platformio.extra_options.{key} must be letters, digits and "
                            "'_ . , : / = + @ ~ ^ * -' (no spaces, quotes, '$', ';', '#' or "
                            "backslashes)")
    return problems


def _check_tflm(data, path: Path) -> list[str]:
    tflm = data["tflm"]
    problems = []
    if not _LIBRARY.match(tflm["library"]):
        problems.append(f"tflm.library '{tflm['library']}' must be letters, digits, '_ . -'")
    if not _VERSION.match(tflm["version"]):
        problems.append(f"tflm.version '{tflm['version']}' must be letters, digits, '_ . + -'")
    problems += _check_remote_spec(tflm["source"], "tflm.source")
    include = tflm.get("include", "")
    if include and (_relative_path_problem(include, "tflm.include", _PATH_PART)
                    or not _HEADER.search(include)):
        problems.append(f"tflm.include '{include}' must be a header's relative path (.h, .hh "
                        "or .hpp) of letters, digits and '_ . + -', or empty")
    problems += _check_resolver_table(tflm["resolver_table"], path)
    for index, pattern in enumerate(tflm.get("exclude_sources", [])):
        problem = (_relative_path_problem(pattern, f"tflm.exclude_sources[{index}]",
                                          _PATTERN_PART) if isinstance(pattern, str)
                   else f"tflm.exclude_sources[{index}] must be a string")
        if problem:
            problems.append(problem + "; '*' and '?' match within the library")
    problems += _check_flags(tflm.get("build_flags", []), "tflm.build_flags")
    return problems


def _check_resolver_table(table: str, path: Path) -> list[str]:
    problem = _relative_path_problem(table, "tflm.resolver_table", _PATH_PART)
    if problem or not table.endswith(".toml"):
        return [problem or f"tflm.resolver_table '{table}' must name a .toml file"]
    if resolver_table_path(table, path.parent) is None:
        return [f"tflm.resolver_table '{table}' not found next to the profile or in "
                "tinyforge's boards/ (generate one with `tinyforge resolver-table`)"]
    return []


def _check_runtime(data, path: Path) -> list[str]:
    layer = data["runtime"]["layer"]
    layers = runtime_layers()
    if _LAYER.match(layer) and layer in layers:
        return []
    return [f"runtime.layer '{layer}' is not one of tinyforge's runtime layers "
            f"(firmware_templates/runtime/: {', '.join(layers)})"]


def runtime_layers() -> list[str]:
    """The board runtime layers tinyforge ships (folders of firmware_templates/runtime/)."""
    root = resources.templates_dir() / "runtime"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _LAYER.match(p.name))


def _check_serial(data, path: Path) -> list[str]:
    serial = data["serial"]
    problems = []
    if serial["baud"] not in STANDARD_BAUDS:
        problems.append(f"serial.baud {serial['baud']:,} is not a standard rate (one of "
                        f"{', '.join(map(str, STANDARD_BAUDS))})")
    for role in ("usb_app", "usb_bootloader"):
        value = serial.get(role)
        if value is not None and not _USB_ID.match(value):
            problems.append(f"serial.{role} must look like '2341:805a', not '{value}'")
    timeout = serial.get("reenumerate_timeout_s")
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_REENUMERATE_S):
        problems.append(f"serial.reenumerate_timeout_s is {timeout}; it must be more than 0 and "
                        f"at most {MAX_REENUMERATE_S:g} seconds")
    return problems


def _type_name(expected) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "a list",
             dict: "a table", float: "a number"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, getattr(expected, "__name__", str(expected)))
