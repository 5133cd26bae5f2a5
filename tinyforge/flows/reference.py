"""Which host reference `validate` compares a board with (docs/reference.md).

The board's own TFLM compiled for the host when a tree of it is at hand, else the
tflite-micro wheel. The tree is, in this order: `--tflm`; the local tree the last build
was made from (its manifest's `symlink://` dependency); TINYFORGE_TFLM.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..board.tflm_source import resolve_tflm_source
from ..errors import TinyforgeError
from ..model.reference import HostRuntime, WheelRuntime, runtime_for_tree

log = logging.getLogger(__name__)

CHOICES = ("auto", "tflm", "wheel")
_LOCAL_DEPENDENCY = "=symlink://"


def runtime_for_build(build, *, tflm: Path | None = None, choice: str = "auto") -> HostRuntime:
    """The reference runtime for the firmware of `build` (a `last_build.LastBuild`).

    `choice`: "auto" (the board's tree when there is one), "tflm" (the board's tree or an
    error saying why not) or "wheel".
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown reference {choice!r}")
    if choice == "wheel":
        return WheelRuntime(note="--reference wheel")
    tree = tree_for_build(build, tflm)
    return runtime_for_tree(tree, board=build.board, required=choice == "tflm")


def tree_for_build(build, explicit: Path | None) -> Path | None:
    """The TFLM library tree the board's firmware is made from, if one is at hand."""
    if explicit is not None:
        return resolve_tflm_source(explicit)
    built_from = _manifest_tree(build.manifest)
    if built_from is not None:
        try:
            return resolve_tflm_source(built_from)
        except TinyforgeError as error:  # moved or deleted since the build
            log.info("reference: the tree of the last build is gone (%s)", error.message)
    # PlatformIO's downloaded copy of the pinned library (.pio/libdeps/<env>/<library> in
    # the project) belongs here, before the environment: the builds branch adds that lookup
    # to board/tflm_source.py.
    return resolve_tflm_source(None)


def _manifest_tree(manifest: dict) -> Path | None:
    dependency = manifest.get("tflm", {}).get("dependency", "")
    if _LOCAL_DEPENDENCY not in dependency:
        return None
    return Path(dependency.split(_LOCAL_DEPENDENCY, 1)[1])
