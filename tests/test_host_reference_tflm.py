"""The board's TFLM tree compiled for the host as the reference (TFLM tier: needs a tree).

- the host build and its cache, and that it exports only tinyforge's C API;
- per-layer outputs checked against arithmetic done here, independently of TFLM;
- a model on which the tflite-micro wheel and the board's kernels disagree (a MEAN), where
  the per-layer comparison names the op;
- the acceptance test: that model built for qemu-m4 and `validate` exact against the host
  build of the board's tree, while the wheel would have reported differences.

The first run compiles the tree for the host (~211 files, several minutes on 2 cores; then
cached under $XDG_CACHE_HOME/tinyforge/host-tflm) and the firmware for qemu-m4.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qemu_support import require_emulator, seeded_core

from tinyforge.board import profiles
from tinyforge.model import host_build, layers, reader
from tinyforge.model.isolated import call_isolated
from tinyforge.model.reference import TreeRuntime, WheelRuntime, runtime_for_tree

pytestmark = pytest.mark.tflm_tree


@pytest.fixture(scope="module")
def tree_runtime(tflm_tree) -> TreeRuntime:
    runtime = runtime_for_tree(tflm_tree, board=profiles.load_board("qemu-m4"), required=True)
    assert isinstance(runtime, TreeRuntime)
    return runtime


def _random_inputs(info: reader.ModelInfo, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    spec = info.inputs[0]
    rng = np.random.default_rng(seed)
    return [[rng.integers(-128, 128, spec.shape, dtype=np.int8)] for _ in range(count)]


def test_the_host_build_is_cached_and_exports_only_the_c_api(tflm_tree, tree_runtime):
    first = tree_runtime.library
    again = host_build.build_host_library(tflm_tree, extra_defines=("-DARDUINO",))
    assert again.compiled_now is False and again.path == first.path and again.key == first.key
    assert (first.library, first.version) == ("Chirale_TensorFLowLite", "2.0.0")
    assert first.sources > 200
    info = json.loads((first.path.parent / host_build.BUILD_INFO_FILE).read_text())
    assert info["defines"] == ["-DARDUINO"] and info["tree"] == str(tflm_tree.resolve())
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(first.path)],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    exported = {line.split()[-1] for line in symbols if line.strip()}
    # No TFLM or CMSIS-NN symbol can clash with the wheel's copy of TFLM in the same
    # process (what else is exported are libstdc++'s own weak template instances).
    assert {"tfh_create", "tfh_invoke", "tfh_layer_output_data"} <= exported
    clashing = {name for name in exported
                if "tflite" in name or name.startswith(("arm_", "DebugLog", "_ZN6gemmlowp"))}
    assert not clashing, clashing
    assert tree_runtime.description == (f"host build of Chirale_TensorFlowLite 2.0.0 at "
                                        f"{tflm_tree.resolve()} (the board's kernels)")


# --- per-layer outputs, checked with arithmetic done here ------------------------------------

def _constant(model: bytes, tensor_index: int) -> np.ndarray:
    s = reader.schema()
    root = s.Model.GetRootAsModel(model, 0)
    tensor = root.Subgraphs(0).Tensors(tensor_index)
    dtype = {"int8": np.int8, "int32": np.int32}[reader.dtype_name(tensor.Type())]
    raw = root.Buffers(tensor.Buffer()).DataAsNumpy()
    return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(
        [tensor.Shape(i) for i in range(tensor.ShapeLength())])


def _requantize(acc: int, multiplier: float) -> int:
    """TFLM's and CMSIS-NN's fixed-point `acc * multiplier`: QuantizeMultiplier, then a
    rounding doubling high multiply and a rounding right shift, in Python integers."""
    fraction, shift = math.frexp(multiplier)
    q = math.floor(fraction * (1 << 31) + 0.5)
    if q == 1 << 31:
        q, shift = q // 2, shift + 1
    value = acc * (1 << max(shift, 0))
    product = value * q
    nudged = product + ((1 << 30) if product >= 0 else 1 - (1 << 30))
    high = nudged >> 31 if nudged >= 0 else -((-nudged) >> 31)  # C division truncates
    right = max(-shift, 0)
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def test_each_layer_holds_that_operators_own_output(tree_runtime, models):
    model, info = reader.read_model_file(models / "pool_reshape_dense_int8.tflite")
    x = _random_inputs(info, 1, seed=3)[0][0]
    pool, reshape, dense = tree_runtime.layers(model, [x], "pool_reshape_dense")
    assert [pool.op, reshape.op, dense.op] == ["MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert [pool.index, reshape.index, dense.index] == [0, 1, 2]
    # MAX_POOL_2D 2x2, stride 2, same quantization in and out: a max over each window.
    expected_pool = x.reshape(1, 2, 2, 2, 2, 2).max(axis=(2, 4))
    assert pool.outputs[0].shape == [1, 2, 2, 2] and pool.inputs[0].shape == [1, 4, 4, 2]
    np.testing.assert_array_equal(pool.values[0], expected_pool)
    # RESHAPE: the same bytes, flattened.
    np.testing.assert_array_equal(reshape.values[0], expected_pool.reshape(1, 8))
    # FULLY_CONNECTED: integer accumulate, then requantize.
    data_in, weights_t, bias_t = dense.inputs
    assert bias_t.index >= 0, "the model keeps its bias"
    weights, bias = _constant(model, weights_t.index), _constant(model, bias_t.index)
    out = dense.outputs[0]
    multiplier = data_in.scale * weights_t.scale / out.scale
    acc = (reshape.values[0].astype(np.int64)[0] - data_in.zero_point) @ weights.T.astype(
        np.int64) + bias
    expected = [min(127, max(-128, out.zero_point + _requantize(int(a), multiplier)))
                for a in acc]
    assert dense.values[0].reshape(-1).tolist() == expected
    assert dense.outputs[0].index == info.outputs[0].index
    (final,) = tree_runtime.run_batch(model, [[x]], 1, "pool_reshape_dense")
    np.testing.assert_array_equal(final[0], dense.values[0])


# --- the wheel and the board's kernels on a MEAN --------------------------------------------

def test_the_wheel_differs_from_the_board_kernels_at_the_mean(tree_runtime, models):
    model, info = reader.read_model_file(models / "gesture_mean_int8.tflite")
    assert info.op_names == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "MEAN", "SOFTMAX"]
    batch = _random_inputs(info, 64)
    board = tree_runtime.run_batch(model, batch, 1, "gesture_mean")
    wheel = WheelRuntime().run_batch(model, batch, 1, "gesture_mean")
    lsb = [int(np.abs(b[0].astype(int) - w[0].astype(int)).max())
           for b, w in zip(board, wheel)]
    differing = [i for i, value in enumerate(lsb) if value]
    assert differing, "the wheel and the board's kernels agreed on every input"
    sample = differing[0]
    board_layers = tree_runtime.layers(model, batch[sample], "gesture_mean")
    wheel_layers = WheelRuntime().layers(model, batch[sample], "gesture_mean")
    found = layers.first_divergence(board_layers, wheel_layers)
    assert found is not None and found.op == "MEAN" and found.reason == "values"
    mean = next(layer for layer in board_layers if layer.op == "MEAN")
    assert found.index == mean.index and found.max_lsb >= 1
    assert found.input_shapes[0] == mean.inputs[0].shape
    # Why: Chirale's TFLM 2.0.0 computes a quantized MEAN in float32 (reference_ops::
    # QuantizedMeanOrSum: round(sum / n * s_in / s_out - zp_in * s_in / s_out) + zp_out); the
    # 2026 wheel in fixed point. Check the board's formula on the recorded input here.
    feeding = next(layer for layer in board_layers
                   if layer.outputs[0].index == mean.inputs[0].index)
    raw = feeding.values[0].reshape(-1, mean.outputs[0].shape[-1])
    x_in, x_out = mean.inputs[0], mean.outputs[0]
    scale = np.float32(x_in.scale) / np.float32(x_out.scale)
    bias = np.float32(-x_in.zero_point) * scale
    mean_f = raw.astype(np.int64).sum(axis=0).astype(np.float32) / np.float32(raw.shape[0])
    value = mean_f * scale + bias
    rounded = np.sign(value) * np.floor(np.abs(value) + np.float32(0.5))  # half away from 0
    expected = np.clip(rounded + x_out.zero_point, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(mean.values[0].reshape(-1), expected)


def _chirale_mean(inputs: np.ndarray, info: reader.ModelInfo, *, fused: bool) -> np.ndarray:
    """Chirale's int8 MEAN over axis 1 in float32, with `mean * scale + bias` rounded once
    (fused: a VFMA.F32, as GCC's default would compile it for the board) or twice."""
    f32 = np.float32
    source, result = info.inputs[0], info.outputs[0]
    count = source.shape[1]
    scale = f32(source.scale) / f32(result.scale)
    bias = f32(-source.zero_point) * scale
    totals = inputs.astype(np.int64).reshape(len(inputs), count, -1).sum(axis=1)
    mean = (totals.astype(f32) / f32(count)).astype(f32)
    if fused:
        value = (mean.astype(np.float64) * np.float64(scale) + np.float64(bias)).astype(f32)
    else:
        value = ((mean * scale).astype(f32) + bias).astype(f32)
    rounded = np.sign(value) * np.floor(np.abs(value) + f32(0.5))
    return np.clip(rounded + result.zero_point, -128, 127).astype(np.int8)


def test_the_host_build_rounds_float_expressions_twice_like_the_board(tree_runtime, models):
    """Neither the board nor the host build fuses a*b+c (tinyforge.board.float_code)."""
    model, info = reader.read_model_file(models / "mean_fma_int8.tflite")
    inputs = np.load(models / "mean_fma_inputs.npy")
    outputs = np.array([o[0].reshape(-1) for o in
                        tree_runtime.run_batch(model, [[x] for x in inputs], 1, "mean_fma")])
    once, twice = (_chirale_mean(inputs, info, fused=fused) for fused in (True, False))
    np.testing.assert_array_equal(outputs, twice)
    # The first four inputs are made so that rounding once would give other integers.
    assert (once[:4] != twice[:4]).all() and (once[4:] == twice[4:]).all()


# --- the acceptance test: validate exact on qemu-m4 against the board's tree ----------------

@pytest.fixture
def qemu_env(cli_env, tmp_path_factory) -> dict:
    require_emulator()
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))


