"""issue 11 on the emulated Cortex-M4: the layer report of `validate --layers` (a debug build
that keeps every tensor, LAYERS/TENSOR), models with uint8 edges, and a streaming model with
resource variables stepped in lockstep with the host after a RESET.

The qemu-m4 tests need a TFLM library tree ($TINYFORGE_TFLM, e.g. Chirale_TensorFlowLite
v2.0.0) and compile it for the emulated board and for the host (minutes the first time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qemu_support import require_emulator, seeded_core

from tinyforge.device import emulator, protocol
from tinyforge.device.conversation import Conversation
from tinyforge.flows import layer_report, validate
from tinyforge.model import layers, reader
from tinyforge.model.reference import WheelRuntime, runtime_for_tree

# conv_int8: CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX. The divergence is
# planted at the FULLY_CONNECTED: the firmware's model has another output scale there.
PLANTED_OP = 3


def planted(model: bytes, op: int, factor: float) -> bytes:
    """`model` with the output scale of operator `op` multiplied by `factor`: the firmware
    then requantizes that op's output differently, and everything before it is unchanged."""
    from tinyforge.model.reader import schema

    root = schema().Model.GetRootAsModel(model, 0)
    subgraph = root.Subgraphs(0)
    tensor = subgraph.Tensors(subgraph.Operators(op).Outputs(0))
    quantization = tensor.Quantization()
    table = quantization._tab
    # QuantizationParameters.scale, its third field (vtable slot 8): a vector of floats.
    position = table.Vector(table.Offset(8))
    data = bytearray(model)
    scale = np.frombuffer(data, dtype="<f4", count=1, offset=position)[0]
    data[position:position + 4] = np.float32(scale * factor).tobytes()
    return bytes(data)


def test_a_planted_scale_changes_that_operator_and_nothing_before_it(models):
    model = (models / "conv_int8.tflite").read_bytes()
    changed = planted(model, PLANTED_OP, 1.25)
    before, after = layers.tensor_summaries(model), layers.tensor_summaries(changed)
    differing = [i for i in before if before[i] != after[i]]
    output = layers.model_operators(model)[PLANTED_OP][2][0]
    assert differing == [output]
    assert after[output].scale == pytest.approx(before[output].scale * 1.25)


def test_layer_and_tensor_lines_are_read_and_checked():
    line = protocol.encode("LAYER", seq=3, op=0, name="FULLY_CONNECTED", out=0, type="int8",
                           shape="1x2", bytes=2, crc="1a9a6e95", eol=protocol.DEVICE_EOL)
    (message,) = protocol.Decoder().feed(line)
    layer = protocol.layer_checksum(message)
    assert layer == protocol.LayerChecksum(3, 0, "FULLY_CONNECTED", 0, "int8", [1, 2], 2,
                                           0x1a9a6e95)
    chunk = protocol.tensor_chunk(protocol.OtherMessage(
        "TENSOR", {"seq": "3", "op": "0", "out": "0", "offset": "0", "final": "1",
                   "data": "8510"}))
    assert chunk.data == bytes([0x85, 0x10]) and chunk.final
    for broken in ({"crc": "1A9A6E95"}, {"shape": "1,2"}, {"op": "-1"}):
        fields = dict(message.fields, **broken)
        with pytest.raises(ValueError):
            protocol.layer_checksum(protocol.OtherMessage("LAYER", fields))
    with pytest.raises(ValueError, match="lacks crc"):
        protocol.layer_checksum(protocol.OtherMessage(
            "LAYER", {k: v for k, v in message.fields.items() if k != "crc"}))
    with pytest.raises(ValueError):
        protocol.tensor_chunk(protocol.OtherMessage("TENSOR", dict(chunk_fields(), data="851")))


def chunk_fields() -> dict:
    return {"seq": "3", "op": "0", "out": "0", "offset": "0", "final": "1", "data": ""}


def test_doc_examples_of_layer_reports_are_what_the_host_writes():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for line in (protocol.encode_reset(0), protocol.encode_layers(3),
                 protocol.encode_tensor(3, 0, 0), protocol.encode_layers(2)):
        assert f"host:   {line[:-1].decode()}\n" in doc


