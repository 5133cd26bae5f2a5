// Part of tinyforge's device pipeline (docs/pipeline.md).
#include "pipeline_math.h"

namespace tfpipe {
namespace {

// Samples are shifted to unsigned before interpolating, so every numerator is
// non-negative and integer division is the floor on every compiler.
constexpr int32_t kUnsignedBias = 32768;

int16_t Saturate16(int32_t value) {
  if (value > 32767) return 32767;
  if (value < -32768) return -32768;
  return static_cast<int16_t>(value);
}

// floor(value / 2^32) for any int64 value; `>>` of a negative number is
// implementation-defined before C++20.
int64_t FloorShift32(int64_t value) {
  if (value >= 0) return value >> 32;
  return -(((-value) - 1) >> 32) - 1;
}

uint32_t Gcd(uint32_t a, uint32_t b) {
  while (b != 0) {
    const uint32_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

}  // namespace

Resampler::Resampler() { Reset(1, 1); }

void Resampler::Reset(uint32_t in_mhz, uint32_t out_mhz) {
  if (in_mhz == 0 || out_mhz == 0) in_mhz = out_mhz = 1;
  const uint32_t divisor = Gcd(in_mhz, out_mhz);
  in_step_ = in_mhz / divisor;
  out_step_ = out_mhz / divisor;
  rem_ = 0;
  need_ = 1;  // output 0 is input 0 itself
  for (int i = 0; i < kImuAxes; ++i) {
    previous_[i] = 0;
    current_[i] = 0;
  }
}

void Resampler::Push(const int16_t sample[kImuAxes]) {
  for (int i = 0; i < kImuAxes; ++i) {
    previous_[i] = current_[i];
    current_[i] = sample[i];
  }
  --need_;
}

bool Resampler::Next(int16_t out[kImuAxes]) {
  if (need_ != 0) return false;
  if (rem_ == 0) {
    for (int i = 0; i < kImuAxes; ++i) out[i] = current_[i];
  } else {
    // Between the two newest inputs, weighted by the position's remainder.
    for (int i = 0; i < kImuAxes; ++i) {
      const uint64_t left = static_cast<uint64_t>(previous_[i] + kUnsignedBias);
      const uint64_t right = static_cast<uint64_t>(current_[i] + kUnsignedBias);
      const uint64_t total =
          left * (out_step_ - rem_) + right * rem_ + out_step_ / 2;
      out[i] = static_cast<int16_t>(static_cast<int32_t>(total / out_step_) -
                                    kUnsignedBias);
    }
  }
  // The next output is in_step_ / out_step_ inputs further on; it needs the
  // input at or after its position.
  const uint64_t position = static_cast<uint64_t>(rem_) + in_step_;
  const uint32_t whole = static_cast<uint32_t>(position / out_step_);
  const uint32_t next_rem = static_cast<uint32_t>(position % out_step_);
  need_ = static_cast<int32_t>(whole) + (next_rem > 0 ? 1 : 0) - (rem_ > 0 ? 1 : 0);
  rem_ = next_rem;
  return true;
}

int8_t Quantize(const AffineQuantizer& quantizer, int32_t count) {
  const int64_t scaled = quantizer.multiplier * count + quantizer.offset;
  int64_t q = FloorShift32(scaled) + quantizer.zero_point;
  if (q < quantizer.lo) q = quantizer.lo;
  if (q > quantizer.hi) q = quantizer.hi;
  return static_cast<int8_t>(q);
}

float Apply(const FloatAffine& affine, int32_t count) {
  const float product = static_cast<float>(count) * affine.mul;
  return product + affine.add;
}

int8_t MicroSpeechInt8(uint16_t value) {
  constexpr int32_t kScale = 256;
  constexpr int32_t kDivisor = 666;  // 25.6 * 26.0, rounded, as micro_speech
  int32_t q = (static_cast<int32_t>(value) * kScale + kDivisor / 2) / kDivisor - 128;
  if (q < -128) q = -128;
  if (q > 127) q = 127;
  return static_cast<int8_t>(q);
}

uint32_t StreamTimeMs(uint32_t index, uint32_t rate_mhz) {
  return static_cast<uint32_t>(static_cast<uint64_t>(index) * 1000000u / rate_mhz);
}

void MapAxes(const int16_t library[kImuAxes], const AxisMap& map,
             int16_t out[kImuAxes]) {
  for (int sensor = 0; sensor < 2; ++sensor) {  // accelerometer, then gyroscope
    const int base = sensor * 3;
    for (int i = 0; i < 3; ++i) {
      const int32_t value = library[base + map.index[i]];
      out[base + i] = Saturate16(map.sign[i] < 0 ? -value : value);
    }
  }
}

int16_t CountsFromReading(float reading, float counts_per_unit) {
  const float scaled = reading * counts_per_unit;
  if (!(scaled == scaled)) return 0;  // NaN: the library's "no reading"
  if (scaled >= 32767.0f) return 32767;
  if (scaled <= -32768.0f) return -32768;
  const int32_t rounded = scaled >= 0 ? static_cast<int32_t>(scaled + 0.5f)
                                      : -static_cast<int32_t>(-scaled + 0.5f);
  return Saturate16(rounded);
}

}  // namespace tfpipe