@pytest.fixture(scope="module")
def qemu_project(tmp_path_factory):
    # One project for the module: the second model rebuilds only the model's files.
    return tmp_path_factory.mktemp("host-reference-on-qemu") / "project"

@pytest.mark.slow
def test_validate_is_exact_on_qemu_against_the_board_tree_and_not_against_the_wheel(
        tinyforge, tflm_tree, models, qemu_project, qemu_env):
    env, project = qemu_env, qemu_project
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--model", models / "gesture_mean_int8.tflite",
                                 "--project-dir", project, "--json", env=env, timeout=2400,
                                 check_rc=0).stdout)
    assert built["reference"]["kind"] == "tflm-tree"
    assert built["arena"]["host"]["runtime"] == "host build of Chirale_TensorFlowLite 2.0.0"
    board_words = (f"host build of Chirale_TensorFlowLite 2.0.0 at {tflm_tree.resolve()} "
                   "(the board's kernels)")
    validate = ("validate", "--project-dir", project, "--random", "64", "--json")
    # No --tflm: the tree comes from the last build's manifest.
    exact = json.loads(tinyforge(*validate, env=env, check_rc=0).stdout)
    assert exact["reference"] == board_words
    assert exact["exact_matches"] == 64 and exact["max_lsb"] == 0, exact["mismatches"]
    windows = json.loads(tinyforge("validate", "--project-dir", project, "--data",
                                   models / "gesture_mean_windows.npy", "--reference", "tflm",
                                   "--json", env=env, check_rc=0).stdout)
    assert windows["exact_matches"] == windows["samples"] == 40
    wheel = tinyforge(*validate, "--reference", "wheel", env=env)
    assert wheel.returncode == 3, wheel.stderr
    report = json.loads(wheel.stdout)
    assert report["reference"].startswith("tflite-micro wheel 0.dev")
    assert report["exact_matches"] < 64 and report["max_lsb"] >= 1
    assert "--tflm" in wheel.stderr  # the hint says how to compare with the board's kernels


