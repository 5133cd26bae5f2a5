"""The graph memory analysis, TFLM's greedy plan and the offline planner, on hand-built graphs
whose answers are known, checked against TFLM's own planner tests and the real host runtime.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from memory_graphs import (
    FloatNet,
    Graph,
    ModelSpec,
    Op,
    T,
    add_options,
    build,
    call_once,
    if_options,
)

from tinyforge.errors import UnsupportedFeatureError
from tinyforge.model import memory, memory_embed, memory_planner, memory_report
from tinyforge.model.memory import Buffer, greedy_plan, peak_load, place_in_order
from tinyforge.resources import example_dir


def chain_model() -> bytes:
    """x[16] -> FC -> a[12] -> FC -> b[16] -> FC -> y[24], float32.

    Buffers (bytes, first, last): x (64, 0, 1), a (48, 1, 2), b (64, 2, 3), y (96, 3, 3).
    Peak load 160 (b + y at scope 3). TFLM's greedy places y at 0, b at 96, x at 0, and then
    finds no 48-byte gap for a below b's end: a at 160, 208 bytes. 160 is reachable
    (b at 0, y at 64, x at 0, a at 64), so the optimum is 160.
    """
    net = FloatNet(seed=799)
    x = net.input(16)
    y = net.fc(net.fc(net.fc(x, 12), 16), 24)
    return net.model([x], [y])


# --- sizes, kinds and lifetimes -------------------------------------------------------------

def test_sizes_kinds_and_alignment_follow_tflm():
    weights = np.ones((3, 5), np.float32)
    spec = ModelSpec([Graph(
        tensors=[T((1, 5)), T((3, 5), data=weights), T((1, 3)), T((1, 3), variable=True),
                 T((0, 4)), T((5,), "int8"), T((), "resource")],
        ops=[Op("FULLY_CONNECTED", [0, 1, -1], [2]), Op("ADD", [2, 3], [5], add_options()),
             Op("VAR_HANDLE", [], [6])],
        inputs=[0], outputs=[5])])
    graph = memory.analyze(build(spec), "kinds")
    kinds = [(t.kind, t.bytes, t.aligned_bytes) for t in graph.subgraphs[0]]
    assert kinds == [("planned", 20, 32), ("constant", 60, 64), ("planned", 12, 16),
                     ("variable", 12, 16), ("empty", 0, 0), ("planned", 5, 16),
                     ("handle", 4, 16)]


def test_chain_lifetimes_and_lower_bound():
    graph = memory.analyze(chain_model(), "chain")
    planned = [(t.index, t.aligned_bytes, t.first, t.last) for t in graph.planned_tensors]
    assert planned == [(0, 64, 0, 1), (2, 48, 1, 2), (4, 64, 2, 3), (6, 96, 3, 3)]
    assert graph.lower_bound() == 160
    assert graph.occupancy() == [64, 112, 112, 160]
    assert graph.greedy().size == 208


def test_call_once_enters_its_subgraph_in_new_scopes():
    # sg0: CALL_ONCE(sg1) then y = ADD(x, x). sg1: d = ADD(c, c) with c constant.
    c = np.ones((1, 4), np.float32)
    spec = ModelSpec([
        Graph([T((1, 4)), T((1, 4))], [Op("CALL_ONCE", [], [], call_once(1)),
                                        Op("ADD", [0, 0], [1], add_options())], [0], [1]),
        Graph([T((1, 4), data=c), T((1, 4))], [Op("ADD", [0, 0], [1], add_options())], [], [1]),
    ])
    graph = memory.analyze(build(spec), "call_once")
    # Scope 0: sg0's inputs. CALL_ONCE is scope 1 and enters sg1 at scope 2, whose ADD is 3.
    # The second operator of sg0 is scope 4.
    assert [(t.first, t.last) for t in graph.subgraphs[0]] == [(0, 4), (4, 4)]
    assert [(t.kind, t.first, t.last) for t in graph.subgraphs[1]] == \
        [("constant", -1, 3), ("planned", 3, 3)]
    assert graph.scopes == 5


def test_if_enters_both_branches_and_keeps_its_inputs_alive_through_them():
    branch = Graph([T((1, 4)), T((1, 4))], [Op("ADD", [0, 0], [1], add_options())], [0], [1])
    spec = ModelSpec([
        Graph([T((1,), "int32"), T((1, 4)), T((1, 4))],
              [Op("IF", [0, 1], [2], if_options(1, 2))], [0, 1], [2]),
        branch, branch])
    graph = memory.analyze(build(spec), "if")
    # IF is scope 1; then-branch: inputs at 2, ADD at 3; else-branch: inputs at 4, ADD at 5.
    assert [(t.first, t.last) for t in graph.subgraphs[0]] == [(0, 5), (0, 5), (1, 5)]
    assert [(t.first, t.last) for t in graph.subgraphs[1]] == [(2, 3), (3, 3)]
    assert [(t.first, t.last) for t in graph.subgraphs[2]] == [(4, 5), (5, 5)]


def test_scratch_rules_of_the_boards_cmsis_nn_kernels():
    # The bundled gesture model's two 1-D convolutions (1x3 filters over 3 and 8 channels):
    # arm_convolve_s8_get_buffer_size = 2 * channels * filter w * filter h * sizeof(int16).
    data = (example_dir() / "gesture_int8.tflite").read_bytes()
    board = memory.analyze(data, "gesture", kernels="cmsis-nn")
    assert [(r.op, r.bytes, r.first, r.last) for r in board.scratch] == \
        [("CONV_2D", 2 * 3 * 3 * 1 * 2, 2, 2), ("CONV_2D", 2 * 8 * 3 * 1 * 2, 4, 4)]
    assert memory.analyze(data, "gesture", kernels="reference").scratch == []


# --- TFLM's greedy planner, emulated ------------------------------------------------------

def test_greedy_matches_tflms_own_planner_tests():
    # tflite-micro, memory_planner/greedy_memory_planner_test.cc: TestGreedyBasics,
    # TestGreedyMedium and TestOverlapCase, with TFLM's expected offsets and sizes.
    basics = [Buffer(10, 0, 1, "a"), Buffer(20, 2, 3, "b")]
    assert greedy_plan(basics) == memory.Placement([0, 0], 20)
    medium = [Buffer(10, 0, 1, "0"), Buffer(20, 1, 2, "1"), Buffer(30, 2, 3, "2"),
              Buffer(40, 3, 4, "3"), Buffer(50, 0, 1, "4")]
    assert greedy_plan(medium) == memory.Placement([50, 70, 40, 0, 0], 90)
    overlap = [Buffer(100, 0, 1, "0"), Buffer(50, 2, 3, "1"), Buffer(20, 1, 2, "2")]
    assert greedy_plan(overlap).size == 120


def test_greedy_breaks_ties_in_reverse_order_of_addition():
    # TFLM fills its sort array from the tail, and its bubble sort is stable: of two equal
    # buffers the one added last is placed first (at 0 here).
    buffers = [Buffer(16, 0, 1, "first"), Buffer(16, 1, 2, "second")]
    assert greedy_plan(buffers).offsets == [16, 0]


def test_greedy_places_online_buffers_around_offline_ones():
    buffers = [Buffer(32, 0, 2, "fixed", offline=16), Buffer(16, 1, 1, "small"),
               Buffer(48, 0, 0, "big")]
    # The offline buffer sits at 16..48; the 48-byte one does not fit below it (48 above),
    # the 16-byte one fits in the gap at 0.
    assert greedy_plan(buffers) == memory.Placement([16, 0, 48], 96)


# --- the planner ------------------------------------------------------------------------

def test_planner_finds_the_optimum_where_greedy_is_worse():
    graph = memory.analyze(chain_model(), "chain")
    plan = memory_planner.plan(graph)
    assert (plan.greedy_bytes, plan.planned_bytes, plan.lower_bound_bytes) == (208, 160, 160)
    assert plan.optimal and plan.improves
    buffers = memory_planner.buffers_as_read(graph, plan.offsets, "host")
    assert greedy_plan(buffers).size == 160
    _assert_no_overlap(buffers, greedy_plan(buffers).offsets)


def test_planner_finds_the_optimum_of_tflms_medium_case():
    medium = [Buffer(10, 0, 1, "0"), Buffer(20, 1, 2, "1"), Buffer(30, 2, 3, "2"),
              Buffer(40, 3, 4, "3"), Buffer(50, 0, 1, "4")]
    solution = memory_planner.optimise(medium)
    assert (greedy_plan(medium).size, solution.size, solution.proven_minimum) == (90, 80, 80)


def test_exact_search_alone_equals_brute_force_on_random_graphs():
    # Every placement can be pushed down into some order of lowest-fit placements, so the
    # minimum over all orders is the optimum; the branch and bound must find exactly it.
    rng = random.Random(2026)
    for _ in range(60):
        buffers = []
        for i in range(rng.randint(2, 6)):
            first = rng.randint(0, 5)
            buffers.append(Buffer(16 * rng.randint(1, 6), first,
                                  first + rng.randint(0, 3), str(i)))
        best = min(place_in_order(buffers, order).size
                   for order in itertools.permutations(range(len(buffers))))
        solution = memory_planner.optimise(buffers, heuristics=False)
        assert solution.size == best and solution.proven_minimum == best
        assert solution.size >= peak_load(buffers)
        _assert_no_overlap(buffers, solution.offsets)


def test_planner_leaves_a_model_alone_when_greedy_is_optimal():
    data = (example_dir() / "gesture_int8.tflite").read_bytes()
    plan = memory_report.plan_model(data, "gesture", kernels="reference", secondary=None)
    assert not plan.improves and plan.optimal and plan.method == "greedy"
    assert set(plan.offsets) == {-1}
    outcome = memory_report.apply_memory_plan(data, "gesture", kernels="reference")
    assert outcome.action == "unchanged" and outcome.model == data
    # replace, on a model with a plan of its own: nothing better to put there, so it stays
    # (and says so) rather than leaving the firmware to a greedy plan that is no smaller.
    graph = memory.analyze(data, "gesture", kernels="reference")
    own = [memory.ONLINE] * graph.tensor_count
    for tensor, offset in zip(graph.planned_tensors, graph.greedy().offsets):
        own[tensor.index] = offset
    carrying = memory_embed.embed_offline_plan(data, own)
    replaced = memory_report.apply_memory_plan(carrying, "gesture", "replace",
                                               kernels="reference")
    assert replaced.action == "unchanged" and replaced.model == carrying
    assert replaced.reason.endswith("so the model's own plan is kept")


def test_planner_beats_greedy_for_the_boards_kernels_on_the_bundled_example():
    data = (example_dir() / "gesture_int8.tflite").read_bytes()
    plan = memory_report.plan_model(data, "gesture")
    assert (plan.greedy_bytes, plan.planned_bytes, plan.lower_bound_bytes) == (464, 432, 432)
    # ... and the same offsets are no worse for the host runtime's kernels.
    assert plan.secondary == {"kernels": "reference", "greedy_bytes": 368,
                              "planned_bytes": 368, "lower_bound_bytes": 368}


def test_other_subgraphs_tensors_stay_online_and_both_readers_agree():
    # sg1's planned tensor has index 1, like sg0's middle tensor: the board's TFLM would
    # read sg0's entry 1 for it, so that entry must stay -1.
    c = np.ones((1, 4), np.float32)
    spec = ModelSpec([
        Graph([T((1, 4)), T((1, 8)), T((1, 8)), T((8, 4), data=np.ones((8, 4), np.float32))],
              [Op("CALL_ONCE", [], [], call_once(1)),
               Op("FULLY_CONNECTED", [0, 3, -1], [1]), Op("ADD", [1, 1], [2], add_options())],
              [0], [2]),
        Graph([T((1, 4), data=c), T((1, 4))], [Op("ADD", [0, 0], [1], add_options())], [], [1]),
    ])
    graph = memory.analyze(build(spec), "two")
    assert memory_planner.offline_plannable(graph) == [True, False, True, False, False, False]
    offsets = [0, -1, 32, -1, -1, -1]
    board = memory_planner.buffers_as_read(graph, offsets, "board")
    host = memory_planner.buffers_as_read(graph, offsets, "host")
    assert board == host


def _assert_no_overlap(buffers, offsets):
    for (a, x), (b, y) in itertools.combinations(zip(buffers, offsets), 2):
        if a.overlaps_in_time(b):
            assert x + a.size <= y or y + b.size <= x, (a, x, b, y)


# --- the embedding ------------------------------------------------------------------------

def _plain(obj):
    """An object-API value as plain Python, to compare two parsed models field by field."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dict__"):
        return {k: _plain(v) for k, v in vars(obj).items()}
    return obj


