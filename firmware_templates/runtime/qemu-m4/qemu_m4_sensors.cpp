// The sensors of the emulated board: what the host replays over serial.
//
// board_sensors.h on qemu-m4. The IMU's readings wait in a ring buffer of our
// own, which ReadImu() drains like a real IMU's data-ready poll; audio goes
// straight into the ring the sketch gave StartMicrophone(), the one the PDM
// interrupt fills on the board. The sketch feeds both through board_replay.h
// as SAMPLES messages arrive.
#include "board_replay.h"
#include "board_sensors.h"
#include "pipeline_settings.h"

namespace {

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
// 170 readings of 6 values: more than one SAMPLES line holds (19 readings).
constexpr uint32_t kImuRingValues = 1024;
int16_t imu_storage[kImuRingValues];
tfpipe::RingBuffer<int16_t> imu_ring(imu_storage, kImuRingValues);
#else
// A firmware whose pipeline reads no IMU replays none: an empty ring, which holds and
// reads nothing, instead of 2 KB of storage it never uses.
tfpipe::RingBuffer<int16_t> imu_ring(nullptr, 0);
#endif
uint32_t imu_rate_mhz = 0;  // none until the host starts a replay

tfpipe::RingBuffer<int16_t>* audio_ring = nullptr;

tfpipe::RingBuffer<int16_t>* RingOf(tfreplay::Stream stream) {
  return stream == tfreplay::kImu ? &imu_ring : audio_ring;
}

}  // namespace

namespace tfsensors {

ImuKind StartImu() {
  imu_ring.Reset();
  return kImuReplay;
}

uint32_t ImuRateMilliHz() { return imu_rate_mhz; }

bool ReadImu(int16_t counts[6]) {
  // Readings are written whole (the sketch checks SAMPLES), so 6 values are one reading.
  if (imu_ring.Available() < 6) return false;
  return imu_ring.Read(counts, 6) == 6;
}

bool StartMicrophone(uint32_t sample_rate, tfpipe::RingBuffer<int16_t>* ring) {
  if (sample_rate != 16000 || ring == nullptr || !ring->IsValid()) return false;
  audio_ring = ring;
  return true;
}

}  // namespace tfsensors

namespace tfreplay {

bool Start(Stream stream, uint32_t rate_mhz) {
  tfpipe::RingBuffer<int16_t>* ring = RingOf(stream);
  if (ring == nullptr || !ring->IsValid() || (stream == kImu && rate_mhz == 0)) return false;
  ring->Reset();
  if (stream == kImu) imu_rate_mhz = rate_mhz;
  return true;
}

uint32_t Capacity(Stream stream) {
  tfpipe::RingBuffer<int16_t>* ring = RingOf(stream);
  return ring == nullptr ? 0 : ring->Capacity();
}

uint32_t Space(Stream stream) {
  tfpipe::RingBuffer<int16_t>* ring = RingOf(stream);
  return ring == nullptr ? 0 : ring->Capacity() - ring->Available();
}

uint32_t Write(Stream stream, const int16_t* values, uint32_t count) {
  tfpipe::RingBuffer<int16_t>* ring = RingOf(stream);
  return ring == nullptr ? 0 : ring->Write(values, count);
}

}  // namespace tfreplay
