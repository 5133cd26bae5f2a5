// board_profile.h on a real Cortex-M4 (the Nano 33 BLE's nRF52840): the DWT cycle
// counter, which counts core clock cycles (64 MHz) including flash wait states and
// interrupts taken during the measured code.
#include "board_profile.h"

namespace {

// Armv7-M Architecture Reference Manual, C1.6 (DEMCR) and C1.8 (DWT).
volatile uint32_t* const kDemcr = reinterpret_cast<volatile uint32_t*>(0xE000EDFC);
volatile uint32_t* const kDwtCtrl = reinterpret_cast<volatile uint32_t*>(0xE0001000);
volatile uint32_t* const kDwtCyccnt = reinterpret_cast<volatile uint32_t*>(0xE0001004);
constexpr uint32_t kDemcrTrcena = 1u << 24;
constexpr uint32_t kDwtCtrlCyccntena = 1u << 0;

}  // namespace

void BoardProfileStart() {
  *kDemcr |= kDemcrTrcena;
  *kDwtCyccnt = 0;
  *kDwtCtrl |= kDwtCtrlCyccntena;
}

uint32_t BoardProfileCount() { return *kDwtCyccnt; }

uint32_t BoardProfileUnits(uint32_t count_difference) { return count_difference; }

const char* BoardProfileUnit() { return "cycles"; }
