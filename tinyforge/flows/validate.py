"""`tinyforge validate` as a library: does the board compute what the model computes on the PC?

Input vectors go to the firmware over serial (IN messages); its outputs (RES) are compared
with the host TFLM runtime's outputs for the very same quantized bytes. The report counts
exact matches, the largest and mean difference in LSB and after dequantization, top-1
agreement for classifiers and the on-device latency; a tolerance (`max_lsb`, 0 by default
for integer outputs) decides pass or fail. Every result must have as many outputs, each of
as many values, as BOOT's `out=` specs say: a missing or short output is a failure (counted
as `malformed`), never an exact match.

The self-test firmware (no TFLM) answers IN with a documented stand-in model; the same code
path validates it against `selftest.reference_model`, so the whole send/receive/compare
path is tested without a TFLM tree.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..device import protocol
from ..device.conversation import Conversation, require_started, wait_for_boot
from ..errors import CalibrationError, DeviceError, ProjectError, ValidationFailed

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0
DEFAULT_RANDOM_SAMPLES = 32
DEFAULT_MAX_ABS_FLOAT = 1e-4
SHOWN_MISMATCHES = 5     # in the text report; --json keeps 20
SHOWN_VALUES = 16        # longer vectors are cut in the text report, the cut marked
_NUMPY_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32,
                "float32": np.float32}


@dataclass
class ValidationReport:
    samples: int
    exact_matches: int
    max_lsb: int | None
    mean_lsb: float | None
    max_abs: float
    mean_abs: float
    top1_agreement: float | None
    latency_us: dict[str, float]
    max_lsb_allowed: int
    max_abs_allowed: float
    passed: bool
    reference: str
    mismatches: list[dict] = field(default_factory=list)
    # Results whose outputs do not match BOOT's specs (missing, or fewer or more values).
    malformed: int = 0
    # Samples with a difference; `mismatches` keeps the first 20 of them.
    mismatches_total: int = 0
    # The firmware's outputs as its BOOT describes them (dtype, shape, quantization).
    outputs: list[dict] = field(default_factory=list)
    # How a model with state was stepped: {"reset": true, "steps": N} (None without state).
    sequence: dict | None = None
    # validate --layers: the layer report of one sample (flows/layer_report.py).
    layers: dict | None = None
    layer_lines: list[str] = field(default_factory=list, repr=False)  # text of `layers`
    # The model's operators whose kernel is known to differ from the wheel's (board data).
    known_differences: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["layer_lines"]
        return data

    def lines(self) -> list[str]:
        lines = [f"samples        {units.count(self.samples)} (reference: {self.reference})",
                 f"exact matches  {units.count(self.exact_matches)} of "
                 f"{units.count(self.samples)}"]
        for number, spec in enumerate(self.outputs):
            lines.append(f"output {number}       {_spec_text(spec)}")
        if self.sequence:
            lines.append(f"state          RESET, then the {units.count(self.sequence['steps'])} "
                         "inputs in order; the host steps one interpreter in lockstep")
        if self.malformed:
            lines.append(f"malformed      {units.count(self.malformed)} results with missing or "
                         "short outputs (not as BOOT's out= specs say)")
        if self.max_lsb is not None:
            lines.append(f"difference     max {self.max_lsb} LSB, mean {self.mean_lsb:.4f} LSB "
                         f"(allowed {self.max_lsb_allowed} LSB)")
        lines.append(f"dequantized    max {self.max_abs:.6g}, mean {self.mean_abs:.6g}")
        if self.top1_agreement is not None:
            lines.append(f"top-1 agree    {100 * self.top1_agreement:.1f}%")
        latency = self.latency_us
        lines.append(f"latency        min {units.micros(latency['min'])}, median "
                     f"{units.micros(latency['median'])}, max {units.micros(latency['max'])} "
                     "(on the device)")
        shown = self.mismatches[:SHOWN_MISMATCHES]
        if shown:
            lines.append(f"mismatches     {len(shown)} shown of {self.mismatches_total}")
        for mismatch in shown:
            if "problem" in mismatch:
                lines.append(f"  sample {mismatch['sample']}: {mismatch['problem']}")
                continue
            lines.append(f"  sample {mismatch['sample']} output {mismatch['output']}: device "
                         f"{vector_text(mismatch['device'])} host "
                         f"{vector_text(mismatch['host'])}")
        lines.extend(self.layer_lines)
        lines.append("PASS" if self.passed else "FAIL: the board differs from the host beyond "
                     "the tolerance")
        return lines


def vector_text(values: list) -> str:
    """A vector shown whole up to SHOWN_VALUES values, else its head with the cut marked."""
    if len(values) <= SHOWN_VALUES:
        return "[" + ", ".join(map(_number, values)) + "]"
    head = ", ".join(map(_number, values[:SHOWN_VALUES]))
    return f"[{head}, … {len(values) - SHOWN_VALUES} more of {len(values)}]"


def _number(value) -> str:
    return format(value, ".7g") if isinstance(value, float) else str(value)


def _spec_text(spec: dict) -> str:
    shape = "x".join(map(str, spec["shape"]))
    if not spec["scale"]:
        return f"{spec['dtype']}[{shape}]"
    return f"{spec['dtype']}[{shape}] scale {spec['scale']:.7g} zero point {spec['zero_point']}"


class Reference:
    """Computes the expected raw outputs for raw input bytes."""

    name = "reference"
    output_count = 1

    def outputs(self, batch: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        raise NotImplementedError


class ModelReference(Reference):
    """A host TFLM runtime running the same .tflite (flows/reference.py picks which)."""

    def __init__(self, model: bytes, model_name: str, output_count: int, runtime=None,
                 stateful: bool = False):
        from ..model.reference import WheelRuntime
        self.model, self.model_name, self.output_count = model, model_name, output_count
        # Resource variables: the inputs are a sequence, stepped from the initial state.
        self.stateful = stateful
        self.runtime = runtime or WheelRuntime()
        self.name = self.runtime.description

    def outputs(self, batch):
        return self.runtime.run_batch(self.model, batch, self.output_count, self.model_name)


class SelftestReference(Reference):
    """The self-test firmware's documented stand-in model."""

    name = "the self-test firmware's stand-in model (selftest.reference_model)"

    def outputs(self, batch):
        from .selftest import reference_model
        return [[np.array(reference_model(inputs[0].astype(np.int8).tobytes()), dtype=np.int8)]
                for inputs in batch]


