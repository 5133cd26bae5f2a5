"""The one way tinyforge runs child processes (pio, compilers, QEMU, its own workers).

- the quoted argv is logged at debug level (`--verbose`);
- a missing program raises `ToolMissingError` with an install hint;
- every call has a timeout; the whole process group is killed when it expires or on Ctrl-C;
- output (stdout and stderr merged) is streamed line by line to a callback as it arrives;
- a non-zero exit raises `ChildProcessFailed` carrying the last lines of output;
- every live child (these, and the forked ones of `tinyforge.model.isolated`) is tracked, so
  the command line can stop and reap them all however it ends (`stop_all()`), and Ctrl-C is
  held while a child starts (`signals_deferred()`), so none starts untracked.
Never `shell=True`.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from .errors import ChildProcessFailed, ChildTimeoutError, ToolMissingError

log = logging.getLogger(__name__)

# How many trailing output lines an error keeps to show the user.
TAIL_LINES = 25
# Grace period between SIGTERM and SIGKILL when stopping a child.
TERMINATE_GRACE_S = 3.0

LineCallback = Callable[[str], None]
# The signals a child's start must not be cut by (Ctrl-C, `kill`).
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# pid -> how to stop and reap that child. A plain dict: its operations are atomic, and
# stop_all() may run from a signal handler while the main thread is inside track().
_live: dict[int, Callable[[], None]] = {}


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    output: list[str]  # every line, without line endings
    seconds: float

    @property
    def text(self) -> str:
        return "\n".join(self.output)


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module ARGS` with this interpreter, never importing from the cwd.

    `python -m` puts the working directory first on `sys.path`, so a `numpy.py` or
    `tensorflow.py` lying there would be imported instead of the real package. `-P` (Python
    3.11+) leaves it out. Not `-I`: that would also ignore PYTHONPATH, which may be how this
    very copy of tinyforge was found (several checkouts sharing one venv).
    """
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _RUN_MODULE_WITHOUT_CWD, module, *args]


