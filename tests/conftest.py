"""Shared fixtures: the real CLI in a child process, real TensorFlow-made models, isolation.

Every PlatformIO call in the tests gets its own empty core dir, so nothing reads or writes
the developer's ~/.platformio and no test waits on another's package lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS_SCRIPT = REPO / "tests" / "models" / "make_models.py"
TFLM_ENV = "TINYFORGE_TFLM"


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
def tinyforge(cli_env, tmp_path):
    """Run the real `tinyforge` command line; returns the CompletedProcess."""
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
def models(tmp_path_factory) -> Path:
    """Small models made by real TensorFlow in a child process (see tests/models/)."""
    if subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True).returncode:
        pytest.skip("TensorFlow is not installed (run `make setup`)")
    out = tmp_path_factory.mktemp("models")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(MODELS_SCRIPT), str(out)], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tflm_tree() -> Path:
    """A TFLM Arduino library tree named by $TINYFORGE_TFLM; the test is skipped without one."""
    value = os.environ.get(TFLM_ENV)
    if not value:
        pytest.skip(f"needs a TFLM library source tree: set {TFLM_ENV} (e.g. a checkout of "
                    "Chirale_TensorFlowLite v2.0.0); a fresh machine has none")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{TFLM_ENV}={value} does not exist")
    return path


@pytest.fixture(scope="session")
def gxx() -> str:
    found = shutil.which("g++")
    if not found:
        pytest.skip("g++ is not installed (Debian: apt-get install g++)")
    return found
