// The pipeline's arithmetic: resampling, quantisation, stream time.
//
// Every function here has a bit-exact twin in tinyforge/pipeline/arith.py and
// is checked against it with the host g++ (tests/test_pipeline_cpp.py). All of
// it is integer except FloatAffine, whose two float32 roundings must not be
// fused into one: compile with -ffp-contract=off (docs/pipeline.md).
//
// Part of tinyforge's device pipeline; plain C++11, no heap.
#ifndef TINYFORGE_PIPELINE_MATH_H_
#define TINYFORGE_PIPELINE_MATH_H_

#include <stddef.h>
#include <stdint.h>

namespace tfpipe {

// ax, ay, az (8192 counts per g), gx, gy, gz (16.384 counts per dps).
constexpr int kImuAxes = 6;

// Linear interpolation from the source's rate to the model's, at exact
// rational positions: output k sits at input position k * in / out.
//
//   resampler.Push(sample);
//   while (resampler.Next(out)) { ... }   // drain after every Push
class Resampler {
 public:
  Resampler();
  // Rates in millihertz (119 Hz = 119000). Forgets every sample.
  void Reset(uint32_t in_mhz, uint32_t out_mhz);
  void Push(const int16_t sample[kImuAxes]);
  // The next resampled sample, if the samples pushed so far determine it.
  bool Next(int16_t out[kImuAxes]);

 private:
  uint32_t in_step_;
  uint32_t out_step_;
  uint32_t rem_;   // the next output's position: (some input) + rem_ / out_step_
  int32_t need_;   // inputs still to push before the next output is known
  int16_t previous_[kImuAxes];
  int16_t current_[kImuAxes];
};

// q = clamp(zero_point + floor((multiplier * count + offset) / 2^32), lo, hi).
// tinyforge computes multiplier and offset on the host from the training
// normalisation and the model's input scale and zero point.
struct AffineQuantizer {
  int64_t multiplier;
  int64_t offset;  // includes the 2^31 that makes the floor round half up
  int32_t zero_point;
  int32_t lo;
  int32_t hi;
};
int8_t Quantize(const AffineQuantizer& quantizer, int32_t count);

// x = float32(count) * mul + add, rounded after the multiply and after the add.
struct FloatAffine {
  float mul;
  float add;
};
float Apply(const FloatAffine& affine, int32_t count);

// micro_speech's map of a frontend value to int8: ((v * 256 + 333) / 666) - 128.
int8_t MicroSpeechInt8(uint16_t value);

// The uint32 millisecond time of sample `index` at `rate_mhz` (sample 0 at 0).
uint32_t StreamTimeMs(uint32_t index, uint32_t rate_mhz);

// tinyforge axis i (0..2) = sign[i] * library axis index[i]; accel and gyro alike.
struct AxisMap {
  uint8_t index[3];
  int8_t sign[3];
};
void MapAxes(const int16_t library[kImuAxes], const AxisMap& map,
             int16_t out[kImuAxes]);

// A library reading (g or dps, as float) as counts: nearest, ties away from
// zero, saturated to int16. Exact for both IMUs' libraries at their default
// ranges, where the float is a count divided by the counts per unit.
int16_t CountsFromReading(float reading, float counts_per_unit);

}  // namespace tfpipe

#endif  // TINYFORGE_PIPELINE_MATH_H_
