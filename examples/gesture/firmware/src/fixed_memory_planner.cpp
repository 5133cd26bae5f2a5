#include "fixed_memory_planner.h"

#if TINYFORGE_FIXED_PLAN

#include "tensorflow/lite/micro/micro_log.h"

namespace tinyforge {

TfLiteStatus FixedMemoryPlanner::Init(unsigned char*, int) {
  // Called once per allocation: a PROBE rebuilds the interpreter and plans again.
  added_ = 0;
  return kTfLiteOk;
}

TfLiteStatus FixedMemoryPlanner::Check(int size, int first_time_used, int last_time_used) {
  if (added_ >= count_) {
    MicroPrintf("memory plan: buffer %d is not in the firmware's plan of %d buffers", added_,
                count_);
    return kTfLiteError;
  }
  const PlannedBuffer& planned = buffers_[added_];
  if (size > planned.bytes || first_time_used != planned.first ||
      last_time_used != planned.last) {
    MicroPrintf("memory plan: buffer %d is %d bytes for steps %d-%d, planned %d bytes for %d-%d",
                added_, size, first_time_used, last_time_used, static_cast<int>(planned.bytes),
                static_cast<int>(planned.first), static_cast<int>(planned.last));
    return kTfLiteError;
  }
  ++added_;
  return kTfLiteOk;
}

TfLiteStatus FixedMemoryPlanner::AddBuffer(int size, int first_time_used, int last_time_used) {
  return Check(size, first_time_used, last_time_used);
}

TfLiteStatus FixedMemoryPlanner::AddBuffer(int size, int first_time_used, int last_time_used,
                                           int offline_offset) {
  // The model's own plan and the table were made together: they must agree.
  if (added_ < count_ && offline_offset != buffers_[added_].offset) {
    MicroPrintf("memory plan: buffer %d is at %d in the model, %d in the firmware", added_,
                offline_offset, static_cast<int>(buffers_[added_].offset));
    return kTfLiteError;
  }
  return Check(size, first_time_used, last_time_used);
}

TfLiteStatus FixedMemoryPlanner::GetOffsetForBuffer(int buffer_index, int* offset) {
  if (buffer_index < 0 || buffer_index >= added_) return kTfLiteError;
  *offset = static_cast<int>(buffers_[buffer_index].offset);
  return kTfLiteOk;
}

}  // namespace tinyforge

#endif  // TINYFORGE_FIXED_PLAN
