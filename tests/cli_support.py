"""The `tinyforge` command line run inside the test process, as the entry point runs it.

A child `python -m tinyforge` costs a quarter of a second before the command starts (Python,
numpy, jinja2 and the host runtime imported again each time); most tests check what the
command does, not that it is a process. `run_in_process` gives such a test what a child would
have had and what it would have left:

- the environment exactly as given (nothing of the test process's own), the working
  directory, and a TMPDIR that `tempfile` reads again;
- stdout and stderr captured at the file descriptors, so output of child processes and of C
  code (TensorFlow's and TFLM's logging) is caught as a child's pipes would catch it;
- `cli.main(argv)` followed by what `cli.run_module` does last (`proc.stop_all()`), and
  SystemExit (argparse's --help, --version) read as the exit status;
- the process-wide state the command sets (the `tinyforge` logger, signal handlers,
  sys.unraisablehook) put back afterwards, and a check that no process it started is left.

An exception that escapes `main()` propagates into the test, which fails with its traceback:
the child would have printed that traceback and exited 1, which the test refuses too.

What only a process shows stays a child process (`tinyforge_process` in conftest.py): the
exit status of the real entry point, Ctrl-C and SIGTERM, start-up, `-I`/`-P` isolation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
# How long a child stopped by the command may take to disappear from /proc.
_CHILDREN_GONE_WITHIN_S = 5.0


class CommandTimedOut(BaseException):
    """The in-process command ran past its timeout (a BaseException, so that no `except
    Exception` of the command takes it for one of its own failures)."""


def run_in_process(args, *, env: dict[str, str], cwd: Path,
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `tinyforge ARGS` in this process; a CompletedProcess like subprocess.run's with
    capture_output=True, text=True. Past `timeout` (a blocking open of a FIFO included) the
    test fails with CommandTimedOut, as subprocess.run's timeout would fail it."""
    from tinyforge import cli, proc

    argv = [str(arg) for arg in args]
    children_before = descendants()
    captured = _Captured()
    try:
        with _environment(env), _working_directory(cwd), _process_state_restored(), \
                _captured() as captured, watchdog(timeout):
            try:
                code = cli.main(argv)
            except SystemExit as exit_request:
                code = _exit_status(exit_request.code)
            finally:
                proc.stop_all()
    except BaseException:
        # What the command printed before it failed, beside the test's traceback.
        sys.stderr.write(captured.stdout + captured.stderr)
        raise
    _assert_no_child_left(children_before)
    return subprocess.CompletedProcess(["tinyforge", *argv], code, captured.stdout,
                                       captured.stderr)


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise CommandTimedOut in this (the main) thread after `seconds`, even in a blocking
    system call: the handler runs, and its exception ends the call."""
    def expired(signum, frame):
        raise CommandTimedOut(f"the command ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message") prints it and exits 1
    return 1


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    saved_tempdir = tempfile.tempdir
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # recomputed from the command's TMPDIR
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = saved_tempdir


@contextlib.contextmanager
def _working_directory(cwd: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    logger = logging.getLogger("tinyforge")
    saved_logger = (logger.handlers[:], logger.level, logger.propagate)
    saved_signals = {number: signal.getsignal(number) for number in _SIGNALS}
    saved_hook = sys.unraisablehook
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved_logger
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        sys.unraisablehook = saved_hook


class _Captured:
    stdout = ""
    stderr = ""


@contextlib.contextmanager
def _captured() -> Iterator[_Captured]:
    """stdout and stderr of this process, file descriptors 1 and 2 included."""
    captured = _Captured()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            with _redirected(out, err):
                yield captured
        finally:
            texts = []
            for handle in (out, err):
                handle.seek(0)
                texts.append(handle.read().decode("utf-8", errors="backslashreplace"))
            captured.stdout, captured.stderr = texts


@contextlib.contextmanager
def _redirected(out, err) -> Iterator[None]:
    files = (out, err)
    saved_streams = (sys.stdout, sys.stderr)
    for stream in saved_streams:
        stream.flush()
    saved_fds = [os.dup(1), os.dup(2)]
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    # Like a child's stdout into a pipe: block-buffered text, written to descriptor 1.
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8",
                                  errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed by the command
                stream.flush()
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)


def descendants() -> set[int]:
    """Live processes below this one (children of children included); zombies left out."""
    parents = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat_file.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _assert_no_child_left(before: set[int]) -> None:
    deadline = time.monotonic() + _CHILDREN_GONE_WITHIN_S
    while (left := descendants() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"the command left processes behind: {sorted(left)}"


def sigint_blocked(pid: int) -> bool:
    """Whether a `tinyforge` child (alive or a zombie) blocks SIGINT: once its command is
    over and its children are gone, a signal no longer changes its exit status
    (tinyforge.interrupts.Interrupts.close)."""
    return bool(_signal_mask(pid, "SigBlk:") & (1 << (signal.SIGINT - 1)))


def handlers_installed(pid: int) -> bool:
    """Whether a `tinyforge` child has its own signal handlers in place (it alone catches
    SIGALRM, tinyforge.interrupts): from then on Ctrl-C is tinyforge's to handle, not
    Python's start-up's."""
    return bool(_signal_mask(pid, "SigCgt:") & (1 << (signal.SIGALRM - 1)))


def _signal_mask(pid: int, field: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line for line in status.splitlines()
                    if line.startswith(field)).split()[1], 16)
