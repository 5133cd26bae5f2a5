// What TFLM expects from its target, for the host. These replace the TFLM
// Arduino library's Arduino-only files, which the host build leaves out like
// the qemu-m4 build does (the board profile's [tflm] exclude_sources):
// debug_log.cpp and system_setup.cpp (DebugLog, InitializeTarget) and
// micro_time.cpp (ticks through Arduino's micros()).
//
// Declared through the tree's own headers, so a signature that drifts in
// another TFLM version is a compile error rather than a silent mismatch.
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/micro_time.h"
#include "tensorflow/lite/micro/system_setup.h"

// TFLM's MicroPrintf output goes to file descriptor 2, where tinyforge's
// forked children capture it and show it as TFLM's own words.
extern "C" void DebugLog(const char* s) {
  fputs(s, stderr);
  fflush(stderr);
}

namespace tflite {

void InitializeTarget() {}

// Microseconds, as on the Arduino target.
uint32_t ticks_per_second() { return 1000000; }

uint32_t GetCurrentTimeTicks() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint32_t>(now.tv_sec * 1000000u + now.tv_nsec / 1000);
}

}  // namespace tflite