def samples_from_file(path: Path, spec: protocol.TensorSpec) -> list[np.ndarray]:
    """Input vectors from .npy/.npz: floats are quantized with the input's scale/zero point."""
    from ..model.calibration import load_array, match_input_shape

    array = match_input_shape(load_array(path, integers=True), list(spec.shape), path)
    dtype = _NUMPY_TYPES[spec.dtype]
    if array.dtype.kind == "f":
        if spec.dtype == "float32":
            return list(array.astype(np.float32))
        if not spec.scale:
            raise CalibrationError(f"{path}: the model input is {spec.dtype} without a scale; "
                                   f"give {spec.dtype} values",
                                   hint=f"save the inputs as {spec.dtype} (numpy.save)")
        info = np.iinfo(dtype)
        quantized = np.round(array / spec.scale) + spec.zero_point
        return list(np.clip(quantized, info.min, info.max).astype(dtype))
    # Integers are inputs already quantized (np.save of a list of ints gives int64): any
    # integer type will do while every value is one the input's type holds.
    if spec.dtype == "float32":
        raise CalibrationError(f"{path} holds {array.dtype} values; the model input is float32",
                               hint="give float values: x.astype(np.float32)")
    info = np.iinfo(dtype)
    if array.min() < info.min or array.max() > info.max:
        raise CalibrationError(f"{path} holds {array.dtype} values from {array.min()} to "
                               f"{array.max()}; the model input's {spec.dtype} holds "
                               f"{info.min} to {info.max}",
                               hint=f"give float values (quantized by tinyforge) or {spec.dtype} "
                                    "values")
    return list(array.astype(dtype))


def random_samples(spec: protocol.TensorSpec, count: int, seed: int) -> list[np.ndarray]:
    """Random inputs over the whole quantized range (or a normal distribution for floats)."""
    rng = np.random.default_rng(seed)
    shape = (count, *spec.shape[1:]) if spec.shape else (count,)
    dtype = _NUMPY_TYPES[spec.dtype]
    if spec.dtype == "float32":
        return list(rng.normal(size=shape).astype(np.float32))
    info = np.iinfo(dtype)
    return list(rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype))


