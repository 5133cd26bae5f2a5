"""Conversion with real TensorFlow in a child process, checked by reading the .tflite produced."""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import numpy as np
import pytest
import tf_models

from tinyforge.errors import CalibrationError, ConversionError, ModelFileError, TinyforgeError
from tinyforge.model import accuracy
from tinyforge.model.convert import convert, source_kind
from tinyforge.model.reader import read_model_file

DYNAMIC_BATCH_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}
# find_spec, not importorskip: importing TensorFlow here is exactly what must not happen.
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="conversion needs tensorflow-cpu (make setup)")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("conversion needs tensorflow-cpu (make setup)")
    return tf_models.models(tmp_path_factory)


def _int8(models, name, tmp_path, **kwargs):
    return convert(models[name], calibration=models["calibration.npy"], quantize="int8",
                   output=tmp_path / "out" / "model.tflite", **kwargs)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_dense_layers_can_be_quantized_per_tensor_for_older_tflm(models, tmp_path):
    default = _int8(models, "fixed.keras", tmp_path / "a")
    per_tensor = _int8(models, "fixed.keras", tmp_path / "b", per_channel_dense=False)
    assert read_model_file(default.output)[1].per_channel_fc_weights  # TensorFlow's default
    assert read_model_file(per_tensor.output)[1].per_channel_fc_weights == []


@pytest.mark.slow
@pytest.mark.tensorflow
def test_keras_to_int8_with_int8_input_and_output(models, tmp_path):
    lines = []
    result = _int8(models, "fixed.keras", tmp_path, on_line=lines.append)
    data, info = read_model_file(result.output)
    assert len(data) == result.model_bytes
    assert [t.dtype for t in info.inputs + info.outputs] == ["int8", "int8"]
    assert info.inputs[0].shape == [1, *tf_models.INPUT_SHAPE]
    assert info.inputs[0].scale > 0 and info.outputs[0].shape == [1, tf_models.CLASSES]
    assert "float32" not in info.dtypes  # full-integer: no float tensors left
    assert result.input_shape == [1, *tf_models.INPUT_SHAPE] and not result.batch_was_fixed
    assert result.calibration_samples == tf_models.SAMPLES
    # TensorFlow's chatter went to the callback, not to the terminal.
    assert any("TensorFlow" in line for line in lines)
    assert set(result.to_json()) >= {"model_bytes", "sha256", "seconds", "quantize"}
    # The float model's outputs on the calibration samples came back for the accuracy report.
    reference = result.reference
    assert reference.inputs.shape == (tf_models.SAMPLES, *tf_models.INPUT_SHAPE)
    assert reference.outputs[0].shape == (tf_models.SAMPLES, 1, tf_models.CLASSES)
    # Softmax probabilities sum to one: these are the float model's real outputs.
    np.testing.assert_allclose(reference.outputs[0].sum(axis=-1), 1.0, rtol=1e-5)
    report = accuracy.compare(result.output.read_bytes(), reference, model_name="model.tflite")
    assert report.samples == tf_models.SAMPLES
    assert report.max_abs_error < 8 / 256  # a few int8 output steps
    assert 0 < report.mean_abs_error < report.max_abs_error


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.parametrize("name", ["dynamic.keras", "dynamic.h5", "dynamic_saved_model"])
def test_dynamic_batch_is_fixed_to_one(models, tmp_path, name):
    result = _int8(models, name, tmp_path)
    _, info = read_model_file(result.output)
    assert result.batch_was_fixed and result.input_shape[0] is None
    assert info.inputs[0].shape == [1, *tf_models.INPUT_SHAPE]
    assert not DYNAMIC_BATCH_OPS & set(info.op_names), info.op_names
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(info.op_names)
    assert info.inputs[0].dtype == info.outputs[0].dtype == "int8"


@pytest.mark.slow
@pytest.mark.tensorflow
def test_saved_model_with_batch_one_is_converted_as_is(models, tmp_path):
    result = _int8(models, "fixed_saved_model", tmp_path)
    assert result.source_kind == "saved_model" and not result.batch_was_fixed
    assert read_model_file(result.output)[1].inputs[0].shape == [1, *tf_models.INPUT_SHAPE]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_reference_outputs_follow_the_tflite_output_order(models, tmp_path):
    result = _int8(models, "two_outputs.keras", tmp_path)
    _, info = read_model_file(result.output)
    per_sample = [list(out.shape[1:]) for out in result.reference.outputs]
    assert per_sample == [t.shape for t in info.outputs]
    assert sorted(per_sample) == [[1, 1], [1, tf_models.CLASSES]]
    report = accuracy.compare(result.output.read_bytes(), result.reference, model_name="two")
    assert report.top1_agreement is None and len(report.outputs) == 2
    for output in report.outputs:  # within a few output steps of the float model
        assert output.max_abs_error < 4 * output.scale


@pytest.mark.slow
@pytest.mark.tensorflow
def test_float32_without_calibration(models, tmp_path):
    result = convert(models["fixed.keras"], calibration=None, quantize="float32",
                     output=tmp_path / "f.tflite")
    _, info = read_model_file(result.output)
    assert info.inputs[0].dtype == info.outputs[0].dtype == "float32"
    assert info.inputs[0].shape == [1, *tf_models.INPUT_SHAPE]
    assert result.reference is None and result.calibration_samples == 0


