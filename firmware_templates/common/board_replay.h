// The replay side of a board's sensors: samples the host sends over serial
// (REPLAY and SAMPLES, docs/protocol.md) go into the same buffers the sensor
// interrupts fill on a real board, so everything after board_sensors.h runs
// unchanged on recordings.
//
// Implemented by the runtime layer of boards that replay (qemu-m4); rendered
// only into projects whose pipeline reads a sensor. Plain C++11, no heap.
#ifndef TINYFORGE_BOARD_REPLAY_H_
#define TINYFORGE_BOARD_REPLAY_H_

#include <stdint.h>

namespace tfreplay {

enum Stream {
  kImu = 0,    // readings of 6 int16 counts, tinyforge's axes (ReadImu delivers them)
  kAudio = 1,  // int16 PCM at 16 kHz (into the ring StartMicrophone was given)
};

// Empties the stream's buffer and, for the IMU, sets the rate ImuRateMilliHz()
// reports from now on. False when the stream cannot be replayed (no ring yet,
// a zero rate).
bool Start(Stream stream, uint32_t rate_mhz);

// The buffer's size and its free room, in int16 values: the host's credit.
uint32_t Capacity(Stream stream);
uint32_t Space(Stream stream);

// Appends `count` values; returns how many fit (the caller checks Space first).
uint32_t Write(Stream stream, const int16_t* values, uint32_t count);

}  // namespace tfreplay

#endif  // TINYFORGE_BOARD_REPLAY_H_
