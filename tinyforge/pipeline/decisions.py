"""Decisions from a classifier's scores over time, like micro_speech's RecognizeCommands.

Integer arithmetic throughout; the same rules run in
firmware_templates/pipeline/pipeline_decisions.cpp (`DecisionFilter`):

1. A score is 0..255 in steps of 1/256: an int8 output q gives q + 128, a uint8 output q,
   a float32 probability p gives floor(p * 256) clamped to 0..255 (NaN gives 0).
2. Each inference (time t, uint32 ms) is queued; results older than `average_ms`
   (t - time > average_ms, modulo 2**32) are dropped first, then the oldest if the queue is
   full (its capacity covers the window at the pipeline's inference rate).
3. With fewer than `minimum_count` results, or less than average_ms / 4 between the oldest
   and t, nothing is decided.
4. The average of each class is sum // count; the top class is the first with the highest
   average (0 when every average is 0).
5. It is a new command when its average > floor(threshold * 256) and either it differs from
   the previous command, or the previous command was the background class (or none yet), or
   more than `suppression_ms` passed since it. New commands of the background class update
   the state but are not reported.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .arith import UINT32


@dataclass(frozen=True)
class Step:
    """The filter's verdict after one inference."""

    time_ms: int
    top: int        # the top class, or -1 when nothing was decided
    score: int      # its average score (0..255), 0 when nothing was decided
    new: bool       # a new command by rule 5
    reported: bool  # new and not the background class


@dataclass(frozen=True)
class Decision:
    time_ms: int
    label: int
    score: int

    def to_json(self, labels: list[str] | None = None) -> dict:
        result = {"time_ms": self.time_ms, "label": self.label, "score": self.score,
                  "probability": self.score / 256}
        if labels and 0 <= self.label < len(labels):
            result["name"] = labels[self.label]
        return result


def scores_u8(outputs: np.ndarray, dtype: str) -> np.ndarray:
    """Model outputs [N, classes] as 0..255 scores (rule 1)."""
    outputs = np.asarray(outputs)
    if dtype == "int8":
        return (outputs.astype(np.int16) + 128).astype(np.uint8)
    if dtype == "uint8":
        return outputs.astype(np.uint8)
    scaled = outputs.astype(np.float32) * np.float32(256.0)
    scaled = np.where(np.isnan(scaled), np.float32(0.0), scaled)
    return np.floor(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


class DecisionFilter:
    """Rules 2-5, one inference at a time."""

    def __init__(self, config, classes: int, capacity: int):
        self.config = config
        self.classes = classes
        self.capacity = capacity
        self.threshold = config.threshold_steps
        self.queue: deque[tuple[int, np.ndarray]] = deque()
        self.previous = -1
        self.previous_time = 0

    def process(self, scores: np.ndarray, time_ms: int) -> Step:
        config = self.config
        time_ms = int(time_ms) % UINT32
        while self.queue and (time_ms - self.queue[0][0]) % UINT32 > config.average_ms:
            self.queue.popleft()
        if len(self.queue) == self.capacity:
            self.queue.popleft()
        self.queue.append((time_ms, np.asarray(scores, dtype=np.int64)))
        count = len(self.queue)
        duration = (time_ms - self.queue[0][0]) % UINT32
        if count < config.minimum_count or duration < config.average_ms // 4:
            return Step(time_ms, -1, 0, False, False)
        average = sum(s for _, s in self.queue) // count
        top, top_score = 0, 0
        for index in range(self.classes):
            if average[index] > top_score:
                top, top_score = index, int(average[index])
        background = config.background
        if self.previous < 0 or self.previous == background:
            recent = False
        else:
            recent = (time_ms - self.previous_time) % UINT32 <= config.suppression_ms
        new = top_score > self.threshold and (top != self.previous or not recent)
        if new:
            self.previous, self.previous_time = top, time_ms
        return Step(time_ms, top, top_score, new, new and top != background)


def decide(scores: np.ndarray, times_ms: np.ndarray, config, classes: int,
           capacity: int) -> tuple[list[Step], list[Decision]]:
    """Run the filter over a whole sequence: every step, and the reported decisions."""
    decision_filter = DecisionFilter(config, classes, capacity)
    steps = [decision_filter.process(s, t) for s, t in zip(scores, times_ms)]
    return steps, [Decision(s.time_ms, s.top, s.score) for s in steps if s.reported]
