"""TFLM library trees: a local one, or the pinned one PlatformIO downloaded into a project.

By default a rendered project gets TFLM as the board's pinned PlatformIO library
dependency. `--tflm PATH` or the TINYFORGE_TFLM environment variable name a local tree
instead (the root of an Arduino TFLM library: library.properties and src/). Once PlatformIO
has downloaded the pinned library into a project, `downloaded_tflm()` finds that copy, so the
arena can be measured with the board's own library without either.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..errors import TFLMSourceError
from .profiles import Board
from .resolver import HEADER_RELATIVE_PATHS

ENV_VAR = "TINYFORGE_TFLM"
# PlatformIO's record of an installed package; a few hundred bytes when PlatformIO wrote it.
_PIOPM_MAX_BYTES = 64 * 1024
# A TFLM Arduino library is ~500 files and ~8 MB; far more is not a library tree.
_DIGEST_MAX_FILES = 20_000
_DIGEST_MAX_BYTES = 256 * 1024 * 1024
_UNSAFE_IN_INI = re.compile(r"[\x00-\x1f\x7f,;#$]")


def resolve_tflm_source(explicit: Path | str | None) -> Path | None:
    """The TFLM tree to use (--tflm wins over $TINYFORGE_TFLM), validated; None if neither."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if value is None:
        return None
    origin = "--tflm" if explicit is not None else ENV_VAR
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        raise TFLMSourceError(f"the TFLM tree given by {origin} does not exist: {root}",
                              hint=f"point {origin} at a TFLM Arduino library folder")
    if _UNSAFE_IN_INI.search(str(root)):
        # The path is written into platformio.ini's lib_deps, where PlatformIO splits values
        # at commas and newlines and reads ' ;' or ' #' as a comment.
        raise TFLMSourceError(
            f"the TFLM tree's path {str(root)!r} (from {origin}) holds a character that "
            "platformio.ini cannot carry (a control character, ',', ';', '#' or '$')",
            hint="move or copy the tree to a path without those characters and give that")
    if not any((root / relative).is_file() for relative in HEADER_RELATIVE_PATHS):
        raise TFLMSourceError(
            f"{root} (from {origin}) is not a TFLM library tree: it has no "
            "tensorflow/lite/micro/micro_mutable_op_resolver.h",
            hint="give the library's root folder, the one holding library.properties and src/")
    return root


def missing_tflm_hint(board_id: str) -> str:
    return (f"give a local TFLM library tree: `tinyforge build --board {board_id} --tflm PATH` "
            f"or set {ENV_VAR}=PATH (e.g. a checkout of Chirale_TensorFlowLite v2.0.0); or "
            "connect to the internet so PlatformIO can download the pinned library")


def downloaded_tflm(board: Board, project_dir: Path | str) -> Path | None:
    """The board's pinned TFLM library as PlatformIO downloaded it into `project_dir`
    (`.pio/libdeps/<board>/<library>`, whose `.piopm` names the profile's `tflm.source`),
    or None. The project's own dependency, so nothing here needs the network."""
    root = Path(project_dir) / ".pio" / "libdeps" / board.id / board.tflm["library"]
    if not (root / ".piopm").is_file():  # nor a FIFO, which would block the read
        return None
    try:
        with open(root / ".piopm", "rb") as handle:
            record = json.loads(handle.read(_PIOPM_MAX_BYTES + 1)[:_PIOPM_MAX_BYTES])
        uri = record["spec"]["uri"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(uri, str) or _bare_uri(uri) != _bare_uri(board.tflm["source"]):
        return None
    if not any((root / relative).is_file() for relative in HEADER_RELATIVE_PATHS):
        return None
    return root.resolve()


def _bare_uri(uri: str) -> str:
    # PlatformIO records a git dependency as `git+https://...`; the profile says `https://...`.
    return uri.strip().removeprefix("git+")


def tree_digest(root: Path) -> str | None:
    """A digest of a library tree's content (relative paths and bytes), the same for every copy
    of it wherever it lives; dot-entries (.git, PlatformIO's .piopm) are left out. None for a
    tree too large to be a library or with a file that cannot be read: then nothing measured
    with it is cached."""
    root = Path(root)
    files = []
    for folder, subfolders, names in os.walk(root):  # never follows links to folders
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [Path(folder, name) for name in names if not name.startswith(".")]
    files = sorted(path for path in files if path.is_file())
    digest = hashlib.sha256()
    try:
        if (len(files) > _DIGEST_MAX_FILES
                or sum(path.stat().st_size for path in files) > _DIGEST_MAX_BYTES):
            return None
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        return None
    return digest.hexdigest()
