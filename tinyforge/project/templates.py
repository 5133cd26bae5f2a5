"""Rendering `firmware_templates/`: the Jinja environment, C++ escaping, and file trees.

`render_tree()` turns a template folder plus the common sources and a board's runtime layer
into {relative path: bytes}. Templates run with StrictUndefined, so a missing value is an
error instead of an empty string; the `c_string`/`c_comment` filters make any text safe in
generated C++ (labels, model names and paths come from the user).
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from .. import resources
from ..board.profiles import Board, runtime_layers
from ..errors import BoardProfileError

_COMMON_SOURCES = "common"
_RUNTIME_LAYERS = "runtime"
_BYTES_PER_ARRAY_LINE = 12
_HEX_BYTES = [f"0x{value:02x}," for value in range(256)]


# Sources only a firmware whose pipeline reads a sensor compiles (docs/pipeline.md): the
# sensor interface, the replay interface (boards that replay recordings), and every file of a
# runtime layer whose name contains "sensors" (its implementation of board_sensors.h).
SENSOR_INTERFACE = "src/board_sensors.h"
REPLAY_INTERFACE = "src/board_replay.h"
_SENSOR_SOURCE_MARK = "sensors"


def render_tree(template_subdir: str, context: dict, board: Board, *, sensors: bool = False,
                replay: bool = False) -> dict[str, bytes]:
    """A firmware project: `firmware_templates/<template_subdir>` (`.j2` files rendered, the
    rest copied) plus the common sources and the board's runtime layer in `src/`.

    `sensors`: the firmware reads a sensor, so the sensor interface and the runtime layer's
    sensor sources are part of it; `replay`: its samples come from the host (board_replay.h).
    Without them a project is exactly what it was before sensors existed."""
    env = jinja_environment()
    root = resources.templates_dir()
    files: dict[str, bytes] = {}
    for template_path in sorted((root / template_subdir).rglob("*")):
        if not template_path.is_file():
            continue
        relative = template_path.relative_to(root / template_subdir).as_posix()
        if relative.endswith(".j2"):
            text = env.get_template(f"{template_subdir}/{relative}").render(context)
            files[relative[:-3]] = text.encode("utf-8")
        else:
            files[relative] = template_path.read_bytes()
    common = _static_sources(_COMMON_SOURCES)
    if not sensors:
        common.pop(SENSOR_INTERFACE, None)
    if not (sensors and replay):
        common.pop(REPLAY_INTERFACE, None)
    files.update(common)
    files.update({path: data for path, data in _static_sources(_runtime_layer(board)).items()
                  if sensors or _SENSOR_SOURCE_MARK not in Path(path).name})
    return files


def _runtime_layer(board: Board) -> str:
    """The board's runtime layer folder, which must be one of firmware_templates/runtime/.

    Profiles are validated on load; this check also holds for a `Board` made in code, since
    the folder's files are copied into the project ('../../..' would copy anything).
    """
    layer = board.runtime["layer"]
    root = (resources.templates_dir() / _RUNTIME_LAYERS).resolve()
    folder = (root / layer).resolve()
    if layer not in runtime_layers() or folder.parent != root:
        raise BoardProfileError(
            f"board '{board.id}': runtime.layer '{layer}' is not one of tinyforge's runtime "
            f"layers ({', '.join(runtime_layers())})",
            hint="see docs/boards.md: a runtime layer is a folder of firmware_templates/runtime/")
    return f"{_RUNTIME_LAYERS}/{layer}"


def platform_spec(board: Board) -> str:
    """The `platform =` value; `tinyforge:NAME` means a dev-platform shipped in this package.

    Such a platform is named by its platform.json, never by its folder: `tinyforge setup`
    registers that folder in tinyforge's PlatformIO core dir, so the rendered file holds no
    path of this machine.
    """
    platform = board.platformio["platform"]
    if platform.startswith("tinyforge:"):
        manifest = resources.platforms_dir() / platform.split(":", 1)[1] / "platform.json"
        return json.loads(manifest.read_text(encoding="utf-8"))["name"]
    return platform


def c_string(text: str) -> str:
    """A C++ string literal for any text: quotes, backslashes, controls and non-ASCII escaped.

    Octal escapes are used because hex escapes would swallow a following hex digit; `?` is
    escaped so no trigraph can form.
    """
    out = ['"']
    for byte in str(text).encode("utf-8"):
        if byte in (0x22, 0x5C, 0x3F):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    out.append('"')
    return "".join(out)


def c_comment(text: str) -> str:
    """Text safe inside // and /* */ comments: one line, ASCII, never ending a comment."""
    out = []
    for byte in str(text).encode("utf-8"):
        if 0x20 <= byte < 0x7F and byte != 0x5C:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")  # never a trailing backslash: no line splicing
    return "".join(out).replace("*/", "*\\x2f")


def c_byte_array(data: bytes, indent: str = "    ") -> str:
    lines = []
    for start in range(0, len(data), _BYTES_PER_ARRAY_LINE):
        chunk = data[start:start + _BYTES_PER_ARRAY_LINE]
        lines.append(indent + " ".join(map(_HEX_BYTES.__getitem__, chunk)))
    return "\n".join(lines)


def jinja_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.templates_dir())),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["c_string"] = c_string
    env.filters["c_comment"] = c_comment
    return env


def _static_sources(subdir: str) -> dict[str, bytes]:
    root = resources.templates_dir() / subdir
    if not root.is_dir():
        return {}
    return {f"src/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
