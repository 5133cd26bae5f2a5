"""Run a function in a forked child so a crash in native code cannot take tinyforge down.

The host TFLM runtime segfaults on about one in five too-small arenas and can crash on
malformed models, and it reports problems on file descriptor 2 from C++. Running each
attempt in a forked child isolates the crash and captures that text. Forking (rather than
starting a new interpreter) costs a few milliseconds, which keeps an arena search of ~15
probes well under a second.

A function that returns a generator streams its items back one by one, and `timeout` then
bounds each item rather than the whole run: a batch of inputs gets as long as it needs, but
no single input may hang. Every child is tracked by `tinyforge.proc`, and killed and reaped
however the call ends (timeout, Ctrl-C, an error in the parent).
"""

from __future__ import annotations

import faulthandler
import inspect
import os
import pickle
import select
import signal
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import proc

# A call (or, for a generator, one item) that takes longer than this is treated as hung.
DEFAULT_TIMEOUT_S = 10.0
_DEFERRED_SIGNALS = set(proc.DEFERRED_SIGNALS)
_FRAME_HEADER = struct.Struct(">Q")


@dataclass
class IsolatedResult:
    ok: bool
    value: Any = None
    error: str = ""          # the exception text raised in the child, if any
    output: str = ""         # what the child's native code wrote to fd 1 and 2
    signal: int | None = None  # set when the child was killed by a signal (segfault, ...)
    timed_out: bool = False  # stopped after `timeout` seconds without an answer
    items: int = 0           # items a generator delivered before it failed or hung

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
    """Call `fn(*args)` in a forked child and return its result, exception text or crash.

    For a generator function the value is the list of its items, and `timeout` bounds the
    wait for each item.
    """
    with tempfile.TemporaryFile() as captured:
        read_fd, write_fd = os.pipe()
        try:
            pid = _fork(fn, args, read_fd, write_fd, captured.fileno())
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            try:
                frames, timed_out = _read_frames(read_fd, timeout)
            finally:
                os.close(read_fd)
            if timed_out:
                _kill(pid)
            status = _reap(pid)
        except BaseException:  # Ctrl-C while waiting: the child must not outlive us
            _kill_and_reap(pid)
            raise
        captured.seek(0)
        output = captured.read().decode("utf-8", "replace")
    return _result(frames, timed_out, status, output, timeout)


def _fork(fn, args, read_fd: int, write_fd: int, capture_fd: int) -> int:
    """Fork the child and track it, with Ctrl-C held so it cannot start untracked."""
    pid = 0
    try:
        with proc.signals_deferred():
            # Ctrl-C and SIGTERM also stay blocked across the fork at the OS level: the child
            # keeps them blocked (a Ctrl-C on the terminal reaches it too; the parent decides
            # and kills it if needed).
            previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
            try:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    os.close(read_fd)
                    _child(fn, args, write_fd, capture_fd)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            proc.track(pid, lambda: _kill_and_reap(pid))
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        raise
    return pid


def _result(frames: list, timed_out: bool, status: int, output: str,
            timeout: float) -> IsolatedResult:
    items = [value for kind, value in frames if kind == "item"]
    if timed_out:
        return IsolatedResult(False, error=f"no answer within {timeout:g} s", output=output,
                              timed_out=True, items=len(items))
    if os.WIFSIGNALED(status):
        return IsolatedResult(False, output=output, signal=os.WTERMSIG(status),
                              items=len(items))
    if not frames or frames[-1][0] not in ("ok", "done", "error"):  # died before reporting
        return IsolatedResult(False, error=f"the child exited with status {status}",
                              output=output, items=len(items))
    kind, value = frames[-1]
    if kind == "ok":
        return IsolatedResult(True, value=value, output=output)
    if kind == "done":
        return IsolatedResult(True, value=items, output=output, items=len(items))
    return IsolatedResult(False, error=value, output=output, items=len(items))


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
            value = fn(*args)
            if inspect.isgenerator(value):
                for item in value:
                    _write_frame(write_fd, ("item", item))
                _write_frame(write_fd, ("done", None))
            else:
                _write_frame(write_fd, ("ok", value))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            _write_frame(write_fd, ("error", f"{type(exc).__name__}: {exc}"))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _write_frame(fd: int, message: tuple) -> None:  # pragma: no cover - in the child
    payload = pickle.dumps(message)
    view = memoryview(_FRAME_HEADER.pack(len(payload)) + payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_frames(fd: int, timeout: float) -> tuple[list, bool]:
    """Every frame the child sends until it closes the pipe; (frames, timed out).

    The deadline restarts with each complete frame, so `timeout` bounds each item.
    """
    frames: list = []
    buffer = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return frames, True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return frames, False
        buffer += chunk
        while len(buffer) >= _FRAME_HEADER.size:
            (size,) = _FRAME_HEADER.unpack_from(buffer)
            if len(buffer) < _FRAME_HEADER.size + size:
                break
            frames.append(pickle.loads(bytes(buffer[_FRAME_HEADER.size:_FRAME_HEADER.size
                                                     + size])))
            del buffer[:_FRAME_HEADER.size + size]
            deadline = time.monotonic() + timeout


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already (by stop_all)
        status = 0
    proc.untrack(pid)
    return status


def _kill_and_reap(pid: int) -> None:
    _kill(pid)
    _reap(pid)
