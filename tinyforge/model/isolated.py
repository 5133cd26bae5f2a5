"""Run a function in a forked child so a crash in native code cannot take tinyforge down.

The host TFLM runtime segfaults on about one in five too-small arenas and can crash on
malformed models, and it reports problems on file descriptor 2 from C++. Running each
attempt in a forked child isolates the crash and captures that text. Forking (rather than
starting a new interpreter) costs a few milliseconds, which keeps an arena search of ~15
probes well under a second.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import select
import signal
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

# A probe that takes longer than this is treated as hung.
DEFAULT_TIMEOUT_S = 60.0
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass
class IsolatedResult:
    ok: bool
    value: Any = None
    error: str = ""          # the exception text raised in the child, if any
    output: str = ""         # what the child's native code wrote to fd 1 and 2
    signal: int | None = None  # set when the child was killed by a signal (segfault, ...)

    def describe_failure(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"the runtime crashed ({name})"
        return self.error


def call_isolated(fn: Callable[..., Any], *args: Any,
                  timeout: float = DEFAULT_TIMEOUT_S) -> IsolatedResult:
    """Call `fn(*args)` in a forked child and return its result, exception text or crash."""
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as captured:
        # Ctrl-C and SIGTERM stay blocked across the fork: a signal arriving mid-fork would
        # otherwise be handled in the child too (failing the probe) or lost in fork hooks.
        # The child keeps them blocked (the parent kills it if needed); the parent gets any
        # pending signal as soon as it unblocks them, at a clean point.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                os.close(read_fd)
                _child(fn, args, write_fd, captured.fileno())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        os.close(write_fd)
        try:
            payload, timed_out = _read_all(read_fd, time.monotonic() + timeout)
        finally:
            os.close(read_fd)
        if timed_out:
            _kill(pid)
        _, status = os.waitpid(pid, 0)
        captured.seek(0)
        output = captured.read().decode("utf-8", "replace")
    if timed_out:
        return IsolatedResult(False, error=f"timed out after {timeout:g} s", output=output)
    if os.WIFSIGNALED(status):
        return IsolatedResult(False, output=output, signal=os.WTERMSIG(status))
    try:
        kind, value = pickle.loads(payload)
    except Exception:  # the child died before it could report
        return IsolatedResult(False, error=f"the child exited with status {status}",
                              output=output)
    if kind == "ok":
        return IsolatedResult(True, value=value, output=output)
    return IsolatedResult(False, error=value, output=output)


def _child(fn, args, write_fd: int, capture_fd: int) -> None:  # pragma: no cover
    code = 0
    try:
        # A crash here is an outcome the parent reports (IsolatedResult.signal), not a bug to
        # dump: a fault handler inherited from the parent (PYTHONFAULTHANDLER, pytest) would
        # print a "Fatal Python error" on the parent's terminal.
        faulthandler.disable()
        # Native code writes diagnostics to fds 1 and 2; keep them off the user's terminal.
        os.dup2(capture_fd, 1)
        os.dup2(capture_fd, 2)
        try:
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
        view = memoryview(payload)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _read_all(fd: int, deadline: float) -> tuple[bytes, bool]:
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
