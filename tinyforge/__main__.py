"""`python -m tinyforge`: the same entry point as the `tinyforge` command."""

from .cli import run_module

run_module()
