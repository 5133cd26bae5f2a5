// tinyforge's host reference runtime: the C API of tinyforge_tflm_host.h over
// the MicroInterpreter of whatever TFLM tree it is compiled with (the board's
// own library, see docs/reference.md).
//
// The interpreter is set up the way the generated firmware sets it up
// (firmware_templates/project/src/main.cpp.j2): the same constructor, a
// MicroAllocator and MicroResourceVariables when the model has resource
// variables, the arena given by the caller. The op resolver registers every
// builtin with its default kernel variant, which is what the firmware's
// MicroMutableOpResolver Add*() calls register too.
#include "tinyforge_tflm_host.h"

#include <stdlib.h>
#include <string.h>

#include <new>
#include <string>
#include <vector>

#include "tensorflow/lite/micro/all_ops_resolver.h"
#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/micro/micro_resource_variable.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

// The firmware aligns its arena to 16 bytes for the CMSIS-NN kernels.
constexpr size_t kArenaAlignment = 16;

// Kernels reach every tensor through TfLiteContext::GetEvalTensor; the
// interpreter keeps its context protected, so a subclass is the way to read
// an intermediate tensor between two operators.
class InspectableInterpreter : public tflite::MicroInterpreter {
 public:
  using tflite::MicroInterpreter::MicroInterpreter;

  TfLiteEvalTensor* EvalTensor(int tensor_index) {
    const TfLiteContext& ctx = context();
    return ctx.GetEvalTensor(&ctx, tensor_index);
  }
};

struct RecordedTensor {
  TfhTensorInfo info;
  std::vector<uint8_t> data;  // outputs only
};

struct RecordedLayer {
  int32_t node_index;
  std::string op_name;
  std::vector<RecordedTensor> inputs;
  std::vector<RecordedTensor> outputs;
};

// The graph wraps every operator's Invoke in BeginEvent/EndEvent
// (micro_graph.cpp). EndEvent of a top-level event runs right after an
// operator of subgraph 0 has written its outputs and before the next one
// runs, so its output buffers still hold this operator's results even though
// the memory planner reuses them later. Events nested inside (the operators of
// a subgraph that CALL_ONCE, IF or WHILE runs) belong to their caller.
class LayerRecorder : public tflite::MicroProfilerInterface {
 public:
  void Attach(InspectableInterpreter* interpreter, const tflite::Model* model) {
    interpreter_ = interpreter;
    model_ = model;
  }
  void set_enabled(bool enabled) { enabled_ = enabled; }
  void StartInvoke() {
    layers_.clear();
    next_node_ = 0;
    depth_ = 0;
  }
  const std::vector<RecordedLayer>& layers() const { return layers_; }

  uint32_t BeginEvent(const char* tag) override {
    if (depth_ == 0) tag_ = tag != nullptr ? tag : "";
    return ++depth_;
  }

  void EndEvent(uint32_t event_handle) override {
    (void)event_handle;
    if (depth_ == 0 || --depth_ != 0) return;
    const int32_t node = next_node_++;
    if (enabled_) Record(node);
  }

 private:
  void Record(int32_t node);
  RecordedTensor Describe(int32_t tensor_index, bool copy_data);

  InspectableInterpreter* interpreter_ = nullptr;
  const tflite::Model* model_ = nullptr;
  bool enabled_ = false;
  uint32_t depth_ = 0;
  int32_t next_node_ = 0;
  const char* tag_ = "";
  std::vector<RecordedLayer> layers_;
};

void DescribeQuantization(const tflite::Tensor* tensor, TfhTensorInfo* info) {
  info->scale = 0.0f;
  info->zero_point = 0;
  if (tensor == nullptr || tensor->quantization() == nullptr) return;
  const auto* scales = tensor->quantization()->scale();
  const auto* zero_points = tensor->quantization()->zero_point();
  if (scales != nullptr && scales->size() > 0) info->scale = scales->Get(0);
  if (zero_points != nullptr && zero_points->size() > 0) {
    info->zero_point = static_cast<int32_t>(zero_points->Get(0));
  }
}

