"""How far the quantized model strays from the float model it came from.

The float model's outputs on the calibration samples come from the conversion child (a
`FloatReference`); the quantized model runs in the host TFLM runtime on the same samples,
with inputs quantized and outputs dequantized by the model's own scale and zero point. The
report gives the max and mean absolute error after dequantization and, for a single class
vector output, how often both models pick the same class (top-1 agreement).

`FloatReference` files (`.npz`, read with `allow_pickle=False`):
- `x`: the inputs, float32 `[N, *sample_shape]`;
- `y_0`, `y_1`, ...: the float model's outputs, float32 `[N, *output_shape]`, one array per
  model output in the order of the .tflite's outputs;
- `output_names`: the outputs' names (a string array).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CalibrationError, ModelTypeError
from .host_runtime import Quantization, run_batch
from .reader import TensorInfo, inspect_bytes

__all__ = ["AccuracyReport", "FloatReference", "OutputAccuracy", "compare"]

log = logging.getLogger(__name__)

_INTEGER_TYPES = ("int8", "uint8", "int16")


@dataclass
class FloatReference:
    """Inputs and the float model's outputs for them; see the module docstring for the file."""

    inputs: np.ndarray
    outputs: list[np.ndarray]
    output_names: list[str]

    @property
    def samples(self) -> int:
        return int(self.inputs.shape[0])

    def save(self, path: Path) -> None:
        arrays = {f"y_{i}": np.asarray(out, np.float32) for i, out in enumerate(self.outputs)}
        np.savez(path, x=np.asarray(self.inputs, np.float32),
                 output_names=np.array(self.output_names, dtype=str), **arrays)

    @classmethod
    def load(cls, path: Path) -> "FloatReference":
        try:
            with np.load(path, allow_pickle=False) as archive:
                files = set(archive.files)
                count = sum(1 for key in files if key.startswith("y_"))
                if "x" not in files or count == 0:
                    raise CalibrationError(
                        f"float reference {path} needs arrays 'x' and 'y_0' (found "
                        f"{', '.join(sorted(files)) or 'none'})",
                        hint="make it with tinyforge.model.accuracy.FloatReference.save")
                outputs = [archive[f"y_{i}"] for i in range(count)]
                names = ([str(n) for n in archive["output_names"]]
                         if "output_names" in files else [f"output_{i}" for i in range(count)])
                return cls(inputs=archive["x"], outputs=outputs, output_names=names)
        except (OSError, ValueError, KeyError) as exc:
            raise CalibrationError(f"cannot read float reference {path}: {exc}",
                                   hint="make it with tinyforge.model.accuracy."
                                        "FloatReference.save") from None


@dataclass
class OutputAccuracy:
    name: str
    shape: list[int]
    dtype: str
    max_abs_error: float
    mean_abs_error: float
    # The output's quantization step: errors of a step or two are rounding, not a bug.
    scale: float | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype,
                "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "scale": self.scale}


@dataclass
class AccuracyReport:
    model: str
    samples: int
    max_abs_error: float
    mean_abs_error: float
    # Fraction of samples (and positions) where both models pick the same class; None when
    # the model does not have exactly one output with more than one class.
    top1_agreement: float | None
    outputs: list[OutputAccuracy]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "samples": self.samples,
                "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "top1_agreement": self.top1_agreement,
                "outputs": [o.to_json() for o in self.outputs]}

    def summary(self) -> str:
        text = (f"accuracy on {self.samples} samples: max abs error {self.max_abs_error:.4g}, "
                f"mean abs error {self.mean_abs_error:.4g}")
        if self.top1_agreement is not None:
            text += f", top-1 agreement {100 * self.top1_agreement:.1f}%"
        return text


def compare(model: bytes, reference: FloatReference, *, model_name: str) -> AccuracyReport:
    """Run `model` in host TFLM on the reference inputs and compare with the float outputs.

    Raises `CalibrationError` when the reference does not fit the model (input or output
    shapes or counts differ): a report over mismatched data would be meaningless.
    """
    info = inspect_bytes(model, model_name)
    if len(info.inputs) != 1:
        raise ModelTypeError(f"{model_name} has {len(info.inputs)} inputs; the accuracy report "
                             "handles models with one input",
                             hint="convert without --calibration (for float32) to skip the "
                                  "accuracy report")
    inputs = _check_inputs(reference, info.inputs[0], model_name)
    _check_outputs(reference, info.outputs, model_name)
    quantized = _quantize_inputs(inputs, info.inputs[0], model_name)
    results = run_batch(model, [[sample] for sample in quantized], len(info.outputs), model_name)
    report = _report(model_name, reference, info.outputs, results)
    log.debug("%s", report.summary())
    return report


