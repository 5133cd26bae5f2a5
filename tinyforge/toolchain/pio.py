"""Driving PlatformIO: validate a project, check its packages, build it, read its report.

PlatformIO never says "you are offline": a missing package makes it retry the registry for
about 60 s and then print an empty `HTTPClientError`. So before `pio run`, tinyforge checks
which of the board's packages are missing and, if any are, whether the registry answers
at all (a few seconds); it refuses early with the package names and the ways out.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import proc, resources, storage, units
from ..board.profiles import Board
from ..board.tflm_source import missing_tflm_hint
from ..errors import (
    ChildProcessFailed,
    DoesNotFitError,
    PackageUnavailableError,
    PlatformIOError,
    TFLMSourceError,
    TinyforgeError,
    ToolMissingError,
)
from . import offline_core

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 3600.0
CONFIG_TIMEOUT_S = 120.0
# Bumped when what a remembered `pio project config` verdict depends on changes.
_CHECK_FORMAT = "pio-project-check 1"
# Hosts `pio run` needs when a package is missing: the registry, and GitHub for git lib_deps.
REGISTRY_HOSTS = (("api.registry.platformio.org", 443), ("github.com", 443))
REACHABILITY_TIMEOUT_S = 3.0
DEFAULT_CORE_DIR = Path("~/.platformio")
# Names PlatformIO reads from the environment that would point it at another core's content.
_CORE_LOCATION_VARS = ("PLATFORMIO_PLATFORMS_DIR", "PLATFORMIO_PACKAGES_DIR",
                       "PLATFORMIO_GLOBALLIB_DIR", "PLATFORMIO_CACHE_DIR")
# The shared object cache (docs/project.md, "Compiled objects are shared"): an extra script
# tinyforge adds to every `pio run`, and the folder it keeps objects in (empty: off).
ENV_BUILD_CACHE_DIR = "TINYFORGE_BUILD_CACHE_DIR"
_EXTRA_SCRIPTS_VAR = "PLATFORMIO_EXTRA_SCRIPTS"
_SHARED_CACHE_SCRIPT = "shared_object_cache.py"

_USAGE = re.compile(r"^(RAM|Flash):\s.*?([\d.]+)% \(used (\d+) bytes from (\d+) bytes\)")
_INSTALLING = re.compile(r"(?:Platform|Tool|Library|Package) Manager: Installing (\S+)")
_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")
_COMPILING = re.compile(r"^(Compiling|Archiving|Linking|Building|Indexing) ")
_RETRIEVED = re.compile(r"^Retrieved `.*' from cache$")


@dataclass
class BuildReport:
    seconds: float
    ram_used: int | None = None
    ram_total: int | None = None
    flash_used: int | None = None
    flash_total: int | None = None
    compiled_files: int = 0
    # Objects taken from the shared object cache instead of compiled.
    cached_files: int = 0
    firmware: str | None = None
    lines: list[str] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"seconds": round(self.seconds, 2), "ram_used": self.ram_used,
                "ram_total": self.ram_total, "flash_used": self.flash_used,
                "flash_total": self.flash_total, "compiled_files": self.compiled_files,
                "cached_files": self.cached_files, "firmware": self.firmware}


def pio_argv(*args: str) -> list[str]:
    """`python -m platformio ...` with the interpreter running tinyforge (no PATH guessing)."""
    if importlib.util.find_spec("platformio") is None:
        raise ToolMissingError("PlatformIO is not installed in tinyforge's environment",
                               hint="run `make setup` (or `pip install platformio==6.2.0`)")
    return proc.python_module("platformio", *args)


def environment(core_dir: Path | None) -> dict[str, str]:
    """Child environment: the given core dir (None: the user's own), no telemetry or upgrades,
    and compiled library objects shared between projects (`build_cache_dir()`)."""
    core = core_dir or _user_core_dir().expanduser()
    env = {k: v for k, v in os.environ.items() if k not in _CORE_LOCATION_VARS}
    env.update(_shared_cache_environment(env))
    env.pop("PYTHONPATH", None)
    if (path := proc.pythonpath()):
        env["PYTHONPATH"] = path
    env.update({
        "PLATFORMIO_CORE_DIR": str(Path(core)),
        # The upgrade check runs at the END of a successful command and stalls ~60 s offline.
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "no",
        "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "9999",
        # Progress bars are noise in captured output.
        "PLATFORMIO_DISABLE_PROGRESSBAR": "true",
    })
    return env


def build_cache_dir() -> Path | None:
    """Where compiled library and framework objects (TFLM's above all) are shared between
    projects: $TINYFORGE_BUILD_CACHE_DIR (empty: no sharing), else
    ~/.cache/tinyforge/build-cache."""
    value = os.environ.get(ENV_BUILD_CACHE_DIR)
    if value is not None:
        return Path(value).expanduser().resolve() if value else None
    try:
        return storage.cache_root() / "build-cache"
    except TinyforgeError:  # no home folder: build without sharing
        return None


def _shared_cache_environment(inherited: dict[str, str]) -> dict[str, str]:
    """PLATFORMIO_EXTRA_SCRIPTS (appended to the user's) and the folder for the shared cache.

    An environment variable, not a line in platformio.ini: the rendered project stays free of
    machine paths, and PlatformIO appends it to a project's own extra_scripts.
    """
    folder = build_cache_dir()
    script = resources.platforms_dir() / _SHARED_CACHE_SCRIPT
    # PlatformIO splits the value at newlines, or at ", " when it has none, and cuts at ";".
    if folder is None or any(c in str(script) for c in ("\n", ";", ",")):
        return {ENV_BUILD_CACHE_DIR: ""}
    users = inherited.get(_EXTRA_SCRIPTS_VAR, "")
    entries = [e.strip() for e in users.split("\n" if "\n" in users else ", ") if e.strip()]
    if f"pre:{script}" not in entries:
        entries.append(f"pre:{script}")
    return {ENV_BUILD_CACHE_DIR: str(folder), _EXTRA_SCRIPTS_VAR: "\n".join(entries)}


def require_core_dir(core_dir: Path | None) -> Path:
    """The core dir PlatformIO will run with, checked writable (PlatformIO creates it).

    PlatformIO writes its state there on every command; an unwritable one (a read-only HOME)
    would otherwise fail inside PlatformIO, looking like an invalid platformio.ini.
    """
    if core_dir is not None:
        return storage.check_writable(core_dir, what="tinyforge's PlatformIO core dir",
                                      variable=offline_core.ENV_CORE_DIR)
    if os.environ.get("PLATFORMIO_CORE_DIR"):
        core = Path(os.environ["PLATFORMIO_CORE_DIR"])
    else:
        core = storage.home_path(".platformio", what="PlatformIO's core dir",
                                 variable="PLATFORMIO_CORE_DIR")
    return storage.check_writable(core, what="PlatformIO's core dir",
                                  variable="PLATFORMIO_CORE_DIR")


def validate_project(project_dir: Path, core_dir: Path | None) -> None:
    """`pio project config`: PlatformIO's own check of the rendered platformio.ini.

    A check that passed is remembered by what it depends on (_config_verdict_key): the same
    file under the same PlatformIO and environment passes again, without its ~0.7 s start-up.
    """
    require_core_dir(core_dir)
    env = environment(core_dir)
    marker = _passed_check_marker(Path(project_dir) / "platformio.ini", env)
    if marker is not None and marker.is_file():
        log.debug("PlatformIO project check: this platformio.ini passed before (%s)", marker.name)
        return
    proc.run(pio_argv("project", "config", "-d", str(project_dir)), timeout=CONFIG_TIMEOUT_S,
             env=env, what="PlatformIO project check",
             failure_hint="the generated platformio.ini is invalid; please report this")
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError as error:  # an unwritable cache only costs the next check's time
            log.debug("cannot remember the project check in %s: %s", marker, error)


def _passed_check_marker(ini: Path, env: dict[str, str]) -> Path | None:
    """The cache file that says this check passed, or None when the verdict could depend on
    more than the file's bytes, PlatformIO's version and its PLATFORMIO_* environment: other
    files (extra_configs) or other variables (${sysenv.X} and friends)."""
    try:
        data = ini.read_bytes()
        folder = storage.cache_root() / "pio-project-check"
    except (OSError, TinyforgeError):
        return None
    if b"extra_configs" in data or b"${" in data:
        return None
    try:
        version = importlib.metadata.version("platformio")
    except importlib.metadata.PackageNotFoundError:
        return None
    digest = hashlib.sha256(f"{_CHECK_FORMAT}\0{version}\0".encode())
    for name in sorted(env):
        if name.startswith("PLATFORMIO_"):
            digest.update(f"{name}={env[name]}\0".encode())
    digest.update(data)
    return folder / digest.hexdigest()


def core_dir_for(board: Board) -> Path | None:
    """Emulated boards build in tinyforge's own core dir; real boards in the user's."""
    return offline_core.core_dir() if board.emulated else None


def missing_packages(board: Board, project_dir: Path, core_dir: Path | None,
                     *, local_tflm: bool) -> list[str]:
    """The board's PlatformIO packages (and TFLM library) not installed yet."""
    core = (core_dir or _user_core_dir()).expanduser()
    missing = [entry for entry in board.platformio.get("packages", [])
               if not (core / entry).exists()]
    if not local_tflm:
        libdeps = project_dir / ".pio" / "libdeps" / board.id / board.tflm["library"]
        if not libdeps.exists():
            missing.append(f"library {board.tflm['library']} ({board.tflm['source']})")
    return missing


def registry_reachable(timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    for host, port in REGISTRY_HOSTS:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            with socket.create_connection((host, port), timeout=remaining):
                pass
        except OSError:
            return False
    return True


def check_packages(board: Board, project_dir: Path, core_dir: Path | None,
                   *, local_tflm: bool) -> None:
    """Make sure `pio run` will not stall on the registry: fail in seconds instead."""
    if board.emulated:
        # The emulated target's packages come from this machine, never from the registry.
        offline_core.setup(core_dir, require_qemu=False)
    missing = missing_packages(board, project_dir, core_dir, local_tflm=local_tflm)
    if not missing:
        return
    log.info("PlatformIO will download: %s", ", ".join(missing))
    if registry_reachable():
        return
    if board.emulated:
        raise TFLMSourceError(
            f"the TFLM library for '{board.id}' is not available and GitHub cannot be reached "
            f"to download {board.tflm['library']}",
            hint=missing_tflm_hint(board.id))
    raise PackageUnavailableError(
        f"PlatformIO needs {len(missing)} package(s) for '{board.id}' that are not installed, "
        "and its registry cannot be reached:",
        details="\n".join(f"  - {m}" for m in missing),
        hint=_offline_hint(board))


def build(project_dir: Path, board: Board, core_dir: Path | None, *,
          on_line: Callable[[str], None] | None = None,
          timeout: float = BUILD_TIMEOUT_S) -> BuildReport:
    """`pio run` in the project; returns PlatformIO's RAM/Flash figures."""
    require_core_dir(core_dir)
    started = time.monotonic()
    report = BuildReport(seconds=0.0)
    watcher = _OutputWatcher(report, on_line)
    try:
        proc.run(pio_argv("run", "-d", str(project_dir), "-e", board.id), timeout=timeout,
                 env=environment(core_dir), on_line=watcher, what="PlatformIO build")
    except ChildProcessFailed as failure:
        raise _explain_failure(failure, watcher, board) from None
    report.seconds = time.monotonic() - started
    firmware = project_dir / ".pio" / "build" / board.id / "firmware.elf"
    report.firmware = str(firmware) if firmware.exists() else None
    return report


# How often a long build says how far it got.
PROGRESS_EVERY_FILES = 25


def progress_logger(what: str) -> Callable[[str], None]:
    """An `on_line` for `build()`: every line of PlatformIO's at debug level (-v), and at
    info level only tinyforge's own count of compiled files every so often. PlatformIO's
    RAM/Flash bars stay behind -v: the caller reports the figures that are the user's
    firmware (a measurement build's are not), and a failure's error lines come with the
    error."""
    compiled = 0

    def on_line(line: str) -> None:
        nonlocal compiled
        log.debug("  pio: %s", line)
        if line.startswith("Compiling "):
            compiled += 1
            if compiled % PROGRESS_EVERY_FILES == 0:
                log.info("  %s: %s files compiled...", what, units.count(compiled))

    return on_line


class _OutputWatcher:
    """Streams `pio run` output, keeping what the summary and error messages need."""

    def __init__(self, report: BuildReport, on_line):
        self.report = report
        self.on_line = on_line
        self.installing: str | None = None
        self.overflows: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def __call__(self, line: str) -> None:
        self.report.lines.append(line)
        if (match := _USAGE.match(line)):
            used, total = int(match.group(3)), int(match.group(4))
            if match.group(1) == "RAM":
                self.report.ram_used, self.report.ram_total = used, total
            else:
                self.report.flash_used, self.report.flash_total = used, total
        elif (match := _INSTALLING.search(line)):
            self.installing = match.group(1)
        elif (match := _OVERFLOW.search(line)):
            self.overflows.append((match.group(1), int(match.group(2))))
        elif _COMPILING.match(line):
            self.report.compiled_files += line.startswith("Compiling ")
        elif _RETRIEVED.match(line):
            self.report.cached_files += 1
        if "error:" in line or "Error:" in line or "Error " in line:
            self.errors.append(line)
        if self.on_line:
            self.on_line(line)


def _explain_failure(failure: ChildProcessFailed, watcher: _OutputWatcher,
                     board: Board) -> Exception:
    lines = watcher.report.lines
    if any("HTTPClientError" in line for line in lines):
        package = watcher.installing or "a package"
        return PackageUnavailableError(
            f"PlatformIO could not download {package} (no network access to its registry)",
            hint=_offline_hint(board))
    if watcher.overflows:
        details = "\n".join(f"  - {region}: over by {units.size(over)}"
                            for region, over in watcher.overflows)
        return DoesNotFitError(
            f"the firmware does not fit {board.name}: the linker ran out of space",
            details=details,
            hint="make the model or the arena smaller; `tinyforge inspect MODEL --board "
                 f"{board.id}` shows the estimate")
    details = "\n".join((watcher.errors or lines)[-20:])
    return PlatformIOError(f"PlatformIO build failed (exit status {failure.returncode})",
                           returncode=failure.returncode, details=details,
                           hint="run with --verbose to see the whole build output")


def _offline_hint(board: Board) -> str:
    return ("connect to the internet once and build again (PlatformIO keeps what it downloads), "
            "or build offline for the emulated board: `tinyforge build --board qemu-m4 --tflm "
            "PATH`; `--no-compile` renders and checks without building")


def _user_core_dir() -> Path:
    return Path(os.environ.get("PLATFORMIO_CORE_DIR") or DEFAULT_CORE_DIR)
