"""`tinyforge build` as a library: model -> checks -> arena -> fit -> project -> PlatformIO.

Every check runs before anything is written or compiled, so bad input never leaves a
half-made project behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import resources, units, userfiles
from ..board import profiles
from ..board.tflm_source import resolve_tflm_source
from ..errors import CalibrationError, InputError, ModelFileError
from ..model import arena as arena_mod
from ..model import calibration, checks, compat, fit, host_runtime, reader
from ..project import firmware, last_build, writer
from ..toolchain import pio
from . import fit_learning, memory_plan

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
MAX_LABELS_BYTES = 1 << 20
# Control characters other than tab: a label is one line of text.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
DEFAULT_BOARD = "nano33ble"
EXAMPLE_MODEL = "gesture_int8.tflite"


@dataclass
class BuildOptions:
    board: str = DEFAULT_BOARD
    model: Path | None = None
    calibration: Path | None = None
    labels: Path | None = None
    demo_input: Path | None = None
    quantize: str = "int8"
    project_dir: Path | None = None
    tflm: Path | None = None
    compile: bool = True
    force: bool = False
    overwrite: bool = False
    arena: str = "auto"   # "auto", "host" or "device" (docs/arena.md)
    memory_plan: str = "auto"  # "auto", "off" or "replace" (docs/memory.md)
    profile: bool = False  # compile in the per-op profiler (PROF messages, docs/cost.md)
    debug_layers: bool = False  # the layer report of `validate --layers` (docs/reference.md)
    # The sensor pipeline: host, imu or microphone (None: tinyforge.toml's, else host), and
    # its tinyforge.toml (None: the one beside the model or in the project, docs/pipeline.md).
    input: str | None = None
    config: Path | None = None


@dataclass
class BuildResult:
    project_dir: Path
    board: profiles.Board
    model: checks.PreparedModel
    plan: writer.RenderPlan
    labels: list[str]
    memory_plan: memory_plan.MemoryPlanChoice
    build: pio.BuildReport | None = None
    pipeline: object | None = None   # tinyforge.pipeline.Pipeline

    def to_json(self) -> dict:
        model = self.model
        return {
            "project_dir": str(self.project_dir), "board": self.board.id,
            "model": {"name": model.info.name, "sha256": model.info.sha256,
                      "bytes": model.info.size},
            "ops": [op.name for op in model.ops],
            "arena": model.arena.to_json() if model.arena else None,
            "reference": model.reference.to_json() if model.reference else None,
            "known_differences": [found.to_json() for found in model.known_differences],
            "fit": model.fit.to_json() if model.fit else None,
            "conversion": model.conversion,
            "memory_plan": self.memory_plan.to_json(),
            "files": self.plan.actions,
            "pipeline": self.pipeline_json(),
            "build": self.build.to_json() if self.build else None,
        }


    def pipeline_json(self) -> dict:
        from ..pipeline.settings import summary

        if self.pipeline is None or self.pipeline.kind == "host":
            return {"input": "host"}
        return dict(self.pipeline.to_json(), summary=summary(self.pipeline))


def build(options: BuildOptions) -> BuildResult:
    """Render (and unless `compile=False`, build) the firmware project for a model."""
    board = profiles.load_board(options.board)
    # PlatformIO runs even with --no-compile (its project check): an unwritable core dir is
    # reported now, before anything is converted or written.
    pio.require_core_dir(pio.core_dir_for(board))
    tflm_root = resolve_tflm_source(options.tflm)
    source = options.model or resources.example_dir() / EXAMPLE_MODEL
    labels_path, labels = _labels(options)
    with tempfile.TemporaryDirectory(prefix="tinyforge-") as workdir:
        data, conversion = _tflite_bytes(source, options, board, Path(workdir))
    prepared = checks.prepare(data, source.name, board, quantize=options.quantize,
                              tflm_root=tflm_root, strict=True, force=options.force)
    prepared.conversion = conversion
    _check_labels(labels, labels_path, prepared.info)
    demo = _demo_input(options, prepared.info)
    project_dir = Path(options.project_dir or last_build.DEFAULT_ROOT / board.id)
    pipeline = _pipeline(options, board, prepared.info, source, project_dir)
    # A debug-layers firmware keeps every tensor (a linear plan): no offline plan applies.
    plan_mode = "off" if options.debug_layers else options.memory_plan
    planned, choice = memory_plan.plan_model(prepared, board, plan_mode,
                                             quantize=options.quantize, tflm_root=tflm_root,
                                             strict=True, force=options.force)
    inputs = firmware.FirmwareInputs(
        board=board, model=planned.data, info=planned.info, ops=planned.ops,
        resolver=planned.resolver, arena=planned.arena, labels=labels, demo_input=demo,
        tflm_source=tflm_root, memory_plan=choice.to_json(stable=True), profile=options.profile,
        debug_layers=options.debug_layers, pipeline=pipeline,
        pipeline_config=pipeline.source.read_bytes() if pipeline.source else None)
    # The project as it was, for the report: the arena measurement may write it first.
    before = writer.plan(project_dir, firmware.project_files(inputs), overwrite=options.overwrite)
    chosen = memory_plan.settle(
        choice, planned, prepared,
        lambda model: _device_arena(model, board, tflm_root, options, project_dir,
                                    len(demo or b""), _pipeline_ram(pipeline, board),
                                    explain=model is prepared))
    if not options.force:
        fit.check(chosen.fit, board, chosen.info.name)
    inputs = dataclasses.replace(inputs, model=chosen.data, info=chosen.info,
                                 arena=chosen.arena, memory_plan=choice.to_json(stable=True))
    files = firmware.project_files(inputs)
    plan = writer.write(project_dir, files, firmware.manifest(inputs), overwrite=options.overwrite)
    plan.actions = writer.actions_since(before, files, plan)
    last_build.record(project_dir)  # flash, monitor and validate use it without --project-dir
    result = BuildResult(project_dir, board, chosen, plan, labels, choice, pipeline=pipeline)
    core_dir = pio.core_dir_for(board)
    pio.validate_project(project_dir, core_dir)
    if options.compile:
        pio.check_packages(board, project_dir, core_dir, local_tflm=tflm_root is not None)
        log.info("building with PlatformIO...")
        result.build = pio.build(project_dir, board, core_dir,
                                 on_line=pio.progress_logger("build"))
        if result.build.firmware:
            # Later estimates for this board use the framework's figures from this map.
            fit_learning.record(board, Path(result.build.firmware))
    return result


def _pipeline(options: BuildOptions, board: profiles.Board, info: reader.ModelInfo,
              source: Path, project_dir: Path):
    """The sensor pipeline the firmware runs, checked against the board and the model before
    anything is rendered (a shape no sensor can feed, a sensor the board lacks)."""
    from ..pipeline import check_pipeline, load_pipeline
    from ..pipeline.config import find_config

    model_dir = source if source.is_dir() else source.parent
    config = options.config or find_config(model_dir, project_dir)
    pipeline = load_pipeline(config, model=info, kind=options.input)
    check_pipeline(pipeline, board, info)
    if pipeline.kind != "host":
        log.info("pipeline: %s (%s)", pipeline.kind, config or "defaults, no tinyforge.toml")
    return pipeline


def _pipeline_ram(pipeline, board: profiles.Board) -> dict[str, int]:
    """The sensor pipeline's RAM by part, as the firmware rendered for `board` declares it."""
    from ..pipeline.ram import static_ram

    return static_ram(pipeline, replays=firmware.replays(board),
                      pointer_bytes=board.pointer_bytes)