def _model(data):
    s = memory.reader.schema()
    return s.Model.GetRootAsModel(data, 0), s.ModelT.InitFromObj(s.Model.GetRootAsModel(data, 0))


def test_embedding_keeps_every_buffer_tensor_and_operator():
    data = (example_dir() / "gesture_int8.tflite").read_bytes()
    offsets = memory_report.plan_model(data, "gesture").offsets
    new = memory_embed.embed_offline_plan(data, offsets)
    shift = len(new) - len(data)
    assert shift % 16 == 0 and new[shift:] == data
    old_root, old = _model(data)
    new_root, planned = _model(new)
    # Every table the model refers to is the old one, at its old position + shift.
    for i in range(old_root.SubgraphsLength()):
        old_sg, new_sg = old_root.Subgraphs(i), new_root.Subgraphs(i)
        assert new_sg._tab.Pos == old_sg._tab.Pos + shift
        for j in range(old_sg.TensorsLength()):
            assert new_sg.Tensors(j)._tab.Pos == old_sg.Tensors(j)._tab.Pos + shift
        for j in range(old_sg.OperatorsLength()):
            assert new_sg.Operators(j)._tab.Pos == old_sg.Operators(j)._tab.Pos + shift
    for j in range(old_root.BuffersLength()):
        assert new_root.Buffers(j)._tab.Pos == old_root.Buffers(j)._tab.Pos + shift
    for j in range(old_root.OperatorCodesLength()):
        assert new_root.OperatorCodes(j)._tab.Pos == old_root.OperatorCodes(j)._tab.Pos + shift
    # And parsed as objects, only the buffers list and the metadata list grew by one.
    assert _plain(planned.subgraphs) == _plain(old.subgraphs)
    assert _plain(planned.operatorCodes) == _plain(old.operatorCodes)
    assert _plain(planned.buffers[:-1]) == _plain(old.buffers)
    assert [m.name for m in planned.metadata] == [m.name for m in old.metadata] + \
        [b"OfflineMemoryAllocation"]
    assert (planned.version, planned.description) == (old.version, old.description)
    decoded = memory_embed.read_offline_plan(new)
    assert (decoded.version, decoded.subgraphs, decoded.offsets) == (1, 1, offsets)