def run(conversation: Conversation, boot: protocol.Boot, samples: list[np.ndarray],
        reference: Reference, *, max_lsb: int = 0,
        max_abs: float = DEFAULT_MAX_ABS_FLOAT, reset: bool = False) -> ValidationReport:
    """Send every sample, compare the answers with `reference`, and report.

    `reset`: a model with state (resource variables). The device is sent RESET first, so
    that it starts from the model's initial state as the host's new interpreter does, and
    the samples are a sequence both step through in order.
    """
    if len(boot.inputs) != 1:
        raise DeviceError("validate supports firmware with exactly one input tensor",
                          hint="give models with several inputs to `tinyforge monitor`; "
                               "validate them on the host")
    if len(boot.outputs) != reference.output_count:
        raise DeviceError(f"the firmware's BOOT lists {len(boot.outputs)} outputs, the model "
                          f"has {reference.output_count}",
                          hint="flash the last build first: `tinyforge flash`")
    spec = boot.inputs[0]
    batch = [[np.asarray(s, dtype=_NUMPY_TYPES[spec.dtype]).reshape(spec.shape)]
             for s in samples]
    if reset:
        from .layer_report import reset_device
        reset_device(conversation, 0)
    device = [_ask(conversation, seq, inputs[0], boot.max_line)
              for seq, inputs in enumerate(batch)]
    expected = reference.outputs(batch)
    report = _compare(device, expected, boot, reference.name, max_lsb, max_abs)
    if reset:
        report.sequence = {"reset": True, "steps": len(batch)}
    return report


def _ask(conversation: Conversation, seq: int, values: np.ndarray,
         max_line: int | None) -> protocol.Result:
    # One IN, or chunks when the input does not fit the device's line (docs/protocol.md 3.1).
    for line in protocol.encode_input_lines(seq, values.tobytes(), max_line):
        conversation.send(line)
    answer = conversation.wait_for(
        lambda e: isinstance(e, (protocol.Result, protocol.DeviceErrorMessage))
        and e.seq == seq and getattr(e, "src", "host") == "host",
        timeout=ANSWER_TIMEOUT_S, what=f"answer to input #{seq}")
    if isinstance(answer, protocol.DeviceErrorMessage):
        raise DeviceError(f"the firmware refused input #{seq}: {answer.code} ({answer.msg})",
                          details=conversation.describe_tail(),
                          hint="docs/protocol.md explains the error code; `tinyforge monitor` "
                               "shows what the firmware prints")
    return answer


def _compare(device: list[protocol.Result], expected: list[list[np.ndarray]],
             boot: protocol.Boot, reference_name: str, max_lsb: int,
             max_abs: float) -> ValidationReport:
    lsb_diffs, abs_diffs, float_diffs, mismatches, exact, top1 = [], [], [], [], 0, []
    malformed = 0
    for index, (result, host_outputs) in enumerate(zip(device, expected, strict=True)):
        problem = output_problem(result, boot.outputs)
        if problem is not None:
            malformed += 1
            mismatches.append({"sample": index, "problem": problem})
            continue
        same = True
        for output, (values, host, spec) in enumerate(zip(result.outputs, host_outputs,
                                                          boot.outputs, strict=True)):
            host = np.asarray(host).reshape(-1)
            if host.size != len(values.f):
                raise DeviceError(
                    f"the firmware's BOOT says output {output} has {len(values.f)} values; "
                    f"the model's has {host.size}",
                    hint="flash the last build first: `tinyforge flash`")
            if values.q is not None:
                diff = np.abs(np.asarray(values.q, dtype=np.int64) - host.astype(np.int64))
                lsb_diffs.extend(diff.tolist())
                # From the integers: identical outputs differ by exactly 0, whatever the
                # rounding of the floats the device printed.
                abs_diffs.extend((diff * (spec.scale or 1.0)).tolist())
                differs = bool(diff.any())
            else:  # a float output: no LSB, compare values
                diff = np.abs(np.asarray(values.f) - _dequantize(host, spec))
                abs_diffs.extend(diff.tolist())
                float_diffs.extend(diff.tolist())
                differs = bool(np.any(diff > max_abs))
            if differs:
                same = False
                mismatches.append({"sample": index, "output": output,
                                   "device": values.q if values.q is not None else values.f,
                                   "host": host.tolist()})
        exact += same
        if len(result.outputs) == 1 and len(result.outputs[0].f) > 1:
            top1.append(int(np.argmax(result.outputs[0].f)) == int(np.argmax(host_outputs[0])))
    latencies = [r.us for r in device] or [0]
    passed = (malformed == 0 and (not lsb_diffs or max(lsb_diffs) <= max_lsb)
              and (not float_diffs or max(float_diffs) <= max_abs))
    return ValidationReport(
        samples=len(device), exact_matches=exact,
        max_lsb=max(lsb_diffs) if lsb_diffs else None,
        mean_lsb=statistics.fmean(lsb_diffs) if lsb_diffs else None,
        max_abs=max(abs_diffs) if abs_diffs else 0.0,
        mean_abs=statistics.fmean(abs_diffs) if abs_diffs else 0.0,
        top1_agreement=(sum(top1) / len(top1)) if top1 else None,
        latency_us={"min": min(latencies), "median": statistics.median(latencies),
                    "max": max(latencies)},
        max_lsb_allowed=max_lsb, max_abs_allowed=max_abs, passed=passed,
        reference=reference_name, mismatches=mismatches[:20], malformed=malformed,
        mismatches_total=len(mismatches),
        outputs=[{"dtype": o.dtype, "shape": list(o.shape), "scale": o.scale,
                  "zero_point": o.zero_point} for o in boot.outputs])


