// Model of ArduinoCore-mbed 4.5.0's PDMClass (nrf52): onReceive(cb), begin(channels, rate)
// accepts 1 or 2 channels at 16000 or 41667 Hz; the "interrupt" (Deliver) swaps in a block of
// samples and calls the callback; a block still unread at the next one stops the microphone,
// as the library does.
#ifndef TINYFORGE_MODEL_PDM_H_
#define TINYFORGE_MODEL_PDM_H_

#include <stddef.h>
#include <stdint.h>

class PDMClass {
 public:
  int begin(int channels, int sample_rate);
  void onReceive(void (*callback)(void)) { callback_ = callback; }
  int available() { return static_cast<int>(length_ - offset_); }
  int read(void* buffer, size_t size);

  // The interrupt: a block of samples (at most 256) arrives.
  void Deliver(const int16_t* samples, size_t count);
  bool running = false;
  bool stopped_by_overflow = false;
  int channels = 0;
  int rate = 0;

 private:
  void (*callback_)(void) = nullptr;
  uint8_t block_[512];
  size_t length_ = 0;
  size_t offset_ = 0;
};

extern PDMClass PDM;

#endif  // TINYFORGE_MODEL_PDM_H_
