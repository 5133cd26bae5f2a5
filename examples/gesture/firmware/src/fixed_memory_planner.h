// A memory planner that places every buffer where tinyforge planned it
// (docs/memory.md, "A plan compiled into the firmware").
//
// With an offline plan in the model, TFLM's GreedyMemoryPlanner still runs at
// allocation time to place the scratch buffers, and while it runs it keeps about
// 40 bytes of working arrays per buffer in the arena, on top of TFLM's own
// AllocationInfo array: for small models those temporaries, not the planned
// tensors, set the smallest arena that works. tinyforge computes the whole layout
// on the host (the model's plan, and the scratch buffers placed the way TFLM's
// greedy planner would place them around it), so this planner only looks up each
// buffer's offset in a table in flash. Every request is checked against the
// buffer the table was made for; a kernel that asks for more, or a lifetime
// that differs, fails the allocation instead of overlapping another buffer.
#ifndef TINYFORGE_FIXED_MEMORY_PLANNER_H_
#define TINYFORGE_FIXED_MEMORY_PLANNER_H_

#include "model_settings.h"

#if TINYFORGE_FIXED_PLAN

#include <stddef.h>

#include "tensorflow/lite/micro/memory_planner/micro_memory_planner.h"

namespace tinyforge {

class FixedMemoryPlanner : public tflite::MicroMemoryPlanner {
 public:
  FixedMemoryPlanner(const PlannedBuffer* buffers, int count, size_t head_bytes)
      : buffers_(buffers), count_(count), head_bytes_(head_bytes) {}

  // TFLM offers the rest of the arena as working memory: none is needed.
  TfLiteStatus Init(unsigned char* scratch_buffer, int scratch_buffer_size) override;
  TfLiteStatus AddBuffer(int size, int first_time_used, int last_time_used) override;
  TfLiteStatus AddBuffer(int size, int first_time_used, int last_time_used,
                         int offline_offset) override;
  size_t GetMaximumMemorySize() override { return head_bytes_; }
  int GetBufferCount() override { return added_; }
  TfLiteStatus GetOffsetForBuffer(int buffer_index, int* offset) override;

 private:
  TfLiteStatus Check(int size, int first_time_used, int last_time_used);

  const PlannedBuffer* buffers_;
  int count_;
  size_t head_bytes_;
  int added_ = 0;
};

}  // namespace tinyforge

#endif  // TINYFORGE_FIXED_PLAN
#endif  // TINYFORGE_FIXED_MEMORY_PLANNER_H_
