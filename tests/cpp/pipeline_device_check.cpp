// Instantiates the device pipeline with a generated pipeline_settings.h the
// way a firmware does (static storage sized by the settings, a ring buffer
// between the source and the pipeline, the decision filter), so that
// tests/test_pipeline_cpp.py can compile it for the Cortex-M4F and check that
// it needs no heap and no stdio.
#include "pipeline_ring.h"
#include "pipeline_settings.h"

namespace {

PipelineValue window_storage[kPipelineWindowValues];
PipelineValue input[kPipelineWindowValues];
#if TINYFORGE_PIPELINE_DECISIONS
uint8_t result_scores[kDecisionCapacity * kDecisionClasses];
uint32_t result_times[kDecisionCapacity];
tfpipe::DecisionFilter decision_filter(kDecisionSettings, result_scores, result_times);
#endif

int Decide(uint32_t time_ms) {
#if TINYFORGE_PIPELINE_DECISIONS
  // Stands in for the model's output: the first values of the input.
  uint8_t scores[kDecisionClasses];
  for (int i = 0; i < kDecisionClasses; ++i) scores[i] = static_cast<uint8_t>(input[i]);
  return decision_filter.Process(scores, time_ms).reported ? 1 : 0;
#else
  return static_cast<int>(time_ms & 1);
#endif
}

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
int16_t ring_storage[64 * tfpipe::kImuAxes];
tfpipe::RingBuffer<int16_t> ring(ring_storage, 64 * tfpipe::kImuAxes);
tfpipe::ImuPipeline<PipelineValue> imu(kImuSettings, window_storage);
#else
int16_t ring_storage[1024];
tfpipe::RingBuffer<int16_t> ring(ring_storage, 1024);
tfpipe::AudioPipeline<PipelineValue> audio(kAudioSettings, window_storage);
#endif

}  // namespace

// The source side: an interrupt handing over samples.
void PipelineSourceWrite(const int16_t* samples, uint32_t count) { ring.Write(samples, count); }

// The loop side: returns how many decisions were reported.
int PipelineLoop(const uint16_t* frontend_frame) {
  int reported = 0;
  uint32_t time_ms = 0;
#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
  (void)frontend_frame;
  int16_t sample[tfpipe::kImuAxes];
  while (ring.Read(sample, tfpipe::kImuAxes) == tfpipe::kImuAxes) {
    imu.Push(sample);
    while (imu.NextInput(input, &time_ms)) reported += Decide(time_ms);
  }
#else
  int16_t chunk[256];
  while (ring.Read(chunk, 256) > 0) {
  }
  if (audio.PushFrame(frontend_frame, input, &time_ms)) reported += Decide(time_ms);
#endif
  return reported;
}

void PipelineStart(uint32_t source_rate_mhz) {
  ring.Reset();
#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
  imu.Start(source_rate_mhz);
#else
  (void)source_rate_mhz;
  audio.Start();
#endif
#if TINYFORGE_PIPELINE_DECISIONS
  decision_filter.Reset();
#endif
}
