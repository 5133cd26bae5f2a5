// Readings a model IMU hands out: raw int16 triples (accelerometer, gyroscope) with their
// data-ready flags, as the parts' one-shot mode does (a new reading sets both flags; reading
// the output registers clears them).
#ifndef TINYFORGE_MODEL_READINGS_H_
#define TINYFORGE_MODEL_READINGS_H_

#include <stdint.h>

struct ModelReadings {
  int16_t raw[64][6];
  int count = 0;
  int next = 0;
  bool read_accel = false;
  bool read_gyro = false;

  int Ready(int sensor) const {
    if (next >= count) return 0;
    return sensor == 0 ? !read_accel : !read_gyro;
  }
  const int16_t* Take(int sensor) {
    const int16_t* reading = raw[next] + 3 * sensor;
    (sensor == 0 ? read_accel : read_gyro) = true;
    if (read_accel && read_gyro) {
      ++next;
      read_accel = read_gyro = false;
    }
    return reading;
  }
};

#endif  // TINYFORGE_MODEL_READINGS_H_
