"""Writing a generated project: deterministic, atomic, only what changed, never over user edits.

Files are rendered in memory first (interrupting that writes nothing). Then every file is
compared with what is on disk and with the manifest of the previous render:

- identical bytes on disk                  -> "identical", not touched;
- on disk and unchanged since last render  -> "update";
- not on disk                              -> "create";
- on disk but edited since (or not ours)   -> "conflict": nothing is written at all, unless
                                              `overwrite=True`.
The writes themselves run with Ctrl-C deferred, each file through a temporary file and
`os.replace`, and the manifest goes last; so an interrupted render leaves the previous
project as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ProjectError
from ..proc import signals_deferred
from ..userfiles import MiB, read_bytes, read_text

log = logging.getLogger(__name__)

MANIFEST_PATH = ".tinyforge/manifest.json"
# A manifest lists a few dozen files; generated files are at most a model's C array (~6 B per
# model byte, for models up to a few MB).
MAX_MANIFEST_BYTES = 16 * MiB
MAX_PROJECT_FILE_BYTES = 256 * MiB


@dataclass
class RenderPlan:
    root: Path
    actions: dict[str, str] = field(default_factory=dict)  # relative path -> action
    stale: list[str] = field(default_factory=list)        # generated before, not any more
    # sha256 of each file as the plan found it on disk; None when it did not exist.
    previous: dict[str, str | None] = field(default_factory=dict, repr=False)

    def paths(self, action: str) -> list[str]:
        return sorted(p for p, a in self.actions.items() if a == action)

    @property
    def changed(self) -> list[str]:
        return sorted(p for p, a in self.actions.items() if a in ("create", "update", "overwrite"))

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for action in self.actions.values():
            counts[action] = counts.get(action, 0) + 1
        return dict(sorted(counts.items()))

    def summary_text(self) -> str:
        """The counts for people: ``11 create, 1 identical``."""
        return ", ".join(f"{n} {action}" for action, n in self.summary().items()) or "no files"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST_PATH
    hint = ("delete it to let tinyforge regenerate the project (files you edited will then be "
            "reported as conflicts)")
    text = read_text(path, what="project manifest", limit=MAX_MANIFEST_BYTES,
                     error=ProjectError, hint=hint, missing_ok=True)
    if text is None:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ProjectError(f"the project manifest {path} is unreadable: {exc}",
                           hint=hint) from None
    if not isinstance(manifest, dict):
        raise ProjectError(f"the project manifest {path} is not a JSON object", hint=hint)
    return manifest


def _read_generated(path: Path) -> bytes | None:
    """A file tinyforge generated before, as it is on disk now (None when absent)."""
    return read_bytes(path, what="project file", limit=MAX_PROJECT_FILE_BYTES,
                      error=ProjectError, missing_ok=True,
                      hint="move it out of the project directory; tinyforge writes a file there")


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def plan(root: Path, files: dict[str, bytes], *, overwrite: bool = False) -> RenderPlan:
    """Decide what to do with each file without writing anything."""
    previous = read_manifest(root) or {}
    previous_files = previous.get("files")
    if not isinstance(previous_files, dict):
        previous_files = {}
    result = RenderPlan(root)
    for relative, data in sorted(files.items()):
        path = root / relative
        if path.is_dir():
            raise ProjectError(f"{path} is a directory where tinyforge writes a file",
                               hint="move it out of the project directory")
        on_disk = _read_generated(path)
        if on_disk is None:
            result.actions[relative] = "create"
            result.previous[relative] = None
            continue
        result.previous[relative] = sha256(on_disk)
        if on_disk == data:
            result.actions[relative] = "identical"
        elif previous_files.get(relative) == sha256(on_disk):
            result.actions[relative] = "update"
        else:
            result.actions[relative] = "overwrite" if overwrite else "conflict"
    for relative in sorted(set(previous_files) - set(files)):
        path = root / relative
        if not isinstance(relative, str) or not _inside(root, path):
            continue  # an edited manifest naming a file elsewhere: never delete it
        if path.is_file() and sha256(_read_generated(path) or b"") == previous_files[relative]:
            result.stale.append(relative)
    return result


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())
def actions_since(before: RenderPlan, files: dict[str, bytes], after: RenderPlan) -> dict[str, str]:
    """What writing `files` (planned as `after`) did to each file compared with the disk
    that `before` saw, when another render wrote the project in between (the arena
    measurement build): a file that did not exist before is "create", not "identical"."""
    actions = {}
    for relative, action in after.actions.items():
        previous = before.previous.get(relative, "")
        if previous is None:
            actions[relative] = "create"
        elif previous == sha256(files[relative]):
            actions[relative] = "identical"
        elif action in ("update", "overwrite"):
            actions[relative] = action
        else:  # the render in between made it what it is now
            actions[relative] = before.actions.get(relative, "update")
    return actions


def _conflict(root: Path, paths: list[str]) -> ProjectError:
    return ProjectError(
        f"{len(paths)} generated file(s) in {root} were edited since tinyforge wrote them "
        "(or were not written by tinyforge); nothing was changed:",
        details="\n".join(f"  - {p}" for p in paths),
        hint="move your changes elsewhere (e.g. a file tinyforge does not generate), or "
             "pass --overwrite to replace them")


def write(root: Path, files: dict[str, bytes], manifest: dict, *,
          overwrite: bool = False) -> RenderPlan:
    """Write `files` under `root` following `plan()`; the manifest records every file's sha256."""
    root = Path(root)
    _check_writable(root)
    result = plan(root, files, overwrite=overwrite)
    conflicts = result.paths("conflict")
    if conflicts:
        raise _conflict(root, conflicts)
    manifest = dict(manifest, files={p: sha256(d) for p, d in sorted(files.items())})
    files_to_write = {p: files[p] for p in result.changed}
    new_manifest = manifest_bytes(manifest)
    with signals_deferred():  # a set of renames is never cut in half
        try:
            for relative, data in files_to_write.items():
                _atomic_write(root / relative, data)
            for relative in result.stale:
                (root / relative).unlink(missing_ok=True)
            manifest_path = root / MANIFEST_PATH
            if not manifest_path.is_file() or manifest_path.read_bytes() != new_manifest:
                _atomic_write(manifest_path, new_manifest)
        except PermissionError as exc:
            raise ProjectError(f"cannot write {exc.filename}: permission denied",
                               hint="choose a writable --project-dir") from None
        except OSError as exc:
            raise ProjectError(f"cannot write the project in {root}: {exc}",
                               hint="check free disk space and permissions") from None
    for relative, action in sorted(result.actions.items()):
        log.debug("%-9s %s", action, relative)
    return result


def _check_writable(root: Path) -> None:
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ProjectError(f"{existing} is not a directory", hint="choose another --project-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ProjectError(f"the project directory {root} is not writable "
                           f"({existing} is read-only for you)",
                           hint="choose a writable --project-dir or fix its permissions")


def atomic_write_text(path: Path, text: str) -> None:
    """Write one file atomically (for commands that write a single output)."""
    _atomic_write(Path(path), text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write one binary file atomically (a report's PNGs)."""
    _atomic_write(Path(path), data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
