"""The microphone half of the pipeline: int16 PCM at 16 kHz -> frontend frames -> model input.

The frontend is TFLM's micro frontend (window, FFT, filterbank, noise reduction, PCAN, log).
Its host reference is TensorFlow's `audio_microfrontend` op, the same C code, which gives the
device's frames bit for bit when both see the same continuous stream (docs/pipeline.md).

TensorFlow is imported only where the op runs: in this process when TensorFlow is already
loaded (training code), otherwise in a child process (`_frontend_child`), so the CLI stays
TensorFlow-free and fast.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import proc
from ..errors import ChildProcessFailed, ChildTimeoutError, RecordingError, ToolMissingError
from . import arith, windows

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# The child imports TensorFlow (~3 s) and then runs the op at about 100x real time.
_CHILD_BASE_TIMEOUT_S = 120.0
_CHILD_SECONDS_PER_AUDIO_SECOND = 0.5
_CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
              "TF_ENABLE_ONEDNN_OPTS": "0"}


@dataclass(frozen=True)
class AudioResult:
    """What the device pipeline computes from one audio stream."""

    frames: np.ndarray      # uint16 [F, channels]: the frontend's output
    rows: np.ndarray        # [F, channels] model-input values, one per frame
    ends: np.ndarray        # frame index at which each window is complete
    times_ms: np.ndarray    # uint32 stream time at the end of each window's last frame
    inputs: np.ndarray      # [len(ends), window, channels] in the input's dtype


def run(samples: np.ndarray, pipeline, *, in_process: bool | None = None) -> AudioResult:
    """The device pipeline on int16 `samples` at 16 kHz."""
    frames = frontend([samples], pipeline.microphone.frontend, in_process=in_process)[0]
    return from_frames(frames, pipeline)


def from_frames(frames: np.ndarray, pipeline) -> AudioResult:
    """The rest of the pipeline once the frontend has run."""
    mic = pipeline.microphone
    rows = map_frames(frames, pipeline)
    ends = windows.window_ends(len(rows), mic.window, mic.stride)
    front = mic.frontend
    times = ((ends * front.stride_ms + front.window_ms) % arith.UINT32).astype(np.uint32)
    return AudioResult(frames=frames, rows=rows, ends=ends, times_ms=times,
                       inputs=windows.gather(rows, ends, mic.window))


def map_frames(frames: np.ndarray, pipeline) -> np.ndarray:
    """Frontend values -> model-input values (`microphone.features`)."""
    mode = pipeline.microphone.features
    if mode == "micro_speech":
        return arith.micro_speech_int8(frames)
    return feature_map(pipeline).apply(frames)


def feature_map(pipeline):
    """The affine map of `features = "quantize"` or `"float"`: value * feature_scale."""
    scale = pipeline.microphone.feature_scale
    if pipeline.microphone.features == "quantize":
        from fractions import Fraction

        return arith.AffineQuantizer.from_real(Fraction(scale), Fraction(0),
                                               pipeline.input.scale, pipeline.input.zero_point)
    return arith.FloatAffine.from_real(scale, 0.0)


def frame_count(sample_count: int, front) -> int:
    """Frames the frontend emits for `sample_count` samples of a continuous stream."""
    size = front.window_ms * SAMPLE_RATE // 1000
    step = front.stride_ms * SAMPLE_RATE // 1000
    return 0 if sample_count < size else (sample_count - size) // step + 1


# --- the frontend op -----------------------------------------------------------------------

def frontend(clips: Sequence[np.ndarray], front, *, in_process: bool | None = None
             ) -> list[np.ndarray]:
    """TensorFlow's audio_microfrontend on each int16 clip: uint16 [frames, channels] each.

    `in_process=None` runs in this process when TensorFlow is already imported, else in a
    child process; one child serves every clip of the call.
    """
    clips = [np.ascontiguousarray(clip, dtype=np.int16).reshape(-1) for clip in clips]
    if in_process is None:
        in_process = "tensorflow" in sys.modules
    if in_process:
        return [run_op(clip, front_options(front)) for clip in clips]
    return _frontend_in_child(clips, front)


def front_options(front) -> dict:
    return asdict(front)


def run_op(samples: np.ndarray, options: dict) -> np.ndarray:
    """One clip through the TensorFlow op (TensorFlow must be importable here)."""
    import tensorflow as tf
    from tensorflow.lite.experimental.microfrontend.python.ops import (
        audio_microfrontend_op as frontend_op,
    )

    if len(samples) < options["window_ms"] * SAMPLE_RATE // 1000:
        return np.zeros((0, options["channels"]), dtype=np.uint16)
    frames = frontend_op.audio_microfrontend(
        tf.constant(samples, dtype=tf.int16), sample_rate=SAMPLE_RATE,
        window_size=options["window_ms"], window_step=options["stride_ms"],
        num_channels=options["channels"], upper_band_limit=options["upper_hz"],
        lower_band_limit=options["lower_hz"], smoothing_bits=options["smoothing_bits"],
        even_smoothing=options["even_smoothing"], odd_smoothing=options["odd_smoothing"],
        min_signal_remaining=options["min_signal_remaining"], enable_pcan=options["pcan"],
        pcan_strength=options["pcan_strength"], pcan_offset=options["pcan_offset"],
        gain_bits=options["gain_bits"], enable_log=options["log_scale"],
        scale_shift=options["scale_shift"], left_context=0, right_context=0, frame_stride=1,
        zero_padding=False, out_scale=1, out_type=tf.uint16)
    return np.asarray(frames.numpy(), dtype=np.uint16).reshape(-1, options["channels"])


def _frontend_in_child(clips: list[np.ndarray], front) -> list[np.ndarray]:
    if importlib.util.find_spec("tensorflow") is None:
        raise ToolMissingError(
            "TensorFlow is not installed; the audio features' host reference is its "
            "audio_microfrontend op", hint="pip install 'tinyforge[convert]' (tensorflow-cpu 2.21)")
    seconds = sum(len(c) for c in clips) / SAMPLE_RATE
    timeout = _CHILD_BASE_TIMEOUT_S + _CHILD_SECONDS_PER_AUDIO_SECOND * seconds
    with tempfile.TemporaryDirectory(prefix="tinyforge-frontend-") as work_dir:
        work = Path(work_dir)
        np.savez(work / "clips.npz", **{f"clip{i}": clip for i, clip in enumerate(clips)})
        (work / "request.json").write_text(json.dumps(
            {"options": front_options(front), "count": len(clips), "work_dir": str(work)}))
        try:
            proc.run([sys.executable, "-m", "tinyforge.pipeline._frontend_child",
                      str(work / "request.json")], timeout=timeout, env=_child_env(),
                     on_line=lambda line: log.debug("frontend: %s", line),
                     what="the audio frontend (TensorFlow)")
        except ChildTimeoutError as exc:
            raise RecordingError(f"the audio frontend took longer than {timeout:g} s",
                                 details=exc.details,
                                 hint="give shorter recordings") from None
        except ChildProcessFailed as exc:
            raise ChildProcessFailed(
                f"the audio frontend child process failed: {exc.message}",
                returncode=exc.returncode, details=exc.details,
                hint="run with --verbose for TensorFlow's output") from None
        with np.load(work / "frames.npz", allow_pickle=False) as result:
            return [np.asarray(result[f"frames{i}"], dtype=np.uint16)
                    for i in range(len(clips))]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(_CHILD_ENV)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env
