"""Helpers for the tests that build and run qemu-m4 firmware (arm-none-eabi-gcc + QEMU).

They skip, naming the apt command, when the toolchain or QEMU is missing (a fresh machine
gets both from `make setup` run as root).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyforge import resources, system
from tinyforge.board import profiles
from tinyforge.errors import ToolMissingError
from tinyforge.project import templates
from tinyforge.toolchain import offline_core, pio, programs

REPO = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO / "firmware_templates" / "runtime" / "qemu-m4"
COMMON_DIR = REPO / "firmware_templates" / "common"
# Any access PlatformIO tried to make would go to this dead proxy and fail at once, so a
# build that passes with it did not need the network.
DEAD_PROXY = "http://127.0.0.1:9"

_seeded: dict[Path, Path] = {}


def require_emulator() -> None:
    """Skip the calling test unless arm-none-eabi-gcc (with its libraries) and QEMU exist."""
    try:
        programs.find_toolchain()
        programs.find_qemu()
    except ToolMissingError as exc:
        pytest.skip(f"{exc.message}; install with: {system.APT_INSTALL} "
                    "(or run `make setup` as root)")


def seeded_core(tmp_path_factory) -> Path:
    """One tinyforge PlatformIO core dir per session, prepared by `offline_core.setup()`."""
    base = tmp_path_factory.getbasetemp()
    if base not in _seeded:
        core = base / "tinyforge-pio-core"
        offline_core.setup(core)
        _seeded[base] = core
    return _seeded[base]


def block_network(monkeypatch) -> None:
    """Point every HTTP(S) client at a dead proxy for the rest of the test."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _is_sensor_source(name: str) -> bool:
    """Sources only a firmware with a sensor pipeline compiles (they need the pipeline's
    headers); the renderer leaves them out of other projects the same way."""
    return f"src/{name}" in (templates.SENSOR_INTERFACE, templates.REPLAY_INTERFACE) or \
        templates._SENSOR_SOURCE_MARK in name


def write_project(project: Path, sketch: str, *, extra_ini: str = "") -> None:
    """A qemu-m4 project: the runtime layer, board_runtime.h, tf_protocol and `sketch`."""
    src = project / "src"
    src.mkdir(parents=True, exist_ok=True)
    for folder in (RUNTIME_DIR, COMMON_DIR):
        for path in folder.iterdir():
            if not _is_sensor_source(path.name):
                shutil.copyfile(path, src / path.name)
    (src / "sketch.cpp").write_text(sketch, encoding="utf-8")
    board = profiles.load_board("qemu-m4")
    platform = f"symlink://{resources.platforms_dir() / 'qemu_m4'}"
    (project / "platformio.ini").write_text(
        f"[env:qemu-m4]\nplatform = {platform}\nboard = {board.platformio['board']}\n"
        f"{extra_ini}", encoding="utf-8")


def build(project: Path, core: Path) -> pio.BuildReport:
    """`pio run` through tinyforge.toolchain.pio in `core`; fails if PlatformIO installed anything but
    a local symlink (which needs no network)."""
    lines: list[str] = []
    report = pio.build(project, profiles.load_board("qemu-m4"), core, on_line=lines.append,
                       timeout=600)
    installing = [line for line in lines if "Installing" in line and "symlink://" not in line]
    assert not installing, installing
    return report


def qemu_processes_for(path: Path) -> list[int]:
    """Pids of running qemu-system-arm processes whose command line mentions `path` (/proc)."""
    needle = str(path).encode()
    return [process.pid for process in live_processes()
            if b"qemu-system-arm" in process.cmdline and needle in process.cmdline]


class Process:
    """One entry of /proc, read once."""

    def __init__(self, entry: Path):
        self.pid = int(entry.name)
        self.cmdline = (entry / "cmdline").read_bytes()
        stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        self.state, self.ppid = stat[0], int(stat[1])
        self.entry = entry

    def environ(self) -> bytes:
        try:
            return (self.entry / "environ").read_bytes()
        except OSError:
            return b""

    def describe(self) -> str:
        command = self.cmdline.replace(b"\0", b" ").decode(errors="replace")
        return f"{self.pid} ({self.state}): {command}"


def live_processes() -> list[Process]:
    """Every process in /proc that is not a zombie."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            process = Process(entry)
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        if process.state != "Z":
            found.append(process)
    return found


def processes_marked(marker: str) -> list[Process]:
    """Live processes whose environment holds TINYFORGE_TEST_MARK=`marker`: a command run with
    it and everything it started, forked or spawned, even once reparented to init."""
    needle = f"TINYFORGE_TEST_MARK={marker}".encode()
    return [p for p in live_processes() if needle in p.environ().split(b"\0")]


def descendants(pid: int) -> list[Process]:
    """Live processes below `pid` in the process tree."""
    processes = live_processes()
    below, frontier = [], {pid}
    while frontier:
        children = [p for p in processes if p.ppid in frontier]
        below += children
        frontier = {p.pid for p in children}
    return below
