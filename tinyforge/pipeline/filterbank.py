"""TFLM's micro frontend filterbank as it is set up at start: `FilterbankPopulateState`
(Chirale_TensorFlowLite 2.0.0, src/tensorflow/lite/experimental/microfrontend/lib/
filterbank_util.c), its channel loop in its own float32 arithmetic.

Two facts come out of it before anything runs: how many int16 weights the firmware's heap
holds (pipeline/ram.py), and whether the frontend accepts the settings at all. It refuses to
start when the last channel's band reaches past the spectrum, which `upper_hz` at or above half
the sample rate does: the firmware would then only say "the audio frontend could not allocate
its state" at boot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import audio

INDEX_ALIGNMENT = 2         # kFilterbankIndexAlignment / sizeof(int16_t)
CHANNEL_BLOCK = 4           # kFilterbankChannelBlockSize


@dataclass(frozen=True)
class FilterbankLayout:
    weights: int            # int16 weights (and as many unweights) it allocates
    end_index: int          # one past the last spectrum bin a channel reads
    spectrum_size: int      # FFT bins: fft_size / 2 + 1

    @property
    def accepted(self) -> bool:
        """What FilterbankPopulateState returns: 0 ("Filterbank end_index is above spectrum
        size") when a channel would read past the spectrum."""
        return self.end_index < self.spectrum_size


def fft_size(window_ms: int) -> int:
    """The frontend's FFT: the next power of two of the window's samples."""
    window = window_ms * audio.SAMPLE_RATE // 1000
    size = 1
    while size < window:
        size <<= 1
    return size


def layout(frontend) -> FilterbankLayout:
    """The filterbank for `frontend` (a derive.FrontendSettings)."""
    f32 = np.float32
    spectrum_size = fft_size(frontend.window_ms) // 2 + 1

    def mel(freq) -> np.float32:  # FreqToMel: computed in double, returned as float
        return f32(1127.0 * math.log1p(float(freq) / 700.0))

    channels = frontend.channels
    lower, upper = f32(frontend.lower_hz), f32(frontend.upper_hz)
    mel_low = mel(lower)
    # CalculateCenterFrequencies is given channels + 1 (the last is the upper edge).
    spacing = f32(f32(mel(upper) - mel_low) / f32(channels + 1))
    centers = [f32(mel_low + f32(spacing * f32(i + 1))) for i in range(channels + 1)]
    hz_per_bin = f32(0.5 * audio.SAMPLE_RATE / (float(f32(spectrum_size)) - 1))
    start = int(1.5 + float(f32(lower / hz_per_bin)))
    weights, needs_zeros, end_index = 0, False, 0
    for center in centers:
        index = start
        while mel(f32(f32(index) * hz_per_bin)) <= center:
            index += 1
        width = index - start
        if width == 0:
            if not needs_zeros:
                needs_zeros = True
                weights += CHANNEL_BLOCK
        else:
            aligned = start // INDEX_ALIGNMENT * INDEX_ALIGNMENT
            weights += ((start - aligned + width - 1) // CHANNEL_BLOCK + 1) * CHANNEL_BLOCK
        end_index = max(end_index, index)
        start = index
    return FilterbankLayout(weights=weights, end_index=end_index, spectrum_size=spectrum_size)
