"""The conversion worker: `python -m tinyforge.model._convert_child REQUEST.json`.

This is the only module of tinyforge that imports TensorFlow, and it only runs in a child
process started by `tinyforge.model.convert`: TensorFlow takes seconds and ~600 MB to import,
prints from C++ straight to the terminal, and can crash outright on a bad model.

The request (JSON) names the source, its kind, the quantization, the calibration file and a
work directory. The worker writes into that directory:
- `model.tflite`: the converted model;
- `reference.npz`: the float model's outputs on the calibration samples (see
  `tinyforge.model.accuracy.FloatReference`), when samples were given;
- `result.json`: `{"ok": true, ...facts...}` or `{"ok": false, "error": class name,
  "message", "hint", "details"}` for a failure the user can act on.
It exits 0 on success and `EXIT_REPORTED` when it wrote a failure into `result.json`; any other
status (or a signal) means it crashed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConversionError, ModelFileError, TinyforgeError
from . import calibration as calib
from .accuracy import FloatReference

EXIT_REPORTED = 3
SERVING_KEY = "serving_default"
# The converter's own words for an op it has no TFLite builtin for.
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_QUANT_UNSUPPORTED = re.compile(
    r"[Qq]uantization (?:is )?not (?:yet )?supported for op:? '?([\w.]+)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tinyforge.model._convert_child REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    work = Path(request["work_dir"])
    try:
        facts = _convert(request, work)
    except TinyforgeError as error:
        _write_result(work, {"ok": False, "error": type(error).__name__,
                             "message": error.message, "hint": error.hint,
                             "details": error.details})
        return EXIT_REPORTED
    except Exception as exc:  # noqa: BLE001 - anything else is reported with its last lines
        traceback.print_exc(file=sys.stdout)
        _write_result(work, {"ok": False, "error": "ConversionError",
                             "message": f"conversion of {request['source']} failed: "
                                        f"{type(exc).__name__}: {_first_line(exc)}",
                             "hint": "run with --verbose to see TensorFlow's full output",
                             "details": _last_lines(str(exc))})
        return EXIT_REPORTED
    _write_result(work, {"ok": True, **facts})
    return 0


def _convert(request: dict, work: Path) -> dict:
    source = Path(request["source"])
    quantize = request["quantize"]
    started = time.monotonic()
    tf = _import_tensorflow()
    print(f"tinyforge: TensorFlow {tf.__version__} imported in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="export-", dir=work) as export_dir:
        fixed = _fixed_batch_saved_model(tf, source, request["kind"], Path(export_dir))
        samples = None
        if request.get("calibration"):
            samples = _calibration_samples(Path(request["calibration"]), fixed.input_shape)
        converted_at = time.monotonic()
        model = _run_converter(tf, fixed.directory, quantize, samples, source,
                               per_channel_dense=request.get("per_channel_dense", True))
        convert_seconds = time.monotonic() - converted_at
        (work / "model.tflite").write_bytes(model)
        if samples is not None:
            _float_reference(tf, fixed, samples, model).save(work / "reference.npz")
    return {"input_shape": fixed.declared_shape, "input_dtype": fixed.dtype,
            "batch_was_fixed": fixed.batch_was_fixed,
            "calibration_samples": 0 if samples is None else int(samples.shape[0]),
            "convert_seconds": round(convert_seconds, 3),
            "tensorflow_version": tf.__version__}


def _calibration_samples(path: Path, input_shape: list[int]) -> np.ndarray:
    samples = calib.load_calibration(path, input_shape, limit=None)
    if len(samples) > calib.MAX_SAMPLES:
        print(f"tinyforge: using the first {calib.MAX_SAMPLES} of {len(samples)} calibration "
              "samples", flush=True)
        samples = samples[:calib.MAX_SAMPLES]
    return samples


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ConversionError(f"TensorFlow cannot be imported: {exc}",
                              hint="install the conversion extra: pip install "
                                   "'tinyforge[convert]' (tensorflow-cpu 2.21)") from None
    return tf


@dataclass
class _FixedModel:
    """A SavedModel whose serving signature takes exactly one input with batch 1."""

    directory: Path
    input_name: str
    input_shape: list[int]               # [1, ...]
    declared_shape: list[int | None]     # as the source declared it
    dtype: str

    @property
    def batch_was_fixed(self) -> bool:
        return self.declared_shape[0] != 1


def _fixed_batch_saved_model(tf, source: Path, kind: str, export_dir: Path) -> _FixedModel:
    if kind in ("keras", "h5"):
        return _export_keras(tf, source, export_dir)
    return _export_saved_model(tf, source, export_dir)


def _export_keras(tf, source: Path, export_dir: Path) -> _FixedModel:
    import keras

    try:
        model = keras.models.load_model(source, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelFileError(
            f"{source} cannot be loaded as a Keras model: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            hint=_keras_load_hint(exc), details=_last_lines(str(exc), 6)) from None
    if len(model.inputs) != 1:
        raise ConversionError(f"{source} has {len(model.inputs)} inputs; tinyforge converts "
                              "models with exactly one input",
                              hint="wrap the model so it takes a single input tensor")
    declared = [None if d is None else int(d) for d in model.inputs[0].shape]
    dtype = _float_dtype(str(model.inputs[0].dtype), source)
    shape = _batch_one(declared, source)
    # Re-exporting with a [1, ...] signature is what fixes the batch: a dynamic batch makes
    # Flatten/Reshape emit SHAPE, STRIDED_SLICE and PACK ops and a bigger arena.
    directory = export_dir / "saved_model"
    model.export(str(directory), format="tf_saved_model",
                 input_signature=[tf.TensorSpec(shape, dtype, name="input")], verbose=False)
    return _FixedModel(directory, _signature_input_name(tf, directory), shape, declared, dtype)


def _export_saved_model(tf, source: Path, export_dir: Path) -> _FixedModel:
    try:
        loaded = tf.saved_model.load(str(source))
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{source} cannot be loaded as a TensorFlow SavedModel: "
                             f"{type(exc).__name__}: {_first_line(exc)}",
                             hint="export it again with model.export(DIR) or "
                                  "tf.saved_model.save(obj, DIR)") from None
    key, signature = _serving_signature(loaded, source)
    specs = signature.structured_input_signature[1]
    if len(specs) != 1:
        raise ConversionError(f"{source} serving signature has {len(specs)} inputs; tinyforge "
                              "converts models with exactly one input",
                              hint="export a signature that takes a single input tensor")
    (name, spec), = specs.items()
    if spec.shape.rank is None:
        raise ConversionError(f"{source} has an input of unknown rank",
                              hint="export the model with a fixed input shape")
    declared = [None if d is None else int(d) for d in spec.shape.as_list()]
    dtype = _float_dtype(spec.dtype.name, source)
    shape = _batch_one(declared, source)
    if declared == shape and key == SERVING_KEY:
        return _FixedModel(source, name, shape, declared, dtype)
    directory = export_dir / "saved_model"
    _save_fixed_signature(tf, loaded, signature, name, shape, spec.dtype, directory)
    return _FixedModel(directory, name, shape, declared, dtype)


def _save_fixed_signature(tf, loaded, signature, name, shape, dtype, directory: Path) -> None:
    """Save a SavedModel whose serving signature calls `signature` with a [1, ...] input.

    `from_concrete_functions` cannot convert such a wrapper under Keras 3 (READ_VARIABLE
    fails), but saving it with the loaded object attached keeps the variables tracked.
    """
    module = tf.Module()
    module.inner = loaded

    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name=name)])
    def serve(x):
        return signature(**{name: x})

    module.serve = serve
    tf.saved_model.save(module, str(directory),
                        signatures={SERVING_KEY: serve.get_concrete_function()})


def _serving_signature(loaded, source: Path):
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_KEY in signatures:
        return SERVING_KEY, signatures[SERVING_KEY]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    found = ", ".join(sorted(signatures)) or "none"
    raise ConversionError(f"{source} has no '{SERVING_KEY}' signature (found: {found})",
                          hint="export the model with a serving_default signature "
                               "(model.export(DIR) does this)")


def _signature_input_name(tf, directory: Path) -> str:
    signature = tf.saved_model.load(str(directory)).signatures[SERVING_KEY]
    (name,) = signature.structured_input_signature[1].keys()
    return name


def _batch_one(declared: list[int | None], source: Path) -> list[int]:
    if not declared:
        raise ConversionError(f"{source} takes a scalar input; a batch dimension is needed",
                              hint="give the model an input of shape [batch, ...]")
    rest = declared[1:]
    if any(d is None for d in rest):
        raise ConversionError(
            f"{source} has an input of shape {declared} with unknown dimensions besides the batch",
            hint="fix every input dimension when building the model, e.g. "
                 "keras.Input(shape=(32, 3), batch_size=1)")
    return [1, *rest]


def _float_dtype(dtype: str, source: Path) -> str:
    if dtype not in ("float32", "float16", "float64", "bfloat16"):
        raise ConversionError(f"{source} takes {dtype} input; tinyforge converts models with "
                              "a floating-point input",
                              hint="cast the input to float32 inside the model")
    return dtype


def _run_converter(tf, directory: Path, quantize: str, samples, source: Path, *,
                   per_channel_dense: bool = True) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory),
                                                         signature_keys=[SERVING_KEY])
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # TensorFlow quantizes dense (FULLY_CONNECTED) weights per channel; TFLM versions
        # before per-channel FC support use only the first scale and compute wrong results.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = (
            not per_channel_dense)
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - ConverterError and friends
        raise _conversion_error(exc, source, quantize) from None


def _conversion_error(exc: Exception, source: Path, quantize: str) -> ConversionError:
    text = str(exc)
    missing = sorted(set(_UNSUPPORTED_OP.findall(text)))
    unquantizable = sorted(set(_QUANT_UNSUPPORTED.findall(text)))
    if missing:
        return ConversionError(
            f"TensorFlow Lite has no builtin op for {len(missing)} TensorFlow op(s) in {source}",
            details="\n".join(f"  - {op}" for op in missing),
            hint="replace those operations with layers TFLite supports (TFLM cannot run "
                 "Flex/SELECT_TF_OPS ops)")
    if unquantizable:
        return ConversionError(
            f"{len(unquantizable)} op(s) in {source} cannot be quantized to int8",
            details="\n".join(f"  - {op}" for op in unquantizable),
            hint="replace those layers, or try --quantize float32 (larger and slower on the "
                 "board)")
    return ConversionError(
        f"TensorFlow could not convert {source} to {quantize}: {type(exc).__name__}: "
        f"{_first_line(exc)}",
        details=_last_lines(text),
        hint="run with --verbose to see TensorFlow's full output")


def _float_reference(tf, fixed: _FixedModel, samples: np.ndarray,
                     model: bytes) -> FloatReference:
    """The float model's outputs on every sample, ordered like the .tflite's outputs.

    The function run is the exact fixed-batch signature that was converted.
    """
    signature = tf.saved_model.load(str(fixed.directory)).signatures[SERVING_KEY]
    per_name: dict[str, list[np.ndarray]] = {}
    for sample in samples:
        result = signature(**{fixed.input_name: tf.constant(sample[None], dtype=fixed.dtype)})
        for name, value in result.items():
            per_name.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
    names = _tflite_output_order(model, list(per_name))
    return FloatReference(inputs=samples,
                          outputs=[np.stack(per_name[name]) for name in names],
                          output_names=names)


def _tflite_output_order(model: bytes, names: list[str]) -> list[str]:
    """Signature output names in the order of the .tflite subgraph's output tensors."""
    if len(names) == 1:
        return names
    from .reader import schema

    root = schema().Model.GetRootAsModel(model, 0)
    by_tensor: dict[int, str] = {}
    for i in range(root.SignatureDefsLength()):
        signature = root.SignatureDefs(i)
        if (signature.SignatureKey() or b"").decode() not in (SERVING_KEY, ""):
            continue
        for j in range(signature.OutputsLength()):
            entry = signature.Outputs(j)
            by_tensor[entry.TensorIndex()] = entry.Name().decode()
    subgraph = root.Subgraphs(0)
    ordered = [by_tensor.get(subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())]
    if sorted(n for n in ordered if n) != sorted(names):
        raise ConversionError("cannot match the converted model's outputs to the float "
                              f"model's outputs ({', '.join(names)})",
                              hint="give each model output a distinct name")
    return ordered


def _keras_load_hint(exc: Exception) -> str:
    text = str(exc)
    if "safe_mode" in text or "Lambda" in text:
        return ("the model contains a Lambda layer, which tinyforge does not deserialize "
                "(it can run arbitrary code); replace it with a custom layer or export a "
                "SavedModel with model.export(DIR) and pass that directory")
    return ("check that the file is complete and was saved with Keras 3 "
            "(model.save('model.keras')); or export a SavedModel with model.export(DIR)")


def _first_line(exc: Exception) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:300]
    return "(no message)"


def _last_lines(text: str, count: int = 12) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(f"  {line[:300]}" for line in lines[-count:])


def _write_result(work: Path, payload: dict) -> None:
    (work / "result.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    # The parent reads every line as it comes; do not let Python buffer them.
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.exit(main())
