"""`build`/`inspect --memory-plan auto|off|replace`: the planned model is what the firmware
embeds, what the arena is measured with and what the manifest, `--json` and the report
describe; on qemu-m4 (TFLM tier) it runs with a smaller arena and identical outputs.

The models are hand-built float graphs with branches (tests/memory_graphs.py), so everything
but the TFLM tier runs without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_memory_runtime import residual_model

from tinyforge.board import profiles
from tinyforge.flows import build, inspection, memory_plan
from tinyforge.flows import report as report_flow
from tinyforge.model import checks, memory, memory_embed, memory_report
from tinyforge.model.arena import ArenaMeasurement, plan_from_device, plan_from_host
from tinyforge.project import last_build
from tinyforge.report import page


@pytest.fixture
def residual(tmp_path) -> Path:
    path = tmp_path / "residual_float.tflite"
    path.write_bytes(residual_model())
    return path


def _build(model: Path, project: Path, **options) -> build.BuildResult:
    return build.build(build.BuildOptions(model=model, project_dir=project, compile=False,
                                          quantize="float32", arena="host", **options))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_auto_embeds_the_plan_the_arena_is_measured_with_it(in_process, residual, tmp_path):
    project = tmp_path / "project"
    result = _build(residual, project)
    given = residual.read_bytes()
    embedded = (project / ".tinyforge" / "model.tflite").read_bytes()
    # The model otherwise byte-identical: the given file is the tail of the planned one.
    assert embedded != given and embedded.endswith(given)
    assert memory_report.plan_in_model(embedded)["planner"] == "offline"
    manifest = json.loads((project / ".tinyforge" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == _sha(embedded) == result.model.info.sha256
    plan = manifest["memory_plan"]
    assert plan["mode"] == "auto" and plan["action"] == "embedded" and plan["dropped"] is None
    assert plan["source_sha256"] == _sha(given) and plan["model_sha256"] == _sha(embedded)
    assert plan["plan"]["greedy_bytes"] == 416 and plan["plan"]["planned_bytes"] == 320
    assert plan["runs"] == {"planner": "offline", "offline_offsets": 8, "entries": 13,
                            "format_version": 1, "board_head_bytes": 320}
    # The manifest stays reproducible: no planning time, no measuring time.
    assert "seconds" not in plan["plan"]
    assert "seconds" not in plan["arena"]["with_plan"]["host"]
    # The arena the firmware gets is the one measured on the planned model.
    with_plan = plan["arena"]["with_plan"]
    assert manifest["arena"] == with_plan
    assert with_plan["host"]["minimum_bytes"] <= \
        plan["arena"]["without_plan"]["host"]["minimum_bytes"]
    settings = (project / "src" / "model_settings.h").read_text()
    assert f"kTensorArenaSize = {with_plan['arena_bytes']};" in settings
    # The firmware embeds the planned bytes (model_data.cpp's array, in hex).
    array = (project / "src" / "model_data.cpp").read_text()
    assert array.count("0x") == len(embedded)
    as_json = result.to_json()["memory_plan"]
    assert as_json["plan"]["seconds"] >= 0 and as_json["summary"][0].startswith(
        "--memory-plan auto: the firmware runs tinyforge's offline plan (8 tensor offsets)")


def test_off_embeds_the_model_as_given(in_process, residual, tmp_path):
    project = tmp_path / "project"
    result = _build(residual, project, memory_plan="off")
    assert (project / ".tinyforge" / "model.tflite").read_bytes() == residual.read_bytes()
    plan = json.loads((project / ".tinyforge" / "manifest.json").read_text())["memory_plan"]
    assert plan["action"] == "off" and plan["plan"] is None
    assert plan["runs"] == {"planner": "tflm-greedy", "offline_offsets": 0}
    assert plan["arena"] == {"with_plan": None, "without_plan": None}
    assert result.memory_plan.lines() == [
        ("--memory-plan off: the firmware runs TFLM's greedy plan; the model as given, "
         "not planned")]


def test_a_plan_the_model_carries_is_kept_by_auto_and_replaced_by_replace(in_process, tmp_path):
    given = residual_model()
    graph = memory.analyze(given, "residual")
    # A valid plan of the model's own: TFLM's greedy offsets for subgraph 0's tensors.
    greedy = graph.greedy().offsets
    own = [memory.ONLINE] * graph.tensor_count
    planned = [t for t in graph.planned_tensors]
    for tensor, offset in zip(planned, greedy):
        own[tensor.index] = offset
    path = tmp_path / "own_plan.tflite"
    path.write_bytes(memory_embed.embed_offline_plan(given, own, name="own"))

    kept = _build(path, tmp_path / "auto")
    assert (tmp_path / "auto" / ".tinyforge" / "model.tflite").read_bytes() == path.read_bytes()
    assert kept.memory_plan.outcome.action == "kept-own-plan"
    assert kept.memory_plan.lines()[0].startswith(
        "--memory-plan auto: the firmware runs the model's own offline plan")

    replaced = _build(path, tmp_path / "replace", memory_plan="replace")
    embedded = (tmp_path / "replace" / ".tinyforge" / "model.tflite").read_bytes()
    assert replaced.memory_plan.outcome.action == "embedded"
    assert memory_report.plan_in_model(embedded)["board_head_bytes"] == 320
    assert memory_embed.read_offline_plan(embedded).offsets != own


def _measured(minimum: int, source: str):
    measurement = ArenaMeasurement(minimum, minimum, 3, 0.1, source)
    return plan_from_device(measurement, None) if source == "device" else \
        plan_from_host(measurement)


def test_a_plan_whose_measured_arena_is_larger_is_not_embedded(residual):
    # The decision alone, with measured figures given: the plan is dropped when its
    # smallest arena is larger than TFLM's greedy plan's, kept when it is not.
    board = profiles.load_board("qemu-m4")
    original = checks.prepare(residual.read_bytes(), residual.name, board, quantize="float32",
                              strict=False)
    for planned_minimum, kept in ((2_000, True), (2_400, True), (2_416, False)):
        planned, choice = memory_plan.plan_model(original, board, "auto", quantize="float32",
                                                 strict=False)
        figures = {id(original): 2_400, id(planned): planned_minimum}

        def measure(model, figures=figures):
            model.arena = _measured(figures[id(model)], "device")

        chosen = memory_plan.settle(choice, planned, original, measure)
        assert (chosen is planned) == kept
        assert choice.embedded == kept
        if not kept:
            assert choice.dropped.startswith("its smallest arena on the emulated Cortex-M4 is "
                                             "2,416 B, TFLM's greedy plan needs 2,400 B")
            assert choice.outcome.model == original.data
    # A device figure (cached) for the model as given, only the host for the planned one: the
    # arenas the firmwares would get decide, and the host's margin loses.
    planned, choice = memory_plan.plan_model(original, board, "auto", quantize="float32",
                                             strict=False)

    def mixed(model):
        model.arena = _measured(2_400, "device") if model is original else \
            _measured(2_000, "host")

    assert memory_plan.settle(choice, planned, original, mixed) is original
    assert choice.dropped.startswith("the arena with it (3,232 B, host TFLM) would be larger "
                                     "than without it (2,512 B, emulated Cortex-M4)")


def test_inspect_shows_what_build_would_embed(in_process, residual, tmp_path):
    report = inspection.inspect_model(residual, board_id="qemu-m4", arena="host")
    plan, figures = report["memory_plan"], report["memory"]
    assert plan["action"] == "embedded"
    assert figures["board"]["greedy_bytes"] == 416
    assert figures["board"]["planned_bytes"] == figures["board"]["lower_bound_bytes"] == 320
    assert figures["plan"]["seconds"] >= 0
    # The arena shown is the planned model's, as build measures it.
    assert report["arena"] == plan["arena"]["with_plan"]
    assert report["sha256"] == plan["source_sha256"]      # inspect describes the file given
    text = "\n".join(inspection.summary_lines(report))
    assert "TFLM greedy 416 B, lower bound 320 B" in text
    assert "offline plan: 320 B, saves 96 B (optimal)" in text
    assert "--memory-plan auto: the firmware runs tinyforge's offline plan" in text
    off = inspection.inspect_model(residual, board_id="qemu-m4", arena="host",
                                   memory_plan="off")
    assert off["memory_plan"]["action"] == "off"
    assert off["memory"]["board"] == figures["board"]   # the figures still say what a plan gives


def test_the_report_shows_lifetimes_occupancy_and_the_plan(in_process, residual, tmp_path):
    project = tmp_path / "project"
    _build(residual, project)
    data = report_flow.collect(last_build.find(project, None))
    lifetimes = data.lifetimes
    assert "lifetimes" not in data.missing
    assert lifetimes.planner == "offline" and lifetimes.greedy_bytes == 416
    assert lifetimes.lower_bound == lifetimes.offline_bytes == lifetimes.planned_bytes == 320
    assert max(lifetimes.occupancy()) == lifetimes.lower_bound
    # 8 planned tensors (the input, the FULLY_CONNECTED and ADD outputs); no scratch on float FC.
    assert len(lifetimes.tensors) == 8 and lifetimes.operator_count == 7
    # Where TFLM puts them with the plan: no two buffers alive together overlap.
    for a in lifetimes.tensors:
        for b in lifetimes.tensors:
            if a is not b and not (a.last_op < b.first_op or b.last_op < a.first_op):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    rendered = page.render(data)
    assert rendered.sections["lifetimes"] == "ok" and "lifetimes.png" in rendered.pngs
    assert "tinyforge&#x27;s offline plan" in rendered.html and "320 B" in rendered.html


def test_the_report_of_a_greedy_model_says_no_plan_beats_it(in_process, residual, tmp_path):
    project = tmp_path / "project"
    _build(residual, project, memory_plan="off")
    lifetimes = report_flow.collect(last_build.find(project, None)).lifetimes
    assert lifetimes.planner == "tflm-greedy"
    assert lifetimes.planned_bytes == lifetimes.greedy_bytes == 416
    assert lifetimes.offline_bytes == 320      # what --memory-plan auto would have given


# --- on the emulated Cortex-M4 (TFLM tier) -------------------------------------------------

@pytest.mark.slow
@pytest.mark.tflm_tree
def test_on_qemu_the_planned_model_runs_with_a_smaller_arena_and_identical_outputs(
        tinyforge, tflm_tree, residual, tmp_path, tmp_path_factory, cli_env):
    from qemu_support import require_emulator, seeded_core

    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    project = tmp_path / "project"
    run = tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--model", residual,
                    "--quantize", "float32", "--project-dir", project, "--arena", "device",
                    "--json", env=env, timeout=1800, check_rc=0)
    built = json.loads(run.stdout)
    plan = built["memory_plan"]
    assert plan["action"] == "embedded" and plan["runs"]["planner"] == "offline"
    with_plan, without = plan["arena"]["with_plan"], plan["arena"]["without_plan"]
    assert with_plan["source"] == without["source"] == "device"
    # Both measured with PROBE on the device; the head saving (416 -> 320 B) is all of it.
    assert with_plan["device"]["minimum_bytes"] <= without["device"]["minimum_bytes"]
    assert without["device"]["reported_bytes"] - with_plan["device"]["reported_bytes"] == 96
    # The chosen arena is the one measured with the plan.
    assert built["arena"] == with_plan
    validated = tinyforge("validate", "--project-dir", project, "--random", "16", "--json",
                          "--tflm", tflm_tree, env=env, timeout=600, check_rc=0)
    report = json.loads(validated.stdout)
    assert report["passed"] and report["exact_matches"] == report["samples"] == 16
    monitor_boot = _boot_of(project, env)
    assert monitor_boot.memory_plan == "offline"


def _boot_of(project: Path, env: dict):
    from tinyforge.device import emulator
    from tinyforge.device.conversation import Conversation, wait_for_boot

    elf = project / ".pio" / "build" / "qemu-m4" / "firmware.elf"
    link = emulator.launch(elf)
    try:
        return wait_for_boot(Conversation(link), ask=False)
    finally:
        link.close()
