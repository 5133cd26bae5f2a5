// Board runtime layer of tinyforge's emulated Cortex-M4F target (qemu-m4): QEMU's
// mps2-an386 machine. Shared by the files of this layer only; the sketch uses
// board_runtime.h.
//
// The peripherals used are the ones QEMU models for mps2-an386 (QEMU 7.2):
// - UART0, an Arm CMSDK APB UART at 0x40004000, which QEMU connects to `-serial`;
// - CMSDK APB timer 0 at 0x40000000 (IRQ 8) for BoardMicros(): QEMU clocks it from
//   mps2-an386's 25 MHz system clock (kCpuHz) and derives its count from QEMU's virtual
//   clock. tinyforge starts QEMU with -icount shift=7: while the CPU runs, the virtual
//   clock advances 128 ns per instruction (3.2 ticks, from which the profiler recovers
//   exact instruction counts); while it sleeps in WaitForWork(), in real time.
//   `tinyforge selftest` checks the rate against the host's clock (TIME messages).
// - CMSDK APB timer 1 at 0x40001000 (IRQ 9) and UART0's RX interrupt (IRQ 0) wake the
//   idle wait.
// - Arm semihosting (QEMU started with -semihosting), only to exit QEMU with a status.
#ifndef TINYFORGE_QEMU_M4_H_
#define TINYFORGE_QEMU_M4_H_

#include <stddef.h>
#include <stdint.h>

namespace qemu_m4 {

#ifdef F_CPU
constexpr uint32_t kCpuHz = F_CPU;
#else
constexpr uint32_t kCpuHz = 25000000;
#endif

// Exit statuses QEMU returns when the firmware stops it (see Exit()).
constexpr int kExitFault = 3;
constexpr int kExitUnexpectedIrq = 4;
constexpr int kExitAbort = 5;

// Starts the timer BoardMicros() counts from; called before main().
void StartTimer();

// Ticks of timer 0 since StartTimer() (kCpuHz per second of QEMU's virtual clock).
uint64_t TimerTicks();

// Sleeps (WFI) until a byte arrives or the next 1 ms tick, between two loop() calls.
// QEMU runs with -icount shift=7: its virtual clock counts executed instructions (128 ns
// each), so a firmware that polled the UART would make its clock run as fast as QEMU
// executes the polling loop, not with the host's. While the CPU sleeps, QEMU advances the
// virtual clock in real time, so BoardMicros() still follows the host when the firmware
// idles (the self-test's timer check, the demo input's interval) while the instructions of
// an inference are counted exactly.
void WaitForWork();

// Writes bytes straight to UART0, polling; safe in fault handlers.
void UartWrite(const char* data, size_t length);
void UartWriteString(const char* text);
void UartWriteHex(uint32_t value);

// Stops QEMU with `status` as its exit status (semihosting SYS_EXIT_EXTENDED).
[[noreturn]] void Exit(int status);

}  // namespace qemu_m4

#endif  // TINYFORGE_QEMU_M4_H_
