// See tf_profiler.h.
#include "tf_profiler.h"

#include "board_profile.h"

namespace tfprofile {
namespace {

// The handle of an event of another subgraph: counted in its subgraph-0 op.
constexpr uint32_t kNestedEvent = 0xFFFFFFFFu;
constexpr uint32_t kInt32Max = 0x7FFFFFFFu;

// PROF's cost list is int32: a count above 2^31 - 1 is sent as 2^31 - 1.
int32_t Clamp(uint32_t value) {
  return static_cast<int32_t>(value > kInt32Max ? kInt32Max : value);
}

}  // namespace

OpProfiler::OpProfiler(int32_t* costs, size_t capacity)
    : costs_(costs),
      capacity_(capacity),
      recorded_(0),
      dropped_(0),
      depth_(0),
      last_end_(0),
      invoke_start_(0),
      invoke_total_(0),
      pair_cost_(0) {}

uint32_t OpProfiler::BeginEvent(const char* tag) {
  (void)tag;  // the op's index says which op it is; the host has the names
  if (depth_++ != 0) return kNestedEvent;
  if (recorded_ >= capacity_) {
    ++dropped_;
    return kNestedEvent;
  }
  // No read here: an op's interval starts where the previous one ended (or at
  // StartInvoke), so every instruction of Invoke() but its tail is in one op.
  return static_cast<uint32_t>(recorded_++);
}

void OpProfiler::EndEvent(uint32_t event_handle) {
  if (depth_ > 0) --depth_;
  if (event_handle == kNestedEvent || event_handle >= capacity_) return;
  const uint32_t now = BoardProfileCount();
  costs_[event_handle] = Clamp(BoardProfileUnits(now - last_end_));
  last_end_ = now;
}

void OpProfiler::Calibrate() {
  BoardProfileStart();
  tflite::MicroProfilerInterface* self = this;
  StartInvoke();
  const uint32_t start = BoardProfileCount();
  for (uint32_t i = 0; i < kCalibrationPairs; ++i) {
    // Every pair takes the path of a recorded op, never the one of a full table.
    recorded_ = 0;
    self->EndEvent(self->BeginEvent("calibration"));
  }
  const uint32_t elapsed = BoardProfileUnits(BoardProfileCount() - start);
  pair_cost_ = (elapsed + kCalibrationPairs - 1) / kCalibrationPairs;
  StartInvoke();
}

void OpProfiler::StartInvoke() {
  recorded_ = 0;
  dropped_ = 0;
  depth_ = 0;
  invoke_total_ = 0;
  invoke_start_ = BoardProfileCount();
  last_end_ = invoke_start_;
}

void OpProfiler::EndInvoke() {
  invoke_total_ = BoardProfileUnits(BoardProfileCount() - invoke_start_);
}

void OpProfiler::Write(tfproto::WriteFn write, uint32_t seq, const char* source) const {
  tfproto::MessageWriter writer(write);
  writer.Begin("PROF");
  writer.UInt("seq", seq);
  writer.Text("src", source);
  writer.Text("unit", BoardProfileUnit());
  writer.UInt("ops", static_cast<uint32_t>(recorded_));
  writer.Values("cost", tfproto::kInt32, costs_, recorded_);
  writer.UInt("total", invoke_total_);
  writer.UInt("overhead", pair_cost_);
  writer.UInt("dropped", dropped_);
  writer.End();
}

}  // namespace tfprofile
