"""The op -> MicroMutableOpResolver method mapping comes from TFLM's own header."""

from __future__ import annotations

import pytest

from tinyforge.board import resolver
from tinyforge.errors import ResolverTableError

# A header in the shape of TFLM's micro_mutable_op_resolver.h (methods with default
# arguments, multi-line bodies, literal and GetString_ custom names).
HEADER = """
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddCustom(const char* name, TfLiteRegistration* registration) {
    return kTfLiteOk;
  }
  TfLiteStatus AddBatchToSpaceNd() {
    return AddBuiltin(BuiltinOperator_BATCH_TO_SPACE_ND,
                      Register_BATCH_TO_SPACE_ND(), ParseBatchToSpaceNd);
  }
  TfLiteStatus AddConv2D(
      const TfLiteRegistration& registration = Register_CONV_2D()) {
    return AddBuiltin(BuiltinOperator_CONV_2D, registration, ParseConv2D);
  }
  TfLiteStatus AddDetectionPostprocess() {
    return AddCustom("TFLite_Detection_PostProcess",
                     tflite::Register_DETECTION_POSTPROCESS());
  }
  TfLiteStatus AddEthosU() {
    TfLiteRegistration* registration = tflite::Register_ETHOSU();
    if (registration) {
      return AddCustom(tflite::GetString_ETHOSU(), registration);
    }
    return kTfLiteOk;
  }
 private:
  TfLiteStatus AddBuiltin(tflite::BuiltinOperator op, const TfLiteRegistration& registration,
                          TfLiteBridgeBuiltinParseFunction parser) {
    return kTfLiteOk;
  }
};
"""


def test_parse_header_maps_ops_to_methods():
    builtin, custom = resolver.parse_header(HEADER)
    assert builtin == {"BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "CONV_2D": "AddConv2D"}
    assert custom == {"TFLite_Detection_PostProcess": "AddDetectionPostprocess",
                      "ethos-u": "AddEthosU"}


def test_a_file_that_is_not_the_resolver_header_is_refused():
    with pytest.raises(ResolverTableError):
        resolver.parse_header("int main() { return 0; }")


def test_committed_table_round_trips_through_its_own_format():
    table = resolver.load_table("tflm/Chirale_TensorFlowLite-2.0.0.toml")
    assert len(table.builtin) > 90
    assert table.builtin["FULLY_CONNECTED"] == "AddFullyConnected"
    assert table.builtin["UNIDIRECTIONAL_SEQUENCE_LSTM"] == "AddUnidirectionalSequenceLSTM"
    assert "GELU" not in table.builtin


def test_committed_table_equals_the_header_of_the_tflm_tree(tinyforge, tflm_tree):
    from pathlib import Path
    committed = Path(__file__).resolve().parent.parent / "boards" / "tflm" / \
        "Chirale_TensorFlowLite-2.0.0.toml"
    result = tinyforge("resolver-table", "--tflm", tflm_tree, "--version", "2.0.0", check_rc=0)
    assert result.stdout == committed.read_text()


def test_resolver_table_command_refuses_a_folder_that_is_not_tflm(tinyforge, tmp_path):
    result = tinyforge("resolver-table", "--tflm", tmp_path, "--version", "1")
    assert result.returncode == 1
    assert "not a TFLM library tree" in result.stderr
