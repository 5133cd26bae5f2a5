"""A complete pipeline from a tinyforge.toml (or none) and the model it feeds.

Every key the file leaves out takes a default derived from the model's input (shape,
quantization) and output, or a built-in default (micro_speech's recipe for audio). A model
whose input no sensor can produce is refused here, before anything is rendered, with the
shapes the pipeline can fill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import PipelineConfigError, PipelineShapeError
from ..model.reader import ModelInfo, TensorInfo, read_model_file
from . import arith, audio as audio_mod, filterbank, imu as imu_mod
from .config import DOC_HINT, KINDS, ConfigValues, config_error, read_config

DEFAULT_IMU_RATE_HZ = 100.0
DEFAULT_TRIGGER_G = 2.5
DEFAULT_MIC_STRIDE = 5          # frames: an inference every 100 ms with 20 ms frames
DEFAULT_MIC_WINDOW = 49         # frames: micro_speech's 1 s
MICRO_SPEECH_SCALE = 26 / 256   # the input scale micro_speech's int8 formula assumes
MICRO_SPEECH_ZERO_POINT = -128
# training features: frontend value * 10/256, the scaling of TensorFlow's speech_commands
DEFAULT_FEATURE_SCALE = 10 / 256
MAX_CLASSES = 64
MAX_RESULTS = 128               # the decision queue's largest capacity
INPUT_DTYPES = ("int8", "float32")
SCORE_DTYPES = ("int8", "uint8", "float32")


@dataclass(frozen=True)
class TensorSpec:
    """A model tensor as the pipeline fills or reads it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @classmethod
    def of(cls, tensor: TensorInfo) -> "TensorSpec":
        return cls(tensor.name, tuple(tensor.shape), tensor.dtype, tensor.scale,
                   tensor.zero_point)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class Trigger:
    threshold_g: float
    pre_samples: int

    @property
    def threshold_counts(self) -> int:
        """The threshold in accelerometer counts (nearest, ties to even)."""
        return round(Fraction(self.threshold_g) * imu_mod.COUNTS_PER_G)


@dataclass(frozen=True)
class ImuSettings:
    rate_hz: float
    window: int
    stride: int
    axes: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    trigger: Trigger | None
    recording_rate_hz: float | None

    @property
    def rate_mhz(self) -> int:
        return arith.to_millihertz(self.rate_hz)

    @property
    def recording_rate_mhz(self) -> int | None:
        return None if self.recording_rate_hz is None else \
            arith.to_millihertz(self.recording_rate_hz)


@dataclass(frozen=True)
class FrontendSettings:
    """TFLM's micro frontend; the defaults are micro_speech's recipe."""

    window_ms: int = 30
    stride_ms: int = 20
    channels: int = 40
    lower_hz: float = 125.0
    upper_hz: float = 7500.0
    smoothing_bits: int = 10
    even_smoothing: float = 0.025
    odd_smoothing: float = 0.06
    min_signal_remaining: float = 0.05
    pcan: bool = True
    pcan_strength: float = 0.95
    pcan_offset: float = 80.0
    gain_bits: int = 21
    log_scale: bool = True
    scale_shift: int = 6


@dataclass(frozen=True)
class MicrophoneSettings:
    window: int
    stride: int
    discard_ms: int
    features: str
    feature_scale: float
    frontend: FrontendSettings


@dataclass(frozen=True)
class DecisionSettings:
    average_ms: int = 1000
    threshold: float = 200 / 256    # micro_speech: an average above 200 of 255
    minimum_count: int = 3
    suppression_ms: int = 1500
    background: int = 0

    @property
    def threshold_steps(self) -> int:
        """The integer the average (0..255) must exceed: floor(threshold * 256)."""
        return int(Fraction(self.threshold) * 256)


