// board_profile.h under QEMU: an instruction count. QEMU runs with -icount shift=0, so
// its virtual clock advances 1 ns per executed instruction and one tick of timer 0
// (25 MHz) is exactly 40 instructions. DWT->CYCCNT reads 0 in QEMU.
#include "board_profile.h"
#include "qemu_m4.h"

void BoardProfileStart() {}

uint32_t BoardProfileCount() {
  constexpr uint32_t kInstructionsPerTick = 1000000000u / qemu_m4::kCpuHz;
  return static_cast<uint32_t>(qemu_m4::TimerTicks() * kInstructionsPerTick);
}

const char* BoardProfileUnit() { return "instructions"; }
