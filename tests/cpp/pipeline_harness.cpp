// Test harness for the device pipeline (firmware_templates/pipeline/), built
// with the host g++ by tests/test_pipeline_cpp.py:
//
//   pipeline_harness MODE INPUT OUTPUT
//
// Each mode reads whitespace-separated numbers from INPUT (parameters first,
// then data) and writes one result per line to OUTPUT. Floats travel as the
// 8 hex digits of their float32 bits, so nothing is lost in printing. The
// `imu`, `audio` and `settings-decisions` modes run the composed pipelines with
// the generated pipeline_settings.h this binary was compiled with; the others
// take their parameters from INPUT.
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_audio.h"
#include "pipeline_decisions.h"
#include "pipeline_imu.h"
#include "pipeline_math.h"
#include "pipeline_ring.h"
#include "pipeline_settings.h"
#include "pipeline_window.h"

namespace {

FILE* in = nullptr;
FILE* out = nullptr;

bool ReadInt(int64_t* value) { return fscanf(in, "%" SCNd64, value) == 1; }

int64_t Need() {
  int64_t value = 0;
  if (!ReadInt(&value)) {
    fprintf(stderr, "harness: input ended early\n");
    exit(3);
  }
  return value;
}

float ReadFloatBits() {
  unsigned int bits = 0;
  if (fscanf(in, "%x", &bits) != 1) {
    fprintf(stderr, "harness: expected float bits\n");
    exit(3);
  }
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

void WriteFloatBits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  fprintf(out, "%08" PRIx32, bits);
}

// Inline: only the overload of the generated PipelineValue is used.
inline void WriteValue(int8_t value) { fprintf(out, "%d", value); }
inline void WriteValue(float value) { WriteFloatBits(value); }

void ReadSample(int16_t sample[tfpipe::kImuAxes], bool* ok) {
  for (int i = 0; i < tfpipe::kImuAxes; ++i) {
    int64_t v = 0;
    if (!ReadInt(&v)) {
      *ok = false;
      return;
    }
    sample[i] = static_cast<int16_t>(v);
  }
  *ok = true;
}

// in_mhz out_mhz, then samples of six counts; every resampled sample.
void Resample() {
  tfpipe::Resampler resampler;
  const uint32_t in_mhz = static_cast<uint32_t>(Need());
  resampler.Reset(in_mhz, static_cast<uint32_t>(Need()));
  int16_t sample[tfpipe::kImuAxes], result[tfpipe::kImuAxes];
  bool ok = true;
  for (ReadSample(sample, &ok); ok; ReadSample(sample, &ok)) {
    resampler.Push(sample);
    while (resampler.Next(result)) {
      for (int i = 0; i < tfpipe::kImuAxes; ++i) fprintf(out, i ? " %d" : "%d", result[i]);
      fprintf(out, "\n");
    }
  }
}

// multiplier offset zero_point lo hi, then counts.
void QuantizeMode() {
  tfpipe::AffineQuantizer q;
  q.multiplier = Need();
  q.offset = Need();
  q.zero_point = static_cast<int32_t>(Need());
  q.lo = static_cast<int32_t>(Need());
  q.hi = static_cast<int32_t>(Need());
  int64_t count;
  while (ReadInt(&count)) fprintf(out, "%d\n", tfpipe::Quantize(q, static_cast<int32_t>(count)));
}

// mul add (float bits), then counts.
void FloatMode() {
  tfpipe::FloatAffine affine;
  affine.mul = ReadFloatBits();
  affine.add = ReadFloatBits();
  int64_t count;
  while (ReadInt(&count)) {
    WriteFloatBits(tfpipe::Apply(affine, static_cast<int32_t>(count)));
    fprintf(out, "\n");
  }
}

void MicroSpeechMode() {
  int64_t value;
  while (ReadInt(&value)) {
    fprintf(out, "%d\n", tfpipe::MicroSpeechInt8(static_cast<uint16_t>(value)));
  }
}

// index rate_mhz pairs.
void TimeMode() {
  int64_t index;
  while (ReadInt(&index)) {
    const uint32_t rate = static_cast<uint32_t>(Need());
    fprintf(out, "%" PRIu32 "\n", tfpipe::StreamTimeMs(static_cast<uint32_t>(index), rate));
  }
}

// index0 index1 index2 sign0 sign1 sign2, then samples.
void MapAxesMode() {
  tfpipe::AxisMap map;
  for (int i = 0; i < 3; ++i) map.index[i] = static_cast<uint8_t>(Need());
  for (int i = 0; i < 3; ++i) map.sign[i] = static_cast<int8_t>(Need());
  int16_t sample[tfpipe::kImuAxes], result[tfpipe::kImuAxes];
  bool ok = true;
  for (ReadSample(sample, &ok); ok; ReadSample(sample, &ok)) {
    tfpipe::MapAxes(sample, map, result);
    for (int i = 0; i < tfpipe::kImuAxes; ++i) fprintf(out, i ? " %d" : "%d", result[i]);
    fprintf(out, "\n");
  }
}

// counts_per_unit (float bits), then readings (float bits).
void CountsMode() {
  const float per_unit = ReadFloatBits();
  unsigned int bits;
  while (fscanf(in, "%x", &bits) == 1) {
    float reading;
    memcpy(&reading, &bits, sizeof(reading));
    fprintf(out, "%d\n", tfpipe::CountsFromReading(reading, per_unit));
  }
}

// window stride triggered pre_samples, then one hit (0/1) per row: the rows
// on which a window ends.
void ScheduleMode() {
  tfpipe::WindowSchedule schedule;
  const uint16_t window = static_cast<uint16_t>(Need());
  const uint16_t stride = static_cast<uint16_t>(Need());
  const bool triggered = Need() != 0;
  const uint16_t pre = static_cast<uint16_t>(Need());
  if (triggered) {
    schedule.ResetTriggered(window, pre);
  } else {
    schedule.Reset(window, stride);
  }
  int64_t hit, row = 0;
  while (ReadInt(&hit)) {
    if (schedule.Step(hit != 0)) fprintf(out, "%" PRId64 "\n", row);
    ++row;
  }
}

// capacity, then operations: `1 n v1..vn` writes (prints how many were
// stored), `2 n` reads (prints how many, then the values); `3` prints
// Available() and Dropped().
void RingMode() {
  static int16_t storage[1 << 12];
  static int16_t data[1 << 12];
  const uint32_t capacity = static_cast<uint32_t>(Need());
  if (capacity > (1u << 12)) exit(3);
  tfpipe::RingBuffer<int16_t> ring(storage, capacity);
  fprintf(out, "valid %d\n", ring.IsValid() ? 1 : 0);
  if (!ring.IsValid()) return;
  int64_t op;
  while (ReadInt(&op)) {
    if (op == 1) {
      const uint32_t n = static_cast<uint32_t>(Need());
      for (uint32_t i = 0; i < n; ++i) data[i] = static_cast<int16_t>(Need());
      fprintf(out, "w %" PRIu32 "\n", ring.Write(data, n));
    } else if (op == 2) {
      const uint32_t n = static_cast<uint32_t>(Need());
      const uint32_t got = ring.Read(data, n);
      fprintf(out, "r %" PRIu32, got);
      for (uint32_t i = 0; i < got; ++i) fprintf(out, " %d", data[i]);
      fprintf(out, "\n");
    } else {
      fprintf(out, "a %" PRIu32 " %" PRIu32 "\n", ring.Available(), ring.Dropped());
    }
  }
}

void RunDecisions(const tfpipe::DecisionSettings& settings) {
  static uint8_t scores[128 * 64];
  static uint32_t times[128];
  if (settings.capacity > 128 || settings.classes > 64) exit(3);
  tfpipe::DecisionFilter filter(settings, scores, times);
  uint8_t latest[64];
  int64_t time_ms;
  while (ReadInt(&time_ms)) {
    for (int c = 0; c < settings.classes; ++c) latest[c] = static_cast<uint8_t>(Need());
    const tfpipe::DecisionStep step = filter.Process(latest, static_cast<uint32_t>(time_ms));
    fprintf(out, "%d %d %d %d\n", step.top, step.score, step.is_new ? 1 : 0,
            step.reported ? 1 : 0);
  }
}

// average threshold_steps minimum suppression background classes capacity,
// then lines of: time score0 .. score(classes-1).
void DecisionsMode() {
  tfpipe::DecisionSettings s;
  s.average_ms = static_cast<uint32_t>(Need());
  s.threshold_steps = static_cast<uint8_t>(Need());
  s.minimum_count = static_cast<uint16_t>(Need());
  s.suppression_ms = static_cast<uint32_t>(Need());
  s.background = static_cast<int16_t>(Need());
  s.classes = static_cast<uint8_t>(Need());
  s.capacity = static_cast<uint16_t>(Need());
  RunDecisions(s);
}

// kind (0 int8, 1 uint8, 2 float bits), count, then values: the scores.
void ScoresMode() {
  const int kind = static_cast<int>(Need());
  const int count = static_cast<int>(Need());
  int8_t i8[64];
  uint8_t u8[64];
  float f32[64];
  uint8_t scores[64];
  if (count > 64) exit(3);
  for (int i = 0; i < count; ++i) {
    if (kind == 2) {
      f32[i] = ReadFloatBits();
    } else if (kind == 1) {
      u8[i] = static_cast<uint8_t>(Need());
    } else {
      i8[i] = static_cast<int8_t>(Need());
    }
  }
  if (kind == 2) {
    tfpipe::ScoresFromFloat(f32, count, scores);
  } else if (kind == 1) {
    tfpipe::ScoresFromUInt8(u8, count, scores);
  } else {
    tfpipe::ScoresFromInt8(i8, count, scores);
  }
  for (int i = 0; i < count; ++i) fprintf(out, "%d\n", scores[i]);
}

PipelineValue window_storage[kPipelineWindowValues];
PipelineValue input[kPipelineWindowValues];

void WriteInput(uint32_t time_ms) {
  fprintf(out, "%" PRIu32, time_ms);
  for (int i = 0; i < kPipelineWindowValues; ++i) {
    fprintf(out, " ");
    WriteValue(input[i]);
  }
  fprintf(out, "\n");
}

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
// source_rate_mhz, then samples: one line per model input (time, values).
void ImuMode() {
  tfpipe::ImuPipeline<PipelineValue> imu(kImuSettings, window_storage);
  imu.Start(static_cast<uint32_t>(Need()));
  int16_t sample[tfpipe::kImuAxes];
  uint32_t time_ms = 0;
  bool ok = true;
  for (ReadSample(sample, &ok); ok; ReadSample(sample, &ok)) {
    imu.Push(sample);
    while (imu.NextInput(input, &time_ms)) WriteInput(time_ms);
  }
}
#endif

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_MICROPHONE
// frames of kFrontendChannels values: one line per model input.
void AudioMode() {
  tfpipe::AudioPipeline<PipelineValue> audio(kAudioSettings, window_storage);
  uint16_t frame[64];
  uint32_t time_ms = 0;
  for (;;) {
    for (int c = 0; c < kFrontendChannels; ++c) {
      int64_t v;
      if (!ReadInt(&v)) return;
      frame[c] = static_cast<uint16_t>(v);
    }
    if (audio.PushFrame(frame, input, &time_ms)) WriteInput(time_ms);
  }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: pipeline_harness MODE INPUT OUTPUT\n");
    return 2;
  }
  in = fopen(argv[2], "r");
  out = fopen(argv[3], "w");
  if (in == nullptr || out == nullptr) return 2;
  const char* mode = argv[1];
  if (!strcmp(mode, "resample")) Resample();
  else if (!strcmp(mode, "quantize")) QuantizeMode();
  else if (!strcmp(mode, "float")) FloatMode();
  else if (!strcmp(mode, "microspeech")) MicroSpeechMode();
  else if (!strcmp(mode, "time")) TimeMode();
  else if (!strcmp(mode, "mapaxes")) MapAxesMode();
  else if (!strcmp(mode, "counts")) CountsMode();
  else if (!strcmp(mode, "schedule")) ScheduleMode();
  else if (!strcmp(mode, "ring")) RingMode();
  else if (!strcmp(mode, "decisions")) DecisionsMode();
  else if (!strcmp(mode, "scores")) ScoresMode();
#if TINYFORGE_PIPELINE_DECISIONS
  else if (!strcmp(mode, "settings-decisions")) RunDecisions(kDecisionSettings);
#endif
#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
  else if (!strcmp(mode, "imu")) ImuMode();
#endif
#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_MICROPHONE
  else if (!strcmp(mode, "audio")) AudioMode();
#endif
  else return 2;
  fclose(in);
  return fclose(out) == 0 ? 0 : 1;
}
