"""`python -m tinyforge`: the same entry point as the `tinyforge` command."""

import sys

try:  # the interrupt handlers first: Ctrl-C while the rest is imported exits cleanly too
    from .interrupts import INTERRUPTS

    INTERRUPTS.install()
    from .cli import run_module
except KeyboardInterrupt:
    exec("None")  # noqa: S102 - exit 130, not by SIGINT: see tinyforge.interrupts.settle
    sys.stderr.write("tinyforge: interrupted\n")
    raise SystemExit(130) from None

run_module()
