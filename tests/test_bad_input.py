"""Every bad input gets a clear message naming it, a fix, exit code 1, and nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SINE_FLOAT = Path(__import__("tflite_micro").__file__).parent / "python" / "tflite_micro" / \
    "sine_float.tflite"


def _refused(result, *phrases: str, project: Path | None = None) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    if project is not None:
        assert not project.exists(), "a refused build must not leave a project behind"


def _build(tinyforge, model, project, *extra):
    return tinyforge("build", "--model", model, "--project-dir", project, "--no-compile", *extra)


def test_not_a_tflite_file(tinyforge, tmp_path):
    model = tmp_path / "notes.tflite"
    model.write_text("this is not a model\n")
    _refused(_build(tinyforge, model, tmp_path / "p"), "notes.tflite",
             "not a TensorFlow Lite model", project=tmp_path / "p")


def test_missing_model_file(tinyforge, tmp_path):
    _refused(_build(tinyforge, tmp_path / "nope.tflite", tmp_path / "p"), "nope.tflite",
             "does not exist", project=tmp_path / "p")


def test_unknown_model_kind(tinyforge, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07onnx")
    _refused(_build(tinyforge, model, tmp_path / "p"), "model.onnx", project=tmp_path / "p")


def test_truncated_flatbuffer(tinyforge, models, tmp_path):
    model = tmp_path / "cut.tflite"
    model.write_bytes((models / "conv_int8.tflite").read_bytes()[:1500])
    _refused(_build(tinyforge, model, tmp_path / "p"), "cut.tflite", "truncated or corrupt",
             project=tmp_path / "p")


def test_corrupt_flatbuffer(tinyforge, tmp_path):
    data = bytearray(os.urandom(4096))
    data[0:4] = (0xFFFFFF00).to_bytes(4, "little")  # root table offset far outside the file
    data[4:8] = b"TFL3"
    model = tmp_path / "garbage.tflite"
    model.write_bytes(bytes(data))
    _refused(_build(tinyforge, model, tmp_path / "p"), "garbage.tflite", "truncated or corrupt",
             project=tmp_path / "p")


def test_float_model_where_int8_is_required(tinyforge, tmp_path):
    result = _build(tinyforge, SINE_FLOAT, tmp_path / "p")
    _refused(result, "sine_float.tflite", "not a full-integer int8 model", "float32",
             "--quantize float32", project=tmp_path / "p")
    accepted = _build(tinyforge, SINE_FLOAT, tmp_path / "p", "--quantize", "float32")
    assert accepted.returncode == 0, accepted.stderr


def test_all_unsupported_ops_are_named(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "unsupported_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "3 ops", "ATAN2", "GELU", "TOPK_V2", "Chirale_TensorFlowLite 2.0.0",
             project=tmp_path / "p")
    assert "FULLY_CONNECTED" not in result.stderr


def test_custom_ops_are_named_as_custom(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "custom_op.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "Erfinv (custom op)", "MatrixDeterminant (custom op)", "AddCustom",
             project=tmp_path / "p")


def test_per_channel_dense_weights_are_refused_for_a_tflm_that_ignores_them(tinyforge, models,
                                                                          tmp_path):
    result = _build(tinyforge, models / "dense_per_channel_int8.tflite", tmp_path / "p")
    _refused(result, "dense_per_channel_int8.tflite", "per-channel FULLY_CONNECTED",
             "Chirale_TensorFlowLite 2.0.0", "tinyforge build --model MODEL.keras",
             project=tmp_path / "p")


def test_unsupported_type_is_caught_by_the_host_dry_run(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "fp16.tflite", tmp_path / "p", "--quantize", "float32")
    _refused(result, "fp16.tflite", "host TFLM", "DEQUANTIZE", project=tmp_path / "p")


def test_model_too_big_for_flash(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "big_flash_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "does not fit", "flash", "983,040", "--force", project=tmp_path / "p")
    forced = _build(tinyforge, models / "big_flash_float.tflite", tmp_path / "p",
                    "--quantize", "float32", "--force")
    assert forced.returncode == 0 and "may not fit" in forced.stderr


def test_arena_too_big_for_ram(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "big_arena_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "does not fit", "RAM", "262,144", "tensor arena", project=tmp_path / "p")


EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example"


def test_missing_calibration_for_int8_conversion(tinyforge, tmp_path):
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p")
    _refused(result, "calibration", "--calibration", project=tmp_path / "p")
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p", "--calibration",
                    tmp_path / "missing.npz")
    _refused(result, "missing.npz", project=tmp_path / "p")


@pytest.mark.tensorflow
def test_wrongly_shaped_calibration(tinyforge, tmp_path):
    import numpy as np
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((4, 3, 32), dtype=np.float32))
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p", "--calibration",
                    samples)
    _refused(result, "samples.npy", "[4, 3, 32]", "[1, 32, 3]", project=tmp_path / "p")


def test_unknown_board_lists_known_ones(tinyforge, tmp_path):
    result = tinyforge("build", "--board", "uno", "--no-compile", "--project-dir", tmp_path / "p")
    _refused(result, "unknown board 'uno'", "nano33ble", project=tmp_path / "p")


@pytest.mark.parametrize("change, phrase", [
    ('flash_bytes = 983_040', "missing field 'memory.flash_bytes'"),
    ('flash_bytes = "lots"', "'memory.flash_bytes' must be an integer"),
    ('flash_byte = 983_040\nflash_bytes = 983_040', "unknown field 'memory.flash_byte'"),
    ('usb_app = "2341-805a"', "serial.usb_app must look like"),
    ('[memory', "not valid TOML"),
])
def test_invalid_board_profile(tinyforge, cli_env, tmp_path, change, phrase):
    original = (Path(__file__).parent.parent / "boards" / "nano33ble.toml").read_text()
    if change == 'flash_bytes = 983_040':
        text = original.replace("flash_bytes = 983_040\n", "")
    elif change.startswith("usb_app"):
        text = original.replace('usb_app = "2341:805a"', change)
    elif change == "[memory":
        text = original.replace("[memory]", "[memory")
    else:
        text = original.replace("flash_bytes = 983_040", change)
    boards = tmp_path / "myboards"
    boards.mkdir()
    (boards / "nano33ble.toml").write_text(text)
    env = dict(cli_env, TINYFORGE_BOARDS_PATH=str(boards))
    result = tinyforge("build", "--no-compile", "--project-dir", tmp_path / "p", env=env)
    _refused(result, str(boards / "nano33ble.toml"), phrase, project=tmp_path / "p")


def test_project_dir_not_writable(tinyforge, models, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _build(tinyforge, models / "dense_int8.tflite", blocker / "project")
    _refused(result, "a-file", "--project-dir")
    if os.geteuid() != 0:  # root ignores directory permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _build(tinyforge, models / "dense_int8.tflite", locked / "project")
        _refused(result, "not writable", project=locked / "project")


@pytest.mark.slow
def test_ctrl_c_during_rendering_leaves_the_previous_project_intact(models, tmp_path, cli_env):
    def argv(model: str, project: Path) -> list[str]:
        return [sys.executable, "-m", "tinyforge", "build", "--no-compile", "--project-dir",
                str(project), "--model", str(models / model)]

    # Renders are deterministic, so the complete project for each model is known in advance.
    complete = {}
    for model in ("conv_int8.tflite", "dense_int8.tflite"):
        subprocess.run(argv(model, tmp_path / model), env=cli_env, check=True,
                       capture_output=True)
        complete[model] = _snapshot(tmp_path / model)
    project = tmp_path / "p"
    subprocess.run(argv("conv_int8.tflite", project), env=cli_env, check=True,
                   capture_output=True)
    current, other = "conv_int8.tflite", "dense_int8.tflite"
    # Interrupt a render of the other model at many points. The project must always be one
    # complete render, never a mix, and an interrupted run exits 130.
    interrupted_before_commit = 0
    for delay in (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 1.8, 2.2):
        child = subprocess.Popen(argv(other, project), env=cli_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert b"Traceback" not in err
        # 130, or killed by SIGINT itself (-2: a shell shows both as 130) when the signal
        # lands while Python is still starting or already finishing.
        assert child.returncode in (0, 130, -signal.SIGINT), (child.returncode, err)
        now = _snapshot(project)
        assert now in (complete[current], complete[other]), "the project is a mix of renders"
        if now == complete[other]:
            current, other = other, current
        elif child.returncode == 130:
            interrupted_before_commit += 1
    assert interrupted_before_commit, "no run was interrupted before writing: delays too long"


def _snapshot(project: Path) -> dict[str, bytes]:
    return {p.relative_to(project).as_posix(): p.read_bytes()
            for p in sorted(project.rglob("*")) if p.is_file()}
