// The board's sensors as the input pipeline sees them (docs/pipeline.md).
//
// The board runtime layer implements these: on the Nano 33 BLE Sense from the
// IMU libraries (rev1 LSM9DS1 or rev2 BMI270/BMM150, detected at run time) and
// the PDM microphone; on qemu-m4 from samples the host replays over serial.
// Everything after these calls (resampling, features, windows, quantisation,
// inference, decisions) is the same code on every board.
//
// Rendered only into projects whose pipeline reads a sensor; plain C++11.
#ifndef TINYFORGE_BOARD_SENSORS_H_
#define TINYFORGE_BOARD_SENSORS_H_

#include <stdint.h>

#include "pipeline_ring.h"

namespace tfsensors {

enum ImuKind {
  kImuNone = 0,     // no IMU answered: the firmware reports it and stays not ready
  kImuLsm9ds1 = 1,  // Nano 33 BLE Sense rev1
  kImuBmi270 = 2,   // Nano 33 BLE Sense rev2
  kImuReplay = 3,   // qemu-m4: readings the host sends, already in tinyforge's axes
};

// Starts the IMU and says which one answered. Called once from setup().
ImuKind StartImu();

// The rate at which ReadImu() delivers readings, in milli-hertz (119000 for
// the LSM9DS1, 99840 for the BMI270; for a replay, the rate the host gave).
uint32_t ImuRateMilliHz();

// One reading, if one is ready: accelerometer x, y, z then gyroscope x, y, z,
// as counts (tfpipe::CountsFromReading with kAccelCountsPerG and
// kGyroCountsPerDps) in the library's own axes; the caller maps them with the
// kind's axis map (identity for kImuReplay). Never blocks.
bool ReadImu(int16_t counts[6]);

// Starts the microphone: mono 16-bit PCM at `sample_rate` Hz, written to
// `ring` from its interrupt (or, on qemu-m4, from the replayed samples) with
// no sample repeated or skipped. The first seconds after reset are the
// pipeline's to discard (kAudioDiscardSamples), not this function's. Returns
// false when the microphone could not be started.
bool StartMicrophone(uint32_t sample_rate, tfpipe::RingBuffer<int16_t>* ring);

}  // namespace tfsensors

#endif  // TINYFORGE_BOARD_SENSORS_H_
