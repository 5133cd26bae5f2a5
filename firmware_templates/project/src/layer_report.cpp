// The layer report of `tinyforge validate --layers`: see layer_report.h.
#include "layer_report.h"

#if TINYFORGE_DEBUG_LAYERS

#include <string.h>

#include <new>

#include "tensorflow/lite/micro/arena_allocator/single_arena_buffer_allocator.h"
#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_arena_constants.h"
#include "tensorflow/lite/micro/memory_planner/linear_memory_planner.h"
#include "tensorflow/lite/schema/schema_utils.h"

namespace layer_report {
namespace {

static_assert(sizeof(InspectableInterpreter) == sizeof(tflite::MicroInterpreter),
              "the sketch's interpreter storage is sized for a MicroInterpreter");

// Bytes of tensor data per TENSOR line: 256 hex digits keep a line near 330
// bytes, well inside any host's limit.
constexpr size_t kTensorChunkBytes = 128;
constexpr char kErrNoInference[] = "NO_INFERENCE";

bool have_inference = false;
uint32_t inference_seq = 0;
InspectableInterpreter* inspected = nullptr;
const tflite::Model* inspected_model = nullptr;

// The protocol's names, and the flatbuffer schema's for the rest (as the host's
// model reader names them).
const char* TypeName(TfLiteType type) {
  switch (type) {
    case kTfLiteInt8: return "int8";
    case kTfLiteUInt8: return "uint8";
    case kTfLiteInt16: return "int16";
    case kTfLiteInt32: return "int32";
    case kTfLiteInt64: return "int64";
    case kTfLiteFloat32: return "float32";
    case kTfLiteFloat16: return "float16";
    case kTfLiteBool: return "bool";
    case kTfLiteResource: return "resource";
    case kTfLiteVariant: return "variant";
    default: return "other";
  }
}

const char* OpName(const tflite::Operator* op) {
  const auto* codes = inspected_model->operator_codes();
  if (codes == nullptr || op->opcode_index() >= codes->size()) return "UNKNOWN";
  const tflite::OperatorCode* code = codes->Get(op->opcode_index());
  const tflite::BuiltinOperator builtin = tflite::GetBuiltinCode(code);
  if (builtin == tflite::BuiltinOperator_CUSTOM && code->custom_code() != nullptr) {
    return code->custom_code()->c_str();
  }
  return tflite::EnumNameBuiltinOperator(builtin);
}

const flatbuffers::Vector<flatbuffers::Offset<tflite::Operator>>* Operators() {
  return inspected_model->subgraphs()->Get(0)->operators();
}

// "1x16"; an empty text for a scalar, as in the protocol's tensor specs.
size_t FormatShape(const TfLiteIntArray* dims, char* out, size_t capacity) {
  size_t length = 0;
  char number[12];
  for (int i = 0; dims != nullptr && i < dims->size; ++i) {
    const size_t digits = tfproto::FormatInt(dims->data[i], number);
    if (length + digits + 1 >= capacity) break;
    if (i > 0) out[length++] = 'x';
    memcpy(out + length, number, digits);
    length += digits;
  }
  return length;
}

size_t ByteLength(const TfLiteEvalTensor* tensor) {
  size_t bytes = 0;
  if (tensor == nullptr || tensor->data.raw == nullptr ||
      tflite::TfLiteEvalTensorByteLength(tensor, &bytes) != kTfLiteOk) {
    return 0;
  }
  return bytes;
}

// The request's seq, checked against the inference the tensors hold.
bool CheckRequest(tfproto::WriteFn write, const tfproto::LineParser& request,
                  uint32_t* seq) {
  const int64_t requested = tfproto::RequestSeq(request);
  if (requested == tfproto::kNoSeq) {
    tfproto::WriteError(write, tfproto::kNoSeq, tfproto::kErrBadMessage, 0,
                        "needs seq=N, the seq of the last IN");
    return false;
  }
  *seq = static_cast<uint32_t>(requested);
  if (!have_inference || inference_seq != *seq) {
    tfproto::WriteError(write, requested, kErrNoInference, 0,
                        have_inference ? "not the last inference: send its IN again"
                                       : "no inference since the interpreter was built");
    return false;
  }
  return true;
}

bool FindUInt(const tfproto::LineParser& request, const char* key, uint32_t* value) {
  const char* text = nullptr;
  size_t length = 0;
  return request.Find(key, &text, &length) && tfproto::ParseUInt(text, length, value);
}

}  // namespace

tflite::MicroAllocator* CreatePreservingAllocator(uint8_t* arena, size_t arena_size) {
  uint8_t* aligned = tflite::AlignPointerUp(arena, tflite::MicroArenaBufferAlignment());
  tflite::SingleArenaBufferAllocator* buffers = tflite::SingleArenaBufferAllocator::Create(
      aligned, static_cast<size_t>(arena + arena_size - aligned));
  if (buffers == nullptr) return nullptr;
  uint8_t* planner_memory = buffers->AllocatePersistentBuffer(
      sizeof(tflite::LinearMemoryPlanner), alignof(tflite::LinearMemoryPlanner));
  if (planner_memory == nullptr) return nullptr;
  tflite::LinearMemoryPlanner* planner = new (planner_memory) tflite::LinearMemoryPlanner();
  return tflite::MicroAllocator::Create(buffers, planner);
}

void Forget() {
  have_inference = false;
  inspected = nullptr;
}

void Ran(uint32_t seq, InspectableInterpreter* interpreter, const tflite::Model* model) {
  have_inference = true;
  inference_seq = seq;
  inspected = interpreter;
  inspected_model = model;
}

void AnswerLayers(tfproto::WriteFn write, const tfproto::LineParser& request) {
  uint32_t seq = 0;
  if (!CheckRequest(write, request, &seq)) return;
  const auto* operators = Operators();
  const uint32_t count = operators != nullptr ? operators->size() : 0;
  for (uint32_t node = 0; node < count; ++node) {
    const tflite::Operator* op = operators->Get(node);
    const char* name = OpName(op);
    for (uint32_t out = 0; op->outputs() != nullptr && out < op->outputs()->size(); ++out) {
      const TfLiteEvalTensor* tensor = inspected->EvalTensor(op->outputs()->Get(out));
      const size_t bytes = ByteLength(tensor);
      const uint32_t crc =
          bytes > 0 ? tfproto::Crc32(static_cast<const char*>(tensor->data.data), bytes) : 0;
      char shape[96];
      const size_t shape_length = FormatShape(tensor->dims, shape, sizeof(shape));
      char crc_text[9];
      for (int i = 0; i < 8; ++i) {
        crc_text[i] = "0123456789abcdef"[(crc >> (28 - 4 * i)) & 0xF];
      }
      tfproto::MessageWriter writer(write);
      writer.Begin("LAYER");
      writer.UInt("seq", seq);
      writer.UInt("op", node);
      writer.Text("name", name);
      writer.UInt("out", out);
      writer.Text("type", TypeName(tensor->type));
      writer.Text("shape", shape, shape_length);
      writer.UInt("bytes", static_cast<uint32_t>(bytes));
      writer.Text("crc", crc_text, 8);
      writer.End();
    }
  }
  tfproto::MessageWriter writer(write);
  writer.Begin("LAYERS");
  writer.UInt("seq", seq);
  writer.UInt("ops", count);
  writer.Text("status", "ok");
  writer.End();
}

void AnswerTensor(tfproto::WriteFn write, const tfproto::LineParser& request) {
  uint32_t seq = 0;
  if (!CheckRequest(write, request, &seq)) return;
  uint32_t node = 0;
  uint32_t out = 0;
  const auto* operators = Operators();
  if (!FindUInt(request, "op", &node) || !FindUInt(request, "out", &out) ||
      operators == nullptr || node >= operators->size() ||
      operators->Get(node)->outputs() == nullptr ||
      out >= operators->Get(node)->outputs()->size()) {
    tfproto::WriteError(write, seq, tfproto::kErrBadMessage, 0,
                        "TENSOR needs op=K out=J naming an operator output");
    return;
  }
  const TfLiteEvalTensor* tensor =
      inspected->EvalTensor(operators->Get(node)->outputs()->Get(out));
  const size_t bytes = ByteLength(tensor);
  const uint8_t* data = bytes > 0 ? static_cast<const uint8_t*>(tensor->data.data) : nullptr;
  size_t offset = 0;
  do {
    const size_t chunk = bytes - offset < kTensorChunkBytes ? bytes - offset : kTensorChunkBytes;
    tfproto::MessageWriter writer(write);
    writer.Begin("TENSOR");
    writer.UInt("seq", seq);
    writer.UInt("op", node);
    writer.UInt("out", out);
    writer.UInt("offset", static_cast<uint32_t>(offset));
    writer.UInt("final", offset + chunk >= bytes ? 1 : 0);
    writer.Hex("data", data != nullptr ? data + offset : nullptr, chunk);
    writer.End();
    offset += chunk;
  } while (offset < bytes);
}

}  // namespace layer_report

#endif  // TINYFORGE_DEBUG_LAYERS
