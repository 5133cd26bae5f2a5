"""Ctrl-C and SIGTERM for the command line: exit 130 (143) at any moment, never a traceback.

The first signal unwinds the command (KeyboardInterrupt, or SystemExit(143) for SIGTERM), so
every `finally` stops its child processes and closes its ports. A second one while that
cleanup runs is only noted, since cleanup is bounded (a child gets 3 s after SIGTERM, then
SIGKILL). A third stops every child with SIGKILL and exits at once.

Python runs a signal handler between any two bytecodes, also inside a weakref callback or a
`__del__` (the import system has such callbacks), where an exception cannot propagate:
Python would print "Exception ignored in ..." with a traceback and carry on as if nothing
happened. The hook installed here keeps that quiet and raises the interrupt again a moment
later, in the code that was running.

Tiny (the standard library and errors.py): `python -m tinyforge` installs this before
importing the rest, so the window where Python's own handler applies is as short as it can
be. What remains is Python's own start-up (site, runpy: 10-30 ms), see docs/cli.md.
"""

from __future__ import annotations

import os
import signal
import sys

from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED

# How long after a swallowed interrupt it is raised again.
_REDELIVER_AFTER_S = 0.01
_HARD_STOP_AFTER = 3
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupts:
    def __init__(self):
        self.received: list[int] = []
        self.holding = False
        self._installed = False
        self._previous_hook = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (main thread only; safe to call twice)."""
        if self._installed:
            return
        self._installed = True
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGALRM, self._redeliver)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def hold(self) -> None:
        """From now on a signal only sets the exit status: cleanup and exit must finish."""
        self.holding = True
        signal.setitimer(signal.ITIMER_REAL, 0)

    def close(self) -> None:
        """The command is over and its children are gone: block Ctrl-C and SIGTERM, and
        count one that is already pending.

        Python restores the default handlers while it shuts down, so a Ctrl-C in the last
        tenth of a second would kill the process by signal (status -2, no message). Blocked,
        a later signal is discarded when the process ends: its status is the command's own.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self.received.extend(sorted(signal.sigpending() & _SIGNALS))

    @property
    def exit_code(self) -> int | None:
        """The exit status the signals received ask for, or None."""
        if not self.received:
            return None
        return EXIT_TERMINATED if signal.SIGTERM in self.received else EXIT_INTERRUPTED

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        if len(self.received) >= _HARD_STOP_AFTER:
            _kill_children()
            os._exit(self.exit_code)
        if self.holding or len(self.received) > 1:
            return
        self._raise()

    def _raise(self) -> None:
        if self.exit_code == EXIT_TERMINATED:
            raise SystemExit(EXIT_TERMINATED)
        raise KeyboardInterrupt

    def _redeliver(self, signum, frame) -> None:
        if not self.holding and self.received:
            self._raise()

    def _unraisable(self, unraisable) -> None:
        if self.received and issubclass(unraisable.exc_type, (KeyboardInterrupt, SystemExit)):
            # Our interrupt, lost in a callback: raise it again in the code that runs next.
            signal.setitimer(signal.ITIMER_REAL, _REDELIVER_AFTER_S)
            return
        self._previous_hook(unraisable)


def settle() -> None:
    """Tell CPython the interrupt was handled, so the exit status stays 130.

    A KeyboardInterrupt that leaves code run by exec() of a string (dataclasses, namedtuple
    and enum generate methods that way at import time) marks it "unhandled" for CPython,
    even when it is caught later, and CPython then kills itself with SIGINT at exit instead
    of exiting with our status. The next exec() that ends normally clears that mark.
    """
    exec("None")  # noqa: S102 - a constant, for its side effect on CPython's flag


def _kill_children() -> None:
    """SIGKILL every child tinyforge.proc knows of (if anything imported it)."""
    children = sys.modules.get(f"{__package__}.proc")
    for pid in children.live_children() if children is not None else ():
        for kill in (os.killpg, os.kill):  # a process group from proc.py, or a forked child
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


INTERRUPTS = Interrupts()
