"""The repository root is a PlatformIO project for the bundled example; keep it true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tinyforge.flows import build

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "examples" / "gesture" / "firmware"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".pio" not in p.parts}


def test_committed_example_project_is_what_tinyforge_renders(in_process, tmp_path):
    fresh = tmp_path / "firmware"
    # `tinyforge build --project-dir FRESH --no-compile --arena host`, in this process.
    build.build(build.BuildOptions(project_dir=fresh, compile=False, arena="host"))
    assert _tree(fresh) == _tree(COMMITTED), (
        "examples/gesture/firmware is stale: run `tinyforge build --project-dir "
        "examples/gesture/firmware --no-compile --arena host` and commit the result")


def test_root_platformio_ini_is_a_valid_project_for_the_example(cli_env):
    result = subprocess.run([sys.executable, "-m", "platformio", "project", "config", "-d",
                             str(REPO)], capture_output=True, text=True, env=cli_env,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "env:nano33ble" in result.stdout
    assert "examples/gesture/firmware/src" in result.stdout
