"""`tinyforge resolver-table`: regenerate a board's op -> resolver-method table from a TFLM tree."""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "resolver-table", parents=parents,
        help="print the op -> MicroMutableOpResolver method table of a TFLM tree",
        description="Read micro_mutable_op_resolver.h of a TFLM library tree and print the "
                    "table a board profile's [tflm] resolver_table names (docs/boards.md).")
    parser.add_argument("--tflm", type=Path, required=True, help="the TFLM library tree")
    parser.add_argument("--library", default="Chirale_TensorFlowLite",
                        help="library name to record (default: Chirale_TensorFlowLite)")
    parser.add_argument("--version", dest="library_version", required=True,
                        help="library version to record, e.g. 2.0.0")
    parser.add_argument("--output", type=Path, help="write to FILE instead of stdout")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..board.resolver import find_header, render_table, table_from_tree
    from ..board.tflm_source import resolve_tflm_source
    from ..project.writer import atomic_write_text

    root = resolve_tflm_source(args.tflm)
    table = table_from_tree(root, args.library, args.library_version)
    header = find_header(root).relative_to(root).as_posix()
    text = render_table(table, header)
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
