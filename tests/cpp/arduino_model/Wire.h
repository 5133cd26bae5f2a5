// Model of arduino::MbedI2C (libraries/Wire of ArduinoCore-mbed 4.5.0) on a bus of register
// devices: a device ACKs its address; a register read is a write of the register number then
// a read. Like the real class, using the bus before begin() (mbed's `master` is NULL) is a
// crash: here an abort, so the test catches it.
#ifndef TINYFORGE_MODEL_WIRE_H_
#define TINYFORGE_MODEL_WIRE_H_

#include <stddef.h>
#include <stdint.h>

struct ModelI2CDevice {
  uint8_t address;
  uint8_t registers[256];
};

class ModelI2C {
 public:
  void begin();
  void end();
  void beginTransmission(uint8_t address);
  size_t write(uint8_t data);
  uint8_t endTransmission(bool stop = true);
  size_t requestFrom(uint8_t address, size_t length);
  int read();

  // The model's side: the devices on the bus, and what was done.
  void Attach(ModelI2CDevice* device);
  int begins = 0;
  int transactions = 0;

 private:
  ModelI2CDevice* Find(uint8_t address);
  ModelI2CDevice* devices_[4] = {nullptr, nullptr, nullptr, nullptr};
  bool begun_ = false;
  uint8_t address_ = 0;
  int pending_register_ = -1;
  int selected_register_ = -1;
  uint8_t rx_[32];
  size_t rx_length_ = 0;
  size_t rx_next_ = 0;
};

extern ModelI2C Wire1;

#endif  // TINYFORGE_MODEL_WIRE_H_