@pytest.mark.slow
@pytest.mark.tensorflow
def test_float32_with_calibration_matches_the_float_model(models, tmp_path):
    result = convert(models["dynamic.keras"], calibration=models["calibration.npy"],
                     quantize="float32", output=tmp_path / "f.tflite")
    report = accuracy.compare(result.output.read_bytes(), result.reference, model_name="f")
    assert report.max_abs_error < 1e-5 and report.top1_agreement == 1.0


@pytest.mark.slow
@pytest.mark.tensorflow
def test_wrongly_shaped_calibration_is_refused_by_name(models, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 8, 2), np.float32))
    with pytest.raises(CalibrationError) as info:
        convert(models["fixed.keras"], calibration=bad, quantize="int8",
                output=tmp_path / "m.tflite")
    assert str(bad) in info.value.message
    assert "[5, 8, 2]" in info.value.message and "[N, 16, 2]" in info.value.message
    assert not (tmp_path / "m.tflite").exists()


def test_int8_without_calibration_fails_before_tensorflow(tmp_path):
    (tmp_path / "m.keras").write_bytes(_a_zip(tmp_path))
    with pytest.raises(CalibrationError, match="needs calibration samples"):
        convert(tmp_path / "m.keras", calibration=None, quantize="int8",
                output=tmp_path / "m.tflite")


def test_unreadable_calibration_fails_before_tensorflow(tmp_path):
    (tmp_path / "m.keras").write_bytes(_a_zip(tmp_path))
    (tmp_path / "c.npy").write_bytes(b"nonsense")
    with pytest.raises(CalibrationError, match="not a valid .npy"):
        convert(tmp_path / "m.keras", calibration=tmp_path / "c.npy", quantize="int8",
                output=tmp_path / "m.tflite")


def test_keras_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"\x00" * 300)
    with pytest.raises(ModelFileError, match="not a Keras archive") as info:
        source_kind(tmp_path / "bad.keras")
    assert info.value.hint


@pytest.mark.slow
@pytest.mark.tensorflow
def test_corrupt_keras_archive_is_a_clear_error(models, tmp_path):
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(_a_zip(tmp_path))
    with pytest.raises(ModelFileError) as info:
        convert(bad, calibration=models["calibration.npy"], quantize="int8",
                output=tmp_path / "m.tflite")
    assert str(bad) in info.value.message
    assert "cannot be loaded as a Keras model" in info.value.message
    assert "Traceback" not in _everything(info.value)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
@pytest.mark.tensorflow
def test_model_that_fails_conversion_names_the_op(models, tmp_path):
    with pytest.raises(ConversionError) as info:
        convert(models["unsupported_saved_model"], calibration=models["calibration.npy"],
                quantize="int8", output=tmp_path / "m.tflite")
    error = info.value
    assert "no builtin op" in error.message and "MatrixDeterminant" in error.details
    assert "Traceback" not in _everything(error)
    assert error.hint and not (tmp_path / "m.tflite").exists()


@needs_tensorflow
def test_a_crashing_child_becomes_a_conversion_error_with_its_last_lines(tmp_path, monkeypatch):
    # A real crash of the real child: Python runs sitecustomize first, which segfaults.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, sys\nprint('about to crash', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PYTHONPATH", str(hook))
    np.save(tmp_path / "c.npy", np.zeros((2, 16, 2), np.float32))
    model = tmp_path / "m.keras"
    model.write_bytes(_a_zip(tmp_path))
    with pytest.raises(ConversionError) as info:
        convert(model, calibration=tmp_path / "c.npy", quantize="int8",
                output=tmp_path / "m.tflite")
    assert "crashed" in info.value.message and "SIGSEGV" in info.value.message
    assert "about to crash" in info.value.details


@pytest.mark.slow
@pytest.mark.tensorflow
def test_timeout_stops_the_child(models, tmp_path):
    with pytest.raises(ConversionError, match="took longer than 0.5 s"):
        _int8(models, "fixed.keras", tmp_path, timeout=0.5)


def test_tflite_input_is_not_converted(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3")
    with pytest.raises(ConversionError, match="already a TFLite model"):
        source_kind(tmp_path / "m.tflite")


def test_directory_without_saved_model(tmp_path):
    with pytest.raises(ModelFileError, match="without saved_model.pb"):
        source_kind(tmp_path)


def test_missing_model(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        source_kind(tmp_path / "missing.keras")


def test_h5_that_is_not_hdf5(tmp_path):
    (tmp_path / "m.h5").write_text("not hdf5")
    with pytest.raises(ModelFileError, match="not an HDF5 file"):
        source_kind(tmp_path / "m.h5")


def test_unknown_quantization(tmp_path):
    with pytest.raises(ConversionError, match="unknown quantization 'int4'"):
        convert(tmp_path, calibration=None, quantize="int4", output=tmp_path / "m.tflite")


def test_tensorflow_is_not_imported_into_this_process():
    assert "tensorflow" not in sys.modules


def _a_zip(tmp_path) -> bytes:
    """A valid zip that is not a Keras model (what a wrong or damaged download looks like)."""
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{ this is not json")
    return path.read_bytes()


def _everything(error: TinyforgeError) -> str:
    return "\n".join(filter(None, (error.message, error.details, error.hint)))
