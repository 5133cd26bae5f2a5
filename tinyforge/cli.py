"""The `tinyforge` entry point: parses the command line, runs one command, maps errors to exit codes.

Each command lives in `tinyforge/commands/<name>.py` with `register(subparsers)` and
`run(args) -> int`. Command modules import heavy things (numpy, TensorFlow, jinja2) inside
`run()`, so `tinyforge --help` and `tinyforge boards` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__, jsonout, storage
from .errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, TinyforgeError
from .interrupts import INTERRUPTS, settle

# Order is the order of `tinyforge --help`.
COMMANDS = ("build", "inspect", "boards", "doctor", "setup", "flash", "monitor", "validate",
            "features", "capture", "report", "profile", "selftest", "resolver_table")

log = logging.getLogger("tinyforge")


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors; in tinyforge's contract 2 means a device error."""

    def error(self, message: str):
        raise _UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinyforge",
        description="From a TensorFlow model to checked, right-sized TFLM firmware.",
        epilog="Run `tinyforge COMMAND --help` for a command's options. Docs: docs/cli.md")
    parser.add_argument("--version", action="version", version=f"tinyforge {__version__}")
    # Accepted before the command too (`tinyforge -v build`); merged in main().
    parser.add_argument("-v", "--verbose", dest="global_verbose", action="store_true",
                        help="show child-process command lines, their output and tracebacks")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true",
                        help="only show warnings and errors")
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show child-process command lines, their output and tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", help="only show warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        module.register(subparsers, parents=[common])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run one command; its exit status. Ctrl-C propagates (run_module)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except _UsageError as usage:
        return _usage_error(usage, json_output="--json" in argv)
    if not args.command:
        parser.print_help()
        return 0
    args.verbose = args.verbose or args.global_verbose
    args.quiet = args.quiet or args.global_quiet
    _configure_logging(args)
    json_output = bool(getattr(args, "json", False))
    try:
        storage.require_temp_dir()
        return args.run(args)
    except TinyforgeError as error:
        _report(error, verbose=args.verbose)
        if json_output:
            _report_json(error, lines=getattr(args, "json_lines", False))
        return error.exit_code
    except KeyboardInterrupt:
        # run_module stops the children and exits 130; stdout still gets its JSON document.
        if json_output:
            jsonout.emit(jsonout.error_object("Interrupted", "interrupted",
                                              exit_code=EXIT_INTERRUPTED),
                         lines=getattr(args, "json_lines", False))
        raise
    except BrokenPipeError:
        # `tinyforge ... --json | head` closed the pipe; not our failure.
        sys.stderr.close()
        return 0
    except Exception:
        # A bug: the traceback goes to stderr as usual, and stdout still holds valid JSON.
        if json_output:
            jsonout.emit(jsonout.error_object(
                "InternalError", "tinyforge failed unexpectedly (this is a bug)",
                hint="please report it with the traceback tinyforge printed on stderr",
                exit_code=1), lines=getattr(args, "json_lines", False))
        raise


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("tinyforge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _usage_error(usage: _UsageError, *, json_output: bool) -> int:
    usage.parser.print_usage(sys.stderr)
    hint = f"run `{usage.parser.prog} --help` for the options"
    print(f"error: {usage.message}\nhint: {hint}", file=sys.stderr)
    if json_output:
        jsonout.emit(jsonout.error_object("UsageError", usage.message, hint=hint,
                                          exit_code=EXIT_USER_ERROR))
    return EXIT_USER_ERROR


def _report_json(error: TinyforgeError, *, lines: bool) -> None:
    """The error as a JSON object on stdout: the only document of a one-document command
    (a partial result such as validate's report goes beside it in the same object), or the
    last line of a JSON-lines stream (monitor)."""
    data = jsonout.error_object(type(error).__name__, error.message, details=error.details,
                                hint=error.hint, exit_code=error.exit_code)
    if error.result is not None:
        data = dict(error.result, **data)
    jsonout.emit(data, lines=lines)


def _report(error: TinyforgeError, *, verbose: bool) -> None:
    if verbose:
        import traceback
        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {error.message}", file=sys.stderr)
    if error.details:
        print(error.details, file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)


def run_module() -> None:
    """The `tinyforge` command. Ctrl-C at any point exits 130 (SIGTERM 143) without a
    traceback, once every child process is stopped and reaped (tinyforge.interrupts)."""
    code = EXIT_INTERRUPTED
    try:
        INTERRUPTS.install()
        code = main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SystemExit as exit_request:  # argparse (--help, usage errors) or SIGTERM
        code = exit_request.code
    finally:
        INTERRUPTS.hold()
        children = sys.modules.get(f"{__package__}.proc")  # no child started without it
        if children is not None:
            children.stop_all()
    INTERRUPTS.close()
    if INTERRUPTS.exit_code is not None:
        code = INTERRUPTS.exit_code
        settle()
        _say("tinyforge: interrupted" if code == EXIT_INTERRUPTED else "tinyforge: terminated")
    sys.exit(code)


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):  # stderr closed (a broken pipe) or gone
        pass
