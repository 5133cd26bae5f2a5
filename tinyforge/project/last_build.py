"""The last build: what `tinyforge build` wrote, read back by flash, monitor and validate.

`build` writes `.tinyforge/manifest.json` into the project. A project under ./build/ (the
default `build/BOARD`, or any `--project-dir build/NAME`) is also recorded in
`build/last-build.json`, most recent first: without `--project-dir`, the other commands use
the first recorded project (for `--board` when given). File times are never used to guess:
rebuilding a project whose files did not change rewrites nothing, yet it is the last build.
A project that is not recorded (built by an older tinyforge) is used only when it is the
only one; several are refused, naming them.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..board import profiles
from ..board.profiles import Board
from ..errors import InputError, ProjectError
from . import writer

log = logging.getLogger(__name__)
# A board id or PlatformIO environment name, as a manifest records them.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# Where `build` writes a project without --project-dir (build/BOARD), and so where the
# other commands look for the last build.
DEFAULT_ROOT = Path("build")
# The last `validate` run's report, for `tinyforge report`.
VALIDATION_PATH = ".tinyforge/last-validate.json"
MAX_VALIDATION_BYTES = 16 * 1024 * 1024

_Report = TypeVar("_Report")
RECORD_NAME = "last-build.json"
# The record lists project folder names; more than this many means it is not ours.
_MAX_RECORDED = 64
_MAX_RECORD_BYTES = 64 * 1024
_RECORD_VERSION = 1


@dataclass(frozen=True)
class LastBuild:
    project_dir: Path
    manifest: dict
    board: Board

    @property
    def environment(self) -> str:
        return self.manifest.get("environment", self.board.id)

    @property
    def elf(self) -> Path:
        return self.project_dir / ".pio" / "build" / self.environment / "firmware.elf"

    @property
    def model_sha256(self) -> str | None:
        return self.manifest.get("model", {}).get("sha256")

    @property
    def model_path(self) -> Path | None:
        relative = self.manifest.get("model", {}).get("path")
        return self.project_dir / relative if relative else None

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    @property
    def demo_input(self) -> bool | None:
        """Whether the firmware runs a built-in input by itself; None when not recorded."""
        value = self.manifest.get("demo_input")
        return value if isinstance(value, bool) else None


def find(project_dir: Path | None = None, board_id: str | None = None) -> LastBuild:
    """The build in `project_dir`, or the last one recorded under ./build/ (for `board_id`)."""
    if project_dir is not None:
        manifest = writer.read_manifest(Path(project_dir))
        if manifest is None:
            raise InputError(f"{project_dir} is not a tinyforge project (no "
                             f"{writer.MANIFEST_PATH})",
                             hint="run `tinyforge build` first, or give the --project-dir it "
                                  "wrote")
        return _last_build(Path(project_dir), manifest, board_id)
    for name in recorded():
        directory = DEFAULT_ROOT / name
        manifest = writer.read_manifest(directory)
        if manifest and (board_id is None or manifest.get("board") == board_id):
            return _last_build(directory, manifest, board_id)
    return _only_unrecorded(board_id)


def record(project_dir: Path) -> None:
    """Remember `project_dir` as the last build, if it lies directly under ./build/."""
    project = Path(project_dir).resolve()
    root = DEFAULT_ROOT.resolve()
    if project.parent != root:
        return  # used with --project-dir; nothing is written outside the project
    names = [project.name] + [name for name in recorded() if name != project.name]
    text = json.dumps({"version": _RECORD_VERSION, "projects": names[:_MAX_RECORDED]},
                      indent=1) + "\n"
    try:
        writer.atomic_write_text(root / RECORD_NAME, text)
    except OSError as exc:  # the project itself was written: say so, do not fail the build
        log.warning("could not record the last build in %s (%s); give flash, monitor and "
                    "validate --project-dir %s", root / RECORD_NAME, exc, project_dir)


def recorded() -> list[str]:
    """Project folder names under ./build/, the last build first ([] without a record)."""
    path = DEFAULT_ROOT / RECORD_NAME
    try:
        with open(path, "rb") as handle:
            text = handle.read(_MAX_RECORD_BYTES + 1)
        if len(text) > _MAX_RECORD_BYTES:
            raise ValueError(f"larger than {_MAX_RECORD_BYTES} bytes")
        data = json.loads(text)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return []
    names = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(names, list):
        log.warning("ignoring %s: not a tinyforge build record", path)
        return []
    return [name for name in names[:_MAX_RECORDED] if _plain_name(name)]


def _plain_name(name: object) -> bool:
    """A folder directly under ./build/: no separators, no way out of it."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name)


