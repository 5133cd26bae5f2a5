"""`tinyforge report`: one self-contained HTML page (and PNGs) about the last build."""

from __future__ import annotations

from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "report", parents=parents, help="write an HTML report of the last build",
        description="Write one self-contained HTML file with plots, and PNGs of the same "
                    "plots: tensor lifetimes and arena occupancy, per-layer cost (MACs, and "
                    "instructions once profiled), latency and energy on the nRF52840, the "
                    "flash/RAM breakdown from the linker map against the board's limits, and "
                    "the last validate run. Sections without data say so.")
    parser.add_argument("--board", help="board id (default: the board of the last build)")
    parser.add_argument("--project-dir", type=Path,
                        help="the project `tinyforge build` wrote (default: the newest under "
                             "./build/)")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="folder for report.html and the PNGs (default: PROJECT/report)")
    parser.add_argument("--rate", type=float, default=1.0, metavar="HZ",
                        help="decisions per second for the average power (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="print where the files went and each section's state as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..flows.report import report_last_build

    result = report_last_build(project_dir=args.project_dir, board_id=args.board,
                               output_dir=args.output, decisions_per_s=args.rate)
    if args.json:
        jsonout.emit(result.to_json())
        return 0
    print(f"report: {result.html}")
    for section, state in result.sections.items():
        print(f"  {section:<11} {state}")
    return 0