@dataclass(frozen=True)
class Pipeline:
    """Everything the device pipeline and its host reference need, resolved."""

    kind: str
    input: TensorSpec | None
    output: TensorSpec | None = None
    imu: ImuSettings | None = None
    microphone: MicrophoneSettings | None = None
    decisions: DecisionSettings | None = None
    classes: int | None = None
    result_capacity: int = 0
    source: Path | None = None
    model_name: str | None = None
    # key -> "file", "model" or "default": where each value came from
    origins: dict[str, str] | None = None

    @property
    def inference_period_ms(self) -> int:
        """The shortest time between two inferences, in whole ms (at least 1)."""
        if self.imu is not None:
            rows = self.imu.stride if self.imu.trigger is None else \
                self.imu.window - self.imu.trigger.pre_samples
            return max(1, rows * 1_000_000 // self.imu.rate_mhz)
        if self.microphone is not None:
            return self.microphone.stride * self.microphone.frontend.stride_ms
        return 1

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "input": self.kind, "source": str(self.source) if self.source else None,
            "model": self.model_name,
            "tensor": self.input.to_json() if self.input else None}
        if self.imu is not None:
            imu = asdict(self.imu)
            imu["axes"], imu["offset"], imu["scale"] = (list(self.imu.axes),
                                                       list(self.imu.offset),
                                                       list(self.imu.scale))
            if self.imu.trigger is not None:
                imu["trigger"]["threshold_counts"] = self.imu.trigger.threshold_counts
            result["imu"] = imu
        if self.microphone is not None:
            result["microphone"] = asdict(self.microphone)
        if self.decisions is not None:
            result["decisions"] = dict(asdict(self.decisions),
                                       threshold_steps=self.decisions.threshold_steps,
                                       classes=self.classes, capacity=self.result_capacity)
        result["origins"] = dict(sorted((self.origins or {}).items()))
        return result


def load_pipeline(config: Path | str | None = None, *, model: Any = None,
                  kind: str | None = None) -> Pipeline:
    """The pipeline of `config` (a tinyforge.toml, or None for defaults) for `model`.

    `model`: a .tflite path, a `ModelInfo`, or None (training before a model exists: the
    input is then float32 of the shape the configuration implies). `kind` (host, imu,
    microphone) overrides the file's `pipeline.input`.
    """
    values = read_config(Path(config)) if config is not None else ConfigValues()
    info = _model_info(model)
    kind = kind or values.get("pipeline.input") or "host"
    if kind not in KINDS:
        raise PipelineConfigError(f"unknown pipeline input '{kind}'",
                                  hint=f"use one of: {', '.join(KINDS)}")
    return derive(values, info, kind)


def derive(values: ConfigValues, info: ModelInfo | None, kind: str) -> Pipeline:
    resolver = _Resolver(values)
    model_name = info.name if info else None
    if kind == "host":
        spec = TensorSpec.of(info.inputs[0]) if info and info.inputs else None
        return Pipeline(kind="host", input=spec, source=values.path, model_name=model_name,
                        origins={})
    tensor = _single_input(info, kind)
    if kind == "imu":
        settings, spec = _derive_imu(resolver, tensor)
        pipeline = Pipeline(kind=kind, input=spec, imu=settings)
    else:
        settings, spec = _derive_microphone(resolver, tensor, info)
        pipeline = Pipeline(kind=kind, input=spec, microphone=settings)
    resolver.raise_problems()  # the decisions' defaults depend on valid sensor settings
    decisions, output, classes, capacity = _derive_decisions(resolver, info, pipeline)
    resolver.raise_problems()
    return Pipeline(kind=kind, input=spec, output=output, imu=pipeline.imu,
                    microphone=pipeline.microphone, decisions=decisions, classes=classes,
                    result_capacity=capacity, source=values.path, model_name=model_name,
                    origins=resolver.origins)


class _Resolver:
    """Picks each value from the file, the model or the defaults, and collects problems."""

    def __init__(self, values: ConfigValues):
        self.values = values
        self.origins: dict[str, str] = {}
        self.problems: list[str] = []

    def pick(self, key: str, *, model: Any = None, default: Any = None) -> Any:
        if self.values.has(key):
            self.origins[key] = "file"
            return self.values.get(key)
        if model is not None:
            self.origins[key] = "model"
            return model
        self.origins[key] = "default"
        return default

    def from_file(self, key: str) -> bool:
        return self.values.has(key)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            raise config_error(self.values.path, self.problems)