@pytest.mark.slow
def test_the_emulated_board_rounds_the_mean_as_the_host_build_does(tinyforge, tflm_tree, models,
                                                                 qemu_project, qemu_env,
                                                                 tmp_path):
    model, info = reader.read_model_file(models / "mean_fma_int8.tflite")
    tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--model",
              models / "mean_fma_int8.tflite", "--project-dir", qemu_project, "--arena", "host",
              env=qemu_env, timeout=2400, check_rc=0)
    # validate takes float data and quantizes it: give the values of the crafted int8 inputs.
    source = info.inputs[0]
    crafted = np.load(models / "mean_fma_inputs.npy")
    floats = ((crafted.astype(np.float64) - source.zero_point) * source.scale).astype(np.float32)
    assert (np.round(floats / source.scale) + source.zero_point == crafted).all()
    np.save(tmp_path / "inputs.npy", floats)
    data = ("validate", "--project-dir", qemu_project, "--data", tmp_path / "inputs.npy",
            "--json")
    report = json.loads(tinyforge(*data, "--reference", "tflm", env=qemu_env,
                                  check_rc=0).stdout)
    assert report["exact_matches"] == report["samples"] == 8
    wheel = json.loads(tinyforge(*data, "--reference", "wheel", env=qemu_env).stdout)
    assert wheel["exact_matches"] < 8


