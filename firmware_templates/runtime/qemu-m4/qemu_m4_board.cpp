// board_runtime.h for qemu-m4: serial over the CMSDK UART0, microseconds from CMSDK timer 0.
#include "board_runtime.h"
#include "qemu_m4.h"

namespace {

// Arm CMSDK APB UART0 (QEMU: hw/char/cmsdk-apb-uart.c).
struct CmsdkUart {
  volatile uint32_t data;
  volatile uint32_t state;    // bit 0: TX buffer full, bit 1: RX buffer full
  volatile uint32_t ctrl;     // bit 0: TX enable, bit 1: RX enable
  volatile uint32_t intstatus;
  volatile uint32_t bauddiv;  // the UART refuses values below 16
};
CmsdkUart* const kUart0 = reinterpret_cast<CmsdkUart*>(0x40004000);
constexpr uint32_t kStateTxFull = 1u << 0;
constexpr uint32_t kStateRxFull = 1u << 1;
constexpr uint32_t kCtrlTxEnable = 1u << 0;
constexpr uint32_t kCtrlRxEnable = 1u << 1;
constexpr uint32_t kCtrlRxInterruptEnable = 1u << 3;
constexpr uint32_t kUartRxInterrupt = 1u << 1;  // intstatus; write 1 to clear
constexpr uint32_t kUart0RxIrq = 0;
constexpr uint32_t kMinBaudDiv = 16;

// Arm CMSDK APB timer 0 (QEMU: hw/timer/cmsdk-apb-timer.c), a 32-bit down-counter on the
// 25 MHz peripheral clock, reloaded with 0xFFFFFFFF at each wrap (every 171.8 s). The time is
// (wraps << 32) + the count so far, read directly rather than counted in interrupts: QEMU
// derives the counter from its virtual clock, so it stays right even when the host is too
// busy to deliver interrupts on time (a 1 ms SysTick counter lost 2 % of its ticks on an
// idle machine and up to half on a loaded one). Only the rare wrap is an interrupt.
struct CmsdkTimer {
  volatile uint32_t ctrl;  // bit 0: enable, bit 3: interrupt enable
  volatile uint32_t value;
  volatile uint32_t reload;
  volatile uint32_t intstatus;  // bit 0: wrapped; write 1 to clear
};
CmsdkTimer* const kTimer0 = reinterpret_cast<CmsdkTimer*>(0x40000000);
// Timer 1 only wakes the idle wait after a millisecond, so loop()'s timed work (the demo
// input) runs on time while the CPU sleeps; it is stopped while the CPU runs.
CmsdkTimer* const kTimer1 = reinterpret_cast<CmsdkTimer*>(0x40001000);
constexpr uint32_t kTimer1Irq = 9;
constexpr uint32_t kWakeTicks = qemu_m4::kCpuHz / 1000;
constexpr uint32_t kTimerEnable = 1u << 0;
constexpr uint32_t kTimerInterruptEnable = 1u << 3;
constexpr uint32_t kTimerWrapped = 1u << 0;
constexpr uint32_t kTimer0Irq = 8;
volatile uint32_t* const kNvicIser0 = reinterpret_cast<volatile uint32_t*>(0xE000E100);
constexpr uint32_t kTicksPerUs = qemu_m4::kCpuHz / 1000000;

volatile uint32_t g_wraps = 0;

// Ticks since StartTimer(); the caller keeps interrupts off.
uint64_t Ticks() {
  uint32_t wraps = g_wraps;
  uint32_t value = kTimer0->value;
  if (kTimer0->intstatus & kTimerWrapped) {
    // Wrapped but not yet counted (interrupts are off): the value read may be from
    // before or after the wrap, so read it again, now surely after.
    value = kTimer0->value;
    ++wraps;
  }
  return (static_cast<uint64_t>(wraps) << 32) + (0xFFFFFFFFu - value);
}

bool g_uart_started = false;

void UartStart(uint32_t baud) {
  uint32_t divider = baud ? qemu_m4::kCpuHz / baud : kMinBaudDiv;
  kUart0->bauddiv = divider < kMinBaudDiv ? kMinBaudDiv : divider;
  // Reading DATA makes QEMU wake its I/O loop, which then starts watching the socket now
  // that RX is about to be on; without it the host's first byte waited ~1 s (QEMU 7.2).
  // Done before RX is enabled, so it can never swallow a received byte.
  (void)kUart0->data;
  kUart0->ctrl = kCtrlTxEnable | kCtrlRxEnable | kCtrlRxInterruptEnable;
  *kNvicIser0 = 1u << kUart0RxIrq;
  g_uart_started = true;
}

}  // namespace

