"""`tinyforge inspect --json`: the documented contract (docs/cli.md), on real models.

The contract is checked through the command line; the other reports come from the library
call the command makes (`inspect_model`), in this process, as JSON.
"""

from __future__ import annotations

import json

from tinyforge.flows.inspection import inspect_model

TENSOR_KEYS = {"name", "shape", "dtype", "scale", "zero_point"}


def _inspect(tinyforge, model, *extra):
    result = tinyforge("inspect", model, "--json", "--arena", "host", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _report(model) -> dict:
    """What `tinyforge inspect MODEL --json --arena host` prints, from the library call."""
    return json.loads(json.dumps(inspect_model(model, board_id="nano33ble", arena="host")))


def test_inspect_json_contract_for_a_runnable_int8_model(tinyforge, models):
    report = _inspect(tinyforge, models / "conv_int8.tflite")
    assert report["ops"] == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"]
    assert report["model_bytes"] == (models / "conv_int8.tflite").stat().st_size
    assert len(report["sha256"]) == 64
    assert report["unsupported_ops"] == [] and report["unsupported_features"] == []
    assert report["fits"] is True
    assert isinstance(report["arena_bytes"], int) and report["arena_bytes"] % 16 == 0
    assert report["arena"]["source"] == "host"
    assert report["arena"]["host"]["minimum_bytes"] <= report["arena_bytes"]
    assert report["arena"]["device"] is None
    for tensor in report["inputs"] + report["outputs"]:
        assert TENSOR_KEYS <= set(tensor)
    assert report["inputs"][0]["shape"] == [1, 16, 16, 1]
    assert report["inputs"][0]["dtype"] == "int8"
    assert isinstance(report["inputs"][0]["scale"], float)
    assert report["outputs"][0]["zero_point"] == -128
    assert report["resolver_methods"]["CONV_2D"] == "AddConv2D"


def test_inspect_reports_every_problem_at_once(in_process, models):
    report = _report(models / "unsupported_float.tflite")
    assert report["unsupported_ops"] == ["ATAN2", "GELU", "TOPK_V2"]
    assert report["fits"] is False
    assert report["host_run"]["ok"] is False and "GELU" in report["host_run"]["error"]
    assert report["arena_bytes"] is None


def test_inspect_shows_tflms_own_words_for_an_unsupported_type(in_process, models):
    report = _report(models / "fp16.tflite")
    assert report["unsupported_ops"] == []
    assert "DEQUANTIZE" in report["host_run"]["error"]
    assert report["fits"] is False


def test_inspect_flags_per_channel_dense_weights_as_wrong_on_the_boards_tflm(in_process, models):
    report = _report(models / "dense_per_channel_int8.tflite")
    assert report["unsupported_ops"] == []
    assert report["unsupported_features"][0].startswith("per-channel quantized FULLY_CONNECTED")
    assert report["host_run"]["ok"] is True and report["fits"] is False


def test_inspect_reports_a_misfit(in_process, models):
    report = _report(models / "big_flash_float.tflite")
    assert report["fit"]["fits_flash"] is False and report["fits"] is False
    assert report["fit"]["flash_model"] == report["model_bytes"]


def test_inspect_text_output_and_bad_input(tinyforge, models, tmp_path):
    text = tinyforge("inspect", models / "conv_int8.tflite", "--arena", "host", check_rc=0)
    assert "verdict    fits and runs" in text.stdout
    keras = tmp_path / "m.keras"
    keras.write_bytes(b"PK\x03\x04")
    result = tinyforge("inspect", keras)
    assert result.returncode == 1 and "tinyforge build --model" in result.stderr


def test_inspect_device_arena_needs_a_tflm_tree(tinyforge, models):
    result = tinyforge("inspect", models / "conv_int8.tflite", "--arena", "device")
    assert result.returncode == 1
    assert "cannot measure the arena on the emulated Cortex-M4" in result.stderr
