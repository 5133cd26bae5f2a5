"""Shared fixtures: the real CLI (in this process or as a child process), real TensorFlow-made
models, isolation, compiled harnesses kept between sessions.

Every PlatformIO call in the tests gets its own empty core dir, so nothing reads or writes
the developer's ~/.platformio and no test waits on another's package lock. tinyforge's own
caches (XDG_CACHE_HOME: arena measurements, measurement projects) belong to the session; the
shared object cache too, unless the developer names one in TINYFORGE_BUILD_CACHE_DIR (then
the TFLM tier compiles TFLM once, not once per session).

Test tiers (markers, pyproject.toml): `make test` runs everything a fresh machine can;
`make test-fast` leaves out `emulator`, `tensorflow`, `tflm_tree` and `slow`. Markers that
follow from a fixture are added here: `emulator` for `selftest_project` and
`handover_project` (firmware built with PlatformIO and run in QEMU), `tflm_tree` for
`tflm_tree`, and `tensorflow` for `models` while its models are not cached yet.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_in_process
from host_build import HostBuilds
from host_build import cache_root as host_build_cache

REPO = Path(__file__).resolve().parent.parent
MODELS_SCRIPT = REPO / "tests" / "models" / "make_models.py"
TFLM_ENV = "TINYFORGE_TFLM"
# The developer's tree is for the tests that ask for it (the `tflm_tree` fixture, which then
# passes it on explicitly): any other library call made in this process would otherwise find
# it too, and compile the host reference or measure on QEMU where a fresh machine would not.
TFLM_TREE = os.environ.pop(TFLM_ENV, None)
BUILD_CACHE_ENV = "TINYFORGE_BUILD_CACHE_DIR"
# The models make_models.py wrote, kept in pytest's cache (.pytest_cache/) between sessions,
# keyed by the script and the versions that shape its output.
_MODELS_CACHE = "tinyforge-test-models"
_MODELS_DONE = ".complete"
_MODELS_SHAPED_BY = ("tensorflow-cpu", "tensorflow", "keras", "numpy")
_FIXTURE_MARKERS = {"selftest_project": "emulator", "handover_project": "emulator",
                    "tflm_tree": "tflm_tree"}


def pytest_collection_modifyitems(config, items):
    models_cached = _cached_models_dir(config) is not None
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        if "models" in item.fixturenames and not models_cached:
            item.add_marker("tensorflow")


@pytest.fixture(scope="session", autouse=True)
def _session_caches(tmp_path_factory):
    """tinyforge's caches for this session only (see the module docstring)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    if BUILD_CACHE_ENV not in os.environ:
        patch.setenv(BUILD_CACHE_ENV, str(tmp_path_factory.mktemp("build-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _tinyforge_logger():
    """`cli.main` called in this process points the `tinyforge` logger at the stderr of that
    moment (pytest's capture, closed once the test ends): put the logger back after each test,
    or a later test's log line fails with "I/O operation on closed file"."""
    logger = logging.getLogger("tinyforge")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="session")
def pio_core(tmp_path_factory) -> Path:
    """An empty PlatformIO core dir for this test session (never ~/.platformio)."""
    return tmp_path_factory.mktemp("pio-core")


@pytest.fixture
def cli_env(pio_core, tmp_path) -> dict[str, str]:
    env = dict(os.environ)
    env["PLATFORMIO_CORE_DIR"] = str(pio_core)
    # Emulated boards build in tinyforge's own core dir: keep that out of ~/.tinyforge too.
    env["TINYFORGE_PIO_CORE_DIR"] = str(pio_core.parent / "tinyforge-pio-core")
    env.pop(TFLM_ENV, None)
    env.pop("TINYFORGE_BOARDS_PATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def in_process(cli_env, monkeypatch) -> dict[str, str]:
    """This process's environment made what `cli_env` gives the CLI, for tests that call
    tinyforge's library functions instead of spawning the command line."""
    for name, value in cli_env.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    for name in set(os.environ) - set(cli_env):
        monkeypatch.delenv(name)
    return cli_env


@pytest.fixture
def tinyforge(cli_env, tmp_path):
    """Run the `tinyforge` command line in this process (tests/cli_support.py: its own
    environment, working directory and captured stdout/stderr, as a child would have them);
    returns a CompletedProcess."""
    def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600,
            check_rc: int | None = None) -> subprocess.CompletedProcess:
        result = run_in_process(args, env=env or cli_env, cwd=cwd or tmp_path, timeout=timeout)
        if check_rc is not None:
            assert result.returncode == check_rc, (result.stdout, result.stderr)
        return result
    return run


@pytest.fixture
def tinyforge_process(cli_env, tmp_path):
    """Run the real `tinyforge` command line in a child process (`python -m tinyforge`), for
    what only a process shows: the entry point's exit status, signals, start-up."""
    def run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600,
            check_rc: int | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tinyforge", *map(str, args)],
                                env=env or cli_env, cwd=cwd or tmp_path, capture_output=True,
                                text=True, timeout=timeout)
        if check_rc is not None:
            assert result.returncode == check_rc, (result.stdout, result.stderr)
        return result
    return run


@pytest.fixture(scope="session")
def models(request, tmp_path_factory) -> Path:
    """Small models made by real TensorFlow in a child process (see tests/models/), made once
    and kept in pytest's cache until the script or TensorFlow's version changes."""
    out = tmp_path_factory.mktemp("models")
    cached = _cached_models_dir(request.config)
    if cached is not None:
        shutil.copytree(cached, out, dirs_exist_ok=True)  # tests never touch the cached copy
        return out
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (run `make setup`)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(MODELS_SCRIPT), str(out)], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    _store_models(request.config, out)
    return out


def _models_slot(config) -> Path | None:
    cache = getattr(config, "cache", None)  # None with `-p no:cacheprovider`
    if cache is None:
        return None
    key = hashlib.sha256(MODELS_SCRIPT.read_bytes())
    for dist in _MODELS_SHAPED_BY:
        try:
            key.update(f"{dist}=={importlib.metadata.version(dist)};".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return cache.mkdir(_MODELS_CACHE) / key.hexdigest()[:16]


def _cached_models_dir(config) -> Path | None:
    slot = _models_slot(config)
    return slot if slot is not None and (slot / _MODELS_DONE).is_file() else None


def _store_models(config, made: Path) -> None:
    slot = _models_slot(config)
    if slot is None:
        return
    staging = slot.with_name(f".{slot.name}.{os.getpid()}")
    if slot.exists() and not (slot / _MODELS_DONE).is_file():
        shutil.rmtree(slot, ignore_errors=True)  # left incomplete by hand
    shutil.copytree(made, staging, dirs_exist_ok=True)
    (staging / _MODELS_DONE).write_text("made by tests/models/make_models.py\n")
    try:
        os.replace(staging, slot)
    except OSError:  # another session stored them first
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def tflm_tree() -> Path:
    """A TFLM Arduino library tree named by $TINYFORGE_TFLM; the test is skipped without one."""
    value = TFLM_TREE
    if not value:
        pytest.skip(f"needs a TFLM library source tree: set {TFLM_ENV} (e.g. a checkout of "
                    "Chirale_TensorFlowLite v2.0.0); a fresh machine has none")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{TFLM_ENV}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def host_builds(request, tmp_path_factory) -> HostBuilds:
    """Compiler outputs kept in pytest's cache between sessions, keyed by every byte and flag
    that makes them (tests/host_build.py)."""
    return HostBuilds(host_build_cache(request.config), tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def gxx() -> str:
    found = shutil.which("g++")
    if not found:
        pytest.skip("g++ is not installed (Debian: apt-get install g++)")
    return found
