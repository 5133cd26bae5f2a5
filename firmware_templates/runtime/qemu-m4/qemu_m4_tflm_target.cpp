// What TFLM expects from its target, for qemu-m4. These replace the TFLM Arduino library's
// Arduino-only files, which the board profile's [tflm] exclude_sources leaves out of the
// build: debug_log.cpp and system_setup.cpp (DebugLog, InitializeTarget, the
// test_over_serial helpers), micro_time.cpp and peripherals/ (timing through Arduino's
// micros()).
//
// The signatures are Chirale_TensorFlowLite 2.0.0's (tensorflow/lite/micro/debug_log.h,
// system_setup.h, micro_time.h). Its headers are included when the library is part of the
// build, so a signature that drifts is a compile error; the self-test firmware, built
// without TFLM, gets the same declarations from here and the linker drops the unused code.
#include <stdint.h>
#include <string.h>

#include "board_runtime.h"
#include "qemu_m4.h"

#if __has_include("tensorflow/lite/micro/debug_log.h")
#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/micro_time.h"
#include "tensorflow/lite/micro/system_setup.h"
#else
extern "C" void DebugLog(const char* s);
namespace tflite {
void InitializeTarget();
uint32_t ticks_per_second();
uint32_t GetCurrentTimeTicks();
}  // namespace tflite
#endif

// TFLM's MicroPrintf output: device log lines on the same UART as the protocol.
extern "C" void DebugLog(const char* s) { BoardSerialWrite(s, strlen(s)); }

namespace tflite {

// The sketch opens the serial link itself (BoardSerialBegin); nothing else to set up.
void InitializeTarget() {}

// TFLM's profiler ticks are BoardMicros() microseconds, as on the Arduino target.
uint32_t ticks_per_second() { return 1000000; }

uint32_t GetCurrentTimeTicks() { return BoardMicros(); }

}  // namespace tflite
