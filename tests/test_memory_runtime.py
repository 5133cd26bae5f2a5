"""Offline plans against the real TFLM: the host runtime (tflite-micro wheel) reads the
embedded OfflineMemoryAllocation with its own code, plans exactly what the emulation says,
and computes the same outputs with the plan as without it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from memory_graphs import FloatNet, Graph, ModelSpec, Op, T, add_options, build, fc_options, \
    if_options
from test_memory import chain_model

from tinyforge.model import arena, memory, memory_embed, memory_planner, memory_report
from tinyforge.model.isolated import call_isolated
from tinyforge.resources import example_dir

REPO = Path(__file__).resolve().parent.parent
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")


def _run(model: bytes, inputs: list[np.ndarray], arena_size: int) -> tuple[list, int]:
    """In a child: invoke once per input, in order (state carries over), then report."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    outputs = []
    for data in inputs:
        details = interpreter.get_input_details(0)
        interpreter.set_input(data.astype(details["dtype"]).reshape(details["shape"]), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)))
    interpreter.print_allocations()
    return outputs


def run(model: bytes, inputs: list[np.ndarray], arena_size: int = 1 << 20):
    """Outputs and the planned head of the host runtime, or (None, TFLM's text) on failure."""
    result = call_isolated(_run, model, inputs, arena_size)
    if not result.ok:
        return None, result.error + result.output
    return result.value, int(_HEAD.search(result.output).group(1))


def random_inputs(model: bytes, count: int, seed: int = 0) -> list[np.ndarray]:
    info = memory.reader.inspect_bytes(model, "model").inputs[0]
    rng = np.random.default_rng(seed)
    if info.dtype == "float32":
        return [rng.normal(size=info.shape).astype(np.float32) for _ in range(count)]
    limits = np.iinfo(info.dtype)
    return [rng.integers(limits.min, limits.max, size=info.shape, endpoint=True)
            .astype(info.dtype) for _ in range(count)]


def assert_plan_runs_identically(model: bytes, offsets: list[int], expected_head: int,
                                 frames: int = 4) -> bytes:
    planned = memory_embed.embed_offline_plan(model, offsets)
    inputs = random_inputs(model, frames)
    without, _ = run(model, inputs)
    with_plan, head = run(planned, inputs)
    assert with_plan is not None, head
    assert head == expected_head
    for a, b in zip(without, with_plan):
        np.testing.assert_array_equal(a, b)
    return planned


def test_host_runtime_reads_the_plan_and_plans_what_the_emulation_says():
    model = chain_model()
    graph = memory.analyze(model, "chain")
    plan = memory_planner.plan(graph)
    _, greedy_head = run(model, random_inputs(model, 1))
    assert greedy_head == graph.greedy().size == 208
    assert_plan_runs_identically(model, plan.offsets, 160)


def test_a_deliberately_overlapping_plan_changes_the_outputs():
    # Every tensor at offset 0: TFLM trusts the plan, so each FULLY_CONNECTED overwrites
    # its own input while reading it. That it changes the result shows TFLM uses the plan.
    model = chain_model()
    graph = memory.analyze(model, "chain")
    offsets = [0 if t.planned else -1 for t in graph.subgraphs[0]]
    inputs = random_inputs(model, 2)
    good, _ = run(model, inputs)
    bad, head = run(memory_embed.embed_offline_plan(model, offsets), inputs)
    assert head == 96        # the largest tensor: everything else lies inside it
    assert not all(np.array_equal(a, b) for a, b in zip(good, bad))


def test_a_plan_beyond_the_arena_makes_allocation_fail():
    model = chain_model()
    graph = memory.analyze(model, "chain")
    offsets = [1 << 20 if t.planned else -1 for t in graph.subgraphs[0]]
    outputs, text = run(memory_embed.embed_offline_plan(model, offsets),
                        random_inputs(model, 1), arena_size=64 * 1024)
    assert outputs is None and "allocate" in text


def test_a_plan_with_the_wrong_number_of_offsets_is_refused_by_tflm():
    net = FloatNet(seed=799)
    x = net.input(16)
    y = net.fc(net.fc(net.fc(x, 12), 16), 24)
    payload = memory_embed.plan_payload([0, -1, 64], 1)        # 3 entries for 7 tensors
    outputs, text = run(net.model([x], [y], metadata={"OfflineMemoryAllocation": payload}),
                        random_inputs(chain_model(), 1))
    assert outputs is None and "Nbr of offline buffer offsets (3)" in text


