"""`tinyforge boards`: list the board profiles tinyforge knows."""

from __future__ import annotations

from .. import jsonout, units
from ..board import profiles


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser("boards", parents=parents, help="list the supported boards",
                                   description="List the board profiles in boards/.")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(run=run)


def run(args) -> int:
    known = profiles.load_all()
    if args.json:
        jsonout.emit([b.summary() for b in known])
        return 0
    width = max(len(b.id) for b in known)
    for board in known:
        kind = "emulated" if board.emulated else board.platformio["platform"]
        print(f"{board.id:<{width}}  {board.name}  ({board.mcu}, "
              f"{units.size(board.flash_bytes)} flash, {units.size(board.ram_bytes)} RAM; "
              f"{kind})")
    return 0