# --- the model's input ---------------------------------------------------------------------

def _model_info(model: Any) -> ModelInfo | None:
    if model is None or isinstance(model, ModelInfo):
        return model
    return read_model_file(Path(model))[1]


def _single_input(info: ModelInfo | None, kind: str) -> TensorInfo | None:
    if info is None:
        return None
    if len(info.inputs) != 1:
        raise PipelineShapeError(
            f"{info.name} has {len(info.inputs)} inputs; the {kind} pipeline feeds one",
            hint="give the model a single input tensor, or use --input host and send the "
                 "inputs over serial")
    tensor = info.inputs[0]
    if tensor.dtype not in INPUT_DTYPES:
        raise PipelineShapeError(
            f"{info.name}'s input is {tensor.dtype}; the {kind} pipeline fills int8 or float32 "
            "inputs", hint="convert the model with int8 inputs (`--quantize int8`) or float32")
    if tensor.dtype == "int8" and (tensor.scale is None or tensor.zero_point is None):
        raise PipelineShapeError(
            f"{info.name}'s int8 input has no single scale and zero point",
            hint="quantize the input tensor per tensor (TensorFlow's converter does by default)")
    return tensor


def _shape_error(kind: str, shape: tuple[int, ...], expected: str, hint: str):
    return PipelineShapeError(
        f"no {kind} pipeline can produce the model's input {list(shape)}: it fills {expected}",
        hint=hint)


_IMU_SHAPES = "[1, N, A], [1, N, A, 1] or [1, N*A] (N samples of A <= 6 axes, time first)"
_IMU_HINT = ("train the model on IMU windows, e.g. [1, 119, 6] (ax..gz) or [1, 32, 3] "
             "(ax, ay, az), or use --input host and send inputs over serial")


def imu_layout(shape: tuple[int, ...], axes: tuple[str, ...] | None) -> tuple[int, int]:
    """(samples per window, axes) the IMU pipeline fills for a model input `shape`."""
    dims = list(shape)
    if not dims or dims[0] != 1 or any(d <= 0 for d in dims):
        raise _shape_error("imu", shape, _IMU_SHAPES, _IMU_HINT)
    body = dims[1:]
    if len(body) == 3 and body[2] == 1:
        body = body[:2]
    if len(body) == 2 and 1 <= body[1] <= len(imu_mod.AXES):
        return body[0], body[1]
    if len(body) == 1:
        if not axes:
            raise PipelineShapeError(
                f"the model's input {list(shape)} is flat: it does not say how many axes each "
                "sample has", hint="set imu.axes in tinyforge.toml (the model's time-major "
                                   f"[N*A] layout is then split into N samples of A axes); {DOC_HINT}")
        if body[0] % len(axes) == 0:
            return body[0] // len(axes), len(axes)
    raise _shape_error("imu", shape, _IMU_SHAPES, _IMU_HINT)


def microphone_layout(shape: tuple[int, ...], channels: int | None) -> tuple[int, int]:
    """(frames per window, channels) the microphone pipeline fills for `shape`."""
    channels_text = channels or 40
    expected = (f"[1, W, C], [1, W, C, 1] or [1, W*C] (W frames of C = {channels_text} "
                "frontend channels, time first), e.g. micro_speech's [1, 49, 40] or [1, 1960]")
    hint = ("train the model on audio features, e.g. [1, 49, 40] for 1 s of 20 ms frames, or "
            "use --input host and send inputs over serial")
    dims = list(shape)
    if not dims or dims[0] != 1 or any(d <= 0 for d in dims):
        raise _shape_error("microphone", shape, expected, hint)
    body = dims[1:]
    if len(body) == 3 and body[2] == 1:
        body = body[:2]
    if len(body) == 2 and body[1] <= 64 and (channels is None or body[1] == channels):
        return body[0], body[1]
    width = channels or 40
    if len(body) == 1 and body[0] % width == 0:
        return body[0] // width, width
    raise _shape_error("microphone", shape, expected, hint)


