// The microphone's path from the ring to the frontend (tfpipe::DrainAudio, what the
// firmware's loop runs), for tests/test_pipeline_drops.py. The firmware's ring of 4,096
// samples; its producer is the PDM interrupt, which writes blocks of at most 256 samples
// whenever they arrive, whether or not the loop kept up.
//
//   audio_drain_harness DISCARD < SCRIPT
//
// SCRIPT lines: `w N` the interrupt delivers the next N samples of the stream (sample k has
// the value k mod 30000); `d` one turn of the loop. Each turn prints
// `taken=T broken=B discard_left=D fed=V V V ...` (the samples the frontend got).
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>

#include "pipeline_audio.h"

namespace {

constexpr uint32_t kRingSamples = 4096;  // main.cpp.j2's kAudioRingSamples
constexpr uint32_t kPdmBlock = 256;
int16_t storage[kRingSamples];
std::string fed;

void Feed(const int16_t* samples, uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) fed += " " + std::to_string(samples[i]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  uint32_t discard_left = static_cast<uint32_t>(strtoul(argv[1], nullptr, 10));
  tfpipe::RingBuffer<int16_t> ring(storage, kRingSamples);
  uint32_t next = 0;
  char op[8];
  unsigned long count = 0;
  while (scanf("%7s", op) == 1) {
    if (strcmp(op, "w") == 0 && scanf("%lu", &count) == 1) {
      while (count > 0) {
        int16_t block[kPdmBlock];
        const uint32_t n = count < kPdmBlock ? static_cast<uint32_t>(count) : kPdmBlock;
        for (uint32_t i = 0; i < n; ++i) block[i] = static_cast<int16_t>((next + i) % 30000);
        ring.Write(block, n);
        next += n;
        count -= n;
      }
    } else if (strcmp(op, "d") == 0) {
      fed.clear();
      bool broken = false;
      const uint32_t taken = tfpipe::DrainAudio(&ring, &discard_left, Feed, &broken);
      printf("taken=%" PRIu32 " broken=%d discard_left=%" PRIu32 " fed=%s\n", taken,
             broken ? 1 : 0, discard_left, fed.c_str());
    } else {
      return 3;
    }
  }
  return 0;
}
