"""The files of a model firmware project, rendered from `firmware_templates/`.

`project_files()` turns checked inputs (board, model, resolved ops, arena plan, labels, demo
input) into {relative path: bytes}; `render.write()` puts them on disk. Everything here is a
pure function of its inputs: no timestamps, no absolute paths except those the user chose
(a local TFLM tree), sorted iteration everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..board.float_code import NO_CONTRACTION
from ..board.profiles import Board
from ..board.resolver import ResolverTable
from ..model.arena import ArenaPlan
from ..model.compat import ResolvedOp
from ..model import memory_report
from ..model.fit import HOST_LINE_BYTES
from ..model.reader import ModelInfo, TensorInfo
from ..pipeline import settings as pipeline_settings
from ..pipeline.derive import Pipeline
from . import templates

PROTOCOL_VERSION = 1
_PROJECT_TEMPLATES = "project"
# The tinyforge.toml the pipeline was made from: `validate --replay` derives the same pipeline.
PIPELINE_CONFIG = ".tinyforge/pipeline.toml"


@dataclass(frozen=True)
class FirmwareInputs:
    board: Board
    model: bytes
    info: ModelInfo
    ops: list[ResolvedOp]
    resolver: ResolverTable
    arena: ArenaPlan
    labels: list[str]
    demo_input: bytes | None     # raw bytes of all input tensors, or None
    tflm_source: Path | None     # a local TFLM library tree instead of the pinned dependency
    # What --memory-plan did (flows.memory_plan.MemoryPlanChoice.to_json(stable=True)); None
    # for firmware no plan was considered for (the arena measurement's).
    memory_plan: dict | None = None
    profile: bool = False        # the per-op profiler and PROF messages (build --profile)
    # A debug build for `validate --layers`: every tensor kept, LAYERS and TENSOR answered.
    debug_layers: bool = False
    # The sensor pipeline (docs/pipeline.md); None or kind "host": inputs come over serial.
    pipeline: Pipeline | None = None
    pipeline_config: bytes | None = None   # its tinyforge.toml, kept for `validate --replay`


def sensor_pipeline(inputs: FirmwareInputs) -> Pipeline | None:
    """The pipeline when the firmware reads a sensor (IMU or microphone), else None."""
    pipeline = inputs.pipeline
    return pipeline if pipeline is not None and pipeline.kind != "host" else None


def replays(board: Board) -> bool:
    """Whether the board's sensor samples come from the host (an emulated board has none)."""
    return board.emulated


def project_files(inputs: FirmwareInputs) -> dict[str, bytes]:
    """Every file of the project, keyed by its path relative to the project root."""
    pipeline = sensor_pipeline(inputs)
    files = templates.render_tree(_PROJECT_TEMPLATES, _context(inputs), inputs.board,
                                  sensors=pipeline is not None, replay=replays(inputs.board))
    if inputs.profile:
        files.update(templates.profiler_sources(inputs.board))
    if pipeline is not None:
        files.update(pipeline_settings.device_files(pipeline))
        if inputs.pipeline_config is not None:
            files[PIPELINE_CONFIG] = inputs.pipeline_config
    files[".tinyforge/model.tflite"] = inputs.model
    return files


def manifest(inputs: FirmwareInputs) -> dict:
    """What the project was made from; `flash`, `monitor` and `validate` read it back."""
    info = inputs.info
    extra = {"profile": True} if inputs.profile else {}
    return {
        **extra,
        "tinyforge_version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "board": inputs.board.id,
        "environment": inputs.board.id,
        "model": {"name": info.name, "sha256": info.sha256, "bytes": info.size,
                  "path": ".tinyforge/model.tflite"},
        "ops": [op.name for op in inputs.ops],
        "arena": inputs.arena.to_json_stable(),
        "tflm": {"library": inputs.resolver.library, "version": inputs.resolver.version,
                 "dependency": tflm_dependency(inputs.board, inputs.tflm_source)},
        "labels": inputs.labels,
        "demo_input": inputs.demo_input is not None,
        "memory_plan": inputs.memory_plan,
        "debug_layers": inputs.debug_layers,
        "pipeline": _pipeline_manifest(inputs),
    }


