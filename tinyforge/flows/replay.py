"""`tinyforge validate --replay FILE`: a recording through the firmware's sensor pipeline,
compared with the host reference of the whole pipeline.

The recording (WAV for the microphone; CSV, NPY or NPZ for the IMU) is read as untrusted
input, streamed to the firmware (qemu-m4, or a board that replays) with REPLAY/SAMPLES and
credit flow control (tinyforge.device.replay), and computed on the host by the pipeline's
reference (tinyforge.pipeline: the same resampling, windows, quantisation, TensorFlow's
audio frontend op) with the model run in the host reference runtime (the board's TFLM
compiled for the host when a tree is at hand, docs/reference.md). Compared: the features in
every frame (FEAT, with `features`), the outputs of every inference, their stream times and
the decisions. Exact counts; any difference fails (exit 3).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..device import protocol, replay
from ..device.conversation import Conversation, require_started, wait_for_boot
from ..errors import DeviceError, PipelineConfigError, ValidationFailed

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    recording: str
    input: str
    seconds: float
    reference: str
    inferences: int                 # on the device
    host_inferences: int
    exact_outputs: int              # inferences whose raw outputs equal the host's
    same_times: int                 # inferences at the host's stream time
    feature_rows: int | None        # FEAT messages compared (None: not asked)
    exact_feature_rows: int | None
    host_feature_rows: int | None
    decisions: list[dict]
    host_decisions: list[dict]
    same_decisions: bool
    stream: dict                    # lines, seconds, capacity
    latency_us: dict[str, float]
    passed: bool
    mismatches: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        lines = [f"recording      {self.recording}: {self.seconds:.2f} s through the {self.input} "
                 f"pipeline (reference: {self.reference})",
                 f"streamed       {units.count(self.stream['lines'])} SAMPLES lines in "
                 f"{units.seconds(self.stream['seconds'])} (device buffer "
                 f"{units.count(self.stream['capacity'])} values)"]
        if self.feature_rows is not None:
            lines.append(f"features       {units.count(self.exact_feature_rows)} of "
                         f"{units.count(self.host_feature_rows)} rows identical "
                         f"({units.count(self.feature_rows)} from the device)")
        lines.append(f"outputs        {units.count(self.exact_outputs)} of "
                     f"{units.count(self.host_inferences)} inferences identical "
                     f"({units.count(self.inferences)} on the device, "
                     f"{units.count(self.same_times)} at the same stream time)")
        lines.append(f"decisions      {len(self.decisions)} on the device, "
                     f"{len(self.host_decisions)} on the host: "
                     + ("the same" if self.same_decisions else "DIFFERENT"))
        for decision in self.decisions[:10]:
            lines.append(f"  t={decision['t']} ms  {decision['label'] or decision['class']} "
                         f"(score {decision['score']}/256, inference {decision['seq']})")
        latency = self.latency_us
        lines.append(f"latency        min {units.micros(latency['min'])}, median "
                     f"{units.micros(latency['median'])}, max {units.micros(latency['max'])} "
                     "(Invoke on the device)")
        for mismatch in self.mismatches[:5]:
            lines.append(f"  {mismatch['what']} {mismatch['index']}: device "
                         f"{str(mismatch['device'])[:60]} host {str(mismatch['host'])[:60]}")
        lines.append("PASS" if self.passed else "FAIL: the device pipeline differs from the host")
        return lines


def check(report: ReplayReport) -> None:
    if not report.passed:
        raise ValidationFailed(
            f"the replay of {report.recording} differs from the host reference: "
            f"{report.exact_outputs} of {report.host_inferences} inferences identical, "
            f"{report.inferences} on the device"
            + ("" if report.same_decisions else ", other decisions"),
            hint="check that the board runs the last build (`tinyforge flash`); the mismatches "
                 "in the report (--json) name the first frames and inferences that differ")


def validate_replay(recording: Path, *, project_dir: Path | None = None,
                    board_id: str | None = None, port: str | None = None,
                    features: bool = False, tflm: Path | None = None,
                    reference: str = "auto", ask=None) -> ReplayReport:
    """Replay `recording` through the last build's firmware and compare with the host."""
    from ..device.sources import source_for
    from ..pipeline import read_recording
    from ..project import last_build
    from .reference import runtime_for_build

    build = last_build.find(project_dir, board_id)
    pipeline = build_pipeline(build)
    # The recording is checked (and the host reference computed) before the device opens.
    data = read_recording(Path(recording), pipeline)
    runtime = runtime_for_build(build, tflm=tflm, choice=reference)
    host = host_reference(data, pipeline, build, runtime)
    source = source_for(build.board, build.elf, port, ask=ask)
    link = source.open()
    try:
        conversation = Conversation(link)
        boot = wait_for_boot(conversation, ask=not build.board.emulated)
        require_started(boot, conversation)
        _check_boot(boot, build, pipeline)
        values, rate_mhz = _stream_values(data, pipeline)
        log.info("replaying %s (%s values) through the %s pipeline", recording,
                 units.count(len(values)), pipeline.kind)
        events = replay.stream(conversation, pipeline.kind, values, max_line=boot.max_line,
                               rate_mhz=rate_mhz, features=features)
    finally:
        source.close(link)
    return compare(events, host, pipeline, str(recording), runtime.description, features,
                   data.seconds, build.labels)


