"""`python -m tinyforge`: the same entry point as the `tinyforge` command."""

try:
    from .cli import run_module
except KeyboardInterrupt:  # Ctrl-C while Python was still importing tinyforge
    raise SystemExit(130) from None

run_module()
