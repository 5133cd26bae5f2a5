"""The command-line contract: exit codes, no TensorFlow outside conversion, doctor."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from qemu_support import require_emulator


def test_help_version_and_usage_errors(tinyforge_process):
    """The real entry point: argparse exits through SystemExit, usage errors exit 1."""
    tinyforge = tinyforge_process
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


# --- output: JSON only on stdout, one number format, each fact once ---------------------------

def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which JSON does not have."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_json_writer_spells_nan_and_infinities_as_strings():
    import math

    import numpy as np

    from tinyforge import jsonout
    data = {"nan": math.nan, "inf": [math.inf, -math.inf], "np": np.float32("nan"),
            "array": np.array([1.5, np.inf]), "ok": 0.25}
    for lines in (False, True):
        parsed = _strict_json(jsonout.dumps(data, lines=lines))
        assert parsed == {"nan": "nan", "inf": ["inf", "-inf"], "np": "nan",
                          "array": [1.5, "inf"], "ok": 0.25}
    assert "\n" not in jsonout.dumps(data, lines=True)


def test_a_device_result_with_nan_outputs_is_valid_json():
    import math

    from tinyforge import jsonout
    from tinyforge.device import protocol
    from tinyforge.flows import monitor
    line = protocol.encode("RES", seq=1, src="host", us=5, f0=[math.nan, math.inf, 1.0])
    event = protocol.Decoder().feed(line)[0]
    parsed = _strict_json(jsonout.dumps(monitor.to_json(event), lines=True))
    assert parsed["outputs"][0]["f"] == ["nan", "inf", 1.0]


def test_inspect_json_of_a_model_with_an_infinite_scale_is_valid_json(tinyforge, tmp_path):
    import struct

    from tinyforge import resources
    data = (resources.example_dir() / "gesture_int8.tflite").read_bytes()
    scale = struct.pack("<f", 0.017621207982301712)      # the input's scale
    assert scale in data
    model = tmp_path / "inf_scale.tflite"
    model.write_bytes(data.replace(scale, struct.pack("<f", float("inf"))))
    result = tinyforge("inspect", model, "--json")
    report = _strict_json(result.stdout)
    assert report["inputs"][0]["scale"] == "inf"


def test_a_failing_json_command_prints_one_error_object(tinyforge, tmp_path):
    result = tinyforge("inspect", tmp_path / "missing.tflite", "--json")
    assert result.returncode == 1
    error = _strict_json(result.stdout)["error"]
    assert error["type"] == "ModelFileError" and error["exit_code"] == 1
    assert "missing.tflite" in error["message"] and error["hint"]
    assert "error:" in result.stderr and "hint:" in result.stderr   # the text form stays


def test_a_failing_json_build_prints_one_error_object(tinyforge, models, tmp_path):
    result = tinyforge("build", "--model", models / "big_arena_float.tflite", "--quantize",
                       "float32", "--project-dir", tmp_path / "p", "--no-compile", "--json")
    assert result.returncode == 1, result.stderr
    error = _strict_json(result.stdout)["error"]
    assert error["type"] == "DoesNotFitError" and error["exit_code"] == 1
    assert "RAM: needs ~" in error["details"] and error["hint"]


def test_a_usage_error_with_json_is_an_error_object(tinyforge):
    result = tinyforge("build", "--json", "--bogus")
    assert result.returncode == 1
    error = _strict_json(result.stdout)["error"]
    assert error["type"] == "UsageError" and "--bogus" in error["message"]
    assert "--help" in error["hint"]


def test_build_json_reports_create_for_new_files(tinyforge, models, tmp_path):
    built = _strict_json(tinyforge("build", "--model", models / "conv_int8.tflite",
                                   "--project-dir", tmp_path / "p", "--no-compile", "--json",
                                   check_rc=0).stdout)
    assert set(built["files"].values()) == {"create"}
    assert built["fit"]["ram_sketch_parts"]["line_buffer"] == 513


_UNFORMATTED_BYTES = re.compile(r"(?<![\d,.#])\d{4,} B\b")   # 12345 B instead of 12,345 B


def _check_human_output(text: str) -> None:
    assert not _UNFORMATTED_BYTES.search(text), text
    assert " KB" not in text and "KiB" not in text, text
    assert not re.search(r"\{'|': ", text), text                   # a Python dict


def test_summaries_use_one_number_format_and_no_python_dicts(tinyforge, models, tmp_path):
    runs = [tinyforge("build", "--model", models / "conv_int8.tflite", "--project-dir",
                      tmp_path / "p", "--no-compile", check_rc=0),
            tinyforge("inspect", models / "conv_int8.tflite", check_rc=0),
            tinyforge("boards", check_rc=0)]
    for run in runs:
        _check_human_output(run.stdout + run.stderr)
    assert "983,040 B flash" in runs[2].stdout
    for run in runs[:2]:  # the host runtime is named on its line, not again by the arena's
        assert run.stdout.count("tflite-micro wheel") == 1, run.stdout


def test_a_planned_build_says_each_log_line_once(tinyforge, tmp_path):
    """The bundled example is measured twice, with and without its memory plan; why the
    arena is a host figure (or where it came from) is said once."""
    from tinyforge import resources
    runs = [tinyforge("build", "--project-dir", tmp_path / "p", "--no-compile", check_rc=0),
            tinyforge("inspect", resources.example_dir() / "gesture_int8.tflite", check_rc=0)]
    for run in runs:
        lines = run.stderr.splitlines()
        assert lines and len(lines) == len(set(lines)), run.stderr


@pytest.mark.tensorflow
def test_a_conversion_says_each_fact_once(tinyforge, tmp_path):
    from tinyforge import resources
    example = resources.example_dir()
    result = tinyforge("build", "--model", example / "gesture.keras", "--calibration",
                       example / "calibration.npz", "--project-dir", tmp_path / "p",
                       "--no-compile", check_rc=0)
    both = result.stdout + result.stderr
    assert both.count("accuracy on 128 samples") == 1, both
    assert "converted" not in result.stderr        # the summary says it
    # The model line and the flash estimate: the model the firmware embeds, 7,080 B converted
    # plus 352 B of offline memory plan (--memory-plan auto, docs/memory.md).
    assert both.count("7,432 B") == 2 and "7,080 B" not in both
    _check_human_output(both)
    # TensorFlow's C++ logging (absl) never reaches the terminal without -v.
    assert "absl" not in both and not re.search(r"^[IWEF]\d{4} ", both, re.M), both


def test_tensorflow_log_lines_are_kept_out_of_conversion_errors():
    from tinyforge.model.convert import without_tensorflow_logs
    text = ("tinyforge: TensorFlow 2.21.0 imported in 3.5 s\n"
            "WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\n"
            "W0000 00:00:1796156001.905745   24961 tf_tfl_flatbuffer_helpers.cc:364] Ignored "
            "output_format.\n"
            "I0000 00:00:1796155671.964080   16682 port.cc:153] oneDNN custom operations are on.\n"
            "error: 'tf.Erfinv' op is neither a custom op nor a flex op")
    assert without_tensorflow_logs(text).splitlines() == [
        "tinyforge: TensorFlow 2.21.0 imported in 3.5 s",
        "error: 'tf.Erfinv' op is neither a custom op nor a flex op"]


@pytest.mark.emulator
@pytest.mark.slow
def test_flash_monitor_json_prints_only_json_lines(tinyforge, tmp_path, tmp_path_factory,
                                                   cli_env):
    """`flash --monitor --json` on qemu-m4, with the self-test firmware (no TFLM needed): the
    flash result and every message are one JSON object per line, and nothing else."""
    require_emulator()
    from qemu_support import seeded_core

    from tinyforge.board import profiles
    from tinyforge.project import selftest as selftest_project
    from tinyforge.toolchain import pio
    board = profiles.load_board("qemu-m4")
    core = seeded_core(tmp_path_factory)
    project = tmp_path / "selftest"
    selftest_project.render_project(project, board)
    pio.build(project, board, core, timeout=600)
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(core))
    result = tinyforge("flash", "--board", "qemu-m4", "--project-dir", project, "--monitor",
                       "--json", "--count", "1", "--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    objects = [_strict_json(line) for line in result.stdout.splitlines()]
    assert objects[0]["type"] == "flash" and objects[0]["board"] == "qemu-m4"
    assert any(o["type"] == "result" for o in objects[1:]), objects
    assert any(o["type"] == "boot" and o["max_line"] == 512 for o in objects[1:]), objects


def test_every_command_prints_json_through_the_one_writer():
    """`--json` is valid JSON (NaN and infinities as strings, docs/cli.md) only if no command
    prints with `json` itself: every one goes through tinyforge.jsonout."""
    commands = Path(__file__).resolve().parent.parent / "tinyforge" / "commands"
    direct = [f"{path.name}:{number}" for path in sorted(commands.glob("*.py"))
              for number, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\bjson\.dumps?\(|^\s*import json\b", line)]
    assert direct == []
