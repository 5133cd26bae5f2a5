// Drives firmware_templates/runtime/arduino/board_sensors_arduino.cpp against the model of
// the Arduino core and sensor libraries in arduino_model/, with the host g++
// (tests/test_board_sensors.py): which IMU is found on which bus, what reaches the pipeline
// as counts, and how PDM blocks reach the ring buffer. Prints one result line per step.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "Arduino_BMI270_BMM150.h"
#include "Arduino_LSM9DS1.h"
#include "PDM.h"
#include "Wire.h"
#include "board_sensors.h"
#include "pipeline_settings.h"

// --- the model ---------------------------------------------------------------------------

ModelI2C Wire1;
LSM9DS1Class IMU_LSM9DS1;
BoschSensorClass IMU_BMI270_BMM150;
PDMClass PDM;

void ModelI2C::begin() {
  begun_ = true;
  ++begins;
}
void ModelI2C::end() { begun_ = false; }
void ModelI2C::Attach(ModelI2CDevice* device) {
  for (auto& slot : devices_) {
    if (slot == nullptr) {
      slot = device;
      return;
    }
  }
  abort();
}
ModelI2CDevice* ModelI2C::Find(uint8_t address) {
  for (auto* device : devices_) {
    if (device != nullptr && device->address == address) return device;
  }
  return nullptr;
}
void ModelI2C::beginTransmission(uint8_t address) {
  if (!begun_) abort();  // mbed: master is NULL
  address_ = address;
  pending_register_ = -1;
}
size_t ModelI2C::write(uint8_t data) {
  pending_register_ = data;
  return 1;
}
uint8_t ModelI2C::endTransmission(bool stop) {
  (void)stop;
  if (!begun_) abort();
  ++transactions;
  if (Find(address_) == nullptr) return 2;  // no acknowledge
  selected_register_ = pending_register_;
  return 0;
}
size_t ModelI2C::requestFrom(uint8_t address, size_t length) {
  if (!begun_) abort();
  ModelI2CDevice* device = Find(address);
  if (device == nullptr || selected_register_ < 0 || length > sizeof(rx_)) return 0;
  for (size_t i = 0; i < length; ++i) rx_[i] = device->registers[(selected_register_ + i) & 0xff];
  rx_length_ = length;
  rx_next_ = 0;
  return length;
}
int ModelI2C::read() { return rx_next_ < rx_length_ ? rx_[rx_next_++] : -1; }

namespace {
int ReadRegister(uint8_t address, uint8_t reg) {
  Wire1.beginTransmission(address);
  Wire1.write(reg);
  if (Wire1.endTransmission(false) != 0) return -1;
  if (Wire1.requestFrom(address, 1) != 1) return -1;
  return Wire1.read();
}
}  // namespace

int LSM9DS1Class::begin() {
  ++begins;
  Wire1.begin();
  if (ReadRegister(0x6b, 0x0f) != 0x68 || ReadRegister(0x1e, 0x0f) != 0x3d) {
    Wire1.end();
    return 0;
  }
  return 1;
}
int LSM9DS1Class::readAcceleration(float& x, float& y, float& z) {
  const int16_t* r = readings.Take(0);
  x = r[0] * 4.0 / 32768.0;
  y = r[1] * 4.0 / 32768.0;
  z = r[2] * 4.0 / 32768.0;
  return 1;
}
int LSM9DS1Class::readGyroscope(float& x, float& y, float& z) {
  const int16_t* r = readings.Take(1);
  x = r[0] * 2000.0 / 32768.0;
  y = r[1] * 2000.0 / 32768.0;
  z = r[2] * 2000.0 / 32768.0;
  return 1;
}

int BoschSensorClass::begin(CfgBoshSensor_t cfg) {
  ++begins;
  last_config = cfg;
  Wire1.begin();
  return ReadRegister(0x68, 0x00) == 0x24 ? 1 : 0;
}
int BoschSensorClass::readAcceleration(float& x, float& y, float& z) {
  const int16_t* r = readings.Take(0);
  x = r[0] / 8192.0f;
  y = r[1] / 8192.0f;
  z = r[2] / 8192.0f;
  return 1;
}
int BoschSensorClass::readGyroscope(float& x, float& y, float& z) {
  const int16_t* r = readings.Take(1);
  x = r[0] / 16.384f;
  y = r[1] / 16.384f;
  z = r[2] / 16.384f;
  return 1;
}

