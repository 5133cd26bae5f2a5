"""Real models on the emulated Cortex-M4: built with the board's TFLM library, run in QEMU,
their int8 outputs compared through `tinyforge validate` with the host build of the same
library (the reference when a tree is at hand, docs/reference.md).

The model tests need a TFLM library source tree ($TINYFORGE_TFLM, e.g. a checkout of
Chirale_TensorFlowLite v2.0.0 kept outside the repository) and take ~5 minutes the first time:
the library's 211 files compile once per project.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qemu_support import require_emulator, seeded_core, write_project

from tinyforge.board import profiles
from tinyforge.errors import DoesNotFitError
from tinyforge.toolchain import pio

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tinyforge" / "example"


@pytest.fixture(scope="module")
def qemu_project(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("qemu-models") / "project"


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_bundled_example_runs_on_qemu_and_matches_host_tflm(tinyforge, tflm_tree, qemu_project,
                                                            tmp_path_factory, cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--project-dir", qemu_project, "--json", env=env,
                                 timeout=1800, check_rc=0).stdout)
    arena = built["arena"]
    assert arena["source"] == "device"
    assert arena["device"]["minimum_bytes"] < arena["host"]["minimum_bytes"]
    assert built["build"]["flash_used"] < 983_040 and built["build"]["ram_used"] < 262_144
    report = json.loads(tinyforge("validate", "--project-dir", qemu_project, "--data",
                                  EXAMPLE / "calibration.npz", "--json", env=env,
                                  check_rc=0).stdout)
    assert report["samples"] == 128
    # The reference is the board's own TFLM compiled for the host (the build's --tflm tree).
    assert report["reference"].startswith("host build of Chirale_TensorFlowLite 2.0.0 at ")
    assert report["exact_matches"] == 128, report["mismatches"]
    assert report["top1_agreement"] == 1.0
    monitor = tinyforge("monitor", "--project-dir", qemu_project, "--count", "1", "--timeout",
                        "20", env=env, check_rc=0)
    assert "shake" in monitor.stdout  # the built-in demo input is a shake


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_convolutional_int8_model_matches_host_tflm(tinyforge, tflm_tree, models, qemu_project,
                                                      tmp_path_factory, cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    # Same project as the example: only the model's files change, so this build is incremental.
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--model", models / "conv_int8.tflite", "--project-dir",
                                 qemu_project, "--json", env=env, timeout=1800,
                                 check_rc=0).stdout)
    assert built["ops"] == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"]
    assert built["arena"]["source"] == "device"
    report = json.loads(tinyforge("validate", "--project-dir", qemu_project, "--random", "40",
                                  "--json", env=env, check_rc=0).stdout)
    assert report["reference"].startswith("host build of Chirale_TensorFlowLite 2.0.0 at ")
    assert report["exact_matches"] == 40, report["mismatches"]


def test_firmware_too_big_for_flash_is_refused_at_link_time_with_numbers(tmp_path,
                                                                        tmp_path_factory):
    require_emulator()
    core = seeded_core(tmp_path_factory)
    sketch = (
        '#include "board_runtime.h"\n'
        "// 1.1 MB of constants: more than the Nano 33 BLE's 983,040 bytes of flash.\n"
        "extern const unsigned char kBlob[1100000];\n"
        "const unsigned char kBlob[1100000] = {1};\n"
        "void setup() { BoardSerialBegin(115200); BoardSerialWrite((const char*)kBlob, 1); }\n"
        "void loop() {}\n")
    write_project(tmp_path, sketch)
    with pytest.raises(DoesNotFitError) as caught:
        pio.build(tmp_path, profiles.load_board("qemu-m4"), core, timeout=600)
    error = caught.value
    assert "does not fit" in error.message
    assert "FLASH: over by" in error.details
    over = int(error.details.split("over by ")[1].split(" ")[0].replace(",", ""))
    assert 100_000 < over < 150_000


@pytest.mark.tflm_tree
def test_measuring_in_the_users_project_never_replaces_an_edited_file(tinyforge, tflm_tree,
                                                                      models, tmp_path, cli_env,
                                                                      tmp_path_factory):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    project = tmp_path / "p"
    tinyforge("build", "--board", "qemu-m4", "--model", models / "conv_int8.tflite",
              "--project-dir", project, "--arena", "host", "--no-compile", env=env, check_rc=0)
    sketch = project / "src" / "main.cpp"
    sketch.write_text(sketch.read_text() + "// mine\n")
    result = tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--model",
                       models / "dense_int8.tflite", "--project-dir", project, env=env)
    assert result.returncode == 1
    assert "src/main.cpp" in result.stderr and "--overwrite" in result.stderr
    assert sketch.read_text().endswith("// mine\n")
    assert not (project / ".pio").exists(), "nothing was built"
