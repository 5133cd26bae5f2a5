"""The checks a model goes through for a board, before anything is rendered or compiled.

Used by `build` (strict: the first failure raises) and `inspect` (lenient: every finding is
recorded so that one report shows all the problems).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..board import profiles
from ..board.resolver import ResolverTable, load_table, table_from_tree
from ..errors import InputError
from . import arena as arena_mod
from . import compat, fit, reader
from .arena import ArenaPlan
from .compat import ResolvedOp
from .reference import HostRuntime, runtime_for_tree

log = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    """A .tflite model with everything checked: what `inspect` reports and `build` renders."""

    data: bytes
    info: reader.ModelInfo
    resolver: ResolverTable
    ops: list[ResolvedOp]
    unsupported_ops: list[str]
    unsupported_features: list[str]
    arena: ArenaPlan | None = None
    fit: fit.FitReport | None = None
    host_error: str | None = None
    conversion: dict | None = None
    reference: HostRuntime | None = None  # the host TFLM the dry run and arena ran on
    # Operators whose kernel in the board's TFLM is known to differ from the wheel's.
    known_differences: list = field(default_factory=list)


def prepare(data: bytes, name: str, board: profiles.Board, *, quantize: str = "int8",
            tflm_root: Path | None = None, strict: bool, force: bool = False) -> PreparedModel:
    """Inspect and check a .tflite for a board.

    strict=True (build) raises on the first failing check; strict=False (inspect) records
    what fails and carries on.
    """
    info = reader.inspect_bytes(data, name)
    if strict:
        compat.check_schema_version(info)
    table = resolver_table(board, tflm_root)
    ops, unsupported = compat.resolve_ops(info, table)
    if strict:
        compat.check_ops(info, table, board.id)
        compat.check_features(info, board)
        compat.check_io_types(info, quantize)
    prepared = PreparedModel(data, info, table, ops, unsupported,
                             compat.unsupported_features(info, board),
                             reference=runtime_for_tree(tflm_root, board=board))
    prepared.known_differences = _known_differences(prepared, board)
    try:
        # The measurement's first run is the dry run: a model TFLM cannot run fails there,
        # with TFLM's own words (fp16 weights, a missing kernel, ...).
        host = arena_mod.measure_on_host(data, name, prepared.reference)
    except InputError as error:
        if strict:
            raise
        prepared.host_error = "\n".join(filter(None, [error.message, error.details]))
        return prepared
    prepared.arena = arena_mod.plan_from_host(host)
    prepared.fit = fit.estimate(board, info, op_count=len(ops),
                                arena_bytes=prepared.arena.arena_bytes)
    if strict:
        if force and not prepared.fit.fits:
            log.warning("warning: the firmware may not fit the board; building anyway (--force)")
        elif not force:
            fit.check(prepared.fit, board, name)
    return prepared


def _known_differences(prepared: PreparedModel, board: profiles.Board) -> list:
    """The model's operators known to compute differently on the board than on the wheel;
    a warning when the wheel is the reference, since `validate` would then differ there."""
    from . import known_differences

    found = known_differences.find(prepared.data, board.tflm["library"], board.tflm["version"])
    if found and prepared.reference is not None and prepared.reference.kind == "wheel":
        log.warning("warning: %s uses %s, whose kernel in %s %s computes differently from "
                    "the reference's (%s; up to %d LSB measured in a model's output): "
                    "`validate` may differ there; give the board's TFLM tree (--tflm PATH) "
                    "to compare with its own kernels", prepared.info.name,
                    ", ".join(f.describe() for f in found), board.tflm["library"],
                    board.tflm["version"], prepared.reference.label,
                    max(f.difference.max_lsb for f in found))
    return found


def resolver_table(board: profiles.Board, tflm_root: Path | None) -> ResolverTable:
    """The board's op->method table; a local TFLM tree's own header wins when given."""
    table = load_table(board.tflm["resolver_table"], board.path.parent)
    if tflm_root is None:
        return table
    from_tree = table_from_tree(tflm_root, board.tflm["library"], "local tree")
    if (from_tree.builtin, from_tree.custom) != (table.builtin, table.custom):
        log.warning("note: the TFLM tree at %s registers ops differently from %s %s; using the "
                    "tree's resolver methods", tflm_root, table.library, table.version)
    return from_tree
