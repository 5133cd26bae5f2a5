"""The RAM a firmware's sensor pipeline takes, by what its sources declare (docs/pipeline.md).

Counted the way `model.fit.sketch_ram` counts the line buffer: from the pipeline's settings
and the sizes the device sources declare (`firmware_templates/pipeline/`, the pipeline state in
`project/src/main.cpp.j2`, the board's sensor source in `runtime/*/`), for 32-bit pointers.
The audio frontend's tables are not statics: TFLM's `FrontendPopulateState` mallocs them once
at start; on the device that heap is RAM all the same, so it is counted too, allocation by
allocation as the frontend's sources in the TFLM library make them.

Checked against the symbols of real qemu-m4 builds and the heap the firmware really took by
tests/test_qemu_pipeline_ram.py (TFLM tier), and the frontend's allocations against the
library's own code compiled for the host by tests/test_pipeline_ram.py.
"""

from __future__ import annotations



from ..model.fit import HOST_LINE_BYTES
from . import audio, filterbank
from .derive import FrontendSettings, Pipeline

# sizeof() of the device objects for the Cortex-M4 (arm-none-eabi-g++, 32-bit pointers), read
# from the symbols of qemu-m4 builds (the test above checks them on every TFLM-tier run).
IMU_PIPELINE_BYTES = 352       # tfpipe::ImuPipeline<T>: its ImuSettings copy (272 B) and state
AUDIO_PIPELINE_BYTES = 96      # tfpipe::AudioPipeline<T>
DECISION_FILTER_BYTES = 40     # tfpipe::DecisionFilter
RING_BUFFER_BYTES = 20         # tfpipe::RingBuffer<int16_t>: storage pointer, capacity, 3 indices
FRONTEND_STATE_BYTES = 136     # TFLM's FrontendState (its tables are on the heap)
# main.cpp.j2's pipeline variables besides the objects above: sensor_failure, pipeline_seq,
# result_time_ms (4 B each), pipeline_running and send_features (1 B each); the IMU adds
# imu_kind (1 B), the microphone discard_left and frame_index (4 B each).
PIPELINE_FLAGS_BYTES = 14
IMU_FLAGS_BYTES = 1
AUDIO_FLAGS_BYTES = 8
# main.cpp.j2's kAudioRingSamples: 256 ms of int16 audio between the PDM interrupt (or the
# replay) and the loop.
AUDIO_RING_SAMPLES = 4096
# A replaying firmware (qemu-m4): SAMPLES values decoded from one host line (int16, 4 hex
# digits each), the credit's state (replay_read, pipeline_us, inference_us, credit_seq,
# replay_active, credit_due: 22 B) and, in runtime/qemu-m4/qemu_m4_sensors.cpp, the IMU's ring
# object, its rate and the audio ring's pointer (28 B) and, for an IMU pipeline only, the IMU
# replay storage (kImuRingValues int16 values).
REPLAY_STATE_BYTES = 22
REPLAY_SENSOR_BYTES = 28
REPLAY_IMU_VALUES = 1024
# newlib-nano's malloc (the qemu-m4 platform links --specs=nano.specs): each chunk is the
# request rounded up to 4 bytes plus its 4-byte size and 4 bytes of padding that keep the
# returned pointer 8-aligned; a free chunk is reused first fit, split when what is left can
# still be a chunk (16 B).
MALLOC_ALIGN = 4
MALLOC_CHUNK_OVERHEAD = 8
MALLOC_MIN_CHUNK = 16

# TFLM's micro frontend (Chirale_TensorFlowLite 2.0.0, src/tensorflow/lite/experimental/
# microfrontend/lib/ and third_party/kissfft/): constants of the code that sizes its tables.
_PCAN_GAIN_LUT_VALUES = 4 * 32 - 3      # kWideDynamicFunctionLUTSize, int16
_KISS_FFT_STATE_BYTES = 4 + 4 + 4 * 64 + 4  # kiss_fft_state: nfft, inverse, factors, twiddles[1]
_KISS_CPX_BYTES = 4                     # kiss_fft_cpx of int16 real and imaginary parts


