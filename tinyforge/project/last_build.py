"""The last build: what `tinyforge build` wrote, read back by flash, monitor and validate.

`build` writes `.tinyforge/manifest.json` into the project; without `--project-dir`, the
newest manifest under ./build/*/ is the last build (filtered by `--board` when given).
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


def find(project_dir: Path | None = None, board_id: str | None = None) -> LastBuild:
    """The build in `project_dir`, or the newest one under ./build/ (for `board_id`)."""
    if project_dir is not None:
        manifest = writer.read_manifest(Path(project_dir))
        if manifest is None:
            raise InputError(f"{project_dir} is not a tinyforge project (no "
                             f"{writer.MANIFEST_PATH})",
                             hint="run `tinyforge build` first, or give the --project-dir it "
                                  "wrote")
        return _last_build(Path(project_dir), manifest, board_id)
    candidates = []
    for path in DEFAULT_ROOT.glob(f"*/{writer.MANIFEST_PATH}"):
        manifest = writer.read_manifest(path.parent.parent)
        if manifest and (board_id is None or manifest.get("board") == board_id):
            candidates.append((path.stat().st_mtime, path.parent.parent, manifest))
    if not candidates:
        where = f" for board '{board_id}'" if board_id else ""
        raise InputError(f"no tinyforge build found under ./{DEFAULT_ROOT}{where}",
                         hint="run `tinyforge build` first, or pass --project-dir")
    _, directory, manifest = max(candidates, key=lambda c: c[0])
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
