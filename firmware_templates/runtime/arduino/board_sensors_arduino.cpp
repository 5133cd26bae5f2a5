// The Nano 33 BLE Sense's sensors behind board_sensors.h: the IMU of either
// board revision, found at run time, and the PDM microphone.
//
// Rev1 carries an LSM9DS1, rev2 a BMI270 (with a BMM150); both sit on the
// board's internal I2C bus (Wire1). Public sketches choose one library at
// compile time, so a firmware built for one revision reads nothing on the
// other. Here both libraries are linked and the part that answers its identity
// register decides. The probe reads that register itself instead of trying
// each library's begin(): LSM9DS1's begin() first writes reset commands to
// whatever answers at its addresses, and the BMI270 library's begin() goes on
// configuring an absent chip after its identity check failed (and, with its
// debug stream set, blinks the LED forever on the first error).
//
// Which parts are compiled follows the pipeline (pipeline_settings.h): the IMU
// libraries are in the project's lib_deps only when the pipeline reads the IMU.
#include <Arduino.h>
#include <Wire.h>

#include "board_sensors.h"
#include "pipeline_math.h"
#include "pipeline_settings.h"

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
#include <Arduino_BMI270_BMM150.h>
#include <Arduino_LSM9DS1.h>
#endif
#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_MICROPHONE
#include <PDM.h>
#endif

namespace tfsensors {

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU

namespace {

// Identity registers, from the parts' datasheets (and the libraries' own checks).
constexpr uint8_t kLsm9ds1Address = 0x6b;  // accelerometer and gyroscope
constexpr uint8_t kLsm9ds1WhoAmIRegister = 0x0f;
constexpr uint8_t kLsm9ds1WhoAmI = 0x68;
constexpr uint8_t kBmi270Address = 0x68;  // BMI2_I2C_PRIM_ADDR
constexpr uint8_t kBmi270ChipIdRegister = 0x00;
constexpr uint8_t kBmi270ChipId = 0x24;  // BMI270_CHIP_ID

ImuKind g_imu = kImuNone;

// One register of a device on the sensors' bus, or -1 when nothing answers.
// mbed's I2C reports a missing acknowledge at once, so an absent part costs
// one address byte, not a timeout.
int ReadRegister(uint8_t address, uint8_t reg) {
  Wire1.beginTransmission(address);
  Wire1.write(reg);
  if (Wire1.endTransmission(false) != 0) return -1;
  if (Wire1.requestFrom(address, static_cast<size_t>(1)) != 1) return -1;
  return Wire1.read();
}

ImuKind ProbeImu() {
  Wire1.begin();
  ImuKind kind = kImuNone;
  if (ReadRegister(kLsm9ds1Address, kLsm9ds1WhoAmIRegister) == kLsm9ds1WhoAmI) {
    kind = kImuLsm9ds1;
  } else if (ReadRegister(kBmi270Address, kBmi270ChipIdRegister) == kBmi270ChipId) {
    kind = kImuBmi270;
  }
  // Each library starts the bus itself.
  Wire1.end();
  return kind;
}

void ToCounts(const float accel[3], const float gyro[3], int16_t counts[6]) {
  for (int i = 0; i < 3; ++i) {
    counts[i] = tfpipe::CountsFromReading(accel[i], kAccelCountsPerG);
    counts[3 + i] = tfpipe::CountsFromReading(gyro[i], kGyroCountsPerDps);
  }
}

// Both libraries are used in their default one-shot mode: a reading is ready
// when the part's data-ready flags say so. (Their FIFO modes are avoided: the
// LSM9DS1 library's gyroscopeAvailable() ignores the FIFO, and the BMI270
// library's FIFO reader indexes one sample before its buffer when it is full.)
// So the sketch's loop must come back within one sample period (8.4 ms at
// 119 Hz, 10 ms at 99.84 Hz) or a reading is overwritten.
template <typename Part>
bool ReadPart(Part& part, int16_t counts[6]) {
  if (!part.accelerationAvailable() || !part.gyroscopeAvailable()) return false;
  float accel[3];
  float gyro[3];
  if (!part.readAcceleration(accel[0], accel[1], accel[2])) return false;
  if (!part.readGyroscope(gyro[0], gyro[1], gyro[2])) return false;
  ToCounts(accel, gyro, counts);
  return true;
}

}  // namespace

ImuKind StartImu() {
  g_imu = ProbeImu();
  if (g_imu == kImuLsm9ds1 && IMU_LSM9DS1.begin() != 1) g_imu = kImuNone;
  // Accelerometer and gyroscope only: the magnetometer is not part of the
  // pipeline, and the library's combined start ignores a BMM150 failure.
  if (g_imu == kImuBmi270 && IMU_BMI270_BMM150.begin(BOSCH_ACCELEROMETER_ONLY) != 1) {
    g_imu = kImuNone;
  }
  return g_imu;
}

uint32_t ImuRateMilliHz() {
  switch (g_imu) {
    case kImuLsm9ds1:
      return kLsm9ds1RateMilliHz;
    case kImuBmi270:
      return kBmi270RateMilliHz;
    default:
      return 0;
  }
}

bool ReadImu(int16_t counts[6]) {
  switch (g_imu) {
    case kImuLsm9ds1:
      return ReadPart(IMU_LSM9DS1, counts);
    case kImuBmi270:
      return ReadPart(IMU_BMI270_BMM150, counts);
    default:
      return false;
  }
}

#else  // no IMU in this pipeline

ImuKind StartImu() { return kImuNone; }
uint32_t ImuRateMilliHz() { return 0; }
bool ReadImu(int16_t counts[6]) {
  (void)counts;
  return false;
}

#endif

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_MICROPHONE

namespace {

// One PDM block: the library's DEFAULT_PDM_BUFFER_SIZE (512 bytes) is 256
// mono samples, 16 ms at 16 kHz.
constexpr int kPdmBlockSamples = 256;

tfpipe::RingBuffer<int16_t>* g_ring = nullptr;

// Runs in the PDM interrupt after each block. It must take the whole block:
// the library stops the microphone for good when a block is still unread at
// the next one. What does not fit the ring is counted by its Dropped().
void OnPdmBlock() {
  int16_t block[kPdmBlockSamples];
  int available = PDM.available();
  while (available > 0) {
    const size_t want = available < static_cast<int>(sizeof(block))
                            ? static_cast<size_t>(available)
                            : sizeof(block);
    const int bytes = PDM.read(block, want);
    if (bytes <= 0) break;
    g_ring->Write(block, static_cast<uint32_t>(bytes) / sizeof(int16_t));
    available -= bytes;
  }
}

}  // namespace

bool StartMicrophone(uint32_t sample_rate, tfpipe::RingBuffer<int16_t>* ring) {
  if (ring == nullptr || !ring->IsValid()) return false;
  g_ring = ring;
  PDM.onReceive(OnPdmBlock);
  // Mono; the library supports 16 kHz and 41.667 kHz only, and keeps its
  // default gain (what the keyword example's training levels assume).
  return PDM.begin(1, static_cast<int>(sample_rate)) == 1;
}

#else  // no microphone in this pipeline

bool StartMicrophone(uint32_t sample_rate, tfpipe::RingBuffer<int16_t>* ring) {
  (void)sample_rate;
  (void)ring;
  return false;
}

#endif

}  // namespace tfsensors
