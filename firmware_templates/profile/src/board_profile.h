// What the per-op profiler (tf_profiler.h, `tinyforge build --profile`) needs from a
// board: a free-running 32-bit count. Each runtime layer implements it with what its
// hardware has; the linker drops it from firmware built without the profiler.
#ifndef TINYFORGE_BOARD_PROFILE_H_
#define TINYFORGE_BOARD_PROFILE_H_

#include <stdint.h>

// Starts the count (a real board's cycle counter is off after reset).
void BoardProfileStart();

// The count now, in the board's raw steps; differences are taken modulo 2^32.
uint32_t BoardProfileCount();

// A difference of two counts in BoardProfileUnit()s.
uint32_t BoardProfileUnits(uint32_t count_difference);

// What the count counts, as the PROF message names it: "instructions" under QEMU
// (-icount shift=7), "cycles" on a real Cortex-M4 (DWT->CYCCNT).
const char* BoardProfileUnit();

#endif  // TINYFORGE_BOARD_PROFILE_H_