def test_the_arena_the_host_runtime_needs_does_not_grow():
    model = chain_model()
    plan = memory_report.plan_model(model, "chain", kernels="reference", secondary=None)
    planned = memory_embed.embed_offline_plan(model, plan.offsets)
    before = arena.measure_on_host(model, "chain").minimum_bytes
    after = arena.measure_on_host(planned, "chain").minimum_bytes
    assert after <= before


def test_bundled_example_with_the_boards_plan_runs_identically_on_the_host():
    model = (example_dir() / "gesture_int8.tflite").read_bytes()
    plan = memory_report.plan_model(model, "gesture")
    assert plan.improves          # for the board's kernels: 464 -> 432
    assert_plan_runs_identically(model, plan.offsets, plan.secondary["planned_bytes"], 8)


def residual_model() -> bytes:
    """Two residual blocks, float32: the block input stays alive across the block."""
    net = FloatNet(seed=1)
    x = net.input(16)
    y = net.add(x, net.fc(net.fc(x, 48), 16))
    out = net.add(y, net.fc(net.fc(y, 32), 16))
    return net.model([x], [net.fc(out, 24)])


def concat_model() -> bytes:
    """Two branches of two FULLY_CONNECTED each, concatenated, float32."""
    net = FloatNet(seed=1)
    x = net.input(16)
    a = net.fc(net.fc(x, 48), 48)
    b = net.fc(net.fc(x, 48), 8)
    return net.model([x], [net.fc(net.concat(a, b), 8)])


@pytest.mark.parametrize("make, greedy, planned", [(residual_model, 416, 320),
                                                   (concat_model, 480, 448)])
def test_branches_plan_smaller_than_greedy_and_identical(make, greedy, planned):
    model = make()
    graph = memory.analyze(model, make.__name__)
    plan = memory_planner.plan(graph)
    _, head = run(model, random_inputs(model, 1))
    assert head == graph.greedy().size == plan.greedy_bytes == greedy
    assert plan.planned_bytes == planned and plan.optimal
    assert_plan_runs_identically(model, plan.offsets, planned)


# --- models made by TensorFlow and the microWakeWord streaming models ----------------------

