"""The host reference without a TFLM tree: which runtime is chosen and how reports name it,
the first-divergence finder on constructed layer lists, and the host build's failures.

The host build of a real tree and its comparison with the emulated board are in
tests/test_host_reference_tflm.py (TFLM tier).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fake_device import FakeDevice

from tinyforge.board import profiles
from tinyforge.board.resolver import HEADER_RELATIVE_PATHS
from tinyforge.device import protocol
from tinyforge.errors import HostBuildError, ReferenceUnavailable, ToolMissingError
from tinyforge.flows import reference as flow_reference
from tinyforge.model import host_build, layers, reader
from tinyforge.model.layers import LayerOutput, TensorSummary
from tinyforge.model.reference import TreeRuntime, WheelRuntime, runtime_for_tree
from tinyforge.project.last_build import LastBuild

WHEEL_WORDS = ("tflite-micro wheel 0.dev20261023182759 (TFLM of 2026, reference kernels; "
               "may differ from the board's by a few LSB)")


# --- the first op whose output differs ------------------------------------------------------

def _tensor(index, shape, dtype="int8", scale=0.5):
    return TensorSummary(index=index, dtype=dtype, shape=list(shape), scale=scale, zero_point=0,
                         bytes=int(np.prod(shape)))


def _layers(*values_per_op, ops=("CONV_2D", "MEAN", "FULLY_CONNECTED")):
    result = []
    for index, (op, values) in enumerate(zip(ops, values_per_op)):
        values = np.asarray(values)
        result.append(LayerOutput(index=index, op=op, inputs=[_tensor(index, [1, 4])],
                                  outputs=[_tensor(index + 1, values.shape, values.dtype.name)],
                                  values=[values]))
    return result


def test_identical_runs_have_no_divergence():
    run = _layers(np.int8([1, 2, 3]), np.int8([4, 5]), np.int8([6]))
    copy = _layers(np.int8([1, 2, 3]), np.int8([4, 5]), np.int8([6]))
    assert layers.first_divergence(run, copy) is None


def test_the_first_differing_op_is_named_with_its_shapes_and_lsb():
    host = _layers(np.int8([[1, 2, 3]]), np.int8([[4, 5]]), np.int8([[6]]))
    # Op 1 differs by 1 LSB in one value; op 2 (downstream) by 3: op 1 is the one to blame.
    device = _layers(np.int8([[1, 2, 3]]), np.int8([[4, 6]]), np.int8([[9]]))
    found = layers.first_divergence(host, device)
    assert (found.index, found.op, found.reason) == (1, "MEAN", "values")
    assert found.max_lsb == 1 and found.differing == 1 and found.count == 2
    assert found.output_shape == [1, 2] and found.input_shapes == [[1, 4]]
    assert found.max_abs == pytest.approx(0.5)  # one LSB at scale 0.5
    assert found.describe() == ("op 1 MEAN (inputs [1, 4] -> output 0 [1, 2] int8): "
                                "1 of 2 values differ, max 1 LSB")
    assert found.to_json()["index"] == 1
    # Within a tolerance of 1 LSB, op 2's 3 LSB is the first divergence.
    assert layers.first_divergence(host, device, max_lsb=1).index == 2


def test_a_difference_in_structure_is_reported_as_such():
    host = _layers(np.int8([1, 2]), np.int8([3]))
    assert layers.first_divergence(host, host[:1]).reason == "missing"
    other_op = _layers(np.int8([1, 2]), np.int8([3]), ops=("CONV_2D", "SUM"))
    assert layers.first_divergence(host, other_op).reason == "op"
    reshaped = _layers(np.int8([1, 2]), np.int8([[3]]))
    found = layers.first_divergence(host, reshaped)
    assert (found.index, found.reason) == (1, "shape")
    assert "disagree on the shape" in found.describe()


def test_float_outputs_compare_with_an_absolute_tolerance():
    host = _layers(np.float32([0.5, 1.0]), ops=("DEQUANTIZE",))
    device = _layers(np.float32([0.5, 1.00001]), ops=("DEQUANTIZE",))
    assert layers.first_divergence(host, device, max_abs=1e-4) is None
    found = layers.first_divergence(host, device)
    assert found.max_lsb is None and found.max_abs == pytest.approx(1e-5, rel=1e-2)
    nan = _layers(np.float32([np.nan, 1.0]), ops=("DEQUANTIZE",))
    assert layers.first_divergence(host, nan, max_abs=1.0).differing == 1


def test_layer_checksums_are_crc32_of_the_raw_bytes():
    import zlib
    layer = _layers(np.int8([1, -2, 3]))[0]
    assert layer.checksums() == [zlib.crc32(bytes([1, 254, 3]))]
    assert layer.to_json(with_values=True)["values"] == [[1, -2, 3]]


# --- the wheel's own per-layer outputs ------------------------------------------------------

def test_the_wheel_records_every_operator_with_preserved_tensors(models):
    model, info = reader.read_model_file(models / "conv_int8.tflite")
    spec = info.inputs[0]
    sample = np.random.default_rng(0).integers(-128, 128, spec.shape, dtype=np.int8)
    recorded = WheelRuntime().layers(model, [sample], "conv_int8.tflite")
    assert [layer.op for layer in recorded] == [op for op, _, _ in
                                                layers.model_operators(model)]
    assert [layer.index for layer in recorded] == list(range(len(recorded)))
    final = recorded[-1]
    assert final.outputs[0].index == info.outputs[0].index
    (output,) = WheelRuntime().run_batch(model, [[sample]], 1, "conv_int8.tflite")
    np.testing.assert_array_equal(final.values[0], output[0])


def test_the_wheel_records_a_streaming_model_without_reading_its_resources():
    # The wheel's GetTensor() crashes on a VAR_HANDLE's resource tensor: it is described,
    # not read. (pymicro-wakeword ships real microWakeWord streaming models.)
    wakeword = pytest.importorskip("pymicro_wakeword")
    model, info = reader.read_model_file(Path(wakeword.__file__).parent / "models" /
                                         "okay_nabu.tflite")
    sample = np.zeros(info.inputs[0].shape, dtype=np.int8)
    recorded = WheelRuntime().layers(model, [sample], "okay_nabu.tflite")
    handles = [layer for layer in recorded if layer.op == "VAR_HANDLE"]
    assert handles and all(layer.outputs[0].dtype == "resource" and layer.values[0].size == 0
                           for layer in handles)
    assert layers.first_divergence(recorded, recorded) is None
    assert recorded[-1].outputs[0].dtype == "uint8"


# --- which reference, and how reports name it -----------------------------------------------

def test_without_a_tree_the_reference_is_the_wheel_and_says_so():
    runtime = runtime_for_tree(None)
    assert isinstance(runtime, WheelRuntime)
    assert runtime.description == WHEEL_WORDS
    assert runtime.to_json()["kind"] == "wheel" and "no TFLM library tree" in runtime.note
    with pytest.raises(ReferenceUnavailable) as caught:
        runtime_for_tree(None, required=True)
    assert "--tflm" in caught.value.hint


def _fake_tree(root: Path, source: str | None = None) -> Path:
    """A folder shaped like a TFLM Arduino library (what resolve_tflm_source accepts)."""
    header = root / HEADER_RELATIVE_PATHS[0]
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_text("// not a real TFLM\n")
    (root / "library.properties").write_text("name=FakeTFLM\nversion=0.0.1\n")
    if source is not None:
        (root / "src" / "broken.cpp").write_text(source)
    return root


def _last_build(dependency: str) -> LastBuild:
    manifest = {"board": "qemu-m4", "tflm": {"dependency": dependency}}
    return LastBuild(Path("."), manifest, profiles.load_board("qemu-m4"))


def test_validate_takes_the_tree_the_last_build_was_made_from(tmp_path, monkeypatch):
    built_from = _fake_tree(tmp_path / "built-from")
    other = _fake_tree(tmp_path / "other")
    monkeypatch.setenv("TINYFORGE_TFLM", str(other))
    build = _last_build(f"Chirale_TensorFlowLite=symlink://{built_from}")
    assert flow_reference.tree_for_build(build, None) == built_from.resolve()
    assert flow_reference.tree_for_build(build, other) == other.resolve()  # --tflm wins
    # A build from the pinned (downloaded) library: the environment's tree, then none.
    pinned = _last_build("Chirale_TensorFlowLite=https://github.com/spaziochirale/x.git#1")
    assert flow_reference.tree_for_build(pinned, None) == other.resolve()
    monkeypatch.delenv("TINYFORGE_TFLM")
    assert flow_reference.tree_for_build(pinned, None) is None
    # The tree of the build was deleted since: not an error, the next source is used.
    gone = _last_build(f"Chirale_TensorFlowLite=symlink://{tmp_path / 'gone'}")
    assert flow_reference.tree_for_build(gone, None) is None
    assert isinstance(flow_reference.runtime_for_build(gone, choice="wheel"), WheelRuntime)
    with pytest.raises(ReferenceUnavailable):
        flow_reference.runtime_for_build(gone, choice="tflm")


def test_validate_report_names_the_wheel_when_no_tree_is_at_hand(tinyforge, tmp_path, models,
                                                                 cli_env):
    """A faithful firmware on a pty answers with the wheel's own outputs; the report says
    what it was compared with."""
    from tinyforge.flows import validate as validate_lib
    from tinyforge.model import host_runtime

    project = tmp_path / "nano"
    tinyforge("build", "--model", models / "dense_int8.tflite", "--project-dir", project,
              "--no-compile", check_rc=0)
    model, info = reader.read_model_file(models / "dense_int8.tflite")
    (tensor_in,), (tensor_out,) = info.inputs, info.outputs
    spec = protocol.TensorSpec("int8", tuple(tensor_in.shape), tensor_in.scale,
                               tensor_in.zero_point)
    samples = validate_lib.random_samples(spec, 4, seed=0)
    expected = host_runtime.run_batch(model, [[s.reshape(spec.shape)] for s in samples], 1, "d")
    answers = {s.tobytes(): e[0].reshape(-1) for s, e in zip(samples, expected)}

    def firmware(device: FakeDevice, stop: threading.Event) -> None:
        decoder = protocol.Decoder()
        while not stop.is_set():
            for event in decoder.feed(device.read(0.1)):
                if getattr(event, "type", "") == "HELLO":
                    device.send(protocol.encode(
                        "BOOT", v=1, fw="0.1.0", board="nano33ble", model=info.sha256,
                        arena=4096, used=1000, ops=1, status="ok",
                        **{"in": f"int8:1x10:{tensor_in.scale!r}:{tensor_in.zero_point}",
                           "out": f"int8:1x2:{tensor_out.scale!r}:{tensor_out.zero_point}"}))
                elif getattr(event, "type", "") == "IN":
                    q = answers[bytes.fromhex(event.fields["data"])]
                    f = (q.astype(float) - tensor_out.zero_point) * tensor_out.scale
                    device.send(protocol.encode(
                        "RES", seq=int(event.fields["seq"]), src="host", us=100,
                        q0=",".join(map(str, q)), f0=",".join(f"{v:.7g}" for v in f)))

    outputs = {}
    for form in ("--json", None):
        with FakeDevice(tmp_path) as device:
            stop = threading.Event()
            thread = threading.Thread(target=firmware, args=(device, stop), daemon=True)
            thread.start()
            argv = [sys.executable, "-m", "tinyforge", "validate", "--project-dir",
                    str(project), "--port", device.port, "--random", "4"]
            result = subprocess.run(argv + ([form] if form else []), env=cli_env,
                                    capture_output=True, text=True, timeout=60)
            stop.set()
            thread.join()
        assert result.returncode == 0, result.stderr
        outputs[form] = result.stdout
    report = json.loads(outputs["--json"])
    assert report["exact_matches"] == 4 and report["reference"] == WHEEL_WORDS
    assert f"(reference: {WHEEL_WORDS})" in outputs[None]


# --- the host build's failures --------------------------------------------------------------

def test_a_file_that_does_not_compile_is_named_and_nothing_is_cached(tmp_path, gxx):
    tree = _fake_tree(tmp_path / "tree", source="int broken( {\n")
    cache = tmp_path / "cache"
    with pytest.raises(HostBuildError) as caught:
        host_build.build_host_library(tree, cache_dir=cache, jobs=1)
    error = caught.value
    assert "compiling broken.cpp" in error.message
    assert "exclude_sources" in error.hint and "--verbose" in error.hint
    assert "error" in error.details  # the compiler's own words
    assert list(cache.iterdir()) == [], "no half-made build left in the cache"


def test_a_missing_compiler_falls_back_to_the_wheel_or_fails_when_required(tmp_path,
                                                                           monkeypatch, caplog):
    tree = _fake_tree(tmp_path / "tree", source="int fine;\n")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    with pytest.raises(ToolMissingError) as caught:
        host_build.build_host_library(tree, cache_dir=tmp_path / "cache")
    assert "apt-get install g++" in caught.value.hint
    with pytest.raises(ToolMissingError):
        runtime_for_tree(tree, required=True)
    runtime = runtime_for_tree(tree)
    assert isinstance(runtime, WheelRuntime) and "no-such-g++" in runtime.note
    assert "the reference is the tflite-micro wheel" in caplog.text


def test_the_cache_key_follows_the_tree_the_flags_and_the_shim(tmp_path):
    tree = _fake_tree(tmp_path / "tree", source="int a;\n")
    key = host_build.cache_key(tree, ("-DARDUINO",), "g++ 12")
    assert key == host_build.cache_key(tree, ("-DARDUINO",), "g++ 12")
    assert key != host_build.cache_key(tree, ("-DARDUINO", "-DX"), "g++ 12")
    assert key != host_build.cache_key(tree, ("-DARDUINO",), "g++ 13")
    (tree / "src" / "broken.cpp").write_text("int b;\n")
    assert key != host_build.cache_key(tree, ("-DARDUINO",), "g++ 12")


def test_the_host_build_leaves_out_what_the_emulated_board_leaves_out(tmp_path):
    tree = tmp_path / "tree"
    for relative in ("src/tensorflow/lite/micro/debug_log.cpp",
                     "src/tensorflow/lite/micro/micro_time.cpp",
                     "src/tensorflow/lite/micro/system_setup.cpp",
                     "src/peripherals/utility_arduino.cpp",
                     "src/tensorflow/lite/micro/micro_interpreter.cpp",
                     "src/third_party/cmsis_nn/Source/x/arm_convolve_s8.c",
                     "src/tensorflow/lite/micro/micro_log.h"):
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree / relative).write_text("\n")
    sources = host_build.tree_sources(tree, host_build.default_exclusions())
    assert [p.relative_to(tree / "src").as_posix() for p in sources] == [
        "tensorflow/lite/micro/micro_interpreter.cpp",
        "third_party/cmsis_nn/Source/x/arm_convolve_s8.c"]
    assert host_build.default_exclusions() == tuple(
        profiles.load_board("qemu-m4").tflm["exclude_sources"])


def test_tree_runtime_describes_the_board_library():
    library = host_build.HostLibrary(path=Path("/c/lib.so"), tree=Path("/t/Chirale"),
                                     library="Chirale_TensorFLowLite", version="2.0.0", key="k",
                                     sources=211, compiled_now=False, seconds=1.0)
    runtime = TreeRuntime(library, display_name="Chirale_TensorFlowLite")
    assert runtime.description == ("host build of Chirale_TensorFlowLite 2.0.0 at /t/Chirale "
                                   "(the board's kernels)")
    assert runtime.to_json()["kind"] == "tflm-tree"