# --- IMU -----------------------------------------------------------------------------------

def _derive_imu(r: _Resolver, tensor: TensorInfo | None) -> tuple[ImuSettings, TensorSpec]:
    configured_axes = r.values.get("imu.axes")
    if tensor is not None:
        shape = tuple(tensor.shape)
        window_model, axis_count = imu_layout(shape, configured_axes)
        axes = configured_axes or r.pick("imu.axes", model=_default_axes(axis_count, shape))
        if configured_axes:
            r.origins["imu.axes"] = "file"
        if len(axes) != axis_count:
            r.problem("imu.axes", f"names {len(axes)} axes but the model's input "
                                  f"{list(shape)} has {axis_count} per sample")
        window = r.pick("imu.window", model=window_model)
        if window != window_model:
            r.problem("imu.window", f"is {window} but the model's input {list(shape)} holds "
                                    f"{window_model} samples")
        spec = TensorSpec.of(tensor)
    else:
        axes = r.pick("imu.axes", default=imu_mod.AXES)
        window = r.pick("imu.window")
        if window is None:
            r.problem("imu.window", "is needed when no model gives the input shape")
            window = 1
        spec = TensorSpec("features", (1, window, len(axes)), "float32")
    rate_hz = r.pick("imu.rate_hz", default=DEFAULT_IMU_RATE_HZ)
    _check_millihertz(r, "imu.rate_hz", rate_hz)
    recording_rate = r.pick("imu.recording_rate_hz")
    if recording_rate is not None:
        _check_millihertz(r, "imu.recording_rate_hz", recording_rate)
    stride = r.pick("imu.stride", default=max(1, window // 4))
    offset = r.pick("imu.offset", default=(0.0,) * len(axes))
    scale = r.pick("imu.scale", default=(1.0,) * len(axes))
    for key, values in (("imu.offset", offset), ("imu.scale", scale)):
        if len(values) != len(axes):
            r.problem(key, f"has {len(values)} values for {len(axes)} axes "
                           f"({', '.join(axes)}): give one per axis, in that order")
    if any(s == 0 for s in scale):
        r.problem("imu.scale", "has a 0: every axis is divided by its scale")
    trigger = None
    if r.values.has_table("imu.trigger"):
        trigger = Trigger(r.pick("imu.trigger.threshold_g", default=DEFAULT_TRIGGER_G),
                          r.pick("imu.trigger.pre_samples", default=0))
        if trigger.pre_samples >= window:
            r.problem("imu.trigger.pre_samples",
                      f"is {trigger.pre_samples}; it must be below the window ({window})")
    settings = ImuSettings(rate_hz=rate_hz, window=window, stride=stride, axes=tuple(axes),
                           offset=tuple(offset), scale=tuple(scale), trigger=trigger,
                           recording_rate_hz=recording_rate)
    if not r.problems and spec.dtype == "int8":
        try:
            imu_mod.column_maps(Pipeline(kind="imu", input=spec, imu=settings))
        except ValueError:
            r.problem("imu.scale", "with the model's input scale "
                                   f"{spec.scale:g} one sensor count would span more than "
                                   "16384 int8 steps: the scale is far too small")
    return settings, spec


def _default_axes(count: int, shape: tuple[int, ...]) -> tuple[str, ...]:
    if count == len(imu_mod.AXES):
        return imu_mod.AXES
    if count == len(imu_mod.ACCEL_AXES):
        return imu_mod.ACCEL_AXES
    raise PipelineShapeError(
        f"the model's input {list(shape)} has {count} axes per sample; tinyforge does not "
        "guess which", hint=f"set imu.axes in tinyforge.toml to the {count} axes the model "
                            f"was trained on, from ax, ay, az, gx, gy, gz; {DOC_HINT}")


def _check_millihertz(r: _Resolver, key: str, rate_hz: float) -> None:
    if arith.to_millihertz(rate_hz) is None:
        r.problem(key, f"is {rate_hz!r}; rates are whole millihertz (e.g. 99.84)")


# --- microphone ----------------------------------------------------------------------------

def _derive_microphone(r: _Resolver, tensor: TensorInfo | None, info: ModelInfo | None
                       ) -> tuple[MicrophoneSettings, TensorSpec]:
    configured_channels = r.values.get("microphone.frontend.channels")
    defaults = FrontendSettings()
    if tensor is not None:
        shape = tuple(tensor.shape)
        window_model, channels_model = microphone_layout(shape, configured_channels)
        window = r.pick("microphone.window", model=window_model)
        if window != window_model:
            r.problem("microphone.window", f"is {window} but the model's input {list(shape)} "
                                           f"holds {window_model} frames")
        channels = r.pick("microphone.frontend.channels", model=channels_model)
        spec = TensorSpec.of(tensor)
    else:
        window = r.pick("microphone.window", default=DEFAULT_MIC_WINDOW)
        channels = r.pick("microphone.frontend.channels", default=defaults.channels)
        spec = TensorSpec("features", (1, window, channels), "float32")
    front_values = {"channels": channels}
    for item in fields(FrontendSettings):
        if item.name != "channels":
            front_values[item.name] = r.pick(f"microphone.frontend.{item.name}",
                                             default=getattr(defaults, item.name))
    frontend = FrontendSettings(**front_values)
    if frontend.stride_ms > frontend.window_ms:
        r.problem("microphone.frontend.stride_ms",
                  f"is {frontend.stride_ms}; it must not exceed window_ms ({frontend.window_ms})")
    if frontend.lower_hz >= frontend.upper_hz:
        r.problem("microphone.frontend.lower_hz",
                  f"is {frontend.lower_hz:g}; it must be below upper_hz ({frontend.upper_hz:g})")
    elif not (bank := filterbank.layout(frontend)).accepted:
        r.problem("microphone.frontend.upper_hz",
                  f"is {frontend.upper_hz:g}; the frontend's last channel would reach bin "
                  f"{bank.end_index} of a {bank.spectrum_size}-bin spectrum and it refuses to "
                  f"start: keep it below {audio_mod.SAMPLE_RATE // 2} Hz, half the sample rate")
    streaming = bool(info and info.resource_variables)
    stride = r.pick("microphone.stride",
                    default=window if streaming else min(DEFAULT_MIC_STRIDE, window))
    features = r.pick("microphone.features", model=_default_features(spec))
    _check_features(r, features, spec)
    feature_scale = r.pick("microphone.feature_scale", default=DEFAULT_FEATURE_SCALE)
    settings = MicrophoneSettings(window=window, stride=stride,
                                  discard_ms=r.pick("microphone.discard_ms", default=3500),
                                  features=features, feature_scale=feature_scale,
                                  frontend=frontend)
    if not r.problems and features == "quantize":
        from .audio import feature_map
        try:
            feature_map(Pipeline(kind="microphone", input=spec, microphone=settings))
        except ValueError:
            r.problem("microphone.feature_scale", "is too large for the model's input scale "
                                                  f"{spec.scale:g}")
    return settings, spec


def _default_features(spec: TensorSpec) -> str:
    if spec.dtype == "float32":
        return "float"
    return "micro_speech" if _is_micro_speech_quantization(spec) else "quantize"


def _is_micro_speech_quantization(spec: TensorSpec) -> bool:
    return (spec.zero_point == MICRO_SPEECH_ZERO_POINT and spec.scale is not None
            and abs(spec.scale / MICRO_SPEECH_SCALE - 1) <= 0.01)


def _check_features(r: _Resolver, features: str, spec: TensorSpec) -> None:
    if not r.from_file("microphone.features"):
        return
    if features == "float" and spec.dtype != "float32":
        r.problem("microphone.features", f"is 'float' but the model's input is {spec.dtype}; "
                                         "use 'micro_speech' or 'quantize'")
    elif features != "float" and spec.dtype == "float32":
        r.problem("microphone.features", f"is '{features}' but the model's input is float32; "
                                         "use 'float'")
    elif features == "micro_speech" and not _is_micro_speech_quantization(spec):
        r.problem("microphone.features",
                  f"is 'micro_speech', whose int8 formula assumes an input scale of "
                  f"{MICRO_SPEECH_SCALE:g} and zero point -128, but the model's input has "
                  f"scale {spec.scale:g} and zero point {spec.zero_point}; use 'quantize'")


# --- decisions -----------------------------------------------------------------------------

def classifier_classes(output: TensorInfo) -> int | None:
    """The number of classes of a classifier's output [1, C] or [C], else None."""
    dims = list(output.shape)
    if dims[:1] == [1] and len(dims) == 2:
        dims = dims[1:]
    if len(dims) == 1 and 2 <= dims[0] <= MAX_CLASSES and output.dtype in SCORE_DTYPES:
        return dims[0]
    return None


def _derive_decisions(r: _Resolver, info: ModelInfo | None, pipeline: Pipeline):
    """(settings, output spec, classes, queue capacity), or Nones when there are none."""
    none = None, None, None, 0
    explicit = r.values.has_table("decisions")
    if not r.pick("decisions.enabled", default=True):
        return none
    classes, output = None, None
    if info is not None and info.outputs:
        first = info.outputs[0]
        classes = classifier_classes(first)
        if classes is None:
            if explicit:
                raise PipelineShapeError(
                    f"[decisions] needs a classifier, but {info.name}'s output is "
                    f"{first.dtype} {list(first.shape)}, not [1, classes] with 2..{MAX_CLASSES} "
                    "classes of int8, uint8 or float32",
                    hint="remove [decisions] from tinyforge.toml, or set decisions.enabled = false")
            return none
        output = TensorSpec.of(first)
    elif info is None and not explicit:
        return none
    # A triggered IMU pipeline runs once per gesture: each inference decides on its own.
    triggered = pipeline.imu is not None and pipeline.imu.trigger is not None
    defaults = DecisionSettings(average_ms=0, minimum_count=1) if triggered else DecisionSettings()
    average_ms = r.pick("decisions.average_ms", default=defaults.average_ms)
    capacity = average_ms // pipeline.inference_period_ms + 1
    minimum = r.pick("decisions.minimum_count", default=min(defaults.minimum_count, capacity))
    settings = DecisionSettings(
        average_ms=average_ms, minimum_count=minimum,
        threshold=r.pick("decisions.threshold", default=defaults.threshold),
        suppression_ms=r.pick("decisions.suppression_ms", default=defaults.suppression_ms),
        background=r.pick("decisions.background", default=defaults.background))
    if classes is not None and settings.background >= classes:
        r.problem("decisions.background", f"is {settings.background} but the model has "
                                          f"{classes} classes (0..{classes - 1}; -1 for none)")
    return settings, output, classes, _result_capacity(r, settings, pipeline)


def _result_capacity(r: _Resolver, decisions: DecisionSettings, pipeline: Pipeline) -> int:
    period = pipeline.inference_period_ms
    capacity = decisions.average_ms // period + 1
    if capacity > MAX_RESULTS:
        r.problem("decisions.average_ms",
                  f"is {decisions.average_ms}: with an inference every {period} ms the "
                  f"average would hold {capacity} results, more than {MAX_RESULTS}")
    elif decisions.minimum_count > capacity:
        r.problem("decisions.minimum_count",
                  f"is {decisions.minimum_count}, but at most {capacity} inferences fit in "
                  f"average_ms ({decisions.average_ms} ms at one every {period} ms): it could "
                  "never be reached")
    return min(capacity, MAX_RESULTS)
