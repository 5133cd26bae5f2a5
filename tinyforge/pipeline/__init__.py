"""The sensor input pipeline: configuration as data, its host reference, its device settings.

For training code::

    from tinyforge import pipeline
    p = pipeline.load_pipeline("tinyforge.toml", model="model.tflite")   # or model=None
    x = pipeline.features("clip.wav", p)        # exactly the model inputs the device computes
    r = pipeline.run("clip.wav", p, model="model.tflite")   # + outputs and decisions

TensorFlow is imported only where the audio frontend runs (docs/pipeline.md).
"""

from __future__ import annotations

from .checks import board_inputs, check_pipeline, pipeline_for_board
from .config import CONFIG_NAME, KINDS, read_config
from .derive import Pipeline, TensorSpec, load_pipeline
from .readers import AudioRecording, ImuRecording, read_recording
from .reference import PipelineRun, compute, compute_many, features, features_many, run

__all__ = ["CONFIG_NAME", "KINDS", "AudioRecording", "ImuRecording", "Pipeline",
           "PipelineRun", "TensorSpec", "board_inputs", "check_pipeline", "compute",
           "compute_many", "features", "features_many", "load_pipeline", "pipeline_for_board",
           "read_config", "read_recording", "run"]