def build_pipeline(build):
    """The pipeline the last build's firmware runs, derived again from its tinyforge.toml and
    model, and checked against what the build recorded."""
    from ..pipeline import load_pipeline
    from ..pipeline.settings import summary
    from ..project.firmware import PIPELINE_CONFIG

    recorded = build.manifest.get("pipeline") or {"input": "host"}
    if recorded.get("input") in (None, "host"):
        raise PipelineConfigError(
            f"the last build ({build.project_dir}) has no sensor pipeline: its inputs come "
            "over serial", hint="build with `tinyforge build --input imu` or `--input "
                                "microphone`, or validate it with --data or --random")
    config = build.project_dir / PIPELINE_CONFIG
    pipeline = load_pipeline(config if config.is_file() else None, model=build.model_path,
                             kind=recorded["input"])
    if summary(pipeline) != recorded.get("summary"):
        raise PipelineConfigError(
            f"the pipeline of {build.project_dir} is no longer the one it was built with",
            hint="build again (`tinyforge build`) and flash it before validating")
    return pipeline


@dataclass
class HostRun:
    inputs: np.ndarray
    outputs: list[np.ndarray]        # raw first output per inference
    times_ms: np.ndarray
    features: np.ndarray             # rows FEAT carries: audio frames or IMU inputs
    steps: list
    decisions: list[dict]


def host_reference(recording, pipeline, build, runtime) -> HostRun:
    """The whole pipeline on the host: inputs, outputs in the reference runtime, decisions."""
    from ..model.reader import read_model_file
    from ..pipeline import compute
    from ..pipeline import decisions as decisions_mod

    run = compute(recording, pipeline)
    model, info = read_model_file(build.model_path)
    batch = [[x[None]] for x in run.inputs]
    outputs = [o[0] for o in runtime.run_batch(model, batch, len(info.outputs), info.name)] \
        if batch else []
    steps, decisions = [], []
    if pipeline.decisions is not None and outputs:
        flat = np.stack([np.asarray(o).reshape(-1) for o in outputs])
        scores = decisions_mod.scores_u8(flat, pipeline.output.dtype)
        steps, _ = decisions_mod.decide(scores, run.times_ms, pipeline.decisions,
                                        pipeline.classes or flat.shape[1],
                                        pipeline.result_capacity)
        labels = build.labels
        decisions = [{"seq": index, "class": step.top,
                      "label": labels[step.top] if 0 <= step.top < len(labels) else "",
                      "score": step.score, "t": step.time_ms}
                     for index, step in enumerate(steps) if step.reported]
    rows = run.frames if pipeline.kind == "microphone" else \
        run.inputs.reshape(len(run.inputs), -1)
    return HostRun(run.inputs, outputs, run.times_ms, rows, steps, decisions)


def _check_boot(boot: protocol.Boot, build, pipeline) -> None:
    from ..pipeline.settings import summary

    if boot.model_sha256 != build.model_sha256:
        raise DeviceError(
            f"the board runs another model (sha256 {boot.model_sha256[:12]}…) than the last "
            f"build ({(build.model_sha256 or '?')[:12]}…)",
            hint="flash the last build first: `tinyforge flash`")
    if boot.extra.get("pipe") != pipeline.kind or boot.extra.get("pipeline") != summary(pipeline):
        raise DeviceError(
            f"the firmware's pipeline (BOOT pipe={boot.extra.get('pipe', 'none')}) is not the "
            f"last build's ({pipeline.kind}: {summary(pipeline)})",
            hint="flash the last build first: `tinyforge flash`")