@pytest.fixture(scope="module")
def memory_models(tmp_path_factory) -> Path:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed (run `make setup`)")
    out = tmp_path_factory.mktemp("memory-models")
    result = subprocess.run([sys.executable, str(REPO / "tests/models/make_memory_models.py"),
                             str(out)], capture_output=True, text=True, timeout=900, check=False,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def wakeword_models() -> list[Path]:
    spec = importlib.util.find_spec("pymicro_wakeword")
    if spec is None:
        return []
    return sorted(Path(spec.origin).parent.joinpath("models").glob("*.tflite"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["residual_int8", "concat_int8", "mean_int8", "unet_int8"])
def test_emulated_greedy_head_equals_the_runtimes_on_tensorflow_models(memory_models, name):
    model = (memory_models / f"{name}.tflite").read_bytes()
    graph = memory.analyze(model, name)
    _, head = run(model, random_inputs(model, 1))
    assert head == graph.greedy().size


@pytest.mark.slow
def test_residual_model_plan_is_smaller_and_identical(memory_models):
    model = (memory_models / "residual_int8.tflite").read_bytes()
    plan = memory_report.plan_model(model, "residual", kernels="reference", secondary=None)
    assert plan.improves and plan.planned_bytes < plan.greedy_bytes
    planned = assert_plan_runs_identically(model, plan.offsets, plan.planned_bytes)
    assert arena.measure_on_host(planned, "residual").minimum_bytes <= \
        arena.measure_on_host(model, "residual").minimum_bytes


@pytest.mark.slow
@pytest.mark.parametrize("path", wakeword_models(), ids=lambda p: p.stem)
def test_wakeword_models_multi_subgraph_emulation_and_plan(path):
    model = path.read_bytes()
    graph = memory.analyze(model, path.name)
    _, head = run(model, random_inputs(model, 1))
    assert head == graph.greedy().size          # two subgraphs, CALL_ONCE, VAR_HANDLE
    plan = memory_report.plan_model(model, path.name, time_limit_s=5)
    if plan.improves:
        # Twelve frames: the streaming state (resource variables) carries across invokes.
        assert_plan_runs_identically(model, plan.offsets, plan.secondary["planned_bytes"], 12)


def test_wakeword_models_are_installed_for_the_real_model_tier():
    if not wakeword_models():
        pytest.skip("pymicro-wakeword is not installed (`pip install -e .[dev]`)")


def random_net(seed: int) -> bytes:
    """A random float graph of FULLY_CONNECTED, ADD and CONCATENATION with long-lived tensors."""
    rng = np.random.default_rng(seed)
    net = FloatNet(seed)
    live = [net.input(int(rng.choice([4, 8, 12])))]
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.random()
        widths = {}
        for t in live:
            widths.setdefault(net.tensors[t].shape[1], []).append(t)
        pairs = [ts for ts in widths.values() if len(ts) > 1]
        if kind < 0.3 and pairs:
            a, b = rng.choice(pairs[int(rng.integers(len(pairs)))], 2, replace=False)
            live.append(net.add(int(a), int(b)))
        elif kind < 0.45 and len(live) > 1:
            a, b = rng.choice(live, 2, replace=False)
            live.append(net.concat(int(a), int(b)))
        else:
            live.append(net.fc(int(rng.choice(live)), int(rng.choice([4, 8, 12, 16, 24]))))
    return net.model([live[0]], [live[-1]])


# Seeds 5, 15, 20 and 27 are graphs where the plan beats greedy; the others check the emulation.
@pytest.mark.parametrize("seed", [*range(8), 15, 20, 27])
def test_emulation_and_plans_match_the_runtime_on_random_graphs(seed):
    model = random_net(seed)
    graph = memory.analyze(model, f"random{seed}")
    _, head = run(model, random_inputs(model, 1))
    assert head == graph.greedy().size
    plan = memory_planner.plan(graph, time_limit_s=2)
    assert plan.planned_bytes <= plan.greedy_bytes
    if plan.improves:
        assert_plan_runs_identically(model, plan.offsets, plan.planned_bytes, 2)


def _run_if(model: bytes, condition: bool):
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=1 << 16)
    interpreter.set_input(np.array([condition]), 0)
    interpreter.set_input(np.arange(4, dtype=np.float32).reshape(1, 4), 1)
    interpreter.invoke()
    interpreter.print_allocations()
    return np.array(interpreter.get_output(0))


def test_if_branches_lifetimes_match_the_runtime():
    # sg0: y = ADD(x, x); out = IF(cond, y). Then: two ADDs. Else: two FULLY_CONNECTED.
    then = Graph([T((1, 4)), T((1, 4)), T((1, 4))],
                 [Op("ADD", [0, 0], [1], add_options()), Op("ADD", [1, 0], [2], add_options())],
                 [0], [2])
    other = Graph([T((1, 4)), T((8, 4), data=np.full((8, 4), 0.5, np.float32)), T((1, 8)),
                   T((1, 4)), T((4, 8), data=np.ones((4, 8), np.float32))],
                  [Op("FULLY_CONNECTED", [0, 1, -1], [2], fc_options()),
                   Op("FULLY_CONNECTED", [2, 4, -1], [3], fc_options())], [0], [3])
    main = Graph([T((1,), "bool"), T((1, 4)), T((1, 4)), T((1, 4))],
                 [Op("ADD", [1, 1], [2], add_options()),
                  Op("IF", [0, 2], [3], if_options(1, 2))], [0, 1], [3])
    model = build(ModelSpec([main, then, other]))
    graph = memory.analyze(model, "if")
    # The else-branch's 32-byte tensor lives while sg0's IF input and output do.
    assert [(t.first, t.last) for t in graph.subgraphs[0]] == [(0, 8), (0, 1), (1, 8), (2, 8)]
    for condition, expected in ((True, [0, 6, 12, 18]), (False, [48, 48, 48, 48])):
        result = call_isolated(_run_if, model, condition)
        assert result.ok, result.error + result.output
        np.testing.assert_array_equal(result.value, [expected])
        assert int(_HEAD.search(result.output).group(1)) == graph.greedy().size == 96


@pytest.mark.parametrize("offsets", [
    [-1, -1, -1, -1, 0, -1, 64],       # b and y fixed; TFLM places x and a around them
    [96, -1, -1, -1, -1, -1, 0],       # x above y; the rest online
    [0, -1, 64, -1, -1, -1, -1],       # x and a fixed low; b and y online
])
def test_partial_plans_tflm_places_the_rest_as_emulated(offsets):
    model = chain_model()
    graph = memory.analyze(model, "chain")
    expected = memory.greedy_plan(memory_planner.buffers_as_read(graph, offsets, "host")).size
    assert_plan_runs_identically(model, offsets, expected, 2)