def static_ram(pipeline: Pipeline, *, replays: bool, pointer_bytes: int = 4) -> dict[str, int]:
    """{part: bytes} of RAM the firmware's pipeline takes (statics and the frontend's heap);
    empty for the host pipeline. `replays`: the board's samples come from the host
    (`project.firmware.replays`: an emulated board); `pointer_bytes`: the board profile's."""
    if pipeline.kind == "host":
        return {}
    value_bytes = 1 if pipeline.input.dtype == "int8" else 4
    if pipeline.imu is not None:
        window_values = pipeline.imu.window * len(pipeline.imu.axes)
        state = IMU_PIPELINE_BYTES + IMU_FLAGS_BYTES
    else:
        window_values = pipeline.microphone.window * pipeline.microphone.frontend.channels
        state = AUDIO_PIPELINE_BYTES + AUDIO_FLAGS_BYTES
    parts = {"window": window_values * value_bytes,
             "pipeline_state": state + PIPELINE_FLAGS_BYTES}
    if pipeline.microphone is not None:
        parts["audio_ring"] = AUDIO_RING_SAMPLES * 2 + RING_BUFFER_BYTES
        parts["frontend"] = FRONTEND_STATE_BYTES
        parts["frontend_heap"] = frontend_heap_bytes(pipeline.microphone.frontend,
                                                     pointer_bytes=pointer_bytes)
    if pipeline.decisions is not None:
        capacity, classes = pipeline.result_capacity, pipeline.classes or 0
        parts["decisions"] = DECISION_FILTER_BYTES + capacity * classes + capacity * 4
    if replays:
        parts["replay"] = (HOST_LINE_BYTES // 4 * 2 + REPLAY_STATE_BYTES + REPLAY_SENSOR_BYTES
                           + (REPLAY_IMU_VALUES * 2 if pipeline.kind == "imu" else 0))
    return parts


def frontend_heap_bytes(frontend: FrontendSettings, *, pointer_bytes: int = 4) -> int:
    """The heap `FrontendPopulateState` takes for these settings on newlib-nano: every chunk
    it mallocs, in order. The filterbank's three temporaries are freed once its weights are
    allocated above them: the hole they leave stays part of the heap, and the tables allocated
    after it (noise reduction, PCAN) go into it when they fit."""
    chunks = [_chunk(size) for size in frontend_allocations(frontend,
                                                            pointer_bytes=pointer_bytes)]
    heap = sum(chunks[:_AFTER_FILTERBANK])
    hole = sum(chunks[_FILTERBANK_TEMPORARIES])
    for chunk in chunks[_AFTER_FILTERBANK:]:
        if chunk <= hole:
            hole = hole - chunk if hole - chunk >= MALLOC_MIN_CHUNK else 0
        else:
            heap += chunk
    return heap


def frontend_allocations(frontend: FrontendSettings, *, pointer_bytes: int = 4) -> list[int]:
    """The bytes of each malloc/calloc `FrontendPopulateState` makes, in its order
    (`pointer_bytes`: kissfft's configuration holds three pointers; 8 on a 64-bit host). The
    filterbank's temporaries are entries 10 to 12, freed after its weights (13 and 14)."""
    window = frontend.window_ms * audio.SAMPLE_RATE // 1000
    fft_size = filterbank.fft_size(frontend.window_ms)
    half = fft_size // 2
    kiss = (3 * pointer_bytes + _KISS_FFT_STATE_BYTES + _KISS_CPX_BYTES * (half - 1)
            + _KISS_CPX_BYTES * (half * 3 // 2))
    channels = frontend.channels + 1
    weights = filterbank.layout(frontend).weights
    sizes = [window * 2, window * 2, window * 2,             # window: coefficients, input, output
             fft_size * 2, (fft_size // 2 + 1) * 4 * 2, kiss,  # fft: input, output, kissfft
             channels * 2, channels * 2, channels * 2, channels * 8,  # filterbank tables, work
             channels * 4, channels * 2, channels * 2,        # its temporaries (freed)
             weights * 2, weights * 2,                        # weights, unweights
             frontend.channels * 4]                           # noise reduction estimate
    if frontend.pcan:
        sizes.append(_PCAN_GAIN_LUT_VALUES * 2)
    return sizes


# Where the filterbank's temporaries are in frontend_allocations(), and what comes after its
# weights.
_FILTERBANK_TEMPORARIES = slice(10, 13)
_AFTER_FILTERBANK = 15


def _chunk(size: int) -> int:
    return -(-size // MALLOC_ALIGN) * MALLOC_ALIGN + MALLOC_CHUNK_OVERHEAD
