// board_profile.h under QEMU: an exact instruction count. tinyforge starts QEMU with
// -icount shift=7 (emulator.ICOUNT_ARGS): while the CPU runs, its virtual clock advances
// 2^7 = 128 ns per executed instruction, so timer 0 (25 MHz, 40 ns a tick) advances 3.2
// ticks per instruction. A difference of n instructions is then 3.2 n ticks give or take
// one (the clock's phase when the count started), and n = round(ticks × 40 / 128) exactly.
// (With shift=0 one tick would be 40 instructions, and where the ticks fall depends on
// when the host's input woke the CPU: counts differed by 40 between runs.) DWT->CYCCNT
// reads 0 in QEMU.
#include "board_profile.h"
#include "qemu_m4.h"

namespace {

constexpr uint32_t kIcountShift = 7;  // must match tinyforge.device.emulator.ICOUNT_SHIFT
constexpr uint32_t kNsPerTick = 1000000000u / qemu_m4::kCpuHz;

}  // namespace

void BoardProfileStart() {}

uint32_t BoardProfileCount() { return static_cast<uint32_t>(qemu_m4::TimerTicks()); }

uint32_t BoardProfileUnits(uint32_t ticks) {
  const uint64_t scaled = static_cast<uint64_t>(ticks) * kNsPerTick;
  const uint64_t ns_per_instruction = 1u << kIcountShift;
  return static_cast<uint32_t>((scaled + ns_per_instruction / 2) / ns_per_instruction);
}

const char* BoardProfileUnit() { return "instructions"; }
