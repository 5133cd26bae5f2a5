// Every allocation TFLM's FrontendPopulateState makes, for tests/test_pipeline_ram.py:
// linked with -Wl,--wrap=malloc,--wrap=calloc, so the frontend's own calls (compiled from a
// TFLM library tree, never copied here) come through the wrappers below.
//
//   frontend_alloc_harness window_ms stride_ms channels lower_hz upper_hz smoothing_bits
//       even odd min_signal pcan strength offset gain_bits log_scale scale_shift
//
// Prints the bytes of each request, in order, then "populated=1" (or 0).
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "tensorflow/lite/experimental/microfrontend/lib/frontend.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend_util.h"

extern "C" void* __real_malloc(size_t size);
extern "C" void* __real_calloc(size_t count, size_t size);

namespace {

constexpr int kMaxRequests = 64;
size_t requests[kMaxRequests];
int request_count = 0;
bool recording = false;

void Record(size_t bytes) {
  if (recording && request_count < kMaxRequests) requests[request_count++] = bytes;
}

}  // namespace

extern "C" void* __wrap_malloc(size_t size) {
  Record(size);
  return __real_malloc(size);
}

extern "C" void* __wrap_calloc(size_t count, size_t size) {
  Record(count * size);
  return __real_calloc(count, size);
}

int main(int argc, char** argv) {
  if (argc != 16) return 2;
  FrontendConfig config;
  FrontendFillConfigWithDefaults(&config);
  config.window.size_ms = atoi(argv[1]);
  config.window.step_size_ms = atoi(argv[2]);
  config.filterbank.num_channels = atoi(argv[3]);
  config.filterbank.lower_band_limit = strtof(argv[4], nullptr);
  config.filterbank.upper_band_limit = strtof(argv[5], nullptr);
  config.noise_reduction.smoothing_bits = atoi(argv[6]);
  config.noise_reduction.even_smoothing = strtof(argv[7], nullptr);
  config.noise_reduction.odd_smoothing = strtof(argv[8], nullptr);
  config.noise_reduction.min_signal_remaining = strtof(argv[9], nullptr);
  config.pcan_gain_control.enable_pcan = atoi(argv[10]);
  config.pcan_gain_control.strength = strtof(argv[11], nullptr);
  config.pcan_gain_control.offset = strtof(argv[12], nullptr);
  config.pcan_gain_control.gain_bits = atoi(argv[13]);
  config.log_scale.enable_log = atoi(argv[14]);
  config.log_scale.scale_shift = atoi(argv[15]);
  FrontendState state;
  recording = true;
  const int populated = FrontendPopulateState(&config, &state, 16000);
  recording = false;
  for (int i = 0; i < request_count; ++i) printf("%zu\n", requests[i]);
  printf("populated=%d\n", populated);
  if (populated) FrontendFreeStateContents(&state);
  return 0;
}
