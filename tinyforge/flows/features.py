"""`tinyforge features`: the device pipeline's model inputs for a recording, on the host.

The pipeline comes from a tinyforge.toml (given, or beside the model) and the model's input
(defaults derived from it); the recording is read as untrusted input. With a model, the
host TFLM runtime also runs every input and the decisions are computed. Results go to a
.npy/.npz file (written atomically, last, so a failure writes nothing) and a report.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..board import profiles
from ..errors import InputError, RecordingError
from ..model.reader import read_model_file
from ..pipeline import check_pipeline, load_pipeline, read_recording, reference
from ..pipeline.config import find_config
from ..pipeline.readers import ImuRecording

OUTPUT_SUFFIXES = (".npy", ".npz")
MAX_LABELS_BYTES = 64 * 1024


@dataclass
class FeaturesReport:
    run: reference.PipelineRun
    config: Path | None
    output: Path | None
    labels: list[str]
    arrays: list[str]

    def to_json(self) -> dict[str, Any]:
        run, recording = self.run, self.run.recording
        inputs = run.inputs
        result: dict[str, Any] = {
            "recording": str(recording.path), "input": run.pipeline.kind,
            "seconds": round(recording.seconds, 6), "config": _str(self.config),
            "windows": int(len(inputs)), "shape": list(inputs.shape),
            "dtype": str(inputs.dtype),
            "times_ms": [int(t) for t in run.times_ms],
            "values": _value_summary(inputs),
            "pipeline": run.pipeline.to_json(),
            "output": _str(self.output), "arrays": self.arrays,
        }
        if isinstance(recording, ImuRecording):
            result["recording_rate_hz"] = recording.rate_mhz / 1000
            result["rate_source"] = recording.rate_source
            result["recording_axes"] = list(recording.axes)
            result["samples"] = int(len(recording.counts))
        else:
            result["recording_rate_hz"] = 16000
            result["samples"] = int(len(recording.samples))
            result["frames"] = int(len(run.frames))
        if run.outputs is not None:
            result["decisions"] = [d.to_json(self.labels) for d in run.decisions]
        return result

    def lines(self) -> list[str]:
        report = self.to_json()
        p = self.run.pipeline
        lines = [f"recording  {report['recording']}: {report['seconds']:.2f} s, "
                 f"{report['samples']} samples at {report['recording_rate_hz']:g} Hz"
                 + (f" ({report['rate_source']})" if "rate_source" in report else ""),
                 f"pipeline   {p.kind} for {p.model_name or 'no model (float32 features)'}; "
                 f"{'config ' + report['config'] if self.config else 'defaults (no tinyforge.toml)'}"]
        rows = p.imu.window if p.imu else p.microphone.window
        unit = "samples" if p.imu else "frames"
        triggered = p.imu is not None and p.imu.trigger is not None
        cadence = (f"one per motion (at most one every {p.inference_period_ms} ms)" if triggered
                   else f"one every {p.inference_period_ms} ms")
        lines.append(f"features   {report['windows']} input(s) of {report['dtype']} "
                     f"{report['shape'][1:]} ({rows} {unit}), {cadence}")
        if report["values"]:
            v = report["values"]
            lines.append(f"values     min {v['min']:g}, max {v['max']:g}, mean {v['mean']:.3f}")
        if "decisions" in report:
            found = report["decisions"]
            lines.append(f"decisions  {len(found)}" + ("" if not found else ": " + ", ".join(
                f"{d.get('name', d['label'])} ({d['probability']:.2f}) at {d['time_ms']} ms"
                for d in found)))
        if self.output:
            lines.append(f"written    {self.output} ({', '.join(self.arrays)})")
        return lines


def compute_features(recording: Path, *, config: Path | None = None, model: Path | None = None,
                     kind: str | None = None, board_id: str | None = None,
                     labels: Path | None = None, output: Path | None = None) -> FeaturesReport:
    """The pipeline's features of `recording` (see docs/cli.md, `tinyforge features`)."""
    recording = Path(recording)
    if output is not None:
        output = _check_output(Path(output), recording)
    info = read_model_file(Path(model))[1] if model is not None else None
    if config is None and model is not None:
        config = find_config(Path(model).parent)
    pipeline = load_pipeline(config, model=info, kind=kind)
    if pipeline.kind == "host":
        raise InputError("the host pipeline computes no features: the host sends the model's "
                         "inputs itself", hint="choose the sensor with --input imu or --input "
                                               "microphone, or set pipeline.input in tinyforge.toml")
    if board_id is not None:
        check_pipeline(pipeline, profiles.load_board(board_id), info)
    names = _labels(labels, pipeline.classes)
    recorded = read_recording(recording, pipeline)
    run = reference.run(recorded, pipeline, model=model) if model is not None else \
        reference.compute(recorded, pipeline)
    arrays = _arrays(run)
    if output is not None:
        if output.suffix.lower() == ".npy":
            arrays = {"x": arrays["x"]}
        _write_atomically(output, arrays)
    return FeaturesReport(run, config, output, names, sorted(arrays) if output else [])


def _check_output(output: Path, recording: Path) -> Path:
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"--output {output} must end in .npy (the model inputs) or .npz "
                         "(inputs, times and intermediate values)",
                         hint="e.g. --output features.npz")
    if output.exists() and recording.exists() and output.resolve() == recording.resolve():
        raise InputError(f"--output {output} is the recording itself",
                         hint="write the features to another file")
    if output.is_dir():
        raise InputError(f"--output {output} is a directory", hint="give a file name")
    return output


def _labels(path: Path | None, classes: int | None) -> list[str]:
    if path is None:
        return []
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_LABELS_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read labels file {path}: {exc.strerror or exc}",
                         hint="check --labels") from None
    if len(data) > MAX_LABELS_BYTES:
        raise InputError(f"labels file {path} is larger than 64 KiB",
                         hint="one class name per line")
    try:
        names = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise InputError(f"labels file {path} is not UTF-8 text",
                         hint="save it as UTF-8, one label per line") from None
    if classes is not None and len(names) != classes:
        raise InputError(f"labels file {path} has {len(names)} labels but the model has "
                         f"{classes} classes", hint="give one label per class, in output order")
    return names


def _arrays(run: reference.PipelineRun) -> dict[str, np.ndarray]:
    arrays = {"x": run.inputs, "times_ms": run.times_ms, "ends": run.ends}
    if run.frames is not None:
        arrays["frames"] = run.frames
    if run.resampled is not None:
        arrays["resampled"] = run.resampled
    if run.outputs is not None:
        arrays["outputs"] = run.outputs
        if run.scores is not None:
            arrays["scores"] = run.scores
            arrays["decisions"] = np.asarray([[d.time_ms, d.label, d.score]
                                              for d in run.decisions],
                                             dtype=np.int64).reshape(-1, 3)
    return arrays


def _write_atomically(output: Path, arrays: dict[str, np.ndarray]) -> None:
    # Readers see the previous file or the complete new one, never a partial write.
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as handle:
            if output.suffix.lower() == ".npy":
                np.save(handle, arrays["x"], allow_pickle=False)
            else:
                np.savez(handle, **arrays)
        os.replace(partial, output)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise RecordingError(f"cannot write {output}: {exc.strerror or exc}",
                             hint="choose a writable --output path") from None
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def _value_summary(inputs: np.ndarray) -> dict[str, float] | None:
    if inputs.size == 0:
        return None
    return {"min": float(inputs.min()), "max": float(inputs.max()),
            "mean": round(float(inputs.astype(np.float64).mean()), 6)}


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
