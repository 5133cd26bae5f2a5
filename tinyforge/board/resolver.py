"""Which `MicroMutableOpResolver::AddXxx()` registers each TFLite operator.

The method names cannot be derived from op names (`AddConv2D`, `AddBatchToSpaceNd`,
`AddDetectionPostprocess`), and they change between TFLM versions, so the mapping comes
from the `micro_mutable_op_resolver.h` of the TFLM library the board compiles:

- when a TFLM source tree is available (`--tflm`, `TINYFORGE_TFLM`), its header is parsed;
- otherwise the board's resolver table in `boards/tflm/` is used. That table records the same
  header of the pinned library version; `tinyforge resolver-table --tflm PATH` regenerates it
  and a test compares the two whenever a tree is available.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tomllib

from .. import resources
from ..errors import ResolverTableError
from ..userfiles import MiB, read_bytes, read_text

HEADER_RELATIVE_PATHS = (
    "src/tensorflow/lite/micro/micro_mutable_op_resolver.h",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h",
)

# `TfLiteStatus AddFoo(` up to the next such declaration is one method body.
_METHOD = re.compile(r"TfLiteStatus\s+(Add[A-Za-z0-9_]+)\s*\(")
_BUILTIN = re.compile(r"AddBuiltin\(\s*(?:tflite::)?BuiltinOperator_([A-Z0-9_]+)")
_CUSTOM_LITERAL = re.compile(r'AddCustom\(\s*"([^"]+)"')
_CUSTOM_GETSTRING = re.compile(r"AddCustom\(\s*(?:tflite::)?GetString_([A-Za-z0-9_]+)\(\)")
# Custom op names that TFLM returns from a GetString_XXX() function rather than a literal.
_GETSTRING_NAMES = {"ETHOSU": "ethos-u"}
_METHOD_NAME = re.compile(r"^Add[A-Za-z0-9_]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# The real files are ~30 KB (the header) and ~5 KB (a table).
_MAX_HEADER_BYTES = 4 * MiB
_MAX_TABLE_BYTES = 1 * MiB


@dataclass(frozen=True)
class ResolverTable:
    """Op name -> resolver method, for builtin and custom ops of one TFLM version."""

    library: str
    version: str
    builtin: dict[str, str]
    custom: dict[str, str]
    source: str  # where this table came from, for messages

    def method_for(self, op: str, *, custom: bool) -> str | None:
        return (self.custom if custom else self.builtin).get(op)


def parse_header(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(builtin, custom) op-name -> method mappings found in a resolver header's text."""
    builtin: dict[str, str] = {}
    custom: dict[str, str] = {}
    starts = [(m.start(), m.group(1)) for m in _METHOD.finditer(text)]
    for index, (start, method) in enumerate(starts):
        if method in ("AddBuiltin", "AddCustom"):
            continue  # the generic registration helpers themselves
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        body = text[start:end]
        if (match := _BUILTIN.search(body)):
            builtin[match.group(1)] = method
        elif (match := _CUSTOM_LITERAL.search(body)):
            custom[match.group(1)] = method
        elif (match := _CUSTOM_GETSTRING.search(body)):
            custom[_GETSTRING_NAMES.get(match.group(1), match.group(1))] = method
    if not builtin:
        raise ResolverTableError("no AddXxx() methods found in the resolver header",
                                 hint="is this TFLM's micro_mutable_op_resolver.h?")
    return builtin, custom


def find_header(tflm_root: Path) -> Path:
    for relative in HEADER_RELATIVE_PATHS:
        candidate = tflm_root / relative
        if candidate.is_file():
            return candidate
    raise ResolverTableError(
        f"{tflm_root} has no micro_mutable_op_resolver.h",
        hint="point --tflm (or TINYFORGE_TFLM) at the root of a TFLM Arduino library "
             "(the folder that holds library.properties and src/)")


def read_header(header: Path) -> bytes:
    """A TFLM tree's resolver header, read with a bound (the tree is the user's)."""
    return read_bytes(header, what="TFLM resolver header", limit=_MAX_HEADER_BYTES,
                      error=ResolverTableError,
                      hint="point --tflm (or TINYFORGE_TFLM) at an unmodified TFLM library tree")


def table_from_tree(tflm_root: Path, library: str, version: str) -> ResolverTable:
    header = find_header(tflm_root)
    builtin, custom = parse_header(read_header(header).decode("utf-8", errors="replace"))
    return ResolverTable(library, version, builtin, custom, source=str(header))


def resolver_table_path(relative_path: str, profile_dir: Path | None) -> Path | None:
    """Where a profile's resolver table is: next to the profile, else in tinyforge's `boards/`.
    A path that leaves that folder (through '..', an absolute path or a symlink) does not count."""
    for folder in filter(None, (profile_dir, resources.boards_dir())):
        candidate = (folder / relative_path).resolve()
        if candidate.is_relative_to(folder.resolve()) and candidate.is_file():
            return candidate
    return None


def load_table(relative_path: str, profile_dir: Path | None = None) -> ResolverTable:
    """Load a resolver table named by a board profile: next to the profile, else in `boards/`."""
    path = resolver_table_path(relative_path, profile_dir)
    hint = "regenerate it with `tinyforge resolver-table --tflm PATH`"
    if path is None:
        raise ResolverTableError(f"resolver table '{relative_path}' is not next to the board "
                                 "profile nor in tinyforge's boards/", hint=hint)
    text = read_text(path, what="resolver table", limit=_MAX_TABLE_BYTES,
                     error=ResolverTableError, hint=hint)
    try:
        data = tomllib.loads(text)
        table = ResolverTable(data["library"], data["version"], dict(data["builtin"]),
                              dict(data.get("custom", {})), source=str(path))
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise ResolverTableError(f"resolver table {path} is invalid: {exc}", hint=hint) from None
    problem = _table_problem(table)
    if problem:
        raise ResolverTableError(f"resolver table {path} is invalid: {problem}", hint=hint)
    return table


def _table_problem(table: ResolverTable) -> str | None:
    """The table comes from a profile's folder and its methods are written into C++ as
    `resolver.METHOD()`: each must be a plain `AddXxx` name."""
    for key, value in (("library", table.library), ("version", table.version)):
        if not (isinstance(value, str) and _NAME.match(value)):
            return f"{key} {value!r} must be letters, digits and '_ . + -'"
    for op, method in {**table.builtin, **table.custom}.items():
        if not (isinstance(op, str) and isinstance(method, str) and _METHOD_NAME.match(method)):
            return f"op {op!r} maps to {method!r}, not to an AddXxx method name"
    return None


def render_table(table: ResolverTable, header_name: str) -> str:
    """The TOML text of a resolver table, sorted so regeneration gives identical bytes."""
    lines = [
        f"# Which MicroMutableOpResolver method registers each op in {table.library} "
        f"{table.version}.",
        f"# Read from its {header_name} by `tinyforge resolver-table`; do not edit by hand.",
        f'library = "{table.library}"',
        f'version = "{table.version}"',
        "",
        "[builtin]",
        *(f'{op} = "{method}"' for op, method in sorted(table.builtin.items())),
        "",
        "[custom]",
        *(f'"{op}" = "{method}"' for op, method in sorted(table.custom.items())),
    ]
    return "\n".join(lines) + "\n"
