"""The accuracy report (host TFLM vs the float model) and the bundled example's files."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tinyforge.errors import CalibrationError
from tinyforge.model import calibration as calib
from tinyforge.model.accuracy import FloatReference, compare
from tinyforge.model.host_runtime import Quantization, run_batch
from tinyforge.model.reader import read_model_file
from tinyforge.resources import example_dir

EXAMPLE = example_dir()
TFLITE = EXAMPLE / "gesture_int8.tflite"


@pytest.fixture(scope="module")
def example():
    data, info = read_model_file(TFLITE)
    samples = calib.load_calibration(EXAMPLE / "calibration.npz", info.inputs[0].shape)
    return data, info, samples


def _tflm_outputs(data, info, samples) -> np.ndarray:
    """The int8 model's dequantized outputs on `samples`, straight from host TFLM."""
    q_in = Quantization(info.inputs[0].scale, info.inputs[0].zero_point, "int8")
    q_out = Quantization(info.outputs[0].scale, info.outputs[0].zero_point, "int8")
    results = run_batch(data, [[q_in.quantize(s)] for s in samples], 1, "example")
    return np.stack([q_out.dequantize(r[0]) for r in results]).astype(np.float32)


# --- the bundled example ---------------------------------------------------------------

def test_example_files_are_all_there():
    names = {"gesture.keras", "gesture_int8.tflite", "calibration.npz", "labels.txt",
             "demo_input.npy", "README.md"}
    assert names <= {p.name for p in EXAMPLE.iterdir()}
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) < 200_000


def test_example_tflite_is_int8_in_and_out_with_batch_one(example):
    data, info, _ = example
    assert 5_000 <= len(data) <= 30_000
    assert [t.dtype for t in info.inputs + info.outputs] == ["int8", "int8"]
    assert info.inputs[0].shape == [1, 32, 3]
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(info.op_names)


def test_example_labels_match_the_output_size(example):
    _, info, _ = example
    labels = (EXAMPLE / "labels.txt").read_text().splitlines()
    assert labels == ["idle", "shake", "wave", "circle"]
    assert info.outputs[0].shape == [1, len(labels)]


def test_example_calibration_file(example):
    _, _, samples = example
    with np.load(EXAMPLE / "calibration.npz", allow_pickle=False) as archive:
        assert archive["x"].dtype == np.float32 and archive["y"].shape == (len(samples),)
        assert sorted(np.bincount(archive["y"])) == [32, 32, 32, 32]
    assert samples.shape == (128, 32, 3)
    # Gravity is in every window: the mean magnitude is about 1 g.
    assert 0.8 < np.linalg.norm(samples, axis=-1).mean() < 1.6


def test_example_demo_input_is_a_shake_the_int8_model_recognises(example):
    data, info, _ = example
    demo = np.load(EXAMPLE / "demo_input.npy", allow_pickle=False)
    assert demo.dtype == np.float32 and list(demo.shape) == info.inputs[0].shape
    probabilities = _tflm_outputs(data, info, demo)[0].ravel()
    labels = (EXAMPLE / "labels.txt").read_text().splitlines()
    assert labels[int(np.argmax(probabilities))] == "shake" and probabilities.max() > 0.9


def test_example_int8_model_classifies_its_calibration_windows(example):
    data, info, samples = example
    with np.load(EXAMPLE / "calibration.npz", allow_pickle=False) as archive:
        truth = archive["y"]
    predicted = np.argmax(_tflm_outputs(data, info, samples).reshape(len(samples), -1), axis=1)
    assert np.mean(predicted == truth) >= 0.95


@pytest.mark.slow
@pytest.mark.tensorflow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="conversion needs tensorflow-cpu (make setup)")
def test_example_accuracy_report_after_a_real_conversion(tmp_path):
    from tinyforge.model.convert import convert

    result = convert(EXAMPLE / "gesture.keras", calibration=EXAMPLE / "calibration.npz",
                     quantize="int8", output=tmp_path / "gesture.tflite")
    report = compare(result.output.read_bytes(), result.reference, model_name="gesture.tflite")
    assert report.samples == 128
    assert report.top1_agreement >= 0.95
    assert report.mean_abs_error < 0.01 and report.max_abs_error < 0.2
    document = json.loads(json.dumps(report.to_json()))
    assert document["samples"] == 128 and document["outputs"][0]["scale"] == pytest.approx(1 / 256)


