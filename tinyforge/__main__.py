"""`python -m tinyforge`, and the `tinyforge` command (pyproject's entry point is `main`)."""

import os
import sys

# `python -m` put the working directory first on sys.path (the `tinyforge` script does not):
# a numpy.py or tensorflow.py there would be imported instead of the real package. tinyforge
# itself is already imported, and its own modules are found through the package.
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]


def main() -> None:
    """Install the interrupt handlers first, then import and run the command line: a Ctrl-C
    while the rest of tinyforge is imported exits 130 cleanly too (tinyforge.interrupts)."""
    try:
        from .interrupts import INTERRUPTS

        INTERRUPTS.install()
        from .cli import run_module
    except KeyboardInterrupt:
        exec("None")  # noqa: S102 - exit 130, not by SIGINT: see tinyforge.interrupts.settle
        sys.stderr.write("tinyforge: interrupted\n")
        raise SystemExit(130) from None
    run_module()


if __name__ == "__main__":
    main()
