"""The command-line contract: exit codes, no TensorFlow outside conversion, doctor."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from qemu_support import require_emulator


def test_help_version_and_usage_errors(tinyforge):
    assert "build" in tinyforge("--help", check_rc=0).stdout
    assert tinyforge("--version", check_rc=0).stdout.startswith("tinyforge ")
    result = tinyforge("build", "--bogus")
    assert result.returncode == 1  # a usage error is a user error, not a device error (2)
    assert "unrecognized arguments: --bogus" in result.stderr and "--help" in result.stderr


def test_commands_that_do_not_convert_never_import_tensorflow():
    code = ("import sys\n"
            "from tinyforge import cli\nfrom tinyforge.flows import inspection, monitor, validate, flash, doctor, build\n"
            "cli.build_parser()\n"
            "print(int('tensorflow' in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "0"


def test_boards_json(tinyforge):
    boards = json.loads(tinyforge("boards", "--json", check_rc=0).stdout)
    by_id = {b["id"]: b for b in boards}
    assert by_id["nano33ble"]["flash_bytes"] == 983_040
    assert by_id["nano33ble"]["ram_bytes"] == 262_144
    assert by_id["nano33ble"]["usb"] == {"app": "2341:805a", "bootloader": "2341:005a"}
    assert set(by_id["nano33ble"]["sensors"]) == {"rev1", "rev2"}
    assert by_id["qemu-m4"]["emulated"] is True
    assert by_id["qemu-m4"]["flash_bytes"] == 983_040


def test_doctor_reports_each_check_with_a_fix(tinyforge, tmp_path, cli_env):
    env = dict(cli_env, TINYFORGE_TFLM=str(tmp_path / "missing-tree"))
    result = tinyforge("doctor", "--offline", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["PlatformIO"]["ok"] and checks["pio command"]["ok"]
    assert checks["host TFLM runtime (tflite-micro)"]["ok"]
    assert checks["TFLM source tree"]["ok"] is False
    assert "missing-tree" in checks["TFLM source tree"]["detail"]
    assert result.returncode == 1  # a required check failed
    assert all(c["hint"] for c in checks.values() if not c["ok"])


def test_emulated_build_without_a_tflm_tree_names_both_ways_to_give_one(tinyforge, models,
                                                                        tmp_path, cli_env):
    require_emulator()
    from tinyforge.toolchain import pio
    if pio.registry_reachable():
        pytest.skip("GitHub is reachable here: PlatformIO would download the library")
    result = tinyforge("build", "--board", "qemu-m4", "--model", models / "dense_int8.tflite",
                       "--project-dir", tmp_path / "p")
    assert result.returncode == 1, result.stderr
    assert "TFLM library" in result.stderr
    assert "--tflm PATH" in result.stderr and "TINYFORGE_TFLM" in result.stderr
    assert "Traceback" not in result.stderr