# --- the report's arithmetic, against outputs TFLM really produced -------------------

def test_reference_equal_to_the_int8_outputs_gives_zero_error(example):
    data, info, samples = example
    outputs = _tflm_outputs(data, info, samples[:20])
    report = compare(data, FloatReference(samples[:20], [outputs], ["gesture"]),
                     model_name="gesture")
    assert report.samples == 20
    assert report.max_abs_error == pytest.approx(0, abs=1e-6)
    assert report.top1_agreement == 1.0


def test_errors_and_top1_are_measured(example):
    data, info, samples = example
    outputs = _tflm_outputs(data, info, samples[:16])
    shifted = outputs.copy()
    shifted[:, 0, 0] += 0.5            # every sample off by 0.5 on one class
    shifted[:4] = shifted[:4, :, ::-1]  # and the first four with their classes reversed
    report = compare(data, FloatReference(samples[:16], [shifted], ["gesture"]),
                     model_name="gesture")
    assert report.max_abs_error >= 0.5
    expected_mean = np.abs(shifted - outputs).mean()
    assert report.mean_abs_error == pytest.approx(expected_mean, abs=1e-6)
    agree = np.argmax(shifted[:, 0], axis=1) == np.argmax(outputs[:, 0], axis=1)
    assert 0 < agree.mean() < 1
    assert report.top1_agreement == pytest.approx(agree.mean())


def test_reference_outputs_without_the_batch_axis_are_accepted(example):
    data, info, samples = example
    outputs = _tflm_outputs(data, info, samples[:4]).reshape(4, 4)
    assert compare(data, FloatReference(samples[:4], [outputs], ["g"]),
                   model_name="g").max_abs_error < 1e-6


@pytest.mark.parametrize("inputs, outputs, message", [
    (np.zeros((4, 16, 3), np.float32), np.zeros((4, 1, 4), np.float32), "sample shape [16, 3]"),
    (np.zeros((4, 32, 3), np.float32), np.zeros((4, 1, 5), np.float32),
     "output of shape [4, 1, 5]"),
    (np.zeros((4, 32, 3), np.float32), np.zeros((3, 1, 4), np.float32), "for 4 samples"),
    (np.zeros((0, 32, 3), np.float32), np.zeros((0, 1, 4), np.float32), "holds no samples"),
])
def test_mismatched_reference_fails_loudly(example, inputs, outputs, message):
    data, _, _ = example
    with pytest.raises(CalibrationError, match=message.replace("[", r"\[")):
        compare(data, FloatReference(inputs, [outputs], ["g"]), model_name="gesture")


def test_wrong_number_of_outputs_fails_loudly(example):
    data, _, samples = example
    outputs = np.zeros((4, 1, 4), np.float32)
    with pytest.raises(CalibrationError, match="2 output"):
        compare(data, FloatReference(samples[:4], [outputs, outputs], ["a", "b"]),
                model_name="gesture")


def test_reference_file_round_trip(tmp_path, example):
    _, _, samples = example
    reference = FloatReference(samples[:3], [np.ones((3, 1, 4), np.float32)], ["probabilities"])
    reference.save(tmp_path / "ref.npz")
    loaded = FloatReference.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded.inputs, reference.inputs)
    np.testing.assert_array_equal(loaded.outputs[0], reference.outputs[0])
    assert loaded.output_names == ["probabilities"] and loaded.samples == 3


def test_reference_file_without_outputs_is_refused(tmp_path):
    np.savez(tmp_path / "ref.npz", x=np.zeros((2, 32, 3), np.float32))
    with pytest.raises(CalibrationError, match="needs arrays 'x' and 'y_0'"):
        FloatReference.load(tmp_path / "ref.npz")