# --- state: resource variables, kept between inputs, reset on request ----------------------

def _state_after(path: str, model: bytes, steps: list[np.ndarray], variables: int):
    """READ_VARIABLE outputs of the first step: fresh, after more steps without a reset,
    and after Reset()."""
    from tinyforge.model import host_tflm
    interpreter = host_tflm.Interpreter(host_tflm.load(Path(path)), model, 1 << 20, variables)
    interpreter.check_allocated()

    def first_step_state():
        interpreter.capture_layers(True)
        interpreter.set_input(0, steps[0])
        interpreter.invoke()
        interpreter.capture_layers(False)
        return [layer.values[0] for layer in interpreter.layers()
                if layer.op == "READ_VARIABLE"]

    fresh = first_step_state()
    for step in steps[1:]:
        interpreter.set_input(0, step)
        interpreter.invoke()
    carried = first_step_state()
    interpreter.reset()
    return fresh, carried, first_step_state()


def test_a_streaming_model_keeps_its_state_and_reset_is_tflms_own(tree_runtime):
    wakeword = pytest.importorskip("pymicro_wakeword")
    model, info = reader.read_model_file(Path(wakeword.__file__).parent / "models" /
                                         "okay_nabu.tflite")
    assert info.resource_variables > 0
    rng = np.random.default_rng(5)
    steps = [rng.integers(-128, 128, info.inputs[0].shape, dtype=np.int8) for _ in range(5)]
    tree_runtime._prepare_fork()
    result = call_isolated(_state_after, str(tree_runtime.library.path), model, steps,
                           info.resource_variables)
    assert result.ok, result.describe_failure() + result.output
    fresh, carried, after_reset = result.value
    assert len(fresh) == 6
    # CALL_ONCE's initialization subgraph fills the streaming buffers with the quantized
    # zero (-128); steps change them; the state is kept between invokes, as on the device.
    assert all((state == -128).all() for state in fresh)
    assert any((state != -128).any() for state in carried)
    # tfh_reset is MicroInterpreter::Reset(): in Chirale's TFLM 2.0.0 it zeroes the resource
    # variables' bytes and CALL_ONCE does not run again, so the model restarts from raw
    # zeros, not from its initial state. Host and device run the same code: both do this.
    assert all((state == 0).all() for state in after_reset)