def _pipeline_manifest(inputs: FirmwareInputs) -> dict:
    """The pipeline as `validate --replay` and `monitor` need it back (docs/pipeline.md)."""
    pipeline = sensor_pipeline(inputs)
    if pipeline is None:
        return {"input": "host"}
    data = pipeline.to_json()
    # The settings file is found again by its content, never by a path of this machine.
    data.pop("source", None)
    data["summary"] = pipeline_settings.summary(pipeline)
    data["replay"] = replays(inputs.board)
    return data


def fixed_layout(inputs: FirmwareInputs) -> memory_report.FixedLayout | None:
    """The arena layout compiled into the firmware, if any (docs/memory.md): for a model that
    carries an offline plan, except in a debug build (which keeps every tensor apart)."""
    if inputs.debug_layers:
        return None
    return memory_report.fixed_layout(inputs.model, inputs.info.name)


def tflm_dependency(board: Board, tflm_source: Path | None) -> str:
    """The lib_deps entry: the pinned library, or a local tree given by the user."""
    library = board.tflm["library"]
    if tflm_source is not None:
        return f"{library}=symlink://{Path(tflm_source).resolve()}"
    return f"{library}={board.tflm['source']}"


def build_flags(board: Board) -> list[str]:
    """The firmware's build_flags: float code rounds as on the host (board.float_code), then
    the profile's own, its TFLM library's last."""
    flags = list(NO_CONTRACTION) + list(board.platformio.get("build_flags", [])) \
        + list(board.tflm.get("build_flags", []))
    return list(dict.fromkeys(flags))


def _context(inputs: FirmwareInputs) -> dict:
    board, info = inputs.board, inputs.info
    input_bytes = sum(t.byte_size for t in info.inputs)
    pio = board.platformio
    pipeline = sensor_pipeline(inputs)
    extra_options = dict(pio.get("extra_options", {}))
    if board.tflm.get("exclude_sources"):
        extra_options["custom_tflm_exclude"] = list(board.tflm["exclude_sources"])
    return {
        "version": __version__,
        "board": board,
        "platform": templates.platform_spec(board),
        "tflm_dependency": tflm_dependency(board, inputs.tflm_source),
        # The sensor libraries of the board profile, only when the pipeline reads that sensor.
        "sensor_dependencies": board.sensor_dependencies(pipeline.kind if pipeline else "host"),
        "tflm_include": board.tflm.get("include", ""),
        "build_flags": build_flags(board),
        "build_unflags": list(pio.get("build_unflags", [])),
        "extra_options": sorted(extra_options.items()),
        "model": info,
        "model_array": templates.c_byte_array(inputs.model),
        "ops": inputs.ops,
        "resolver": inputs.resolver,
        "resolver_origin": _origin(inputs.resolver),
        "arena": inputs.arena,
        "resource_variables": info.resource_variables,
        "debug_layers": inputs.debug_layers,
        "fixed_plan": fixed_layout(inputs),
        "inputs": [_tensor_context(t) for t in info.inputs],
        "outputs": [_tensor_context(t) for t in info.outputs],
        "input_bytes": input_bytes,
        # The same for every model (and counted by the fit estimate): chunked IN.
        "max_line_length": HOST_LINE_BYTES,
        "labels": inputs.labels,
        "demo_input": inputs.demo_input is not None,
        "demo_array": templates.c_byte_array(inputs.demo_input or b""),
        "profile": inputs.profile,
        # At least one: a zero-length array is not C++.
        "profiled_ops": max(1, info.subgraphs[0].operator_count),
        "pipeline": _pipeline_context(pipeline, board),
    }


def _pipeline_context(pipeline: Pipeline | None, board: Board) -> dict | None:
    if pipeline is None:
        return None
    return {"kind": pipeline.kind, "replay": replays(board),
            "decisions": pipeline.decisions is not None,
            "input_dtype": pipeline.input.dtype,
            "output_dtype": pipeline.output.dtype if pipeline.output else None}


def _tensor_context(tensor: TensorInfo) -> dict:
    return {"name": tensor.name, "dtype": tensor.dtype, "shape": tensor.shape,
            "bytes": tensor.byte_size}


def _origin(table: ResolverTable) -> str:
    # Only the file name: an absolute path would make the project differ between machines.
    return Path(table.source).name
