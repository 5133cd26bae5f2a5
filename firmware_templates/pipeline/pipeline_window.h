// The model input as a window of rows (resampled IMU samples or audio feature
// frames), and when a window is complete: every `stride` rows, or after a
// motion trigger. Twin of tinyforge/pipeline/windows.py.
//
// Part of tinyforge's device pipeline (docs/pipeline.md); plain C++11, no heap.
#ifndef TINYFORGE_PIPELINE_WINDOW_H_
#define TINYFORGE_PIPELINE_WINDOW_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace tfpipe {

// Decides, row by row, whether a window ends on the row just added.
//  - sliding: the first window ends on row window-1, then one every `stride`;
//  - triggered: a hit on row k schedules a window ending on row
//    max(k + window - 1 - pre_samples, window - 1); rows until then are not
//    tested; the trigger re-arms on the row after.
class WindowSchedule {
 public:
  WindowSchedule() { Reset(1, 1); }

  void Reset(uint16_t window, uint16_t stride) {
    window_ = window;
    stride_ = stride;
    triggered_ = false;
    pre_samples_ = 0;
    Restart();
  }

  void ResetTriggered(uint16_t window, uint16_t pre_samples) {
    window_ = window;
    stride_ = 1;
    triggered_ = true;
    pre_samples_ = pre_samples;
    Restart();
  }

  // Forgets every row, keeping the configuration.
  void Restart() {
    filled_ = 0;
    started_ = false;
    since_ = 0;
    remaining_ = 0;
  }

  // Call once per row added; `hit` says whether that row fires the trigger.
  bool Step(bool hit) {
    if (filled_ < window_) ++filled_;
    if (!triggered_) {
      if (filled_ < window_) return false;
      if (!started_) {
        started_ = true;  // the first window ends on row window-1
        return true;
      }
      if (++since_ < stride_) return false;
      since_ = 0;
      return true;
    }
    if (remaining_ > 0) {
      --remaining_;
      return remaining_ == 0;
    }
    if (!hit) return false;
    const uint32_t after = static_cast<uint32_t>(window_) - 1 - pre_samples_;
    const uint32_t missing = static_cast<uint32_t>(window_) - filled_;
    remaining_ = after > missing ? after : missing;
    return remaining_ == 0;
  }

 private:
  uint16_t window_;
  uint16_t stride_;
  bool triggered_;
  uint16_t pre_samples_;
  uint16_t filled_;     // rows added, up to window_
  bool started_;        // sliding: the first window has ended
  uint32_t since_;      // sliding: rows since the last window ended
  uint32_t remaining_;  // triggered: rows still to add before the window ends
};

// The newest `rows` rows of `row_size` values, in a ring over caller storage
// of rows * row_size values.
template <typename T>
class SlidingWindow {
 public:
  SlidingWindow(T* storage, uint16_t rows, uint16_t row_size)
      : storage_(storage), rows_(rows), row_size_(row_size), next_(0) {}

  // The slot of the next row, to be filled in place; it replaces the oldest.
  T* Append() {
    T* row = storage_ + static_cast<size_t>(next_) * row_size_;
    next_ = static_cast<uint16_t>(next_ + 1 == rows_ ? 0 : next_ + 1);
    return row;
  }

  // Every row, oldest first, as the model's time-major input.
  void CopyTo(T* destination) const {
    const size_t row_bytes = static_cast<size_t>(row_size_) * sizeof(T);
    const size_t older = static_cast<size_t>(rows_ - next_);
    memcpy(destination, storage_ + static_cast<size_t>(next_) * row_size_,
           older * row_bytes);
    memcpy(destination + older * row_size_, storage_,
           static_cast<size_t>(next_) * row_bytes);
  }

  void Reset() {
    next_ = 0;
    memset(storage_, 0, static_cast<size_t>(rows_) * row_size_ * sizeof(T));
  }

  uint16_t rows() const { return rows_; }
  uint16_t row_size() const { return row_size_; }

 private:
  T* const storage_;
  const uint16_t rows_;
  const uint16_t row_size_;
  uint16_t next_;
};

}  // namespace tfpipe

#endif  // TINYFORGE_PIPELINE_WINDOW_H_
