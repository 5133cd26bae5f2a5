// Model of Arduino_BMI270_BMM150 1.2.3's BoschSensorClass: begin(cfg) returns 1 when the
// BMI270's chip id (0x00 at 0x68) is 0x24; readings are the library's outputs on the Nano
// (already remapped), raw / 8192.0f g and raw / 16.384f dps.
#ifndef TINYFORGE_MODEL_BMI270_H_
#define TINYFORGE_MODEL_BMI270_H_

#include "Wire.h"
#include "model_readings.h"

typedef enum { BOSCH_ACCELEROMETER_ONLY, BOSCH_MAGNETOMETER_ONLY, BOSCH_ACCEL_AND_MAGN } CfgBoshSensor_t;

class BoschSensorClass {
 public:
  int begin(CfgBoshSensor_t cfg = BOSCH_ACCEL_AND_MAGN);
  int accelerationAvailable() { return readings.Ready(0); }
  int gyroscopeAvailable() { return readings.Ready(1); }
  int readAcceleration(float& x, float& y, float& z);
  int readGyroscope(float& x, float& y, float& z);

  ModelReadings readings;
  int begins = 0;
  int last_config = -1;
};

extern BoschSensorClass IMU_BMI270_BMM150;

#endif  // TINYFORGE_MODEL_BMI270_H_
