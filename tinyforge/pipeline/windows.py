"""When a window of rows becomes a model input: every `stride` rows, or after a trigger.

The same rule runs in firmware_templates/pipeline/pipeline_window.h (`WindowSchedule`); the
rows are resampled IMU samples or audio feature frames.

- Sliding: the first window ends at row window-1, then one every `stride` rows.
- Triggered: a hit on row k (while armed) schedules a window ending at row
  max(k + window - 1 - pre_samples, window - 1), so the window holds `pre_samples` rows from
  before the hit. Rows up to that end are not tested for hits; the trigger re-arms on the row
  after it.
"""

from __future__ import annotations

import numpy as np


def window_ends(rows: int, window: int, stride: int) -> np.ndarray:
    """Row indices at which a sliding window is complete."""
    if rows < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(window - 1, rows, stride, dtype=np.int64)


def triggered_ends(hits: np.ndarray, window: int, pre_samples: int) -> np.ndarray:
    """Row indices at which a triggered window is complete (`hits`: one bool per row)."""
    ends = []
    due = -1
    candidates = np.flatnonzero(np.asarray(hits, dtype=bool))
    for k in candidates:
        if k <= due:
            continue  # inside a window being collected (or its last row)
        due = max(int(k) + window - 1 - pre_samples, window - 1)
        if due < len(hits):
            ends.append(due)
    return np.asarray(ends, dtype=np.int64)


def gather(rows: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """The windows [len(ends), window, *row_shape] that end at `ends` (oldest row first)."""
    if len(ends) == 0:
        return np.zeros((0, window, *rows.shape[1:]), dtype=rows.dtype)
    index = ends[:, None] - (window - 1) + np.arange(window)[None, :]
    return rows[index]