def _check_inputs(reference: FloatReference, tensor: TensorInfo, model_name: str) -> np.ndarray:
    inputs = np.asarray(reference.inputs)
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        raise CalibrationError(f"the float reference for {model_name} holds no samples",
                               hint="convert again with calibration samples (--calibration)")
    if not _same_sample_shape(inputs.shape[1:], tensor.shape):
        raise CalibrationError(
            f"the float reference's inputs have sample shape {list(inputs.shape[1:])}, but "
            f"{model_name}'s input '{tensor.name}' is {tensor.shape}",
            hint="the reference belongs to another model; convert this model again")
    return inputs


def _check_outputs(reference: FloatReference, tensors: list[TensorInfo], model_name: str) -> None:
    if len(reference.outputs) != len(tensors):
        raise CalibrationError(
            f"the float reference has {len(reference.outputs)} output(s), {model_name} has "
            f"{len(tensors)}", hint="the reference belongs to another model; convert again")
    for out, tensor in zip(reference.outputs, tensors):
        out = np.asarray(out)
        if out.shape[:1] != (reference.samples,) or not _same_sample_shape(out.shape[1:],
                                                                            tensor.shape):
            raise CalibrationError(
                f"the float reference's output of shape {list(out.shape)} does not match "
                f"{model_name}'s output '{tensor.name}' {tensor.shape} for "
                f"{reference.samples} samples",
                hint="the reference belongs to another model; convert this model again")


def _same_sample_shape(sample: Sequence[int], tensor_shape: Sequence[int]) -> bool:
    """One sample's shape against a tensor shape, with or without the tensor's batch of 1."""
    sample, tensor_shape = list(sample), list(tensor_shape)
    return sample == tensor_shape or (tensor_shape[:1] == [1] and sample == tensor_shape[1:])


def _quantize_inputs(inputs: np.ndarray, tensor: TensorInfo, model_name: str) -> np.ndarray:
    if tensor.dtype == "float32":
        return inputs.astype(np.float32)
    return _quantization(tensor, model_name).quantize(inputs)


def _quantization(tensor: TensorInfo, model_name: str) -> Quantization:
    if tensor.dtype not in _INTEGER_TYPES or tensor.scale is None or tensor.zero_point is None:
        raise ModelTypeError(
            f"{model_name}'s tensor '{tensor.name}' is {tensor.dtype} without a single "
            "scale and zero point; the accuracy report needs float32 or per-tensor "
            f"quantized {'/'.join(_INTEGER_TYPES)}",
            hint="convert with full-integer quantization (--quantize int8)")
    return Quantization(tensor.scale, tensor.zero_point, tensor.dtype)


def _dequantize(values: np.ndarray, tensor: TensorInfo, model_name: str) -> np.ndarray:
    if tensor.dtype == "float32":
        return np.asarray(values, np.float64)
    return _quantization(tensor, model_name).dequantize(values)


def _report(model_name: str, reference: FloatReference, tensors: list[TensorInfo],
            results: list[list[np.ndarray]]) -> AccuracyReport:
    n = reference.samples
    outputs, errors, predicted = [], [], []
    for index, tensor in enumerate(tensors):
        got = np.stack([_dequantize(r[index], tensor, model_name) for r in results])
        want = np.asarray(reference.outputs[index], np.float64).reshape(got.shape)
        error = np.abs(got - want)
        errors.append(error.ravel())
        predicted.append((got, want))
        outputs.append(OutputAccuracy(name=tensor.name, shape=tensor.shape, dtype=tensor.dtype,
                                      max_abs_error=float(error.max()),
                                      mean_abs_error=float(error.mean()), scale=tensor.scale))
    every = np.concatenate(errors)
    return AccuracyReport(model=model_name, samples=n, max_abs_error=float(every.max()),
                          mean_abs_error=float(every.mean()),
                          top1_agreement=_top1(predicted, tensors), outputs=outputs)


def _top1(predicted: list[tuple[np.ndarray, np.ndarray]],
          tensors: list[TensorInfo]) -> float | None:
    if len(tensors) != 1 or not tensors[0].shape or tensors[0].shape[-1] < 2:
        return None
    got, want = predicted[0]
    return float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))