int PDMClass::begin(int channel_count, int sample_rate) {
  if (sample_rate != 16000 && sample_rate != 41667) return 0;
  if (channel_count != 1 && channel_count != 2) return 0;
  channels = channel_count;
  rate = sample_rate;
  running = true;
  return 1;
}
int PDMClass::read(void* buffer, size_t size) {
  const size_t n = size < length_ - offset_ ? size : length_ - offset_;
  memcpy(buffer, block_ + offset_, n);
  offset_ += n;
  return static_cast<int>(n);
}
void PDMClass::Deliver(const int16_t* samples, size_t count) {
  if (!running) return;
  if (available() != 0) {  // the last block is still unread: the library stops for good
    running = false;
    stopped_by_overflow = true;
    return;
  }
  memcpy(block_, samples, count * 2);
  length_ = count * 2;
  offset_ = 0;
  if (callback_ != nullptr) callback_();
}

// --- the scenarios -----------------------------------------------------------------------

namespace {

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
ModelI2CDevice lsm_xg = {0x6b, {}};
ModelI2CDevice lsm_m = {0x1e, {}};
ModelI2CDevice bmi = {0x68, {}};

const int16_t kRaw[4][6] = {{0, 8192, -8192, 0, 16384, -16384},
                            {32767, -32768, 1, -1, 32767, -32768},
                            {123, -4567, 8191, 2048, -2049, 7},
                            {-1, 2, -3, 4, -5, 6}};

void Queue(ModelReadings& readings) {
  for (int i = 0; i < 4; ++i) memcpy(readings.raw[i], kRaw[i], sizeof(kRaw[i]));
  readings.count = 4;
}

void Run(const char* bus) {
  if (strcmp(bus, "lsm9ds1") == 0 || strcmp(bus, "lsm9ds1-no-magnetometer") == 0) {
    lsm_xg.registers[0x0f] = 0x68;
    lsm_m.registers[0x0f] = 0x3d;
    Wire1.Attach(&lsm_xg);
    if (strcmp(bus, "lsm9ds1") == 0) Wire1.Attach(&lsm_m);
    Queue(IMU_LSM9DS1.readings);
  } else if (strcmp(bus, "bmi270") == 0) {
    bmi.registers[0x00] = 0x24;
    Wire1.Attach(&bmi);
    Queue(IMU_BMI270_BMM150.readings);
  } else if (strcmp(bus, "other-chip-at-0x68") == 0) {
    bmi.registers[0x00] = 0x11;
    Wire1.Attach(&bmi);
  }
  const tfsensors::ImuKind kind = tfsensors::StartImu();
  printf("kind=%d rate=%u lsm_begins=%d bmi_begins=%d bmi_config=%d\n", static_cast<int>(kind),
         static_cast<unsigned>(tfsensors::ImuRateMilliHz()), IMU_LSM9DS1.begins,
         IMU_BMI270_BMM150.begins, IMU_BMI270_BMM150.last_config);
  int16_t counts[6];
  while (tfsensors::ReadImu(counts)) {
    printf("counts=%d,%d,%d,%d,%d,%d\n", counts[0], counts[1], counts[2], counts[3], counts[4],
           counts[5]);
  }
  int16_t ring_storage[8];
  tfpipe::RingBuffer<int16_t> ring(ring_storage, 8);
  printf("microphone=%d\n", tfsensors::StartMicrophone(16000, &ring) ? 1 : 0);
}

#else
void Run(const char* what) {
  static int16_t storage[1024];
  static tfpipe::RingBuffer<int16_t> ring(storage, 1024);
  static int16_t odd_storage[1000];
  static tfpipe::RingBuffer<int16_t> odd(odd_storage, 1000);
  if (strcmp(what, "bad") == 0) {
    printf("null=%d odd=%d rate8000=%d\n", tfsensors::StartMicrophone(16000, nullptr) ? 1 : 0,
           tfsensors::StartMicrophone(16000, &odd) ? 1 : 0,
           tfsensors::StartMicrophone(8000, &ring) ? 1 : 0);
    return;
  }
  const bool started = tfsensors::StartMicrophone(16000, &ring);
  const int imu = static_cast<int>(tfsensors::StartImu());
  printf("started=%d channels=%d rate=%d imu=%d\n", started ? 1 : 0, PDM.channels, PDM.rate,
         imu);
  int16_t block[256];
  int16_t next = 0;
  for (int b = 0; b < 5; ++b) {  // 1,280 samples into a ring of 1,024
    for (int i = 0; i < 256; ++i) block[i] = next++;
    PDM.Deliver(block, 256);
  }
  int16_t out[1024];
  const uint32_t n = ring.Read(out, 1024);
  bool in_order = true;
  for (uint32_t i = 0; i < n; ++i) in_order = in_order && out[i] == static_cast<int16_t>(i);
  printf("read=%u dropped=%u in_order=%d running=%d overflow=%d\n", static_cast<unsigned>(n),
         static_cast<unsigned>(ring.Dropped()), in_order ? 1 : 0, PDM.running ? 1 : 0,
         PDM.stopped_by_overflow ? 1 : 0);
}

#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  Run(argv[1]);
  return 0;
}
