"""`tinyforge inspect` as a library: everything about a .tflite for one board, in one report.

Nothing here imports TensorFlow. Unlike `build`, a failing check does not stop the report:
unsupported ops, a host-runtime failure and a misfit are all listed together.
"""

from __future__ import annotations

from pathlib import Path

from .. import units
from ..board import profiles
from ..board.tflm_source import resolve_tflm_source
from ..errors import ModelFileError, TinyforgeError
from ..model import checks, compat, fit, memory_report, reader
from ..model.arena import summary_note
from ..pipeline.ram import static_ram
from ..project.firmware import replays
from . import memory_plan as memory_plan_flow


def inspect_model(path: Path, *, board_id: str, tflm: Path | None = None,
                  arena: str = "auto", memory_plan: str = memory_plan_flow.DEFAULT_MODE,
                  input: str | None = None, config: Path | None = None) -> dict:
    """The inspection report of the model at `path` for `board_id` (see docs/cli.md).

    The arena and the fit are those of the model `build --memory-plan MODE` would embed, with
    the sensor pipeline `build --input INPUT [--config CONFIG]` would compile in."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(f"{path} is a Keras/SavedModel model; inspect reads .tflite files",
                             hint=f"convert it first: tinyforge build --model {path} "
                                  "--calibration SAMPLES --no-compile")
    board = profiles.load_board(board_id)
    data, _ = reader.read_model_file(path, flash_bytes=board.flash_bytes)
    tflm_root = resolve_tflm_source(tflm)
    prepared = checks.prepare(data, path.name, board, tflm_root=tflm_root, strict=False)
    pipeline = _pipeline(path, board, prepared.info, input, config)
    pipeline_ram = static_ram(pipeline, replays=replays(board),
                              pointer_bytes=board.pointer_bytes)
    shown, choice, memory_error = prepared, None, None
    if prepared.arena is not None:
        try:
            planned, choice = memory_plan_flow.plan_model(prepared, board, memory_plan,
                                                          tflm_root=tflm_root, strict=False)
        except TinyforgeError as error:
            planned, memory_error = prepared, error.message
        shown = _measure(prepared, planned, choice, board, tflm_root, arena, pipeline_ram)
    figures = None
    if memory_error is None:
        try:
            figures = memory_report.memory_figures(
                prepared.data, prepared.info.name,
                result=choice.outcome.plan if choice is not None else None)
        except TinyforgeError as error:
            memory_error = error.message
    report = prepared.info.to_json()
    report.update({
        "board": board.id,
        "tflm": f"{prepared.resolver.library} {prepared.resolver.version}",
        "resolver_methods": {op.name: op.method for op in prepared.ops},
        "unsupported_ops": prepared.unsupported_ops,
        "unsupported_features": prepared.unsupported_features,
        "known_differences": [found.to_json() for found in prepared.known_differences],
        "host_run": {"ok": prepared.host_error is None, "error": prepared.host_error,
                     "reference": prepared.reference.to_json() if prepared.reference else None},
        "arena_bytes": shown.arena.arena_bytes if shown.arena else None,
        "arena": shown.arena.to_json() if shown.arena else None,
        "fit": shown.fit.to_json() if shown.fit else None,
        "fits": bool(shown.fit and shown.fit.fits and not prepared.unsupported_ops
                     and not prepared.unsupported_features),
        "memory": figures,
        "memory_plan": choice.to_json() if choice else None,
        "memory_error": memory_error,
        "pipeline": pipeline.kind,
    })
    return report


def _pipeline(path: Path, board: profiles.Board, info: reader.ModelInfo, kind: str | None,
              config: Path | None):
    """The pipeline `build` would derive for this model: from --input and tinyforge.toml,
    refused the same way (a shape no sensor feeds, a sensor the board lacks)."""
    from ..pipeline import check_pipeline, load_pipeline
    from ..pipeline.config import find_config

    pipeline = load_pipeline(config or find_config(path.parent), model=info, kind=kind)
    check_pipeline(pipeline, board, info)
    return pipeline


def _measure(prepared: checks.PreparedModel, planned: checks.PreparedModel,
             choice: memory_plan_flow.MemoryPlanChoice | None, board: profiles.Board,
             tflm_root: Path | None, arena: str,
             pipeline_ram: dict[str, int]) -> checks.PreparedModel:
    """The arena (and fit) of the model build would embed, measured as build measures it."""
    # The device measurement needs firmware that starts: not with ops it lacks, nor with a
    # schema version its TFLM refuses at boot.
    on_device = (not prepared.unsupported_ops
                 and compat.schema_problem(prepared.info) is None)

    def measure(model: checks.PreparedModel) -> None:
        if not on_device:
            return               # the host figure checks.prepare measured stays
        from . import device_arena
        model.arena = device_arena.choose(model, board, tflm_root, arena,
                                          explain=model is prepared)
        from .fit_learning import lookup
        model.fit = fit.estimate(board, model.info, op_count=len(model.ops),
                                 arena_bytes=model.arena.arena_bytes, measured=lookup(board),
                                 pipeline_ram=pipeline_ram)

    if choice is None:
        measure(prepared)
        return prepared
    return memory_plan_flow.settle(choice, planned, prepared, measure)


def summary_lines(report: dict) -> list[str]:
    """The human-readable form of an inspection report."""
    lines = [
        f"model      {report['model']}, {units.size(report['model_bytes'])}, sha256 "
        f"{report['sha256']}",
        f"schema     v{report['schema_version']}, {len(report['subgraphs'])} subgraph(s), "
        f"tensor types: {', '.join(report['tensor_dtypes'])}",
    ]
    for kind in ("inputs", "outputs"):
        for tensor in report[kind]:
            quant = (f" scale {tensor['scale']:.6g} zero_point {tensor['zero_point']}"
                     if tensor["scale"] is not None else "")
            lines.append(f"{kind[:-1]:<10} {tensor['name']}: {tensor['dtype']} "
                         f"{tensor['shape']}{quant}")
    lines.append(f"ops        {', '.join(report['ops']) or '(none)'}")
    board = f"board      {report['board']} ({report['tflm']})"
    lines.append(board)
    if report["unsupported_ops"]:
        lines.append(f"UNSUPPORTED by {report['tflm']}: {', '.join(report['unsupported_ops'])}")
    for feature in report["unsupported_features"]:
        lines.append(f"WRONG on {report['tflm']}: {feature}")
    if report["host_run"].get("reference"):
        lines.append(f"reference  {report['host_run']['reference']['description']}")
    wheel = (report["host_run"].get("reference") or {}).get("kind") == "wheel"
    for found in report.get("known_differences", []):
        lines.append(f"{'DIFFERS' if wheel else 'differs':<10} op {found['index']} "
                     f"{found['op']} ({found['dtype']}): its kernel in {report['tflm']} is "
                     f"not the wheel's (up to {found['max_lsb']} LSB measured)"
                     + ("; the wheel is the reference here, --tflm compares with the "
                        "board's own" if wheel else ""))
    if not report["host_run"]["ok"]:
        lines.append("host TFLM  FAILED:")
        lines.extend(f"  {line}" for line in report["host_run"]["error"].splitlines())
    if report["arena"]:
        note = report["arena"]["note"]
        if report["host_run"].get("reference"):  # named on its own line above
            note = summary_note(note, (report["arena"]["host"] or {}).get("runtime"))
        lines.append(f"arena      {units.size(report['arena_bytes'])} ({note})")
    if report.get("memory"):
        lines.extend(f"{'memory' if n == 0 else '':<10} {line}"
                     for n, line in enumerate(memory_report.human_lines(report["memory"])))
    if report.get("memory_plan"):
        lines.extend(f"{'':<10} {line}" for line in report["memory_plan"]["summary"])
    if report.get("memory_error"):
        lines.append(f"memory     not analysed: {report['memory_error']}")
    if report["fit"]:
        fit = report["fit"]
        lines.append(f"flash      ~{units.size(fit['flash_total'])} of "
                     f"{units.size(fit['flash_limit'])}"
                     f"{'' if fit['fits_flash'] else '  DOES NOT FIT'}")
        lines.append(f"RAM        ~{units.size(fit['ram_total'])} of {units.size(fit['ram_limit'])}"
                     f" (arena {units.size(fit['ram_arena'])}, sketch "
                     f"{units.size(fit['ram_sketch'])}"
                     + (f", {report['pipeline']} pipeline {units.size(fit['ram_pipeline'])}: "
                        + ", ".join(f"{name.replace('_', ' ')} {units.size(size)}"
                                    for name, size in fit["ram_pipeline_parts"].items())
                        if fit.get("ram_pipeline_parts") else "") + ")"
                     f"{'' if fit['fits_ram'] else '  DOES NOT FIT'}")
        if fit.get("framework_measured"):
            lines.append(f"framework  {units.size(fit['flash_framework'])} flash, "
                         f"{units.size(fit['ram_framework'])} RAM, measured from "
                         f"{fit['framework_measured']['source']}")
    lines.append(f"verdict    {'fits and runs' if report['fits'] else 'NOT buildable as is'}")
    return lines
