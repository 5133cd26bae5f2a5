"""A local TFLM library tree, for offline or air-gapped builds and custom forks.

By default a rendered project gets TFLM as the board's pinned PlatformIO library
dependency. `--tflm PATH` or the TINYFORGE_TFLM environment variable name a local tree
instead (the root of an Arduino TFLM library: library.properties and src/).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import TFLMSourceError
from .resolver import HEADER_RELATIVE_PATHS

ENV_VAR = "TINYFORGE_TFLM"
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
