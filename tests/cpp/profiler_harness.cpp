// Runs firmware_templates/profile/src/tf_profiler.cpp on the host with a scripted counter,
// for tests/test_profile.py: each read of the counter costs `kReadCost` and every simulated
// operator `work[i]`, so every figure of the PROF it prints is known in advance.
//
//   profiler_harness WORK...     one inference of len(WORK) operators, then its PROF line
//   profiler_harness -nested     two operators, the second running a nested one
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board_profile.h"
#include "tf_profiler.h"

namespace {

constexpr uint32_t kReadCost = 40;
uint32_t g_now = 1000;

void Write(const char* data, size_t length) { fwrite(data, 1, length, stdout); }

}  // namespace

void BoardProfileStart() {}

uint32_t BoardProfileCount() {
  const uint32_t value = g_now;
  g_now += kReadCost;
  return value;
}

uint32_t BoardProfileUnits(uint32_t count_difference) { return count_difference; }

const char* BoardProfileUnit() { return "instructions"; }

int main(int argc, char** argv) {
  static int32_t costs[8];
  tfprofile::OpProfiler profiler(costs, 8);
  tflite::MicroProfilerInterface* interface = &profiler;
  profiler.Calibrate();
  profiler.StartInvoke();
  if (argc == 2 && strcmp(argv[1], "-nested") == 0) {
    interface->EndEvent(interface->BeginEvent("ADD"));
    const uint32_t outer = interface->BeginEvent("WHILE");
    g_now += 100;
    interface->EndEvent(interface->BeginEvent("MUL"));  // another subgraph's op
    interface->EndEvent(outer);
  } else {
    for (int i = 1; i < argc; ++i) {
      const uint32_t handle = interface->BeginEvent("OP");
      g_now += static_cast<uint32_t>(strtoul(argv[i], nullptr, 10));
      interface->EndEvent(handle);
    }
  }
  profiler.EndInvoke();
  profiler.Write(Write, 0, "host");
  return 0;
}
