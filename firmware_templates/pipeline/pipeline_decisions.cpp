// Part of tinyforge's device pipeline (docs/pipeline.md).
#include "pipeline_decisions.h"

#include <string.h>

namespace tfpipe {

void ScoresFromInt8(const int8_t* output, int count, uint8_t* scores) {
  for (int i = 0; i < count; ++i) {
    scores[i] = static_cast<uint8_t>(static_cast<int32_t>(output[i]) + 128);
  }
}

void ScoresFromUInt8(const uint8_t* output, int count, uint8_t* scores) {
  memcpy(scores, output, static_cast<size_t>(count));
}

void ScoresFromFloat(const float* output, int count, uint8_t* scores) {
  for (int i = 0; i < count; ++i) {
    // * 256 is exact in float32; truncating a non-negative value is its floor.
    const float scaled = output[i] * 256.0f;
    if (!(scaled > 0.0f)) {
      scores[i] = 0;  // also NaN
    } else if (scaled >= 255.0f) {
      scores[i] = 255;
    } else {
      scores[i] = static_cast<uint8_t>(scaled);
    }
  }
}

DecisionFilter::DecisionFilter(const DecisionSettings& settings, uint8_t* scores,
                               uint32_t* times)
    : settings_(settings), scores_(scores), times_(times) {
  Reset();
}

void DecisionFilter::Reset() {
  front_ = 0;
  size_ = 0;
  previous_ = -1;
  previous_time_ = 0;
}

void DecisionFilter::DropOldest() {
  front_ = static_cast<uint16_t>(front_ + 1 == settings_.capacity ? 0 : front_ + 1);
  --size_;
}

const uint8_t* DecisionFilter::ScoresAt(uint16_t offset) const {
  uint32_t index = static_cast<uint32_t>(front_) + offset;
  if (index >= settings_.capacity) index -= settings_.capacity;
  return scores_ + index * settings_.classes;
}

DecisionStep DecisionFilter::Process(const uint8_t* scores, uint32_t time_ms) {
  DecisionStep step = {-1, 0, false, false};
  if (settings_.capacity == 0) return step;
  // Unsigned differences stay right when the millisecond clock wraps.
  while (size_ > 0 && time_ms - times_[front_] > settings_.average_ms) DropOldest();
  if (size_ == settings_.capacity) DropOldest();
  uint32_t back = static_cast<uint32_t>(front_) + size_;
  if (back >= settings_.capacity) back -= settings_.capacity;
  memcpy(scores_ + back * settings_.classes, scores, settings_.classes);
  times_[back] = time_ms;
  ++size_;

  if (size_ < settings_.minimum_count ||
      time_ms - times_[front_] < settings_.average_ms / 4) {
    return step;
  }
  int16_t top = 0;
  uint32_t top_score = 0;
  for (int c = 0; c < settings_.classes; ++c) {
    uint32_t sum = 0;
    for (uint16_t i = 0; i < size_; ++i) sum += ScoresAt(i)[c];
    const uint32_t average = sum / size_;
    if (average > top_score) {
      top = static_cast<int16_t>(c);
      top_score = average;
    }
  }
  const bool recent = previous_ >= 0 && previous_ != settings_.background &&
                      time_ms - previous_time_ <= settings_.suppression_ms;
  step.top = top;
  step.score = static_cast<uint8_t>(top_score);
  step.is_new = top_score > settings_.threshold_steps && (top != previous_ || !recent);
  if (step.is_new) {
    previous_ = top;
    previous_time_ = time_ms;
  }
  step.reported = step.is_new && top != settings_.background;
  return step;
}

}  // namespace tfpipe
