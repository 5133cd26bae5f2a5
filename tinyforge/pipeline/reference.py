"""The host reference of the whole device pipeline: recording -> model inputs -> decisions.

`features()` is what training code calls, so a model is trained on exactly what the device
computes; `run()` adds the model (host TFLM, or any scoring function) and the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import audio, decisions as decisions_mod, imu
from .derive import Pipeline
from .readers import AudioRecording, ImuRecording, as_recording


@dataclass
class PipelineRun:
    """Everything the device computes from one recording, in order of inference."""

    pipeline: Pipeline
    recording: AudioRecording | ImuRecording
    inputs: np.ndarray              # [W, *input_shape[1:]] in the input's dtype
    times_ms: np.ndarray            # uint32 [W]: the stream time of each inference
    ends: np.ndarray                # [W]: the row (frame or resampled sample) ending each window
    frames: np.ndarray | None = None      # audio: uint16 [F, channels] frontend output
    resampled: np.ndarray | None = None   # imu: int16 [M, 6] at the model's rate
    outputs: np.ndarray | None = None     # [W, *output_shape[1:]] model outputs
    scores: np.ndarray | None = None      # uint8 [W, classes] (decisions only)
    steps: list = field(default_factory=list)
    decisions: list = field(default_factory=list)


def features(source: Any, pipeline: Pipeline, *, rate_hz: float | None = None,
             in_process: bool | None = None) -> np.ndarray:
    """The model inputs the device computes from `source`: [windows, *input_shape[1:]].

    `source`: a recording path (.wav; .csv; .npy/.npz), a recording, or an array (audio:
    int16 [N] at 16 kHz; IMU: [N, 6] or [N, len(axes)] in g/dps at `rate_hz`).
    """
    return compute(source, pipeline, rate_hz=rate_hz, in_process=in_process).inputs


def features_many(sources: Sequence[Any], pipeline: Pipeline, *, rate_hz: float | None = None,
                  in_process: bool | None = None) -> list[np.ndarray]:
    """`features()` of many recordings; audio runs the frontend once for all of them."""
    return [r.inputs for r in compute_many(sources, pipeline, rate_hz=rate_hz,
                                           in_process=in_process)]


def compute_many(sources: Sequence[Any], pipeline: Pipeline, *, rate_hz: float | None = None,
                 in_process: bool | None = None) -> list[PipelineRun]:
    """`compute()` of many recordings; audio runs the frontend once for all of them (one
    TensorFlow child process instead of one per recording)."""
    recordings = [as_recording(s, pipeline, rate_hz=rate_hz) for s in sources]
    if pipeline.kind != "microphone":
        return [compute(r, pipeline) for r in recordings]
    frames = audio.frontend([r.samples for r in recordings], pipeline.microphone.frontend,
                            in_process=in_process)
    return [_audio_run(r, audio.from_frames(f, pipeline), pipeline)
            for r, f in zip(recordings, frames)]


def compute(source: Any, pipeline: Pipeline, *, rate_hz: float | None = None,
            in_process: bool | None = None) -> PipelineRun:
    """The pipeline up to the model inputs (no model run)."""
    recording = as_recording(source, pipeline, rate_hz=rate_hz)
    if pipeline.kind == "imu":
        result = imu.run(recording.counts, recording.rate_mhz, pipeline)
        return PipelineRun(pipeline, recording, _shaped(result.inputs, pipeline),
                           result.times_ms, result.ends, resampled=result.resampled)
    return _audio_run(recording, audio.run(recording.samples, pipeline, in_process=in_process),
                      pipeline)


def _audio_run(recording, result, pipeline: Pipeline) -> PipelineRun:
    return PipelineRun(pipeline, recording, _shaped(result.inputs, pipeline), result.times_ms,
                       result.ends, frames=result.frames)


def run(source: Any, pipeline: Pipeline, *, model: Path | str | bytes | None = None,
        scores: Callable[[np.ndarray], np.ndarray] | None = None,
        rate_hz: float | None = None, in_process: bool | None = None) -> PipelineRun:
    """The whole pipeline: inputs, the model's outputs, and the decisions.

    The outputs come from `model` run in the host TFLM runtime (what the board runs), or from
    `scores(inputs) -> [W, classes]` (e.g. a Keras model's predict in training code).
    """
    result = compute(source, pipeline, rate_hz=rate_hz, in_process=in_process)
    if model is not None:
        result.outputs = _run_model(model, result.inputs)
        dtype = pipeline.output.dtype if pipeline.output else str(result.outputs.dtype)
    elif scores is not None:
        result.outputs = np.asarray(scores(result.inputs))
        dtype = str(result.outputs.dtype)
    else:
        return result
    if pipeline.decisions is not None and len(result.outputs):
        flat = result.outputs.reshape(len(result.outputs), -1)
        result.scores = decisions_mod.scores_u8(flat, dtype if dtype in ("int8", "uint8")
                                                else "float32")
        result.steps, result.decisions = decisions_mod.decide(
            result.scores, result.times_ms, pipeline.decisions,
            pipeline.classes or flat.shape[1], pipeline.result_capacity)
    return result


def _shaped(inputs: np.ndarray, pipeline: Pipeline) -> np.ndarray:
    """Windows [W, rows, columns] in the model input's own shape [W, *input_shape[1:]]."""
    return inputs.reshape((len(inputs), *pipeline.input.shape[1:]))


def _run_model(model: Path | str | bytes, inputs: np.ndarray) -> np.ndarray:
    from ..model import host_runtime
    from ..model.reader import inspect_bytes, read_model_file

    if isinstance(model, bytes):
        data, info = model, inspect_bytes(model, "model")
    else:
        data, info = read_model_file(Path(model))
    if len(inputs) == 0:
        return np.zeros((0, *info.outputs[0].shape[1:]))
    outputs = host_runtime.run_batch(data, [[x[None]] for x in inputs], 1, info.name)
    return np.stack([o[0].reshape(o[0].shape[1:]) if o[0].shape[:1] == (1,) else o[0]
                     for o in outputs])
