// Decisions from a classifier's scores over time, like TFLM micro_speech's
// RecognizeCommands but configurable and small: scores averaged over a time
// window, a threshold, a minimum count and a suppression time, in integers.
// Twin of tinyforge/pipeline/decisions.py, whose docstring states the rules.
//
// Part of tinyforge's device pipeline (docs/pipeline.md); plain C++11, no heap.
#ifndef TINYFORGE_PIPELINE_DECISIONS_H_
#define TINYFORGE_PIPELINE_DECISIONS_H_

#include <stddef.h>
#include <stdint.h>

namespace tfpipe {

struct DecisionSettings {
  uint32_t average_ms;      // results older than this are dropped
  uint8_t threshold_steps;  // the average (0..255) must exceed it
  uint16_t minimum_count;   // results needed in the window
  uint32_t suppression_ms;  // a repeat of the last command is ignored this long
  int16_t background;       // the background class (never reported), -1 none
  uint8_t classes;
  uint16_t capacity;        // results the queue holds (storage size)
};

struct DecisionStep {
  int16_t top;     // the top class, -1 when nothing was decided
  uint8_t score;   // its average score, 0 when nothing was decided
  bool is_new;     // a new command
  bool reported;   // is_new and not the background class: send a decision
};

// Scores 0..255 in 1/256 steps from a model's output.
void ScoresFromInt8(const int8_t* output, int count, uint8_t* scores);
void ScoresFromUInt8(const uint8_t* output, int count, uint8_t* scores);
void ScoresFromFloat(const float* output, int count, uint8_t* scores);

class DecisionFilter {
 public:
  // `scores`: capacity * classes bytes; `times`: capacity entries.
  DecisionFilter(const DecisionSettings& settings, uint8_t* scores, uint32_t* times);

  void Reset();

  // One inference's scores (`classes` values) at stream time `time_ms`;
  // times must not decrease (they may wrap around 2^32).
  DecisionStep Process(const uint8_t* scores, uint32_t time_ms);

 private:
  void DropOldest();
  const uint8_t* ScoresAt(uint16_t offset) const;

  const DecisionSettings settings_;
  uint8_t* const scores_;
  uint32_t* const times_;
  uint16_t front_;
  uint16_t size_;
  int16_t previous_;        // the last command, -1 none
  uint32_t previous_time_;
};

}  // namespace tfpipe

#endif  // TINYFORGE_PIPELINE_DECISIONS_H_
