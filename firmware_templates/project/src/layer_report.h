// The layer report of `tinyforge validate --layers` (docs/protocol.md, "Layer
// reports"): compiled in only by `tinyforge build --debug-layers`, which sets
// TINYFORGE_DEBUG_LAYERS in model_settings.h.
//
// The interpreter of such a firmware plans its tensors with TFLM's
// LinearMemoryPlanner: every tensor keeps a buffer of its own, so after an
// inference every operator's output can still be read (what later TFLM
// versions call preserve_all_tensors). The host asks for a CRC-32 of each
// operator's output (LAYERS), then for the bytes of the first one that differs
// from its own (TENSOR). No profiler is involved: the interpreter's profiler
// slot stays free for `tinyforge profile`.
#ifndef TINYFORGE_LAYER_REPORT_H_
#define TINYFORGE_LAYER_REPORT_H_

#include "model_settings.h"

#if TINYFORGE_DEBUG_LAYERS

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tf_protocol.h"

namespace layer_report {

// Kernels reach every tensor through TfLiteContext::GetEvalTensor; the
// interpreter keeps its context protected, so the firmware constructs this
// subclass (no members of its own: the same size as a MicroInterpreter).
class InspectableInterpreter : public tflite::MicroInterpreter {
 public:
  using tflite::MicroInterpreter::MicroInterpreter;

  // Subgraph 0's tensor, after Invoke() has returned.
  TfLiteEvalTensor* EvalTensor(int tensor_index) {
    const TfLiteContext& ctx = context();
    return ctx.GetEvalTensor(&ctx, tensor_index);
  }
};

// An allocator whose memory planner never reuses a buffer. The planner lives
// in the arena's persistent tail, as the default greedy planner does.
tflite::MicroAllocator* CreatePreservingAllocator(uint8_t* arena, size_t arena_size);

// The arena was rebuilt (PROBE, RESET): no inference to report on.
void Forget();

// The inference of IN `seq` ran on `interpreter`: LAYERS and TENSOR report it.
void Ran(uint32_t seq, InspectableInterpreter* interpreter, const tflite::Model* model);

// LAYERS seq=N: one LAYER line per operator output, then LAYERS ops=K.
void AnswerLayers(tfproto::WriteFn write, const tfproto::LineParser& request);

// TENSOR seq=N op=K out=J: the bytes of that output in TENSOR lines.
void AnswerTensor(tfproto::WriteFn write, const tfproto::LineParser& request);

}  // namespace layer_report

#endif  // TINYFORGE_DEBUG_LAYERS
#endif  // TINYFORGE_LAYER_REPORT_H_
