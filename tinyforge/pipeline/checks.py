"""Can this board run this pipeline for this model? Checked before anything is rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..board.profiles import Board
from ..errors import PipelineShapeError, SensorUnavailableError
from ..model.reader import ModelInfo, read_model_file
from .derive import Pipeline, TensorSpec, load_pipeline

def board_inputs(board: Board) -> list[str]:
    """The sensor pipelines a board's firmware can feed: its profile's `sensors.inputs`."""
    return list(board.inputs)


def check_pipeline(pipeline: Pipeline, board: Board, model: ModelInfo | None = None) -> None:
    """Raise when `board` has no source for the pipeline's input, or when `model`'s input is
    not the tensor the pipeline was derived for. The host pipeline always passes."""
    if pipeline.kind == "host":
        return
    inputs = board_inputs(board)
    if pipeline.kind not in inputs:
        raise SensorUnavailableError(
            f"board '{board.id}' has no {pipeline.kind}: its profile ({board.path.name}) lists "
            f"{', '.join(inputs) if inputs else 'no sensor inputs'} in [sensors] inputs",
            hint=f"use --input host (inputs sent over serial), or a board whose profile lists "
                 f"'{pipeline.kind}' in [sensors] inputs (see `tinyforge boards`, docs/boards.md)")
    if model is not None and model.inputs and pipeline.input != TensorSpec.of(model.inputs[0]):
        found = TensorSpec.of(model.inputs[0])
        raise PipelineShapeError(
            f"the pipeline was derived for an input {pipeline.input.dtype} "
            f"{list(pipeline.input.shape)} but {model.name}'s input is {found.dtype} "
            f"{list(found.shape)} (scale {found.scale}, zero point {found.zero_point})",
            hint="load the pipeline for this model: load_pipeline(config, model=...)")


def pipeline_for_board(board: Board, model: Any, *, config: Path | None = None,
                       kind: str | None = None) -> Pipeline:
    """The pipeline of `config` for `model` on `board`, checked: what `build --input` uses.

    `model`: a .tflite path or a `ModelInfo`.
    """
    info = model if isinstance(model, ModelInfo) else read_model_file(Path(model))[1]
    pipeline = load_pipeline(config, model=info, kind=kind)
    check_pipeline(pipeline, board, info)
    return pipeline
