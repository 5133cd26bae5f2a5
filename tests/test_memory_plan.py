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
from tinyforge.model import checks, memory, memory_embed, memory_planner, memory_report
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
    assert memory_report.plan_in_model(embedded)["planner"] == "fixed"
    manifest = json.loads((project / ".tinyforge" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == _sha(embedded) == result.model.info.sha256
    plan = manifest["memory_plan"]
    assert plan["mode"] == "auto" and plan["action"] == "embedded" and plan["dropped"] is None
    assert plan["source_sha256"] == _sha(given) and plan["model_sha256"] == _sha(embedded)
    assert plan["plan"]["greedy_bytes"] == 416 and plan["plan"]["planned_bytes"] == 320
    assert plan["runs"] == {"planner": "fixed", "offline_offsets": 8, "entries": 13,
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


def _planned_buffers(source: str) -> list[tuple[int, int, int, int]]:
    """The rows of model_settings.cpp's kPlannedBuffers table."""
    import re
    return [tuple(int(v) for v in row) for row in
            re.findall(r"^    \{(-?\d+), (-?\d+), (-?\d+), (-?\d+)\},", source, re.M)]


def test_a_planned_model_has_its_whole_layout_compiled_into_the_firmware(
        in_process, residual, tmp_path):
    project = tmp_path / "project"
    _build(residual, project)
    embedded = (project / ".tinyforge" / "model.tflite").read_bytes()
    layout = memory_report.fixed_layout(embedded)
    header = (project / "src" / "model_settings.h").read_text()
    assert "#define TINYFORGE_FIXED_PLAN 1" in header
    assert f"kPlannedBufferCount = {len(layout.buffers)};" in header
    assert "kPlannedHeadBytes = 320;" in header and layout.head_bytes == 320
    rows = _planned_buffers((project / "src" / "model_settings.cpp").read_text())
    assert rows == [(b.offset, b.bytes, b.first, b.last) for b in layout.buffers]
    # The planned tensors sit where the model's plan puts them...
    graph = memory.analyze(embedded, "residual", kernels=memory_report.BOARD_KERNELS)
    offsets = memory_embed.read_offline_plan(embedded).offsets
    tensors = graph.planned_tensors
    assert [r[0] for r in rows[:len(tensors)]] == [offsets[t.index] for t in tensors]
    assert [(r[1], r[2], r[3]) for r in rows[:len(tensors)]] == [
        (t.aligned_bytes, t.first, t.last) for t in tensors]
    # ...and no two buffers alive at the same time share a byte.
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if not (a[2] > b[3] or b[2] > a[3]):
                assert a[0] + a[1] <= b[0] or b[0] + b[1] <= a[0], (a, b)
    assert max(r[0] + r[1] for r in rows) == 320
    main = (project / "src" / "main.cpp").read_text()
    assert "MicroAllocator::Create(tensor_arena, arena_size, &memory_planner)" in main
    assert 'return "fixed";' in main
    assert (project / "src" / "fixed_memory_planner.cpp").is_file()


def test_the_scratch_buffers_are_placed_as_tflm_would_place_them_around_the_plan():
    from tinyforge.resources import example_dir

    # The bundled example: two int8 CONV_2D, each with a CMSIS-NN scratch buffer.
    data = memory_report.apply_memory_plan(
        (example_dir() / "gesture_int8.tflite").read_bytes(), "gesture").model
    layout = memory_report.fixed_layout(data, "gesture")
    graph = memory.analyze(data, "gesture", kernels=memory_report.BOARD_KERNELS)
    placed = memory.greedy_plan(memory_planner.buffers_as_read(
        graph, memory_embed.read_offline_plan(data).offsets, "board"))
    scratch = [b for b in layout.buffers if b.label.startswith("scratch")]
    assert [(b.bytes, b.first, b.last) for b in scratch] == [
        (r.aligned_bytes, r.first, r.last) for r in graph.scratch] and len(scratch) == 2
    assert [b.offset for b in layout.buffers] == placed.offsets
    assert layout.head_bytes == placed.size == 432


def _renamed(data: bytes, name: str) -> bytes:
    """The model with every activation tensor renamed to `name`."""
    import flatbuffers

    from tinyforge.model import reader
    schema = reader.schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    for tensor in model.subgraphs[0].tensors:
        if model.buffers[tensor.buffer].data is None:
            tensor.name = name.encode()
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_the_layout_table_compiles_and_holds_the_layout_whatever_the_tensor_names(
        in_process, gxx, tmp_path):
    import subprocess

    from tinyforge.resources import example_dir
    evil = "x */ int injected = 1; /*\n#error injected\n"
    model = tmp_path / "gesture.tflite"
    model.write_bytes(_renamed((example_dir() / "gesture_int8.tflite").read_bytes(), evil))
    project = tmp_path / "project"
    build.build(build.BuildOptions(model=model, project_dir=project, compile=False,
                                   arena="host"))
    layout = memory_report.fixed_layout((project / ".tinyforge" / "model.tflite").read_bytes())
    source = (project / "src" / "model_settings.cpp").read_text()
    assert layout is not None and "injected" in source
    # The name is in the table's comments (and in the input's settings, as a C string); the
    # compile below fails if any of it escaped.
    assert not any(line.lstrip().startswith("#error") for line in source.splitlines())
    dump = tmp_path / "dump.cpp"
    dump.write_text('#include <cstdio>\n#include "model_settings.h"\n'
                    "int main() { for (int i = 0; i < kPlannedBufferCount; ++i) {\n"
                    "  const PlannedBuffer& b = kPlannedBuffers[i];\n"
                    '  std::printf("%d %d %d %d\\n", (int)b.offset, (int)b.bytes, (int)b.first,'
                    " (int)b.last); }\n"
                    '  std::printf("%d\\n", (int)kPlannedHeadBytes); return 0; }\n')
    exe = tmp_path / "dump"
    subprocess.run([gxx, "-std=c++11", "-Wall", "-Werror", "-I", project / "src", dump,
                    project / "src" / "model_settings.cpp", "-o", exe], check=True)
    printed = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert printed[:-2] == [f"{b.offset} {b.bytes} {b.first} {b.last}" for b in layout.buffers]
    assert printed[-2] == str(layout.head_bytes)


def test_no_layout_is_compiled_in_without_a_plan_or_in_a_debug_build(in_process, residual,
                                                                    tmp_path):
    _build(residual, tmp_path / "off", memory_plan="off")
    assert "#define TINYFORGE_FIXED_PLAN 0" in (tmp_path / "off" / "src" /
                                                 "model_settings.h").read_text()
    assert "kPlannedBuffers" not in (tmp_path / "off" / "src" / "model_settings.cpp").read_text()
    assert 'return "fixed";' not in (tmp_path / "off" / "src" / "main.cpp").read_text()
    # A model that carries a plan, built for --debug-layers: every tensor keeps its own buffer.
    planned = tmp_path / "planned.tflite"
    planned.write_bytes(memory_report.apply_memory_plan(residual.read_bytes(), "r").model)
    _build(planned, tmp_path / "debug", debug_layers=True)
    assert "#define TINYFORGE_FIXED_PLAN 0" in (tmp_path / "debug" / "src" /
                                                 "model_settings.h").read_text()


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
    assert lifetimes.planner == "fixed" and lifetimes.greedy_bytes == 416
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
    assert plan["action"] == "embedded" and plan["runs"]["planner"] == "fixed"
    with_plan, without = plan["arena"]["with_plan"], plan["arena"]["without_plan"]
    assert with_plan["source"] == without["source"] == "device"
    # Both measured with PROBE on the device. What the arena holds after allocation shrinks
    # by the head saving (416 -> 320 B) and by TFLM's greedy planner object (48 B on the
    # M4), which with the layout compiled in no longer lives in the arena's tail.
    assert with_plan["device"]["minimum_bytes"] < without["device"]["minimum_bytes"]
    assert without["device"]["reported_bytes"] - with_plan["device"]["reported_bytes"] == 96 + 48
    # The chosen arena is the one measured with the plan.
    assert built["arena"] == with_plan
    validated = tinyforge("validate", "--project-dir", project, "--random", "16", "--json",
                          "--tflm", tflm_tree, env=env, timeout=600, check_rc=0)
    report = json.loads(validated.stdout)
    assert report["passed"] and report["exact_matches"] == report["samples"] == 16
    monitor_boot = _boot_of(project, env)
    assert monitor_boot.memory_plan == "fixed"


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_on_qemu_the_bundled_example_runs_in_less_arena_with_its_layout_compiled_in(
        tinyforge, tflm_tree, tmp_path, tmp_path_factory, cli_env):
    """The example's plan saves only 32 B of head, but with the layout compiled in TFLM's
    greedy planner and its working arrays leave the arena: that is what set its minimum."""
    import qemu_support
    from qemu_support import require_emulator, seeded_core

    from tinyforge.device import emulator, protocol
    from tinyforge.device.conversation import Conversation, wait_for_boot

    require_emulator()
    core = seeded_core(tmp_path_factory)
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(core))
    project = tmp_path / "project"
    run = tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--project-dir",
                    project, "--arena", "device", "--json", env=env, timeout=1800, check_rc=0)
    built = json.loads(run.stdout)
    plan = built["memory_plan"]
    assert plan["action"] == "embedded" and plan["runs"]["planner"] == "fixed"
    with_plan, without = plan["arena"]["with_plan"], plan["arena"]["without_plan"]
    assert with_plan["source"] == without["source"] == "device"
    assert with_plan["device"]["minimum_bytes"] < without["device"]["minimum_bytes"]
    assert built["arena"] == with_plan
    validated = tinyforge("validate", "--project-dir", project, "--random", "16", "--json",
                          "--tflm", tflm_tree, env=env, timeout=600, check_rc=0)
    report = json.loads(validated.stdout)
    assert report["passed"] and report["exact_matches"] == report["samples"] == 16
    boot = _boot_of(project, env)
    assert boot.ok and boot.memory_plan == "fixed"

    # A table the kernels disagree with (a scratch buffer planned 16 B too small): the
    # allocation fails and says why, instead of overlapping the next buffer.
    settings = project / "src" / "model_settings.cpp"
    source = settings.read_text()
    offset, size, first, last = _planned_buffers(source)[-1]
    row = f"{{{offset}, {size}, {first}, {last}}}"
    assert source.count(row) == 1
    settings.write_text(source.replace(row, f"{{{offset}, {size - 16}, {first}, {last}}}"))
    qemu_support.build(project, core)
    events = []
    link = emulator.launch(project / ".pio" / "build" / "qemu-m4" / "firmware.elf")
    try:
        conversation = Conversation(link, on_event=events.append)
        boot = wait_for_boot(conversation, ask=False)
        conversation.poll(1.0)
    finally:
        link.close()
    assert not boot.ok
    logs = [e.text for e in events if isinstance(e, protocol.DeviceLog)]
    count = len(_planned_buffers(source))
    assert any(f"memory plan: buffer {count - 1} is {size} bytes for steps {first}-{last}, "
               f"planned {size - 16} bytes" in text for text in logs), logs


def _boot_of(project: Path, env: dict):
    from tinyforge.device import emulator
    from tinyforge.device.conversation import Conversation, wait_for_boot

    elf = project / ".pio" / "build" / "qemu-m4" / "firmware.elf"
    link = emulator.launch(elf)
    try:
        return wait_for_boot(Conversation(link), ask=False)
    finally:
        link.close()
