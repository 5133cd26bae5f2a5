// What the sketch needs from a board. Each board's runtime layer
// (firmware_templates/runtime/<layer>/) implements these functions; the sketch,
// the protocol encoder and the model code are the same on every board.
#ifndef TINYFORGE_BOARD_RUNTIME_H_
#define TINYFORGE_BOARD_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

// Starts the serial link. On USB boards it waits (bounded) for a host to open
// the port so the boot message is not lost.
void BoardSerialBegin(uint32_t baud);

// Writes all bytes, blocking until they are queued.
void BoardSerialWrite(const char* data, size_t length);

// The next received byte, or -1 when none is waiting. Never blocks.
int BoardSerialRead();

// A free-running microsecond counter (wraps after ~71 minutes).
uint32_t BoardMicros();

// The Arduino entry points, declared as ArduinoCore-API's Common.h declares them
// (C linkage), so a file may include this header before or after Arduino.h.
// Boards without the Arduino core get a start-up from their runtime layer that
// calls setup() once and loop() forever.
#ifdef __cplusplus
extern "C" {
#endif
void setup(void);
void loop(void);
#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // TINYFORGE_BOARD_RUNTIME_H_
