// TFLM's micro frontend (compiled from a TFLM library tree, never copied here)
// fed the way a firmware would, for tests/test_pipeline_audio.py:
//
//   frontend_harness MODE CHUNK INPUT OUTPUT window_ms stride_ms channels
//       lower_hz upper_hz smoothing_bits even odd min_signal pcan strength
//       offset gain_bits log_scale scale_shift
//
// INPUT holds int16 samples (little-endian), OUTPUT gets the uint16 frames.
//   ring:        the PDM callback writes 256-sample blocks into tinyforge's
//                RingBuffer; the loop reads at most CHUNK samples at a time
//                and feeds every sample to the frontend exactly once;
//   direct:      the samples in consecutive chunks of CHUNK;
//   micro_speech: the Arduino micro_speech example's feeding: for every 20 ms
//                slice, the 30 ms of audio starting there (overlapping).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "pipeline_ring.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend_util.h"

namespace {

constexpr int kSampleRate = 16000;
constexpr uint32_t kPdmBlock = 256;  // samples per PDM callback (512 bytes)

FILE* out = nullptr;
FrontendState state;

void Emit(const FrontendOutput& output) {
  if (output.size > 0) fwrite(output.values, sizeof(uint16_t), output.size, out);
}

// Feeds every sample once, however the frontend splits them into frames.
void Feed(const int16_t* samples, size_t count) {
  while (count > 0) {
    size_t used = 0;
    Emit(FrontendProcessSamples(&state, samples, count, &used));
    samples += used;
    count -= used;
  }
}

void Ring(const std::vector<int16_t>& audio, uint32_t chunk) {
  static int16_t storage[4096];
  tfpipe::RingBuffer<int16_t> ring(storage, 4096);
  std::vector<int16_t> buffer(chunk);
  size_t next = 0;
  while (next < audio.size()) {
    const uint32_t block = static_cast<uint32_t>(
        audio.size() - next < kPdmBlock ? audio.size() - next : kPdmBlock);
    if (ring.Write(&audio[next], block) != block) exit(4);  // never here: drained below
    next += block;
    uint32_t n;
    while ((n = ring.Read(buffer.data(), chunk)) > 0) Feed(buffer.data(), n);
  }
}

void Direct(const std::vector<int16_t>& audio, size_t chunk) {
  for (size_t start = 0; start < audio.size(); start += chunk) {
    Feed(&audio[start], audio.size() - start < chunk ? audio.size() - start : chunk);
  }
}

void MicroSpeech(const std::vector<int16_t>& audio, int window_ms, int stride_ms) {
  const size_t size = static_cast<size_t>(window_ms) * kSampleRate / 1000;
  const size_t step = static_cast<size_t>(stride_ms) * kSampleRate / 1000;
  for (size_t start = 0; start + size <= audio.size(); start += step) {
    size_t used = 0;  // the example ignores how many were used
    Emit(FrontendProcessSamples(&state, &audio[start], size, &used));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 20) {
    fprintf(stderr, "frontend_harness: wrong number of arguments (%d)\n", argc);
    return 2;
  }
  const char* mode = argv[1];
  const uint32_t chunk = static_cast<uint32_t>(atoi(argv[2]));
  FrontendConfig config;
  FrontendFillConfigWithDefaults(&config);
  config.window.size_ms = atoi(argv[5]);
  config.window.step_size_ms = atoi(argv[6]);
  config.filterbank.num_channels = atoi(argv[7]);
  config.filterbank.lower_band_limit = strtof(argv[8], nullptr);
  config.filterbank.upper_band_limit = strtof(argv[9], nullptr);
  config.noise_reduction.smoothing_bits = atoi(argv[10]);
  config.noise_reduction.even_smoothing = strtof(argv[11], nullptr);
  config.noise_reduction.odd_smoothing = strtof(argv[12], nullptr);
  config.noise_reduction.min_signal_remaining = strtof(argv[13], nullptr);
  config.pcan_gain_control.enable_pcan = atoi(argv[14]);
  config.pcan_gain_control.strength = strtof(argv[15], nullptr);
  config.pcan_gain_control.offset = strtof(argv[16], nullptr);
  config.pcan_gain_control.gain_bits = atoi(argv[17]);
  config.log_scale.enable_log = atoi(argv[18]);
  config.log_scale.scale_shift = atoi(argv[19]);
  if (!FrontendPopulateState(&config, &state, kSampleRate)) return 3;

  FILE* in = fopen(argv[3], "rb");
  out = fopen(argv[4], "wb");
  if (in == nullptr || out == nullptr || chunk == 0) return 2;
  std::vector<int16_t> audio;
  int16_t sample;
  while (fread(&sample, sizeof(sample), 1, in) == 1) audio.push_back(sample);
  fclose(in);

  if (!strcmp(mode, "ring")) {
    Ring(audio, chunk);
  } else if (!strcmp(mode, "direct")) {
    Direct(audio, chunk);
  } else if (!strcmp(mode, "micro_speech")) {
    MicroSpeech(audio, config.window.size_ms, config.window.step_size_ms);
  } else {
    return 2;
  }
  FrontendFreeStateContents(&state);
  return fclose(out) == 0 ? 0 : 1;
}