def _device_arena(prepared: checks.PreparedModel, board: profiles.Board, tflm_root: Path | None,
                  options: BuildOptions, project_dir: Path, demo_bytes: int,
                  pipeline_ram: dict[str, int], *, explain: bool) -> None:
    """Replace the host arena estimate by a measurement on the emulated Cortex-M4 if possible,
    and estimate the fit of the firmware as it will be built (its demo input and its sensor
    pipeline included)."""
    from . import device_arena

    # For the emulated board itself, measuring in the project compiles TFLM once for both
    # builds; that render refuses to replace files the user edited, like the final one.
    measure_in = project_dir if board.id == device_arena.MEASURE_BOARD else None
    plan = device_arena.choose(prepared, board, tflm_root, options.arena, project_dir=measure_in,
                               overwrite=options.overwrite, downloads_in=project_dir,
                               explain=explain)
    if options.debug_layers:
        plan = arena_mod.preserving_all_tensors(plan, prepared.data, prepared.info.name)
    prepared.arena = plan
    prepared.fit = fit.estimate(board, prepared.info, op_count=len(prepared.ops),
                                arena_bytes=plan.arena_bytes, demo_input_bytes=demo_bytes,
                                measured=fit_learning.lookup(board), pipeline_ram=pipeline_ram)


