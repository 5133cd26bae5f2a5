"""Reading files the user names (models, data, labels, profiles, manifests): bounded, regular.

A path can name anything: a FIFO that blocks its reader forever, `/dev/zero` that never ends,
a sparse file of terabytes, a directory, a file without read permission. Every reader here
checks with `stat` that the path is a regular file no larger than the caller's limit before
opening it (opening a FIFO blocks, opening a tty can reset a board), opens it without
blocking, checks the opened file again (the path may have been swapped meanwhile) and never
reads more than the limit, even from a file that grows while it is read.

Every problem raises the caller's error class, naming the file, with a hint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError, TinyforgeError

__all__ = ["KiB", "MiB", "GiB", "open_regular", "read_bytes", "read_text", "regular_size"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_NOT_REGULAR_HINT = ("tinyforge reads only regular files (a FIFO or a device could block or "
                     "never end): save the data to a file and give that file")


def regular_size(path: Path, *, what: str, limit: int, error: type[TinyforgeError] = InputError,
                 hint: str, too_large: str = "") -> int:
    """The size of `path` after checking it is a regular file of at most `limit` bytes.

    `hint` is for a missing path or a directory (say which option names the file);
    `too_large` explains the limit ("a model larger than the board's flash cannot fit").
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(path, exc, what=what, error=error, hint=hint) from None
    return _check(path, info, what=what, limit=limit, error=error, hint=hint, too_large=too_large)


@contextlib.contextmanager
def open_regular(path: Path, *, what: str, limit: int, error: type[TinyforgeError] = InputError,
                 hint: str, too_large: str = "") -> Iterator[tuple[BinaryIO, int]]:
    """(binary file, size) of a regular file of at most `limit` bytes (see `regular_size`)."""
    path = Path(path)
    regular_size(path, what=what, limit=limit, error=error, hint=hint, too_large=too_large)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(path, exc, what=what, error=error, hint=hint) from None
    try:
        # Swapped for a FIFO or a bigger file between the stat and the open?
        size = _check(path, os.fstat(fd), what=what, limit=limit, error=error, hint=hint,
                      too_large=too_large)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            yield handle, size
        except OSError as exc:
            raise _os_error(path, exc, what=what, error=error, hint=hint) from None


def read_bytes(path: Path, *, what: str, limit: int, error: type[TinyforgeError] = InputError,
               hint: str, too_large: str = "", missing_ok: bool = False) -> bytes | None:
    """The whole content of a regular file of at most `limit` bytes.

    With `missing_ok`, a path that does not exist gives None instead of an error.
    """
    if missing_ok and not os.path.lexists(path):
        return None
    with open_regular(path, what=what, limit=limit, error=error, hint=hint,
                      too_large=too_large) as (handle, _):
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while it was read
        raise _too_large(Path(path), len(data), what=what, limit=limit, error=error,
                         too_large=too_large)
    return data


def read_text(path: Path, *, what: str, limit: int, error: type[TinyforgeError] = InputError,
              hint: str, too_large: str = "", missing_ok: bool = False) -> str | None:
    """A UTF-8 text file of at most `limit` bytes (see `read_bytes`); binary content is refused."""
    data = read_bytes(path, what=what, limit=limit, error=error, hint=hint, too_large=too_large,
                      missing_ok=missing_ok)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start} cannot be decoded)",
                    hint=f"save the {what} as UTF-8 text; if this is a binary file, give "
                         "the text file instead") from None
    if "\x00" in text:
        raise error(f"{what} {path} is a binary file, not text (it holds NUL bytes, the first "
                    f"at offset {text.index(chr(0))})",
                    hint=f"give a UTF-8 text file as the {what}")
    return text


def _check(path: Path, info: os.stat_result, *, what: str, limit: int,
           error: type[TinyforgeError], hint: str, too_large: str) -> int:
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a directory, not a file", hint=hint)
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise error(f"{what} {path} is {kind}, not a regular file", hint=_NOT_REGULAR_HINT)
    if info.st_size > limit:
        raise _too_large(path, info.st_size, what=what, limit=limit, error=error,
                         too_large=too_large)
    return info.st_size


def _too_large(path: Path, size: int, *, what: str, limit: int, error: type[TinyforgeError],
               too_large: str) -> TinyforgeError:
    reason = f": {too_large}" if too_large else ""
    return error(f"{what} {path} is {size:,} B, more than the {limit:,} B tinyforge reads for "
                 f"it{reason}",
                 hint=f"check that {path} is the file you meant; nothing was read from it")


def _os_error(path: Path, exc: OSError, *, what: str, error: type[TinyforgeError],
              hint: str) -> TinyforgeError:
    if exc.errno == errno.ENOENT:
        return error(f"{what} {path} does not exist", hint=hint)
    if exc.errno == errno.EISDIR:
        return error(f"{what} {path} is a directory, not a file", hint=hint)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return error(f"cannot read {what} {path}: permission denied",
                     hint=f"make it readable for your user (chmod u+r {path}) or give a copy "
                          "you can read")
    if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
        return error(f"{what} {path} cannot be opened: {exc.strerror}", hint=hint)
    return error(f"cannot read {what} {path}: {exc.strerror or exc}",
                 hint="check the file and the disk it is on, then try again")
