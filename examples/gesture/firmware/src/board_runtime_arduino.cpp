// Board runtime for Arduino cores (the Nano 33 BLE's mbed core): the sketch's
// serial link is the USB CDC port, time comes from micros(). TFLM's DebugLog
// is provided by the TFLM library's own Arduino system_setup.cpp.
#include <Arduino.h>

#include "board_runtime.h"

namespace {
// Opening USB CDC does not reset this board, so wait a little for a host to
// open the port (the boot message would be lost otherwise), but run without
// one too: the host can ask for the boot message again with HELLO.
constexpr unsigned long kWaitForHostMs = 4000;
}  // namespace

void BoardSerialBegin(uint32_t baud) {
  Serial.begin(baud);
  const unsigned long start = millis();
  while (!Serial && millis() - start < kWaitForHostMs) {
  }
}

void BoardSerialWrite(const char* data, size_t length) {
  Serial.write(reinterpret_cast<const uint8_t*>(data), length);
}

int BoardSerialRead() { return Serial.available() > 0 ? Serial.read() : -1; }

uint32_t BoardMicros() { return micros(); }