def test_a_plan_in_the_model_is_respected_or_replaced_only_when_asked():
    data = chain_model()
    first = memory_report.apply_memory_plan(data, "chain", kernels="reference")
    assert first.action == "embedded"
    assert memory_report.apply_memory_plan(first.model, "chain").action == "kept-own-plan"
    with pytest.raises(UnsupportedFeatureError, match="already carries"):
        memory_embed.embed_offline_plan(first.model, first.plan.offsets)
    replaced = memory_report.apply_memory_plan(first.model, "chain", "replace",
                                               kernels="reference")
    assert replaced.action == "embedded"
    _, model = _model(replaced.model)
    assert [m.name for m in model.metadata].count(b"OfflineMemoryAllocation") == 1
    assert memory_report.plan_in_model(replaced.model)["planner"] == "fixed"
    assert memory_report.apply_memory_plan(data, "chain", "off").model == data


def test_a_plan_written_by_another_tool_is_read_as_tflm_reads_it():
    payload = memory_embed.plan_payload([0, -1, 64, -1, 128, -1, 0], 1)
    net = FloatNet(seed=799)
    x = net.input(16)
    y = net.fc(net.fc(net.fc(x, 12), 16), 24)
    data = net.model([x], [y], metadata={"OfflineMemoryAllocation": payload})
    assert memory_embed.read_offline_plan(data).offsets == [0, -1, 64, -1, 128, -1, 0]
    assert memory_report.plan_in_model(data)["offline_offsets"] == 4


