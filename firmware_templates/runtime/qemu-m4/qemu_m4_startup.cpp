// Start-up of the qemu-m4 target: vector table, reset, fault reporting, exit, the sketch.
//
// A fault prints one line that tinyforge.emulator recognises,
//   tinyforge: HARDFAULT pc=0x... lr=0x... xpsr=0x... cfsr=0x... hfsr=0x... bfar=0x... mmfar=0x...
// and stops QEMU with exit status kExitFault, so a crash is reported at once instead of
// looking like a hang.
#include "board_runtime.h"
#include "qemu_m4.h"

extern "C" {
// From the linker script (qemu-m4.ld).
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, __StackTop;
void __libc_init_array();

void Reset_Handler();
void HardFault_Handler();
void Default_Handler();
void Timer0_Handler();
void Timer1_Handler();
void Uart0Rx_Handler();
}

namespace {

volatile uint32_t* const kCpacr = reinterpret_cast<volatile uint32_t*>(0xE000ED88);
volatile uint32_t* const kIcsr = reinterpret_cast<volatile uint32_t*>(0xE000ED04);
volatile uint32_t* const kCfsr = reinterpret_cast<volatile uint32_t*>(0xE000ED28);
volatile uint32_t* const kHfsr = reinterpret_cast<volatile uint32_t*>(0xE000ED2C);
volatile uint32_t* const kMmfar = reinterpret_cast<volatile uint32_t*>(0xE000ED34);
volatile uint32_t* const kBfar = reinterpret_cast<volatile uint32_t*>(0xE000ED38);

// Semihosting (Arm "Semihosting for AArch32 and AArch64", v2).
constexpr uint32_t kSysExitExtended = 0x20;
constexpr uint32_t kAdpStoppedApplicationExit = 0x20026;

// 16 system exceptions plus mps2-an386's 32 external interrupts.
constexpr int kVectorCount = 16 + 32;
typedef void (*Handler)();

// What the Arduino core's main() does: setup() once, then loop() forever.
[[noreturn]] void RunSketch() {
  setup();
  for (;;) {
    loop();
    qemu_m4::WaitForWork();
  }
}

}  // namespace

// Not static: the linker keeps it by section (KEEP(*(.isr_vector))); `used` stops the
// compiler from dropping it first.
__attribute__((used, section(".isr_vector"))) const Handler g_vectors[kVectorCount] = {
    reinterpret_cast<Handler>(&__StackTop),
    Reset_Handler,
    Default_Handler,    // NMI
    HardFault_Handler,  // HardFault
    HardFault_Handler,  // MemManage (disabled at reset: escalates to HardFault)
    HardFault_Handler,  // BusFault (idem)
    HardFault_Handler,  // UsageFault (idem)
    nullptr, nullptr, nullptr, nullptr,
    Default_Handler,    // SVCall
    Default_Handler,    // DebugMonitor
    nullptr,
    Default_Handler,    // PendSV
    Default_Handler,    // SysTick (unused)
    // External interrupts: CMSDK timer 0 (IRQ 8) for BoardMicros(); UART0 RX (IRQ 0) and
    // timer 1 (IRQ 9) only wake the idle wait (WaitForWork).
    Uart0Rx_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Timer0_Handler, Timer1_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler,
};

extern "C" void Reset_Handler() {
  // Full access to CP10/CP11 before any floating-point instruction runs: the code is
  // compiled with -mfloat-abi=hard, so even copying a struct may use FPU registers.
  *kCpacr |= 0xFu << 20;
  __asm volatile("dsb\n\tisb" ::: "memory");

  uint32_t* source = &_sidata;
  for (uint32_t* dest = &_sdata; dest < &_edata;) *dest++ = *source++;
  for (uint32_t* dest = &_sbss; dest < &_ebss;) *dest++ = 0;

  qemu_m4::StartTimer();  // BoardMicros() counts from here
  __libc_init_array();  // static constructors
  // Not main(): a C++ program may not call it ([basic.start.main]).
  RunSketch();
}

// newlib's crt0, which GCC links by default, refers to main(). It never runs (the
// vector table starts at Reset_Handler), but if something did enter there, the
// sketch would still run.
int main() { RunSketch(); }

extern "C" [[noreturn]] __attribute__((used)) void ReportFault(const uint32_t* frame) {
  // The exception frame the core stacked: r0-r3, r12, lr, pc, xpsr.
  qemu_m4::UartWriteString("\r\ntinyforge: HARDFAULT pc=");
  qemu_m4::UartWriteHex(frame[6]);
  qemu_m4::UartWriteString(" lr=");
  qemu_m4::UartWriteHex(frame[5]);
  qemu_m4::UartWriteString(" xpsr=");
  qemu_m4::UartWriteHex(frame[7]);
  qemu_m4::UartWriteString(" cfsr=");
  qemu_m4::UartWriteHex(*kCfsr);
  qemu_m4::UartWriteString(" hfsr=");
  qemu_m4::UartWriteHex(*kHfsr);
  qemu_m4::UartWriteString(" bfar=");
  qemu_m4::UartWriteHex(*kBfar);
  qemu_m4::UartWriteString(" mmfar=");
  qemu_m4::UartWriteHex(*kMmfar);
  qemu_m4::UartWriteString("\r\n");
  qemu_m4::Exit(qemu_m4::kExitFault);
}

// Finds the stack the faulting code used (bit 2 of EXC_RETURN) and hands its frame on.
extern "C" __attribute__((naked)) void HardFault_Handler() {
  __asm volatile(
      "tst lr, #4\n\t"
      "ite eq\n\t"
      "mrseq r0, msp\n\t"
      "mrsne r0, psp\n\t"
      "b ReportFault\n\t");
}

extern "C" void Default_Handler() {
  qemu_m4::UartWriteString("\r\ntinyforge: UNEXPECTED EXCEPTION ipsr=");
  qemu_m4::UartWriteHex(*kIcsr & 0x1FF);
  qemu_m4::UartWriteString("\r\n");
  qemu_m4::Exit(qemu_m4::kExitUnexpectedIrq);
}

namespace qemu_m4 {

void Exit(int status) {
  // SYS_EXIT_EXTENDED carries a status; QEMU (-semihosting) exits with it.
  const uint32_t block[2] = {kAdpStoppedApplicationExit, static_cast<uint32_t>(status)};
  register uint32_t operation __asm("r0") = kSysExitExtended;
  register const uint32_t* argument __asm("r1") = block;
  __asm volatile("bkpt 0xab" : "+r"(operation) : "r"(argument) : "memory");
  for (;;) {
  }
}

}  // namespace qemu_m4
