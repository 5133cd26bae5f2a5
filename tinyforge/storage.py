"""The folders tinyforge writes outside a project, and the error when one cannot be written.

- tinyforge's PlatformIO core dir for emulated boards (`~/.tinyforge/platformio`,
  `$TINYFORGE_PIO_CORE_DIR`, `--core-dir`);
- the user's PlatformIO core dir, which PlatformIO itself writes on every run (`~/.platformio`,
  `$PLATFORMIO_CORE_DIR`);
- the cache (`~/.cache/tinyforge`, under `$XDG_CACHE_HOME` when set): the self-test project,
  the device-arena measurement project and its results;
- the temporary folder (`$TMPDIR`, else /tmp...), checked once before every command.

With a read-only HOME these fail deep inside PlatformIO or with a bare `OSError`; checking them
first gives one clear `UnwritableFolderError` naming the folder and the variable that moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UnwritableFolderError

__all__ = ["CACHE_ENV", "cache_root", "check_writable", "home_path", "require_temp_dir",
           "require_writable", "unwritable"]

CACHE_ENV = "XDG_CACHE_HOME"


def cache_root() -> Path:
    """tinyforge's cache folder: $XDG_CACHE_HOME/tinyforge, else ~/.cache/tinyforge."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / "tinyforge"
    return _home("the cache folder", CACHE_ENV) / ".cache" / "tinyforge"


def home_path(relative: str | Path, *, what: str, variable: str) -> Path:
    """`~/relative`, or an `UnwritableFolderError` when there is no home folder at all."""
    return _home(what, variable) / relative


def require_writable(folder: Path, *, what: str, variable: str,
                     option: str | None = None) -> Path:
    """Create `folder` (and its parents) if needed and check this user can write in it.

    `what` names the folder's role ("tinyforge's PlatformIO core dir"); `variable` (and
    `option`) say how to put it elsewhere.
    """
    folder = check_writable(folder, what=what, variable=variable, option=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(folder, exc.strerror or str(exc), what=what, variable=variable,
                         option=option) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise unwritable(folder, "permission denied", what=what, variable=variable,
                         option=option)
    return folder


def check_writable(folder: Path, *, what: str, variable: str,
                   option: str | None = None) -> Path:
    """Check `folder` could be created and written, without creating anything: it, or its
    nearest existing parent, must be a folder this user can write in."""
    folder = Path(folder).expanduser()
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = ("it exists and is not a folder" if existing == folder
                  else f"{existing} is not a folder")
        raise unwritable(folder, reason, what=what, variable=variable, option=option)
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "permission denied" + ("" if existing == folder else f" in {existing}")
        raise unwritable(folder, reason, what=what, variable=variable, option=option)
    return folder


def unwritable(folder: Path, reason: str, *, what: str, variable: str,
               option: str | None = None) -> UnwritableFolderError:
    """The error for `folder` that cannot be written, with the ways to move it."""
    moves = f"set {variable}=DIR" + (f" (or pass {option} DIR)" if option else "")
    return UnwritableFolderError(
        f"cannot write {what} {folder}: {reason}",
        folder=folder, variable=variable,
        hint=f"make {folder} writable for your user, or {moves} to use a writable folder "
             "instead (a read-only or missing HOME needs this)")


def require_temp_dir() -> Path:
    """The folder temporary files go to, checked usable before a command starts.

    Python tries $TMPDIR, /tmp, /var/tmp, /usr/tmp and the working directory, and when none can
    be written every temporary file (a conversion, a host probe, a build) fails with a bare
    FileNotFoundError deep inside tinyforge.
    """
    import tempfile  # not at import time: `tinyforge --help` needs none

    try:
        return Path(tempfile.gettempdir())
    except FileNotFoundError:
        candidate = os.environ.get("TMPDIR") or "/tmp"
        raise UnwritableFolderError(
            f"cannot write temporary files: no usable folder among $TMPDIR "
            f"({os.environ.get('TMPDIR') or 'not set'}), /tmp, /var/tmp, /usr/tmp and the "
            "working directory",
            folder=Path(candidate), variable="TMPDIR",
            hint="set TMPDIR=DIR to a writable folder (or make /tmp writable)") from None


def _home(what: str, variable: str) -> Path:
    try:
        return Path.home()
    except RuntimeError:  # no $HOME and no passwd entry
        raise UnwritableFolderError(
            f"cannot find {what}: there is no home folder ($HOME is not set)",
            folder=None, variable=variable,
            hint=f"set HOME, or set {variable}=DIR to a writable folder") from None
