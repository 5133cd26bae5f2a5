"""`tinyforge features`: what the device pipeline computes from a recording."""

from __future__ import annotations

from pathlib import Path


def register(subparsers, parents) -> None:
    parser = subparsers.add_parser(
        "features", parents=parents, help="the sensor pipeline's model inputs for a recording",
        description="Run the device's input pipeline on a recording, on the host: resampling, "
                    "windows, normalisation and quantisation for the IMU (.csv/.npy/.npz); "
                    "the micro frontend for audio (16 kHz mono 16-bit .wav). With --model, "
                    "also the host TFLM outputs and the decisions. Writes .npy/.npz or "
                    "prints a summary. Format of tinyforge.toml: docs/pipeline.md.")
    parser.add_argument("recording", type=Path, help=".wav (microphone); .csv, .npy, .npz (imu)")
    parser.add_argument("--config", type=Path,
                        help="tinyforge.toml (default: the one beside --model, if any)")
    parser.add_argument("--model", type=Path,
                        help=".tflite the pipeline feeds: defaults from its input, outputs "
                             "and decisions on the host")
    parser.add_argument("--input", choices=("imu", "microphone"),
                        help="the sensor (default: pipeline.input of tinyforge.toml)")
    parser.add_argument("--board", help="also check that this board has the sensor")
    parser.add_argument("--labels", type=Path, help="class names, one per line (for decisions)")
    parser.add_argument("--output", "-o", type=Path,
                        help="write the inputs to .npy, or everything to .npz")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from .. import jsonout
    from ..flows.features import compute_features

    report = compute_features(args.recording, config=args.config, model=args.model,
                              kind=args.input, board_id=args.board, labels=args.labels,
                              output=args.output)
    if args.json:
        jsonout.emit(report.to_json())
    else:
        print("\n".join(report.lines()))
    return 0
