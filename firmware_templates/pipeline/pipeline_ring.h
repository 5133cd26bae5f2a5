// A single-producer single-consumer ring buffer of samples, with no heap.
//
// The producer is the sensor's interrupt (the PDM callback writes 256 samples
// every 16 ms) or the serial replay; the consumer is the main loop, which reads
// whatever has arrived and feeds it on. Reading never re-reads a sample, so the
// audio frontend gets one continuous, non-overlapping stream: feeding it
// overlapping windows (as the Arduino micro_speech example does) duplicates
// 10 ms of audio per frame and changes most features (docs/pipeline.md).
//
// Part of tinyforge's device pipeline (docs/pipeline.md); plain C++11.
#ifndef TINYFORGE_PIPELINE_RING_H_
#define TINYFORGE_PIPELINE_RING_H_

#include <stddef.h>
#include <stdint.h>

#include <atomic>

namespace tfpipe {

template <typename T>
class RingBuffer {
 public:
  // `capacity` must be a power of two: the free-running indices then wrap
  // together with uint32_t arithmetic. IsValid() says whether it is.
  RingBuffer(T* storage, uint32_t capacity)
      : storage_(storage), capacity_(capacity), head_(0), tail_(0), dropped_(0) {}

  bool IsValid() const {
    return storage_ != nullptr && capacity_ != 0 && (capacity_ & (capacity_ - 1)) == 0;
  }

  // Producer side. Copies as many of `count` samples as fit and returns how
  // many; the rest are counted by Dropped(). A drop breaks the stream's
  // continuity, so the firmware reports it and restarts the pipeline.
  uint32_t Write(const T* data, uint32_t count) {
    const uint32_t head = head_.load(std::memory_order_relaxed);
    const uint32_t tail = tail_.load(std::memory_order_acquire);
    const uint32_t space = capacity_ - (head - tail);
    const uint32_t n = count < space ? count : space;
    for (uint32_t i = 0; i < n; ++i) {
      storage_[(head + i) & (capacity_ - 1)] = data[i];
    }
    // Publishes the samples before the index that makes them visible.
    head_.store(head + n, std::memory_order_release);
    if (n < count) {
      dropped_.store(dropped_.load(std::memory_order_relaxed) + (count - n),
                     std::memory_order_relaxed);
    }
    return n;
  }

  // Consumer side. Moves up to `count` of the oldest samples to `data` and
  // returns how many.
  uint32_t Read(T* data, uint32_t count) {
    const uint32_t tail = tail_.load(std::memory_order_relaxed);
    const uint32_t head = head_.load(std::memory_order_acquire);
    const uint32_t available = head - tail;
    const uint32_t n = count < available ? count : available;
    for (uint32_t i = 0; i < n; ++i) {
      data[i] = storage_[(tail + i) & (capacity_ - 1)];
    }
    tail_.store(tail + n, std::memory_order_release);
    return n;
  }

  uint32_t Available() const {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
  }

  uint32_t Capacity() const { return capacity_; }

  // Samples the producer could not store since the last Reset().
  uint32_t Dropped() const { return dropped_.load(std::memory_order_relaxed); }

  // Empties the buffer. Only while neither side runs (before the sensor starts).
  void Reset() {
    head_.store(0, std::memory_order_relaxed);
    tail_.store(0, std::memory_order_relaxed);
    dropped_.store(0, std::memory_order_relaxed);
  }

 private:
  T* const storage_;
  const uint32_t capacity_;
  std::atomic<uint32_t> head_;     // written by the producer only
  std::atomic<uint32_t> tail_;     // written by the consumer only
  std::atomic<uint32_t> dropped_;  // written by the producer only
};

}  // namespace tfpipe

#endif  // TINYFORGE_PIPELINE_RING_H_
