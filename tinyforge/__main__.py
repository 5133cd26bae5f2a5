"""`python -m tinyforge`: the same entry point as the `tinyforge` command."""

import os
import sys

# `python -m` put the working directory first on sys.path (the `tinyforge` script does not):
# a numpy.py or tensorflow.py there would be imported instead of the real package. tinyforge
# itself is already imported, and its own modules are found through the package.
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import run_module  # noqa: E402

run_module()