extern "C" void Timer0_Handler() {
  kTimer0->intstatus = kTimerWrapped;
  g_wraps = g_wraps + 1;
}

// Both only end WaitForWork()'s sleep: the byte stays in DATA for BoardSerialRead().
extern "C" void Timer1_Handler() { kTimer1->intstatus = kTimerWrapped; }

extern "C" void Uart0Rx_Handler() { kUart0->intstatus = kUartRxInterrupt; }

namespace qemu_m4 {

void StartTimer() {
  kTimer0->ctrl = 0;
  kTimer0->reload = 0xFFFFFFFFu;
  kTimer0->value = 0xFFFFFFFFu;
  kTimer0->intstatus = kTimerWrapped;
  g_wraps = 0;
  kTimer0->ctrl = kTimerEnable | kTimerInterruptEnable;
  *kNvicIser0 = 1u << kTimer0Irq;
  kTimer1->ctrl = 0;
  kTimer1->reload = kWakeTicks;
  kTimer1->intstatus = kTimerWrapped;
  *kNvicIser0 = 1u << kTimer1Irq;
}

uint64_t TimerTicks() {
  // The wrap interrupt changes g_wraps: keep it out while both halves are read.
  uint32_t primask;
  __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
  const uint64_t ticks = Ticks();
  __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
  return ticks;
}

void WaitForWork() {
  // With interrupts masked, a byte that arrives after the check still ends the WFI (a
  // pending interrupt wakes the core even while PRIMASK masks it), so none waits a tick.
  uint32_t primask;
  __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
  if (!g_uart_started || !(kUart0->state & kStateRxFull)) {
    // The tick runs only while the CPU sleeps: an interrupt in the middle of an inference
    // would add its handler's instructions to an op's count at a moment that depends on the
    // host, and the counts must be the same in every run.
    kTimer1->value = kWakeTicks;
    kTimer1->ctrl = kTimerEnable | kTimerInterruptEnable;
    __asm volatile("wfi" ::: "memory");
    kTimer1->ctrl = 0;
  }
  __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

void UartWrite(const char* data, size_t length) {
  // Fault handlers and printf may write before the sketch opens the serial link.
  if (!g_uart_started) UartStart(115200);
  for (size_t i = 0; i < length; ++i) {
    while (kUart0->state & kStateTxFull) {
    }
    kUart0->data = static_cast<uint8_t>(data[i]);
  }
}

void UartWriteString(const char* text) {
  size_t length = 0;
  while (text[length] != '\0') ++length;
  UartWrite(text, length);
}

void UartWriteHex(uint32_t value) {
  char digits[10] = {'0', 'x'};
  for (int i = 0; i < 8; ++i) {
    digits[2 + i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xF];
  }
  UartWrite(digits, sizeof(digits));
}

}  // namespace qemu_m4

void BoardSerialBegin(uint32_t baud) { UartStart(baud); }

void BoardSerialWrite(const char* data, size_t length) { qemu_m4::UartWrite(data, length); }

int BoardSerialRead() {
  if (!(kUart0->state & kStateRxFull)) return -1;
  return static_cast<int>(kUart0->data & 0xFF);
}

uint32_t BoardMicros() { return static_cast<uint32_t>(qemu_m4::TimerTicks() / kTicksPerUs); }