def test_the_validate_report_tells_the_truth():
    report = validate.ValidationReport(
        samples=4, exact_matches=1, max_lsb=7, mean_lsb=1.0, max_abs=0.0273, mean_abs=0.01,
        top1_agreement=1.0, latency_us={"min": 1, "median": 2, "max": 3}, max_lsb_allowed=0,
        max_abs_allowed=1e-4, passed=False, reference="tflite-micro wheel 0.dev2026 (...)",
        mismatches=[{"sample": 0, "output": 0, "device": list(range(40)),
                     "host": list(range(3))}], mismatches_total=3,
        known_differences=["op 3 MEAN (int8)"])
    text = "\n".join(report.lines())
    assert "[0, 1, 2]" in text                       # short: whole
    assert "… 24 more of 40]" in text                # long: the cut is marked
    assert "1 shown of 3" in text
    with pytest.raises(validate.ValidationFailed) as failed:
        validate.check(report)
    assert "max 7 LSB" in failed.value.message
    assert "--max-lsb 7" in failed.value.hint and "--max-lsb 1" not in failed.value.hint
    assert "--debug-layers" in failed.value.hint
    assert "op 3 MEAN (int8) in this model" in failed.value.hint


def test_identical_outputs_show_no_dequantized_difference():
    boot = protocol.Boot(protocol=1, firmware="0.1.0", board="qemu-m4",
                         model_sha256="0" * 64, arena_bytes=1, arena_used_bytes=1, ops=1,
                         inputs=[], outputs=[protocol.TensorSpec("uint8", (1, 3), 0.00390625, 0)],
                         status="ok", max_line=512)
    host = [[np.array([[3, 250, 2]], dtype=np.uint8)]]
    # The device's floats as printed (7 digits): 250/256 is exact, 3/256 prints rounded.
    device = [protocol.Result(seq=0, src="host", us=10, outputs=[
        protocol.OutputValues(q=[3, 250, 2], f=[0.01171875, 0.9765625, 0.0078125])])]
    report = validate._compare(device, host, boot, "ref", 0, 1e-4)
    assert report.exact_matches == 1 and report.max_abs == 0.0 and report.max_lsb == 0
    assert report.outputs == [{"dtype": "uint8", "shape": [1, 3], "scale": 0.00390625,
                               "zero_point": 0}]


def test_a_mean_is_a_known_difference_said_before_building(tinyforge, models):
    result = tinyforge("inspect", models / "gesture_mean_int8.tflite", "--board", "qemu-m4",
                       "--arena", "host", "--json", check_rc=0)
    report = json.loads(result.stdout)
    (found,) = report["known_differences"]
    assert found["op"] == "MEAN" and found["dtype"] == "int8"
    assert "MEAN" in result.stderr and "--tflm" in result.stderr   # the wheel is the reference
    clean = json.loads(tinyforge("inspect", models / "conv_int8.tflite", "--board", "qemu-m4",
                                 "--arena", "host", "--json", check_rc=0).stdout)
    assert clean["known_differences"] == []


def test_a_mixed_int8_uint8_model_is_accepted_with_its_dtypes(tinyforge, models, tmp_path):
    result = tinyforge("build", "--board", "qemu-m4", "--model", models / "mixed_uint8_out.tflite",
                       "--project-dir", tmp_path / "p", "--arena", "host", "--no-compile",
                       "--json", check_rc=0)
    assert json.loads(result.stdout)["model"]["name"] == "mixed_uint8_out.tflite"
    settings = (tmp_path / "p" / "src" / "model_settings.cpp").read_text()
    assert '"int8", 10' in settings and '"uint8", 3' in settings


# --- on the emulated Cortex-M4 ------------------------------------------------------------

def _qemu_env(cli_env, tmp_path_factory) -> dict:
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))