def output_problem(result: protocol.Result, specs: list[protocol.TensorSpec]) -> str | None:
    """What is wrong with a result's outputs against BOOT's `out=` specs, or None."""
    if len(result.outputs) != len(specs):
        return f"{len(result.outputs)} outputs, BOOT says {len(specs)}"
    for index, (values, spec) in enumerate(zip(result.outputs, specs)):
        count = math.prod(spec.shape)
        if len(values.f) != count:
            return f"output {index} has {len(values.f)} values, BOOT says {count} ({spec.dtype}" \
                   f"[{'x'.join(map(str, spec.shape))}])"
        if values.q is None and spec.dtype != "float32":
            return f"output {index} has no raw {spec.dtype} values (q{index})"
    return None


def _dequantize(values: np.ndarray, spec: protocol.TensorSpec) -> np.ndarray:
    if spec.dtype == "float32" or not spec.scale:
        return values.astype(np.float64)
    return (values.astype(np.float64) - spec.zero_point) * spec.scale


def check(report: ValidationReport) -> None:
    if report.malformed:
        raise ValidationFailed(
            f"{report.malformed} of {report.samples} results have missing or short outputs "
            "(not as the firmware's BOOT message describes them)",
            hint="the firmware is not the one built for this model, or it is broken: build "
                 "and flash again (`tinyforge build`, `tinyforge flash`); `tinyforge monitor "
                 "--json` shows its raw results")
    layers = report.layers
    if layers is not None and not layers["passed"]:
        first = layers["first_divergence"]
        raise ValidationFailed(
            f"the layer report of sample {layers['sample']} differs first at op "
            f"{first['index']} {first['op']} (output {first['output']} "
            f"{first['output_shape']} {first['dtype']}"
            + (f", max {first['max_lsb']} LSB)" if first["max_lsb"] is not None else ")"),
            hint=_layers_hint(report))
    if not report.passed:
        raise ValidationFailed(
            f"{report.samples - report.exact_matches} of {report.samples} samples differ "
            f"from the host beyond the tolerance ({_measured_text(report)})",
            hint=_failure_hint(report))


def _measured_text(report: ValidationReport) -> str:
    parts = []
    if report.max_lsb is not None:
        parts.append(f"max {report.max_lsb} LSB, allowed {report.max_lsb_allowed}")
    if report.max_lsb is None or report.max_lsb <= report.max_lsb_allowed:
        parts.append(f"max {report.max_abs:.3g} after dequantization, allowed "
                     f"{report.max_abs_allowed:.3g}")
    return "; ".join(parts)


def _layers_hint(report: ValidationReport) -> str:
    if report.reference.startswith("tflite-micro wheel"):
        return ("the reference is the tflite-micro wheel, whose kernels are not the board's: "
                "give the board's TFLM tree (--tflm PATH) to compare with its own kernels")
    return ("the host runs the board's own TFLM and kernels, so this operator computes "
            "differently on the board: check the board runs the last build (`tinyforge "
            "flash`); the ops after it see its output and usually differ too")


def _failure_hint(report: ValidationReport) -> str:
    """What to do, for the difference measured: the tolerance it would take is the one
    measured, never a fixed 1 LSB."""
    if report.max_lsb is not None and report.max_lsb > report.max_lsb_allowed:
        tolerance = f"--max-lsb {report.max_lsb}"
    else:
        tolerance = f"--max-abs {float(f'{report.max_abs * 1.01:.2g}'):g}"
    layers = ("`tinyforge build --debug-layers` then `tinyforge validate --layers` names the "
              "first operator that differs")
    if report.reference.startswith("tflite-micro wheel"):
        known = (f" ({', '.join(report.known_differences)} in this model)"
                 if report.known_differences else "")
        return ("the reference is the tflite-micro wheel, not the board's TFLM, and their "
                f"kernels differ on some ops{known}: give the board's TFLM tree (--tflm PATH) to "
                f"compare with its own kernels; {layers}; or pass {tolerance} to accept a "
                "difference this large")
    return ("the reference is the board's own TFLM and kernels compiled for the host, so "
            "this is not a kernel-version difference: check that the board runs the last "
            f"build (`tinyforge flash`); {layers}; pass {tolerance} to accept it")


