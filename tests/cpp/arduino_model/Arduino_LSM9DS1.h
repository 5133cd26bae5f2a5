// Model of Arduino_LSM9DS1 1.1.1's LSM9DS1Class: begin() checks both WHO_AM_I registers on
// the bus (0x6B -> 0x68, 0x1E -> 0x3D) and returns 1 or 0; readings are raw int16 counts the
// test queues, converted with the library's formulas (data * 4.0 / 32768.0 g,
// data * 2000.0 / 32768.0 dps).
#ifndef TINYFORGE_MODEL_LSM9DS1_H_
#define TINYFORGE_MODEL_LSM9DS1_H_

#include "Wire.h"
#include "model_readings.h"

class LSM9DS1Class {
 public:
  int begin();
  int accelerationAvailable() { return readings.Ready(0); }
  int gyroscopeAvailable() { return readings.Ready(1); }
  int readAcceleration(float& x, float& y, float& z);
  int readGyroscope(float& x, float& y, float& z);

  ModelReadings readings;
  int begins = 0;
};

extern LSM9DS1Class IMU_LSM9DS1;

#endif  // TINYFORGE_MODEL_LSM9DS1_H_