@pytest.fixture(scope="module")
def layers_project(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("layers") / "project"


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_the_layer_report_finds_a_planted_divergence_at_its_operator(
        tinyforge, tflm_tree, models, layers_project, tmp_path, tmp_path_factory, cli_env):
    require_emulator()
    env = _qemu_env(cli_env, tmp_path_factory)
    model = (models / "conv_int8.tflite").read_bytes()
    firmware_model = tmp_path / "conv_planted.tflite"
    firmware_model.write_bytes(planted(model, PLANTED_OP, 1.25))
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--model", firmware_model, "--project-dir", layers_project,
                                 "--debug-layers", "--json", env=env, timeout=1800,
                                 check_rc=0).stdout)
    # Its own model: every operator identical on the device and the board's TFLM on the host.
    report = json.loads(tinyforge("validate", "--project-dir", layers_project, "--random", "4",
                                  "--layers", "2", "--json", env=env, check_rc=0).stdout)
    assert report["exact_matches"] == 4
    assert report["layers"]["first_divergence"] is None
    assert report["layers"]["agreeing"] == report["layers"]["compared"] == 5

    tree = runtime_for_tree(tflm_tree)
    sample = np.random.default_rng(3).integers(-128, 127, size=(1, 16, 16, 1), dtype=np.int8)
    with emulator.launch(Path(built["build"]["firmware"])) as link:
        talk = Conversation(link)
        boot = talk.wait_for(lambda e: isinstance(e, protocol.Boot), timeout=15, what="BOOT")
        # Against the unchanged model, on both references: the first divergence is the op
        # whose scale was changed; the three before it agree byte for byte.
        for runtime in (tree, WheelRuntime()):
            found = layer_report.compare(talk, boot, 0, sample, model, "conv_int8.tflite",
                                         runtime)
            first = found.divergence
            assert (first.index, first.op, first.reason) == (PLANTED_OP, "FULLY_CONNECTED",
                                                             "values"), first
            assert first.output_shape == [1, 3] and first.input_shapes[0] == [1, 196]
            assert first.max_lsb > 0 and not found.passed
            assert found.agreeing == PLANTED_OP
        # LAYERS for an input that is not the last one is refused, and says so.
        talk.send(protocol.encode_layers(7))
        refused = talk.wait_for(lambda e: isinstance(e, protocol.DeviceErrorMessage),
                                timeout=15, what="ERR")
        assert refused.code == "NO_INFERENCE" and refused.seq == 7


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_streaming_model_steps_50_inputs_in_lockstep_with_the_host(
        tinyforge, tflm_tree, models, layers_project, tmp_path_factory, cli_env):
    require_emulator()
    env = _qemu_env(cli_env, tmp_path_factory)
    model_path = models / "streaming_int8.tflite"
    info = reader.inspect_bytes(model_path.read_bytes(), model_path.name)
    assert info.resource_variables >= 1  # one VAR_HANDLE per subgraph that names the ring
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"} <= {
        op.name for op in info.ops}
    assert [t.dtype for t in info.inputs + info.outputs] == ["int8", "uint8"]
    tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--model", model_path,
              "--project-dir", layers_project, "--debug-layers", env=env, timeout=1800,
              check_rc=0)
    for reference in ("tflm", "wheel"):
        report = json.loads(tinyforge("validate", "--project-dir", layers_project, "--random",
                                      "50", "--reference", reference, "--layers", "0",
                                      "--json", env=env, check_rc=0).stdout)
        assert report["sequence"] == {"reset": True, "steps": 50}
        assert report["exact_matches"] == 50, report["mismatches"]
        assert report["outputs"][0]["dtype"] == "uint8"
        assert report["layers"]["first_divergence"] is None
    # Without the state kept the host would not agree: the outputs depend on the history.
    spec = protocol.TensorSpec("int8", tuple(info.inputs[0].shape), info.inputs[0].scale,
                               info.inputs[0].zero_point)
    samples = validate.random_samples(spec, 50, seed=0)
    tree = runtime_for_tree(tflm_tree)
    batch = [[s.reshape(spec.shape)] for s in samples]
    stepped = tree.run_batch(model_path.read_bytes(), batch, 1, "streaming")
    alone = [tree.run_batch(model_path.read_bytes(), [inputs], 1, "streaming")[0]
             for inputs in batch[:8]]
    assert any(not np.array_equal(a[0], s[0]) for a, s in zip(alone[1:], stepped[1:8]))