def validate_last_build(*, project_dir: Path | None = None, board_id: str | None = None,
                        port: str | None = None, data: Path | None = None,
                        random_count: int | None = None, seed: int = 0, max_lsb: int = 0,
                        max_abs: float = DEFAULT_MAX_ABS_FLOAT, ask=None,
                        tflm: Path | None = None, reference: str = "auto",
                        layers: int | None = None) -> ValidationReport:
    """Validate the firmware of the last build (a board, or QEMU for emulated boards).

    `tflm` and `reference` choose the host reference (flows/reference.py). `layers`: the
    sample whose every operator output is compared too (a `build --debug-layers` firmware,
    flows/layer_report.py).
    """
    from ..device.sources import source_for
    from ..project import last_build

    build = last_build.find(project_dir, board_id)
    if layers is not None and not build.manifest.get("debug_layers"):
        raise ProjectError(
            f"the last build ({build.project_dir}) has no layer report",
            hint="build a debug firmware first: `tinyforge build --debug-layers` with the "
                 "same options, then `tinyforge flash` for a board")
    # Chosen (and compiled, the first time) before the device is opened.
    runtime = _host_reference(build, tflm, reference)
    source = source_for(build.board, build.elf, port, ask=ask)
    link = source.open()
    try:
        conversation = Conversation(link)
        # QEMU sends BOOT as it starts; a board booted long before its port was opened.
        boot = wait_for_boot(conversation, ask=not build.board.emulated)
        require_started(boot, conversation)
        reference = _reference_for(boot, build, runtime)
        spec = boot.inputs[0]
        if data is not None:
            samples = samples_from_file(data, spec)
        else:
            samples = random_samples(spec, random_count or DEFAULT_RANDOM_SAMPLES, seed)
        stateful = isinstance(reference, ModelReference) and reference.stateful
        # The report's first line names the reference: said once, there.
        log.info("validating %s inputs...", units.count(len(samples)))
        report = run(conversation, boot, samples, reference, max_lsb=max_lsb, max_abs=max_abs,
                     reset=stateful)
        report.known_differences = _known_differences(reference, build.board)
        if layers is not None:
            layer_report = _layer_report(conversation, boot, samples, layers, reference,
                                         max_lsb)
            report.layers, report.layer_lines = layer_report.to_json(), layer_report.lines()
        return last_build.save_validation(build, report)
    finally:
        source.close(link)


def _known_differences(reference, board) -> list[str]:
    if not isinstance(reference, ModelReference):
        return []
    from ..model import known_differences
    return [found.describe() for found in known_differences.find(
        reference.model, board.tflm["library"], board.tflm["version"])]


def _layer_report(conversation, boot, samples, index: int, reference, max_lsb: int):
    from . import layer_report

    if not isinstance(reference, ModelReference):
        raise ProjectError("the self-test firmware has no layers",
                           hint="build a model with `tinyforge build --debug-layers`")
    if not 0 <= index < len(samples):
        raise CalibrationError(f"--layers {index}: there are {len(samples)} samples (0 to "
                               f"{len(samples) - 1})", hint="give a sample index in range")
    spec = boot.inputs[0]
    inputs = np.asarray(samples[index], dtype=_NUMPY_TYPES[spec.dtype]).reshape(spec.shape)
    # Its own seq after the sequence's; RESET first, so a model with state starts where the
    # host's new interpreter does.
    return layer_report.compare(conversation, boot, index, inputs, reference.model,
                                reference.model_name, reference.runtime, max_lsb=max_lsb,
                                seq=len(samples) + index)


def _host_reference(build, tflm: Path | None, choice: str):
    """The host runtime for a model firmware (None for a build without a model)."""
    from .reference import runtime_for_build
    return runtime_for_build(build, tflm=tflm, choice=choice) if build.model_path else None


def _reference_for(boot: protocol.Boot, build, runtime=None) -> Reference:
    from .selftest import MODEL_SHA256 as SELFTEST_SHA256

    if boot.model_sha256 == SELFTEST_SHA256:
        return SelftestReference()
    if build.model_sha256 != boot.model_sha256:
        raise DeviceError(
            f"the board runs another model (sha256 {boot.model_sha256[:12]}…) than the last "
            f"build ({(build.model_sha256 or '?')[:12]}…); its results cannot be compared",
            hint="flash the last build first: `tinyforge flash`")
    from ..model.reader import read_model_file
    model, info = read_model_file(build.model_path)
    return ModelReference(model, build.manifest["model"]["name"], len(info.outputs), runtime,
                          stateful=info.resource_variables > 0)