def _stream_values(recording, pipeline) -> tuple[np.ndarray, int | None]:
    if pipeline.kind == "imu":
        return np.ascontiguousarray(recording.counts, dtype=np.int16).reshape(-1), \
            int(recording.rate_mhz)
    return np.ascontiguousarray(recording.samples, dtype=np.int16), None


def compare(events: replay.ReplayEvents, host: HostRun, pipeline, recording: str,
            reference: str, features: bool, seconds: float, labels) -> ReplayReport:
    mismatches: list[dict] = []
    exact = same_times = 0
    for index, result in enumerate(events.results):
        if index >= len(host.outputs):
            mismatches.append({"what": "inference", "index": index, "device": "extra",
                               "host": "none"})
            continue
        expected = np.asarray(host.outputs[index]).reshape(-1)
        device = _raw_output(result)
        if device is not None and len(device) == expected.size and \
                _same_values(device, expected):
            exact += 1
        else:
            mismatches.append({"what": "inference", "index": index, "device": device,
                               "host": expected.tolist()})
        if result.seq == index and result.extra.get("t") == str(int(host.times_ms[index])):
            same_times += 1
        else:
            mismatches.append({"what": "time", "index": index,
                               "device": [result.seq, result.extra.get("t")],
                               "host": [index, int(host.times_ms[index])]})
    feature_rows = exact_rows = host_rows = None
    if features:
        feature_rows, host_rows = len(events.features), len(host.features)
        exact_rows = 0
        for index, row in enumerate(events.features):
            if index < host_rows and row.n == index and \
                    np.array_equal(np.asarray(row.values), np.asarray(host.features[index])):
                exact_rows += 1
            elif len(mismatches) < 40:
                mismatches.append(_feature_mismatch(index, row, host.features, host_rows))
    decisions = [{"seq": d.seq, "class": d.cls, "label": d.label, "score": d.score, "t": d.t}
                 for d in events.decisions]
    same_decisions = decisions == host.decisions
    latencies = [r.us for r in events.results] or [0]
    passed = (len(events.results) == len(host.outputs) == exact == same_times and same_decisions
              and (not features or feature_rows == host_rows == exact_rows))
    return ReplayReport(
        recording=recording, input=pipeline.kind, seconds=round(seconds, 6),
        reference=reference, inferences=len(events.results), host_inferences=len(host.outputs),
        exact_outputs=exact, same_times=same_times, feature_rows=feature_rows,
        exact_feature_rows=exact_rows, host_feature_rows=host_rows, decisions=decisions,
        host_decisions=host.decisions, same_decisions=same_decisions,
        stream={"lines": events.lines, "seconds": round(events.seconds, 3),
                "capacity": events.capacity},
        latency_us={"min": min(latencies), "median": float(np.median(latencies)),
                    "max": max(latencies)},
        passed=passed, mismatches=mismatches[:40])


def _same_values(device: list, expected: np.ndarray) -> bool:
    """Raw integers exactly; float32 outputs as the protocol carries them (7 significant
    digits: within 5e-7 relative, docs/protocol.md 1.2)."""
    if expected.dtype.kind != "f":
        return bool(np.array_equal(np.asarray(device, dtype=np.int64), expected.astype(np.int64)))
    host = expected.astype(np.float64)
    return bool(np.all(np.abs(np.asarray(device, dtype=np.float64) - host)
                       <= 5e-7 * np.abs(host) + 1e-45))


def _raw_output(result: protocol.Result):
    if not result.outputs:
        return None
    first = result.outputs[0]
    return first.q if first.q is not None else first.f


def _feature_mismatch(index: int, row, host_features, host_rows: int) -> dict:
    """A feature row that differs: from its first differing value on (12 values), so the
    report shows the difference even when it is far into the row."""
    device = np.asarray(row.values)
    if index >= host_rows:
        return {"what": "feature row", "index": index, "n": row.n, "column": 0,
                "device": device[:12].tolist(), "host": "none"}
    expected = np.asarray(host_features[index])
    width = min(device.size, expected.size)
    differing = np.flatnonzero(device[:width] != expected[:width])
    column = int(differing[0]) if differing.size else width
    return {"what": "feature row", "index": index, "n": row.n, "column": column,
            "values": [int(device.size), int(expected.size)],
            "device": device[column:column + 12].tolist(),
            "host": expected[column:column + 12].tolist()}