void DescribeDims(const TfLiteIntArray* dims, TfhTensorInfo* info) {
  info->dims_count = 0;
  if (dims == nullptr) return;
  info->dims_count = dims->size < TFH_MAX_DIMS ? dims->size : TFH_MAX_DIMS;
  for (int32_t i = 0; i < info->dims_count; ++i) info->dims[i] = dims->data[i];
}

RecordedTensor LayerRecorder::Describe(int32_t tensor_index, bool copy_data) {
  RecordedTensor recorded;
  memset(&recorded.info, 0, sizeof(recorded.info));
  recorded.info.tensor_index = tensor_index;
  if (tensor_index < 0) return recorded;  // an optional input left out
  const TfLiteEvalTensor* eval = interpreter_->EvalTensor(tensor_index);
  recorded.info.type = eval->type;
  DescribeDims(eval->dims, &recorded.info);
  size_t bytes = 0;
  if (tflite::TfLiteEvalTensorByteLength(eval, &bytes) != kTfLiteOk) bytes = 0;
  recorded.info.bytes = bytes;
  DescribeQuantization(model_->subgraphs()->Get(0)->tensors()->Get(tensor_index),
                       &recorded.info);
  if (copy_data && bytes > 0 && eval->data.raw != nullptr) {
    const uint8_t* begin = static_cast<const uint8_t*>(eval->data.data);
    recorded.data.assign(begin, begin + bytes);
  }
  return recorded;
}

void LayerRecorder::Record(int32_t node) {
  const auto* operators = model_->subgraphs()->Get(0)->operators();
  if (operators == nullptr || static_cast<uint32_t>(node) >= operators->size()) return;
  const tflite::Operator* op = operators->Get(node);
  RecordedLayer layer;
  layer.node_index = node;
  layer.op_name = tag_;
  if (op->inputs() != nullptr) {
    for (int32_t index : *op->inputs()) layer.inputs.push_back(Describe(index, false));
  }
  if (op->outputs() != nullptr) {
    for (int32_t index : *op->outputs()) layer.outputs.push_back(Describe(index, true));
  }
  layers_.push_back(layer);
}

void* AlignedCopy(const uint8_t* data, size_t size) {
  // Flatbuffers and the kernels read the model's weights in place: keep the
  // copy aligned like the firmware's g_model array.
  void* copy = aligned_alloc(kArenaAlignment,
                             (size + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment);
  if (copy != nullptr && size > 0) memcpy(copy, data, size);
  return copy;
}

}  // namespace

struct TfhInterpreter {
  void* model_data = nullptr;
  uint8_t* arena = nullptr;
  const tflite::Model* model = nullptr;
  tflite::AllOpsResolver resolver;
  LayerRecorder recorder;
  InspectableInterpreter* interpreter = nullptr;
  TfLiteStatus allocation = kTfLiteError;
};

namespace {

bool Ready(const TfhInterpreter* h) {
  return h != nullptr && h->interpreter != nullptr && h->allocation == kTfLiteOk;
}

TfhStatus DescribeTensor(const TfhInterpreter* h, const TfLiteTensor* tensor,
                         int32_t tensor_index, TfhTensorInfo* info) {
  if (tensor == nullptr || info == nullptr) return kTfhBadArgument;
  memset(info, 0, sizeof(*info));
  info->tensor_index = tensor_index;
  info->type = tensor->type;
  DescribeDims(tensor->dims, info);
  info->bytes = tensor->bytes;
  DescribeQuantization(h->model->subgraphs()->Get(0)->tensors()->Get(tensor_index), info);
  return kTfhOk;
}

const RecordedLayer* Layer(const TfhInterpreter* h, int32_t layer) {
  if (h == nullptr || layer < 0 ||
      static_cast<size_t>(layer) >= h->recorder.layers().size()) {
    return nullptr;
  }
  return &h->recorder.layers()[layer];
}

TfhStatus CopyInfo(const std::vector<RecordedTensor>& tensors, int32_t index,
                   TfhTensorInfo* info) {
  if (info == nullptr || index < 0 || static_cast<size_t>(index) >= tensors.size()) {
    return kTfhBadArgument;
  }
  *info = tensors[index].info;
  return kTfhOk;
}

}  // namespace

