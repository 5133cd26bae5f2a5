// The per-op profiler of `tinyforge build --profile` (docs/protocol.md, "PROF").
//
// A tflite::MicroProfilerInterface of tinyforge's own, not TFLM's MicroProfiler:
// that one holds 1,024 events (20 KB of RAM) and its Log() prints "lu" instead of
// numbers on arm-none-eabi (MicroPrintf has no `l` modifier). This one keeps one
// count per operator of subgraph 0, in the unit of BoardProfileCount(): instructions
// under QEMU, cycles on a real board. An op's count runs from the end of the op
// before it (the first op's from the start of Invoke()) to its own end, so it holds
// the interpreter's work between ops and one EndEvent of the profiler, and the counts
// add up to Invoke() but for its tail. Ops of other subgraphs (IF, WHILE bodies) run
// inside an op of subgraph 0 and count towards it.
#ifndef TINYFORGE_TF_PROFILER_H_
#define TINYFORGE_TF_PROFILER_H_

#include <stddef.h>
#include <stdint.h>

#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tf_protocol.h"

namespace tfprofile {

class OpProfiler : public tflite::MicroProfilerInterface {
 public:
  // Begin/End pairs timed back to back to measure the profiler's own cost.
  static constexpr uint32_t kCalibrationPairs = 64;

  OpProfiler(int32_t* costs, size_t capacity);

  uint32_t BeginEvent(const char* tag) override;
  void EndEvent(uint32_t event_handle) override;

  // Measures what one Begin/End pair costs, called through the interface as
  // TFLM calls it, and starts the board's counter. Call once before profiling.
  void Calibrate();

  // Brackets one Invoke(): forgets the last inference's events and times the whole.
  void StartInvoke();
  void EndInvoke();

  // PROF seq=... after the RES of the same inference.
  void Write(tfproto::WriteFn write, uint32_t seq, const char* source) const;

 private:
  int32_t* costs_;
  size_t capacity_;
  size_t recorded_;   // events of subgraph 0 begun since StartInvoke()
  uint32_t dropped_;  // events of subgraph 0 beyond capacity_
  uint32_t depth_;    // events open now (nested: another subgraph's ops)
  uint32_t last_end_;  // the count when the last op of subgraph 0 ended
  uint32_t invoke_start_;
  uint32_t invoke_total_;
  uint32_t pair_cost_;  // per Begin/End pair, rounded up (Calibrate)
};

}  // namespace tfprofile

#endif  // TINYFORGE_TF_PROFILER_H_