@pytest.mark.parametrize("graph, message", [
    (Graph([T((1, 4)), T((1, 4))], [Op("ADD", [0, 7], [1], add_options())], [0], [1]),
     "missing tensor"),
    (Graph([T((1, -1)), T((1, 4))], [Op("ADD", [0, 0], [1], add_options())], [0], [1]),
     "dynamic"),
    (Graph([T((1, 4))], [Op("CALL_ONCE", [], [], call_once(5))], [0], [0]),
     "missing subgraph"),
])
def test_corrupt_graphs_are_refused_with_the_models_name(graph, message):
    from tinyforge.errors import ModelFileError

    with pytest.raises(ModelFileError, match=f"bad.tflite is corrupt: .*{message}"):
        memory.analyze(build(ModelSpec([graph])), "bad.tflite")


def test_figures_for_inspect_are_json_and_plans_are_deterministic():
    import json

    data = (example_dir() / "gesture_int8.tflite").read_bytes()
    figures = json.loads(json.dumps(memory_report.memory_figures(data, "gesture")))
    assert figures["board"] == {"greedy_bytes": 464, "planned_bytes": 432,
                                "lower_bound_bytes": 432, "scratch_bytes": 48 + 96}
    assert figures["host"]["greedy_bytes"] == 368
    assert figures["plan"]["improves"] and figures["runs"]["planner"] == "tflm-greedy"
    assert len(figures["tensors"]) == 20 and len(figures["occupancy"]) == 10
    assert len(memory_report.human_lines(figures)) == 3
    model = chain_model()
    first = memory_report.plan_model(model, "chain")
    assert memory_report.plan_model(model, "chain").offsets == first.offsets


def test_the_build_outcome_for_the_manifest_has_no_timings():
    outcome = memory_report.apply_memory_plan(chain_model(), "chain", kernels="reference")
    stable = outcome.to_json(stable=True)
    assert "seconds" not in stable["plan"] and "seconds" in outcome.to_json()["plan"]
    assert stable["runs"] == {"planner": "fixed", "offline_offsets": 4, "entries": 7,
                              "format_version": 1, "board_head_bytes": 160}


def test_weights_outside_the_flatbuffer_are_not_risked():
    import flatbuffers

    s = memory.reader.schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAsModel(chain_model(), 0))
    external = s.BufferT()
    external.offset, external.size = 16, 4      # counted from the start of the file
    model.buffers.append(external)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=memory.reader.TFLITE_IDENTIFIER)
    data = bytes(builder.Output())
    offsets = memory_report.plan_model(data, "big", kernels="reference").offsets
    with pytest.raises(UnsupportedFeatureError, match="outside its flatbuffer"):
        memory_embed.embed_offline_plan(data, offsets)
    outcome = memory_report.apply_memory_plan(data, "big", kernels="reference")
    assert outcome.action == "unchanged" and outcome.model == data
    assert "outside its flatbuffer" in outcome.reason
