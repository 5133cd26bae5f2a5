// A sketch that drives board_sensors.h the way the model firmware's pipeline
// does (docs/pipeline.md, "Integrating the device parts"), without TFLM's
// interpreter: for compile checks of the board's sensor sources against the
// real Arduino mbed core and the IMU libraries (docs/boards.md), where it
// takes the place of the rendered main.cpp. Not part of any firmware.
#include <Arduino.h>
#include <string.h>

#include "board_runtime.h"
#include "board_sensors.h"
#include "pipeline_ring.h"
#include "pipeline_settings.h"

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_MICROPHONE
#include "tensorflow/lite/experimental/microfrontend/lib/frontend.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend_util.h"
#endif

namespace {

PipelineValue window_storage[kPipelineWindowValues];
PipelineValue input[kPipelineWindowValues];
uint32_t inferences = 0;
uint32_t last_time_ms = 0;
bool ready = false;

void Report(const char* text) { BoardSerialWrite(text, strlen(text)); }

void Infer(uint32_t time_ms) {
  // Stands in for Invoke() and the decision filter.
  ++inferences;
  last_time_ms = time_ms;
}

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU

tfpipe::ImuPipeline<PipelineValue> imu(kImuSettings, window_storage);
tfsensors::ImuKind kind = tfsensors::kImuNone;

void StartSensor() {
  kind = tfsensors::StartImu();
  if (kind == tfsensors::kImuNone) {
    Report("no IMU answered\r\n");
    return;
  }
  imu.Start(tfsensors::ImuRateMilliHz());
  ready = true;
}

void PollSensor() {
  int16_t library[tfpipe::kImuAxes];
  while (tfsensors::ReadImu(library)) {
    int16_t counts[tfpipe::kImuAxes];
    tfpipe::MapAxes(library, kind == tfsensors::kImuLsm9ds1 ? kLsm9ds1AxisMap : kBmi270AxisMap,
                    counts);
    imu.Push(counts);
    uint32_t time_ms;
    while (imu.NextInput(input, &time_ms)) Infer(time_ms);
  }
}

#else  // microphone

// 8,192 samples: 512 ms of audio between two visits of the loop.
constexpr uint32_t kRingSamples = 8192;
int16_t ring_storage[kRingSamples];
tfpipe::RingBuffer<int16_t> ring(ring_storage, kRingSamples);
tfpipe::AudioPipeline<PipelineValue> audio(kAudioSettings, window_storage);
FrontendState frontend;
uint32_t discarded = 0;

void StartSensor() {
  FrontendConfig config;
  FrontendFillConfigWithDefaults(&config);
  config.window.size_ms = kFrontendWindowMs;
  config.window.step_size_ms = kFrontendStrideMs;
  config.filterbank.num_channels = kFrontendChannels;
  config.filterbank.lower_band_limit = kFrontendLowerHz;
  config.filterbank.upper_band_limit = kFrontendUpperHz;
  config.noise_reduction.smoothing_bits = kFrontendSmoothingBits;
  config.noise_reduction.even_smoothing = kFrontendEvenSmoothing;
  config.noise_reduction.odd_smoothing = kFrontendOddSmoothing;
  config.noise_reduction.min_signal_remaining = kFrontendMinSignalRemaining;
  config.pcan_gain_control.enable_pcan = kFrontendPcan;
  config.pcan_gain_control.strength = kFrontendPcanStrength;
  config.pcan_gain_control.offset = kFrontendPcanOffset;
  config.pcan_gain_control.gain_bits = kFrontendGainBits;
  config.log_scale.enable_log = kFrontendLogScale;
  config.log_scale.scale_shift = kFrontendScaleShift;
  if (!FrontendPopulateState(&config, &frontend, kAudioSampleRate)) {
    Report("frontend failed\r\n");
    return;
  }
  audio.Start();
  if (!tfsensors::StartMicrophone(kAudioSampleRate, &ring)) {
    Report("microphone failed\r\n");
    return;
  }
  ready = true;
}

void PollSensor() {
  int16_t chunk[256];
  uint32_t n = ring.Read(chunk, 256);
  const int16_t* p = chunk;
  // The microphone settles for the first seconds: the pipeline drops them.
  while (n > 0 && discarded < kAudioDiscardSamples) {
    const uint32_t skip = n < kAudioDiscardSamples - discarded ? n : kAudioDiscardSamples - discarded;
    p += skip;
    n -= skip;
    discarded += skip;
  }
  while (n > 0) {
    size_t used = 0;
    FrontendOutput out = FrontendProcessSamples(&frontend, p, n, &used);
    p += used;
    n -= static_cast<uint32_t>(used);
    uint32_t time_ms;
    if (out.size > 0 && audio.PushFrame(out.values, input, &time_ms)) Infer(time_ms);
  }
}

#endif

}  // namespace

void setup() {
  BoardSerialBegin(115200);
  StartSensor();
}

void loop() {
  if (ready) PollSensor();
}