def _tflite_bytes(source: Path, options: BuildOptions, board: profiles.Board,
                  workdir: Path) -> tuple[bytes, dict | None]:
    """The .tflite to build: read as is, or converted from Keras/SavedModel (with a report of
    the int8 model's accuracy against the float model on the calibration samples)."""
    if not source.exists():
        raise ModelFileError(f"model {source} does not exist", hint="check the path given to --model")
    if not (source.is_dir() or source.suffix.lower() in KERAS_SUFFIXES):
        # A .tflite, or a file of another name that must prove it is one.
        data, _ = reader.read_model_file(source, flash_bytes=board.flash_bytes)
        return data, None
    from ..model import accuracy, convert

    result = convert.convert(source, calibration=options.calibration, quantize=options.quantize,
                             output=workdir / "model.tflite",
                             per_channel_dense=compat.per_channel_fc_supported(board),
                             flash_bytes=board.flash_bytes)
    data = result.output.read_bytes()
    report = result.to_json()
    report["summary"] = [f"{result.source_kind} -> {result.quantize} .tflite in "
                         f"{units.seconds(result.seconds)}"
                         + ("; batch fixed to 1" if result.batch_was_fixed else "")]
    if result.reference is not None:
        measured = accuracy.compare(data, result.reference, model_name=source.name)
        report["accuracy"] = measured.to_json()
        report["summary"].append(measured.summary())
    return data, report


def _labels(options: BuildOptions) -> tuple[Path | None, list[str]]:
    path = options.labels
    if path is None and options.model is None:
        path = resources.example_dir() / "labels.txt"
    if path is None:
        return None, []
    text = userfiles.read_text(Path(path), what="labels file", limit=MAX_LABELS_BYTES,
                               hint="check the path given to --labels",
                               too_large="a labels file holds one short name per output class")
    labels = [line for line in text.splitlines() if line.strip()]
    for number, label in enumerate(labels, 1):
        if _CONTROL.search(label):
            raise InputError(f"labels file {path}: label {number} holds control characters; "
                             "is it a text file?",
                             hint="give a UTF-8 text file with one label per line")
    return path, labels


def _check_labels(labels: list[str], path: Path | None, info: reader.ModelInfo) -> None:
    if not labels:
        return
    classes = info.outputs[0].shape[-1] if info.outputs and info.outputs[0].shape else 0
    if len(labels) != classes:
        raise InputError(f"labels file {path} has {len(labels)} labels but the model's first "
                         f"output has {classes} values",
                         hint="give one label per output class, in output order")


def _demo_input(options: BuildOptions, info: reader.ModelInfo) -> bytes | None:
    path = options.demo_input
    if path is None and options.model is None:
        path = resources.example_dir() / "demo_input.npy"
    if path is None:
        return None
    if len(info.inputs) != 1:
        raise InputError("a demo input can only be given for a model with one input tensor",
                         hint="drop --demo-input; the host sends inputs with `tinyforge "
                              "validate`")
    tensor = info.inputs[0]

    def check_count(shape: tuple[int, ...]) -> None:
        # Checked on the .npy header, before any value is read.
        count = math.prod(shape)
        if count != tensor.element_count:
            raise CalibrationError(
                f"demo input {path} has {count:,} values; the model's input "
                f"{tensor.shape} needs {tensor.element_count:,}",
                hint="save one sample shaped like the model's input with numpy.save")

    values = calibration.read_npy(Path(path), what="demo input", check_shape=check_count,
                                  hint="give a .npy array shaped like the model's input")
    if tensor.dtype == "float32":
        return np.asarray(values, dtype="<f4").tobytes()
    if values.dtype.kind == "f":
        quantization = host_runtime.Quantization(tensor.scale, tensor.zero_point, tensor.dtype)
        return quantization.quantize(values.reshape(-1)).tobytes()
    return np.asarray(values, dtype=tensor.dtype).tobytes()