extern "C" {

int tfh_abi_version(void) { return TFH_ABI_VERSION; }

int tfh_pointer_bytes(void) { return static_cast<int>(sizeof(void*)); }

TfhInterpreter* tfh_create(const uint8_t* model, size_t model_size, size_t arena_size,
                           int32_t resource_variables) {
  if (model == nullptr || model_size == 0) return nullptr;
  TfhInterpreter* h = new (std::nothrow) TfhInterpreter();
  if (h == nullptr) return nullptr;
  h->model_data = AlignedCopy(model, model_size);
  const size_t arena_bytes =
      (arena_size + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
  h->arena = static_cast<uint8_t*>(aligned_alloc(kArenaAlignment, arena_bytes));
  if (h->model_data == nullptr || h->arena == nullptr) {
    tfh_destroy(h);
    return nullptr;
  }
  h->model = tflite::GetModel(h->model_data);
  if (h->model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema version %d differs from this TFLM's (%d)",
                static_cast<int>(h->model->version()), TFLITE_SCHEMA_VERSION);
    return h;
  }
  if (resource_variables > 0) {
    // Streaming models keep state in resource variables, allocated in the
    // arena, exactly as the firmware does it.
    tflite::MicroAllocator* allocator = tflite::MicroAllocator::Create(h->arena, arena_size);
    if (allocator == nullptr) return h;
    tflite::MicroResourceVariables* variables =
        tflite::MicroResourceVariables::Create(allocator, resource_variables);
    if (variables == nullptr) return h;
    h->interpreter = new (std::nothrow) InspectableInterpreter(
        h->model, h->resolver, allocator, variables, &h->recorder);
  } else {
    h->interpreter = new (std::nothrow) InspectableInterpreter(
        h->model, h->resolver, h->arena, arena_size, nullptr, &h->recorder);
  }
  if (h->interpreter == nullptr) return h;
  h->recorder.Attach(h->interpreter, h->model);
  h->allocation = h->interpreter->AllocateTensors();
  return h;
}

void tfh_destroy(TfhInterpreter* h) {
  if (h == nullptr) return;
  delete h->interpreter;
  free(h->arena);
  free(h->model_data);
  delete h;
}

TfhStatus tfh_allocation_status(const TfhInterpreter* h) {
  return Ready(h) ? kTfhOk : kTfhNotAllocated;
}

size_t tfh_arena_used_bytes(const TfhInterpreter* h) {
  return Ready(h) ? h->interpreter->arena_used_bytes() : 0;
}

int32_t tfh_input_count(const TfhInterpreter* h) {
  return Ready(h) ? static_cast<int32_t>(h->interpreter->inputs_size()) : 0;
}

int32_t tfh_output_count(const TfhInterpreter* h) {
  return Ready(h) ? static_cast<int32_t>(h->interpreter->outputs_size()) : 0;
}

TfhStatus tfh_input_info(const TfhInterpreter* h, int32_t index, TfhTensorInfo* info) {
  if (!Ready(h)) return kTfhNotAllocated;
  if (index < 0 || index >= tfh_input_count(h)) return kTfhBadArgument;
  return DescribeTensor(h, h->interpreter->input(index), h->interpreter->inputs()[index],
                        info);
}

TfhStatus tfh_output_info(const TfhInterpreter* h, int32_t index, TfhTensorInfo* info) {
  if (!Ready(h)) return kTfhNotAllocated;
  if (index < 0 || index >= tfh_output_count(h)) return kTfhBadArgument;
  return DescribeTensor(h, h->interpreter->output(index), h->interpreter->outputs()[index],
                        info);
}

TfhStatus tfh_set_input(TfhInterpreter* h, int32_t index, const void* data, size_t size) {
  if (!Ready(h)) return kTfhNotAllocated;
  if (index < 0 || index >= tfh_input_count(h) || data == nullptr) return kTfhBadArgument;
  TfLiteTensor* tensor = h->interpreter->input(index);
  if (tensor == nullptr || tensor->bytes != size) return kTfhBadArgument;
  memcpy(tensor->data.raw, data, size);
  return kTfhOk;
}

TfhStatus tfh_get_output(const TfhInterpreter* h, int32_t index, void* data, size_t size) {
  if (!Ready(h)) return kTfhNotAllocated;
  if (index < 0 || index >= tfh_output_count(h) || data == nullptr) return kTfhBadArgument;
  TfLiteTensor* tensor = h->interpreter->output(index);
  if (tensor == nullptr || tensor->bytes != size) return kTfhBadArgument;
  memcpy(data, tensor->data.raw, size);
  return kTfhOk;
}

TfhStatus tfh_invoke(TfhInterpreter* h) {
  if (!Ready(h)) return kTfhNotAllocated;
  h->recorder.StartInvoke();
  return h->interpreter->Invoke() == kTfLiteOk ? kTfhOk : kTfhError;
}

TfhStatus tfh_reset(TfhInterpreter* h) {
  if (!Ready(h)) return kTfhNotAllocated;
  return h->interpreter->Reset() == kTfLiteOk ? kTfhOk : kTfhError;
}

TfhStatus tfh_capture_layers(TfhInterpreter* h, int32_t enabled) {
  if (h == nullptr) return kTfhBadArgument;
  h->recorder.set_enabled(enabled != 0);
  return kTfhOk;
}

int32_t tfh_layer_count(const TfhInterpreter* h) {
  return h == nullptr ? 0 : static_cast<int32_t>(h->recorder.layers().size());
}

TfhStatus tfh_layer_op(const TfhInterpreter* h, int32_t layer, int32_t* node_index,
                       const char** op_name) {
  const RecordedLayer* recorded = Layer(h, layer);
  if (recorded == nullptr || node_index == nullptr || op_name == nullptr) {
    return kTfhBadArgument;
  }
  *node_index = recorded->node_index;
  *op_name = recorded->op_name.c_str();
  return kTfhOk;
}

int32_t tfh_layer_input_count(const TfhInterpreter* h, int32_t layer) {
  const RecordedLayer* recorded = Layer(h, layer);
  return recorded == nullptr ? 0 : static_cast<int32_t>(recorded->inputs.size());
}

int32_t tfh_layer_output_count(const TfhInterpreter* h, int32_t layer) {
  const RecordedLayer* recorded = Layer(h, layer);
  return recorded == nullptr ? 0 : static_cast<int32_t>(recorded->outputs.size());
}

TfhStatus tfh_layer_input(const TfhInterpreter* h, int32_t layer, int32_t index,
                          TfhTensorInfo* info) {
  const RecordedLayer* recorded = Layer(h, layer);
  return recorded == nullptr ? kTfhBadArgument : CopyInfo(recorded->inputs, index, info);
}

TfhStatus tfh_layer_output(const TfhInterpreter* h, int32_t layer, int32_t index,
                           TfhTensorInfo* info) {
  const RecordedLayer* recorded = Layer(h, layer);
  return recorded == nullptr ? kTfhBadArgument : CopyInfo(recorded->outputs, index, info);
}

TfhStatus tfh_layer_output_data(const TfhInterpreter* h, int32_t layer, int32_t index,
                                void* data, size_t size) {
  const RecordedLayer* recorded = Layer(h, layer);
  if (recorded == nullptr || data == nullptr || index < 0 ||
      static_cast<size_t>(index) >= recorded->outputs.size()) {
    return kTfhBadArgument;
  }
  const RecordedTensor& tensor = recorded->outputs[index];
  if (tensor.data.size() != size) return kTfhBadArgument;
  if (size > 0) memcpy(data, tensor.data.data(), size);
  return kTfhOk;
}

}  // extern "C"