def _only_unrecorded(board_id: str | None) -> LastBuild:
    candidates = []
    for path in sorted(DEFAULT_ROOT.glob(f"*/{writer.MANIFEST_PATH}")):
        directory = path.parent.parent
        manifest = writer.read_manifest(directory)
        if manifest and (board_id is None or manifest.get("board") == board_id):
            candidates.append((directory, manifest))
    where = f" for board '{board_id}'" if board_id else ""
    if not candidates:
        raise InputError(f"no tinyforge build found under ./{DEFAULT_ROOT}{where}",
                         hint="run `tinyforge build` first, or pass --project-dir")
    if len(candidates) > 1:
        raise InputError(
            f"{len(candidates)} projects under ./{DEFAULT_ROOT}{where} and no record of which "
            "was built last; refusing to guess:",
            details="\n".join(f"  - {directory}" for directory, _ in candidates),
            hint="pass --project-dir, or build again (`tinyforge build`) to record the last "
                 "build")
    directory, manifest = candidates[0]
    return _last_build(directory, manifest, board_id)


def _last_build(project_dir: Path, manifest: dict, board_id: str | None) -> LastBuild:
    _check_manifest(project_dir, manifest)
    built_for = manifest.get("board")
    if board_id is not None and built_for != board_id:
        raise InputError(f"{project_dir} was built for '{built_for}', not '{board_id}'",
                         hint=f"run `tinyforge build --board {board_id}` or drop --board")
    return LastBuild(project_dir, manifest, profiles.load_board(built_for))


def save_validation(build: LastBuild, report: _Report) -> _Report:
    """Keep a validate report (anything with `to_json()`) in the build's project, with the
    model it was made for; returns the report. Failing to save it only warns: the
    validation itself has been done."""
    document = {"model_sha256": build.model_sha256, "report": report.to_json()}
    try:
        writer.atomic_write_text(build.project_dir / VALIDATION_PATH,
                                 json.dumps(document, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("warning: the validate report was not saved for `tinyforge report` (%s)",
                    exc.strerror or exc)
    return report


def load_validation(build: LastBuild) -> tuple[dict | None, str | None]:
    """(the last validate report saved for this build's model, None) or (None, why not)."""
    path = build.project_dir / VALIDATION_PATH
    hint = "run `tinyforge validate` again to replace it"
    try:
        if path.stat().st_size > MAX_VALIDATION_BYTES:
            raise InputError(f"{path} is too large to be a validate report", hint=hint)
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "`tinyforge validate` has not run on this build yet"
    except (OSError, ValueError) as exc:
        raise InputError(f"the saved validate report {path} is unreadable: {exc}",
                         hint=hint) from None
    if not (isinstance(document, dict) and isinstance(document.get("report"), dict)):
        raise InputError(f"{path} is not a validate report", hint=hint)
    if document.get("model_sha256") != build.model_sha256:
        return None, ("the last validate run was for another model than this build's; run "
                      "`tinyforge validate` again")
    return document["report"], None

def _check_manifest(project_dir: Path, manifest: dict) -> None:
    """The manifest is a file in the user's folder: the names it gives must stay in the project
    (the model `validate` reads, the environment whose ELF `flash` runs)."""
    path = project_dir / writer.MANIFEST_PATH

    def invalid(what: str) -> ProjectError:
        return ProjectError(f"the project manifest {path} {what}",
                            hint="build the project again with `tinyforge build` (with "
                                 "--overwrite if you edited files in it)")

    for key, required in (("board", True), ("environment", False)):
        value = manifest.get(key)
        if (value is not None or required) and not (isinstance(value, str)
                                                    and _NAME.match(value)):
            raise invalid(f"has no valid {key} (found {value!r})")
    model = manifest.get("model", {})
    relative = model.get("path") if isinstance(model, dict) else None
    if not isinstance(model, dict) or relative is not None and not (
            isinstance(relative, str)
            and (project_dir / relative).resolve().is_relative_to(project_dir.resolve())):
        raise invalid(f"names a model outside the project ({relative!r})")