# Python 3.10 has no -P: `-c` puts '' (the cwd) first on sys.path; drop it, then run the module.
_RUN_MODULE_WITHOUT_CWD = ("import runpy, sys; del sys.path[0]; del sys.argv[0]; "
                           "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def pythonpath(first: str | None = None) -> str | None:
    """PYTHONPATH for a Python child: `first`, then the absolute entries of ours.

    An empty or relative entry resolves against the child's working directory, which would
    let modules there be imported after all.
    """
    ours = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    entries = [first] if first else []
    entries += [entry for entry in ours if os.path.isabs(entry) and entry not in entries]
    return os.pathsep.join(entries) or None


def resolve_program(program: str, install_hint: str | None = None) -> str:
    """The absolute path of `program`, or `ToolMissingError` saying how to install it."""
    if os.sep in program:
        if os.access(program, os.X_OK):
            return program
        found = None
    else:
        found = shutil.which(program)
    if not found:
        raise ToolMissingError(f"'{program}' is not installed or not on PATH",
                               hint=install_hint or f"install '{program}' and try again")
    return found


def run(argv: Sequence[str], *, timeout: float, cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None, on_line: LineCallback | None = None,
        install_hint: str | None = None, check: bool = True, what: str | None = None,
        failure_hint: str | None = None, input_text: str | None = None) -> Completed:
    """Run `argv` to completion, streaming its output lines to `on_line`.

    `what` names the step in error messages ("conversion", "PlatformIO build").
    """
    argv = [str(a) for a in argv]
    argv[0] = resolve_program(argv[0], install_hint)
    what = what or os.path.basename(argv[0])
    log.debug("run: %s%s", shlex.join(argv), f"  (in {cwd})" if cwd else "")
    started = time.monotonic()
    proc = _spawn(argv, cwd=cwd, env=env, stdin=subprocess.PIPE if input_text is not None else None)
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        if input_text is not None:
            _feed_stdin(proc, input_text)
        for line in _lines_until(proc, deadline=started + timeout):
            lines.append(line)
            tail.append(line)
            if on_line:
                on_line(line)
        try:  # its output ended; it may still take a moment to exit
            returncode = proc.wait(timeout=max(0.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise _Timeout() from None
    except _Timeout:
        stop(proc)
        raise ChildTimeoutError(f"{what} did not finish within {timeout:g} s and was stopped",
                                hint="run with --verbose to see its output as it runs",
                                details="\n".join(tail)) from None
    except BaseException:
        stop(proc)
        raise
    untrack(proc.pid)
    result = Completed(argv, returncode, lines, time.monotonic() - started)
    log.debug("exit %d after %.2f s: %s", returncode, result.seconds, argv[0])
    if check and returncode != 0:
        raise ChildProcessFailed(f"{what} failed (exit status {_describe_status(returncode)})",
                                 returncode=returncode, details="\n".join(tail),
                                 hint=failure_hint or "its last output lines are above; run "
                                                      "with --verbose to see all of it")
    return result


def start(argv: Sequence[str], *, cwd: str | os.PathLike | None = None,
          env: dict[str, str] | None = None, install_hint: str | None = None,
          stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start a long-running child (QEMU) in its own process group; the caller must `stop()` it."""
    argv = [str(a) for a in argv]
    argv[0] = resolve_program(argv[0], install_hint)
    log.debug("start: %s", shlex.join(argv))
    return _spawn(argv, cwd=cwd, env=env, stdout=stdout)


def stop(proc: subprocess.Popen, *, grace: float = TERMINATE_GRACE_S) -> None:
    """Stop a child and everything it started, and reap it; safe to call twice.

    SIGTERM to its process group, SIGKILL after `grace` seconds. A Ctrl-C during the grace
    period kills the group at once instead of leaving it running.
    """
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            finally:
                # The child if it is still running, and whatever of its group outlived it.
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
    finally:
        untrack(proc.pid)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


# --- every live child, for a clean exit however it comes -------------------------------

def track(pid: int, stopper: Callable[[], None]) -> None:
    """Remember a live child and how to stop and reap it (called by whoever started it)."""
    _live[pid] = stopper


def untrack(pid: int) -> None:
    """Forget a child that was stopped or reaped."""
    _live.pop(pid, None)


def live_children() -> list[int]:
    """Pids of the children started through this module or tracked, still not reaped."""
    return list(_live)


def stop_all() -> None:
    """Stop and reap every tracked child: the command line's last act, whatever happened."""
    for pid, stopper in list(_live.items()):
        try:
            stopper()
        except Exception as exc:  # noqa: BLE001 - one child's failure must not spare the others
            log.debug("stopping child %d failed: %s", pid, exc)
        untrack(pid)


atexit.register(stop_all)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them as they came.

    Starting a child (fork, exec, recording its pid) must not be cut in half: a child that
    started but was never tracked would outlive tinyforge. Only the main thread handles
    signals in Python; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
                for sig in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in received:
            signal.raise_signal(sig)  # the restored handler runs now (KeyboardInterrupt, ...)


class _Timeout(Exception):
    pass


def _spawn(argv, *, cwd, env, stdin=None, stdout=subprocess.PIPE) -> subprocess.Popen:
    child = None
    try:
        with signals_deferred():
            child = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout, stderr=subprocess.STDOUT if stdout is subprocess.PIPE else None,
                # Its own session: a timeout or Ctrl-C can kill the child and its children
                # together, and a Ctrl-C on the terminal reaches tinyforge only, which decides.
                start_new_session=True,
            )
            track(child.pid, lambda: stop(child))
    except BaseException:
        if child is not None:  # an interrupt held during the start: stop what started
            stop(child)
        raise
    return child


def _feed_stdin(proc: subprocess.Popen, text: str) -> None:
    def feed():
        try:
            proc.stdin.write(text.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    threading.Thread(target=feed, daemon=True).start()


def _lines_until(proc: subprocess.Popen, *, deadline: float) -> Iterable[str]:
    """Yield decoded lines as they arrive; a reader thread keeps the timeout enforceable."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"{returncode}, killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return str(returncode)
    return str(returncode)
