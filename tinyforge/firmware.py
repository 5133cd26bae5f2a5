"""The files of a model firmware project, rendered from `firmware_templates/`.

`project_files()` turns checked inputs (board, model, resolved ops, arena plan, labels, demo
input) into {relative path: bytes}; `render.write()` puts them on disk. Everything here is a
pure function of its inputs: no timestamps, no absolute paths except those the user chose
(a local TFLM tree), sorted iteration everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from . import __version__, resources
from .boards import Board
from .model.arena import ArenaPlan
from .model.compat import ResolvedOp
from .model.reader import ModelInfo, TensorInfo
from .resolver import ResolverTable

PROTOCOL_VERSION = 1
_PROJECT_TEMPLATES = "project"
_COMMON_SOURCES = "common"
_RUNTIME_LAYERS = "runtime"
# Bytes of an IN message around its hex payload: "!tf1 IN seq=4294967295 data=" + " *crc\r\n".
_LINE_OVERHEAD = 64
_BYTES_PER_ARRAY_LINE = 12
_HEX_BYTES = [f"0x{value:02x}," for value in range(256)]


@dataclass(frozen=True)
class FirmwareInputs:
    board: Board
    model: bytes
    info: ModelInfo
    ops: list[ResolvedOp]
    resolver: ResolverTable
    arena: ArenaPlan
    labels: list[str]
    demo_input: bytes | None     # raw bytes of all input tensors, or None
    tflm_source: Path | None     # a local TFLM library tree instead of the pinned dependency


def project_files(inputs: FirmwareInputs) -> dict[str, bytes]:
    """Every file of the project, keyed by its path relative to the project root."""
    files = render_tree(_PROJECT_TEMPLATES, _context(inputs), inputs.board)
    files[".tinyforge/model.tflite"] = inputs.model
    return files


def render_tree(template_subdir: str, context: dict, board: Board) -> dict[str, bytes]:
    """A firmware project: `firmware_templates/<template_subdir>` (`.j2` files rendered, the
    rest copied) plus the common sources and the board's runtime layer in `src/`."""
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
    files.update(_static_sources(_COMMON_SOURCES))
    files.update(_static_sources(f"{_RUNTIME_LAYERS}/{board.runtime['layer']}"))
    return files


def manifest(inputs: FirmwareInputs) -> dict:
    """What the project was made from; `flash`, `monitor` and `validate` read it back."""
    info = inputs.info
    return {
        "tinyforge_version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "board": inputs.board.id,
        "environment": inputs.board.id,
        "model": {"name": info.name, "sha256": info.sha256, "bytes": info.size,
                  "path": ".tinyforge/model.tflite"},
        "ops": [op.name for op in inputs.ops],
        "arena": inputs.arena.to_json_stable(),
        "tflm": {"library": inputs.resolver.library, "version": inputs.resolver.version,
                 "dependency": tflm_dependency(inputs.board, inputs.tflm_source)},
        "labels": inputs.labels,
        "demo_input": inputs.demo_input is not None,
    }


def tflm_dependency(board: Board, tflm_source: Path | None) -> str:
    """The lib_deps entry: the pinned library, or a local tree given by the user."""
    library = board.tflm["library"]
    if tflm_source is not None:
        return f"{library}=symlink://{Path(tflm_source).resolve()}"
    return f"{library}={board.tflm['source']}"


def platform_spec(board: Board) -> str:
    """The `platform =` value; `tinyforge:NAME` means a dev-platform shipped in this package."""
    platform = board.platformio["platform"]
    if platform.startswith("tinyforge:"):
        from .pio_core import PLATFORMS_DIR
        return f"symlink://{PLATFORMS_DIR / platform.split(':', 1)[1]}"
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


def _context(inputs: FirmwareInputs) -> dict:
    board, info = inputs.board, inputs.info
    input_bytes = sum(t.byte_size for t in info.inputs)
    pio = board.platformio
    extra_options = dict(pio.get("extra_options", {}))
    if board.tflm.get("exclude_sources"):
        extra_options["custom_tflm_exclude"] = list(board.tflm["exclude_sources"])
    return {
        "version": __version__,
        "board": board,
        "platform": platform_spec(board),
        "tflm_dependency": tflm_dependency(board, inputs.tflm_source),
        "tflm_include": board.tflm.get("include", ""),
        "build_flags": list(pio.get("build_flags", [])) + list(board.tflm.get("build_flags", [])),
        "build_unflags": list(pio.get("build_unflags", [])),
        "extra_options": sorted(extra_options.items()),
        "model": info,
        "model_array": c_byte_array(inputs.model),
        "ops": inputs.ops,
        "resolver": inputs.resolver,
        "resolver_origin": _origin(inputs.resolver),
        "arena": inputs.arena,
        "resource_variables": info.resource_variables,
        "inputs": [_tensor_context(t) for t in info.inputs],
        "outputs": [_tensor_context(t) for t in info.outputs],
        "input_bytes": input_bytes,
        "max_line_length": 2 * input_bytes + _LINE_OVERHEAD,
        "labels": inputs.labels,
        "demo_input": inputs.demo_input is not None,
        "demo_array": c_byte_array(inputs.demo_input or b""),
    }


def _tensor_context(tensor: TensorInfo) -> dict:
    return {"name": tensor.name, "dtype": tensor.dtype, "shape": tensor.shape,
            "bytes": tensor.byte_size}


def _origin(table: ResolverTable) -> str:
    # Only the file name: an absolute path would make the project differ between machines.
    return Path(table.source).name


def _static_sources(subdir: str) -> dict[str, bytes]:
    root = resources.templates_dir() / subdir
    if not root.is_dir():
        return {}
    return {f"src/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
