"""The device pipeline's C++ (firmware_templates/pipeline/) against its Python reference.

Like tests/test_protocol.py: the C++ parts are compiled with the host g++ (with
AddressSanitizer and UBSan, and the -ffp-contract=off the firmware requires) into
tests/cpp/pipeline_harness.cpp, together with the settings tinyforge generates for a
pipeline; the harness runs them on samples this test chooses, and every value must equal
the Python reference's, bit for bit. They must also compile for the Cortex-M4F.
"""

from __future__ import annotations

import re
import shutil
import struct
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_support import GESTURE_MODEL, imu_motion, model_info, pipeline_from

from tinyforge import proc
from tinyforge.pipeline import arith, audio, decisions, imu, readers, windows
from tinyforge.pipeline.derive import DecisionSettings
from tinyforge.pipeline.settings import PARTS, REQUIRED_FLAGS, settings_files

ROOT = Path(__file__).resolve().parents[1]
PARTS_DIR = ROOT / "firmware_templates" / "pipeline"
HARNESS_CPP = ROOT / "tests" / "cpp" / "pipeline_harness.cpp"
CPP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 60
HOST_FLAGS = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *REQUIRED_FLAGS]
# The device build: the Nano's Cortex-M4F (hard and softfp ABIs), -Os as PlatformIO builds.
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-Os", "-fno-rtti",
             "-fno-exceptions", "-std=gnu++14", "-Wall", "-Wextra", "-Werror"]
# What the pipeline's objects may take from the C library and libgcc: no heap, no stdio.
ARM_ALLOWED_UNDEFINED = {"memcpy", "memset"}
SETTINGS_CHECK_CPP = ROOT / "tests" / "cpp" / "pipeline_device_check.cpp"
HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow,
                                             HealthCheck.function_scoped_fixture])


# --- pipelines the harness is built for ----------------------------------------------------

IMU_TOML = """
[pipeline]
input = "imu"
[imu]
rate_hz = 25.0
"""

IMU_FLOAT_TRIGGER_TOML = """
[pipeline]
input = "imu"
[imu]
rate_hz = 50.0
stride = 3
offset = [0.1, -0.2, 1.0, 0.0, 12.5, -3.0]
scale = [2.0, 0.5, 1.5, 250.0, 300.0, 2000.0]
[imu.trigger]
threshold_g = 1.6
pre_samples = 5
[decisions]
average_ms = 2000
threshold = 0.5
minimum_count = 2
suppression_ms = 700
background = -1
"""

MIC_QUANTIZE_TOML = """
[microphone]
stride = 7
feature_scale = 0.03
[decisions]
threshold = 0.6
background = 1
"""


def _pipelines(tmp_path: Path) -> dict:
    float_model = model_info((1, 40, 6), "float32", output_shape=(1, 5))
    speech_model = model_info((1, 49, 40), "int8", 26 / 256, -128)
    quantize_model = model_info((1, 1960), "int8", 0.07, -100, output_shape=(1, 3),
                                output_dtype="uint8", output_zero_point=0)
    float_audio = model_info((1, 10, 40, 1), "float32", output_shape=(1, 3))
    return {
        "imu-int8": pipeline_from(tmp_path, IMU_TOML, GESTURE_MODEL, name="imu.toml"),
        "imu-float-trigger": pipeline_from(tmp_path, IMU_FLOAT_TRIGGER_TOML, float_model,
                                           name="imu-float.toml"),
        "audio-micro-speech": pipeline_from(tmp_path, None, speech_model, kind="microphone"),
        "audio-quantize": pipeline_from(tmp_path, MIC_QUANTIZE_TOML, quantize_model,
                                        kind="microphone", name="mic.toml"),
        "audio-float": pipeline_from(tmp_path, "[microphone]\nstride = 3\n", float_audio,
                                     kind="microphone", name="mic-float.toml"),
    }


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict:
    return _pipelines(tmp_path_factory.mktemp("pipelines"))


class Harness:
    """Runs one compiled pipeline_harness on text files in a work folder."""

    def __init__(self, executable: Path, workdir: Path, pipeline):
        self.executable, self.workdir, self.pipeline = executable, workdir, pipeline
        self._runs = 0

    def run(self, mode: str, lines: list) -> list[str]:
        self._runs += 1
        source = self.workdir / f"{mode}-{self._runs}.in"
        output = self.workdir / f"{mode}-{self._runs}.out"
        source.write_text("\n".join(" ".join(map(str, line)) if isinstance(line, (list, tuple))
                                    else str(line) for line in lines) + "\n")
        proc.run([self.executable, mode, source, output], timeout=RUN_TIMEOUT_S,
                 what=f"pipeline harness ({mode})")
        return output.read_text().splitlines()

    def ints(self, mode: str, lines: list) -> np.ndarray:
        rows = [list(map(int, line.split())) for line in self.run(mode, lines)]
        return np.asarray(rows, dtype=np.int64)


@pytest.fixture(scope="module")
def build(tmp_path_factory, pipelines, host_builds):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the pipeline's C++ cannot be built here")
    root = tmp_path_factory.mktemp("pipeline_harness")

    def compiled(argv: list, output: Path, what: str) -> None:
        host_builds.build(argv, output, lambda: proc.run(argv, timeout=CPP_TIMEOUT_S,
                                                         what=what))

    objects = []
    for source in sorted(PARTS_DIR.glob("*.cpp")):
        obj = root / f"{source.stem}.o"
        compiled([compiler, *HOST_FLAGS, f"-I{PARTS_DIR}", "-c", source, "-o", obj], obj,
                 f"g++ {source.name}")
        objects.append(obj)
    built: dict[str, Harness] = {}

    def harness(name: str) -> Harness:
        if name not in built:
            work = root / name
            work.mkdir()
            for file_name, text in settings_files(pipelines[name]).items():
                (work / file_name).write_text(text)
            executable = work / "pipeline_harness"
            compiled([compiler, *HOST_FLAGS, f"-I{PARTS_DIR}", f"-I{work}", HARNESS_CPP,
                      work / "pipeline_settings.cpp", *objects, "-o", executable], executable,
                     "g++ build of the pipeline harness")
            built[name] = Harness(executable, work, pipelines[name])
        return built[name]
    return harness


@pytest.fixture(scope="module")
def harness(build) -> Harness:
    """The harness of the int8 IMU pipeline; its parameterised modes serve every part."""
    return build("imu-int8")


def f32_bits(value: float) -> str:
    return struct.pack(">f", value).hex()


def from_bits(text: str) -> np.float32:
    return np.frombuffer(bytes.fromhex(text)[::-1], dtype="<f4")[0]


# --- resampling --------------------------------------------------------------------------

RATES_MHZ = st.sampled_from([119_000, 99_840, 25_000, 50_000, 100_000, 16_000, 200_000,
                             33_333, 1_000, 118_970])


@HYPOTHESIS
@given(in_mhz=RATES_MHZ, out_mhz=RATES_MHZ, count=st.integers(0, 300), seed=st.integers(0, 99))
def test_resampler_matches_the_reference(harness, in_mhz, out_mhz, count, seed):
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32768, 32768, (count, 6)).astype(np.int16)
    samples[: count // 3] = rng.choice([-32768, 32767], (count // 3, 6))  # the extremes too
    got = harness.ints("resample", [[in_mhz, out_mhz], *samples.tolist()])
    expected = arith.resample(samples, arith.Ratio.of(in_mhz, out_mhz))
    assert got.reshape(-1, 6).tolist() == expected.tolist()
    assert len(expected) == arith.output_count(count, arith.Ratio.of(in_mhz, out_mhz))


def test_resampler_hand_computed_cases(harness):
    # 119 Hz -> 25 Hz: output 1 sits at input 4.76, output 2 at 9.52 (rounded half up).
    x = np.zeros((11, 6), dtype=np.int16)
    x[4], x[5], x[9], x[10] = 100, 200, -1, 0
    expected = [[0] * 6, [176] * 6, [0] * 6]   # 100 + 0.76 * 100; -1 + 0.52 -> -0.48 -> 0
    assert arith.resample(x, arith.Ratio.of(119_000, 25_000)).tolist() == expected
    assert harness.ints("resample", [[119_000, 25_000], *x.tolist()]).tolist() == expected
    # Ties round up: halfway between 1 and 2 is 2, between -2 and -1 is -1.
    y = np.array([[1] * 3 + [-2] * 3, [2] * 3 + [-1] * 3], dtype=np.int16)
    assert arith.resample(y, arith.Ratio.of(1, 2)).tolist() == [[1] * 3 + [-2] * 3,
                                                                 [2] * 3 + [-1] * 3,
                                                                 [2] * 3 + [-1] * 3]


# --- quantisation and the float path ----------------------------------------------------

@HYPOTHESIS
@given(offset=st.floats(-5, 5), scale=st.floats(0.001, 500).map(lambda v: v),
       negative=st.booleans(), in_scale=st.floats(1e-3, 1.0), zero_point=st.integers(-128, 127),
       gyro=st.booleans(), seed=st.integers(0, 99))
def test_quantizer_matches_the_reference(harness, offset, scale, negative, in_scale,
                                         zero_point, gyro, seed):
    per_count = imu.UNIT_PER_COUNT["g" if gyro else "a"] / Fraction(scale if not negative
                                                                     else -scale)
    try:
        q = arith.AffineQuantizer.from_real(per_count, -Fraction(offset) / Fraction(scale),
                                            in_scale, zero_point)
    except ValueError:
        return  # refused on the host (derive turns it into an error naming imu.scale)
    counts = np.concatenate([[-32768, -1, 0, 1, 32767],
                             np.random.default_rng(seed).integers(-32768, 32768, 300)])
    got = harness.ints("quantize", [[q.multiplier, q.offset, q.zero_point, q.lo, q.hi],
                                    *counts.tolist()]).reshape(-1)
    assert got.tolist() == q.apply(counts).tolist()


def test_quantizer_is_the_exact_rounding_of_the_real_map():
    # Away from ties, the integer map is round(x / scale) + zero_point of the exact x.
    per_count, at_zero = Fraction(1, 8192) / Fraction(0.5), -Fraction(1, 4)
    q = arith.AffineQuantizer.from_real(per_count, at_zero, 0.0625, 3)
    counts = np.arange(-32768, 32768, 7)
    exact = [(Fraction(int(c)) * per_count + at_zero) / Fraction(0.0625) for c in counts]
    expected = [min(127, max(-128, int(np.floor(float(v) + 0.5)) + 3)) for v in exact]
    assert q.apply(counts).tolist() == expected


@HYPOTHESIS
@given(mul=st.floats(-10, 10, width=32), add=st.floats(-10, 10, width=32),
       seed=st.integers(0, 99))
def test_float_affine_is_bit_identical(harness, mul, add, seed):
    counts = np.concatenate([[-32768, -1, 0, 1, 32767],
                             np.random.default_rng(seed).integers(-32768, 32768, 300)])
    affine = arith.FloatAffine(mul, add)
    got = [from_bits(line) for line in harness.run("float", [[f32_bits(mul), f32_bits(add)],
                                                             *counts.tolist()])]
    expected = affine.apply(counts)
    assert np.array_equal(np.asarray(got, np.float32).view(np.uint32), expected.view(np.uint32))


def test_micro_speech_int8_for_every_frontend_value(harness):
    values = np.arange(65536)
    got = harness.ints("microspeech", values.tolist()).reshape(-1)
    assert got.tolist() == arith.micro_speech_int8(values).tolist()
    # By hand: 0 -> -128; 330 -> (84480 + 333) // 666 - 128 = -1; 333 -> 0; 666 -> 128,
    # clamped to 127.
    assert arith.micro_speech_int8(np.array([0, 330, 333, 666, 670])).tolist() == \
        [-128, -1, 0, 127, 127]


def test_stream_time(harness):
    rng = np.random.default_rng(5)
    cases = [(0, 25_000), (1, 119_000), (2**32 - 1, 1_000), (4_000_000_000, 99_840)] + \
        [(int(i), int(r)) for i, r in zip(rng.integers(0, 2**32, 200),
                                          rng.choice([1_000, 25_000, 99_840, 119_000], 200))]
    got = harness.ints("time", cases).reshape(-1)
    assert got.tolist() == [int(arith.stream_time_ms(i, r)) for i, r in cases]


def test_axis_maps(harness):
    rng = np.random.default_rng(3)
    samples = rng.integers(-32768, 32768, (64, 6))
    samples[0] = -32768
    for index, sign in (((0, 1, 2), (1, 1, 1)), ((1, 0, 2), (-1, -1, 1)), ((2, 0, 1), (1, -1, -1))):
        got = harness.ints("mapaxes", [[*index, *sign], *samples.tolist()])
        expected = np.empty_like(samples)
        for base in (0, 3):
            for i in range(3):
                expected[:, base + i] = np.clip(sign[i] * samples[:, base + index[i]],
                                                -32768, 32767)
        assert got.tolist() == expected.tolist()


def test_library_readings_become_their_counts(harness):
    # Both IMU libraries return count / counts_per_unit as float: the counts come back.
    raw = np.arange(-32768, 32768, 13)
    lsm_gyro = (raw * 2000.0 / 32768.0).astype(np.float32)         # Arduino_LSM9DS1
    bmi_gyro = raw.astype(np.float32) / np.float32(16.384)           # Arduino_BMI270_BMM150
    accel = (raw * 4.0 / 32768.0).astype(np.float32)
    for readings, per_unit in ((lsm_gyro, 16.384), (bmi_gyro, 16.384), (accel, 8192.0)):
        got = harness.ints("counts", [f32_bits(per_unit), *map(f32_bits, readings)]).reshape(-1)
        assert got.tolist() == raw.tolist()


# --- windows and the trigger ------------------------------------------------------------

@HYPOTHESIS
@given(window=st.integers(1, 40), stride=st.integers(1, 12), triggered=st.booleans(),
       pre=st.integers(0, 39), rows=st.integers(0, 200), density=st.floats(0, 1),
       seed=st.integers(0, 99))
def test_window_schedule_matches_the_reference(harness, window, stride, triggered, pre, rows,
                                               density, seed):
    pre = min(pre, window - 1)
    hits = np.random.default_rng(seed).random(rows) < density
    got = harness.ints("schedule", [[window, stride, int(triggered), pre],
                                    *hits.astype(int).tolist()]).reshape(-1)
    expected = windows.triggered_ends(hits, window, pre) if triggered else \
        windows.window_ends(rows, window, stride)
    assert got.tolist() == expected.tolist()


def test_triggered_windows_by_hand():
    hits = np.zeros(30, dtype=bool)
    hits[[2, 5, 12, 13, 29]] = True
    # window 6, 2 rows before the hit: hit 2 -> ends at max(2+3, 5) = 5; hit 5 is inside;
    # hit 12 -> 15; 13 inside; hit 29 -> 32, past the end.
    assert windows.triggered_ends(hits, 6, 2).tolist() == [5, 15]
    assert windows.window_ends(10, 4, 3).tolist() == [3, 6, 9]


# --- the ring buffer ------------------------------------------------------------------------

@HYPOTHESIS
@given(capacity=st.sampled_from([1, 2, 8, 64, 256, 3, 100]),
       operations=st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 300)),
                           max_size=60), seed=st.integers(0, 99))
def test_ring_buffer_is_a_bounded_fifo(harness, capacity, operations, seed):
    rng = np.random.default_rng(seed)
    lines, expected = [capacity], []
    valid = capacity & (capacity - 1) == 0
    expected.append(f"valid {int(valid)}")
    fifo: deque[int] = deque()
    dropped = 0
    for op, n in operations:
        if op == 1:
            data = rng.integers(-32768, 32768, n).tolist()
            lines.append([1, n, *data])
            stored = min(n, capacity - len(fifo))
            fifo.extend(data[:stored])
            dropped += n - stored
            expected.append(f"w {stored}")
        elif op == 2:
            lines.append([2, n])
            got = [fifo.popleft() for _ in range(min(n, len(fifo)))]
            expected.append(" ".join(map(str, ["r", len(got), *got])))
        else:
            lines.append([3])
            expected.append(f"a {len(fifo)} {dropped}")
    out = harness.run("ring", lines)
    assert out == (expected if valid else expected[:1])


# --- decisions --------------------------------------------------------------------------

@st.composite
def decision_cases(draw):
    classes = draw(st.integers(2, 12))
    config = DecisionSettings(
        average_ms=draw(st.integers(1, 3000)),
        threshold=draw(st.integers(1, 254)) / 256,
        minimum_count=draw(st.integers(1, 6)),
        suppression_ms=draw(st.integers(0, 3000)),
        background=draw(st.integers(-1, classes - 1)))
    capacity = draw(st.integers(config.minimum_count, 40))
    count = draw(st.integers(0, 80))
    start = draw(st.sampled_from([0, 2**32 - 2500]))  # also across the uint32 wrap
    steps = draw(st.lists(st.integers(1, 400), min_size=count, max_size=count))
    times = (start + np.cumsum(steps)) % 2**32
    seed = draw(st.integers(0, 999))
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 256, (count, classes))
    # Bursts of one confident class, so decisions actually happen.
    for i in range(0, count, 7):
        winner = rng.integers(0, classes)
        scores[i:i + 4] //= 8
        scores[i:i + 4, winner] = rng.integers(200, 256, len(scores[i:i + 4]))
    return config, classes, capacity, times.astype(np.uint32), scores.astype(np.uint8)


@HYPOTHESIS
@given(case=decision_cases())
def test_decision_filter_matches_the_reference(harness, case):
    config, classes, capacity, times, scores = case
    lines = [[config.average_ms, config.threshold_steps, config.minimum_count,
              config.suppression_ms, config.background, classes, capacity]]
    lines += [[int(t), *s.tolist()] for t, s in zip(times, scores)]
    got = harness.ints("decisions", lines)
    steps, _ = decisions.decide(scores, times, config, classes, capacity)
    assert got.reshape(-1, 4).tolist() == [[s.top, s.score, int(s.new), int(s.reported)]
                                           for s in steps]


def test_decisions_by_hand():
    # micro_speech's defaults: average over 1 s, above 200, 3 results, 1.5 s suppression.
    config = DecisionSettings()
    times = np.arange(0, 3700, 100)
    scores = np.zeros((len(times), 4), dtype=np.uint8)
    scores[:, 0] = 10
    scores[times < 2500, 2] = 245          # "yes" for 2.5 s, then "no"
    scores[times >= 2500, 1] = 245
    steps, found = decisions.decide(scores, times, config, 4, 11)
    # 200 ms: 3 results but only 200 ms of them (< 250): nothing decided yet.
    assert [s.top for s in steps[:4]] == [-1, -1, -1, 2]
    # 300: new. Repeats are suppressed while within 1500 ms: 1800 is, 1900 is not.
    # "no" wins once 10 of the 11 results in the window are "no" (2450 // 11 = 222 > 200).
    assert [(d.time_ms, d.label, d.score) for d in found] == \
        [(300, 2, 245), (1900, 2, 245), (3400, 1, 222)]


def test_scores_from_outputs(harness):
    int8 = np.array([-128, -1, 0, 127], dtype=np.int8)
    assert harness.ints("scores", [0, 4, *int8.tolist()]).reshape(-1).tolist() == \
        decisions.scores_u8(int8[None], "int8")[0].tolist() == [0, 127, 128, 255]
    floats = np.array([0.0, 0.5, 0.999, 1.0, 2.0, -0.1, np.nan, np.inf, -np.inf,
                       1 / 256, 0.00390624], dtype=np.float32)
    got = harness.ints("scores", [2, len(floats), *map(f32_bits, floats)]).reshape(-1)
    assert got.tolist() == decisions.scores_u8(floats[None], "float32")[0].tolist() == \
        [0, 128, 255, 255, 255, 0, 0, 255, 0, 1, 0]


# --- the composed pipelines with generated settings ----------------------------------------

def _imu_lines(recording) -> list:
    return [recording.rate_mhz, *recording.counts.tolist()]


def _decode_inputs(lines: list[str], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    times, values = [], []
    for line in lines:
        fields = line.split()
        times.append(int(fields[0]))
        if dtype == "int8":
            values.append([int(v) for v in fields[1:]])
        else:
            values.append([from_bits(v) for v in fields[1:]])
    return np.asarray(times, dtype=np.uint32), np.asarray(values)


@pytest.mark.parametrize("name", ["imu-int8", "imu-float-trigger"])
@pytest.mark.parametrize("source_hz", [119.0, 99.84, 25.0])
def test_imu_pipeline_matches_the_reference(build, name, source_hz):
    h = build(name)
    values = imu_motion(12, source_hz, seed=int(source_hz))
    recording = readers.imu_from_arrays({"x": values, "rate_hz": np.asarray(source_hz)},
                                        Path("<test>"), h.pipeline)
    reference = imu.run(recording.counts, recording.rate_mhz, h.pipeline)
    times, got = _decode_inputs(h.run("imu", _imu_lines(recording)), h.pipeline.input.dtype)
    assert len(reference.ends) > 3
    assert times.tolist() == reference.times_ms.tolist()
    flat = reference.inputs.reshape(len(reference.inputs), -1)
    if h.pipeline.input.dtype == "int8":
        assert got.tolist() == flat.tolist()
    else:
        assert np.array_equal(got.astype(np.float32).view(np.uint32), flat.view(np.uint32))


@pytest.mark.parametrize("name", ["audio-micro-speech", "audio-quantize", "audio-float"])
def test_audio_pipeline_matches_the_reference(build, name):
    h = build(name)
    channels = h.pipeline.microphone.frontend.channels
    rng = np.random.default_rng(7)
    # Frontend values span 0..~700 in practice; the extremes check the clamps.
    frames = rng.integers(0, 800, (150, channels)).astype(np.uint16)
    frames[::17] = rng.choice([0, 65535], (len(frames[::17]), channels))
    reference = audio.from_frames(frames, h.pipeline)
    times, got = _decode_inputs(h.run("audio", frames.tolist()), h.pipeline.input.dtype)
    assert times.tolist() == reference.times_ms.tolist()
    flat = reference.inputs.reshape(len(reference.inputs), -1)
    if h.pipeline.input.dtype == "int8":
        assert got.tolist() == flat.tolist()
    else:
        assert np.array_equal(got.astype(np.float32).view(np.uint32), flat.view(np.uint32))


@pytest.mark.parametrize("name", ["imu-float-trigger", "audio-quantize"])
def test_generated_decision_settings_decide_like_the_reference(build, name):
    h = build(name)
    p = h.pipeline
    rng = np.random.default_rng(11)
    count = 120
    times = (np.cumsum(rng.integers(p.inference_period_ms, 3 * p.inference_period_ms,
                                    count))).astype(np.uint32)
    scores = rng.integers(0, 90, (count, p.classes)).astype(np.uint8)
    for i in range(0, count, 15):
        scores[i:i + 6, rng.integers(0, p.classes)] = 240
    got = h.ints("settings-decisions", [[int(t), *s.tolist()] for t, s in zip(times, scores)])
    steps, found = decisions.decide(scores, times, p.decisions, p.classes, p.result_capacity)
    assert found, "the case must produce decisions"
    assert got.reshape(-1, 4).tolist() == [[s.top, s.score, int(s.new), int(s.reported)]
                                           for s in steps]


# --- the device build ---------------------------------------------------------------------

@pytest.mark.slow  # every part compiled with arm-none-eabi-g++: ~6 s per ABI
@pytest.mark.parametrize("float_abi", ["hard", "softfp"])
def test_pipeline_compiles_for_cortex_m4_without_heap_or_stdio(tmp_path, pipelines, float_abi,
                                                               host_builds):
    compiler, nm = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-nm")
    if compiler is None or nm is None:
        pytest.skip("arm-none-eabi-g++ is not installed (`make setup` installs it as root)")
    flags = [*ARM_FLAGS, f"-mfloat-abi={float_abi}", *REQUIRED_FLAGS]
    undefined: set[str] = set()
    for name, pipeline in sorted(pipelines.items()):
        work = tmp_path / name
        work.mkdir()
        for file_name, text in settings_files(pipeline).items():
            (work / file_name).write_text(text)
        sources = [SETTINGS_CHECK_CPP, work / "pipeline_settings.cpp",
                   *sorted(PARTS_DIR.glob("*.cpp"))]
        for source in sources:
            obj = work / f"{source.stem}.o"
            argv = [compiler, *flags, f"-I{PARTS_DIR}", f"-I{work}", "-c", source, "-o", obj]
            host_builds.build(argv, obj, lambda argv=argv: proc.run(
                argv, timeout=CPP_TIMEOUT_S, what="arm-none-eabi-g++"))
            symbols = proc.run([nm, "-u", obj], timeout=RUN_TIMEOUT_S).output
            undefined |= {line.split()[-1] for line in symbols if line.strip()}
    ours = {s for s in undefined if s.startswith(("_ZN6tfpipe", "k"))}
    unexpected = {s for s in undefined - ours
                  if s not in ARM_ALLOWED_UNDEFINED and not re.match(r"__aeabi_[a-z0-9]+$", s)}
    assert unexpected == set()
    assert "memcpy" in undefined   # the check sees the objects' real imports


def test_float_path_needs_fp_contract_off(tmp_path):
    """Without -ffp-contract=off GCC fuses the float path's multiply and add (one rounding):
    the reason the firmware must be built with it."""
    compiler, objdump = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-objdump")
    if compiler is None or objdump is None:
        pytest.skip("arm-none-eabi-g++ is not installed (`make setup` installs it as root)")
    listings = {}
    for flags in ((), REQUIRED_FLAGS):
        obj = tmp_path / f"math{len(flags)}.o"
        proc.run([compiler, *ARM_FLAGS, "-mfloat-abi=hard", *flags, f"-I{PARTS_DIR}", "-c",
                  PARTS_DIR / "pipeline_math.cpp", "-o", obj], timeout=CPP_TIMEOUT_S,
                 what="arm-none-eabi-g++")
        listings[flags] = proc.run([objdump, "-d", obj], timeout=RUN_TIMEOUT_S).text
    assert "vfma.f32" in listings[()]
    assert "vfma" not in listings[REQUIRED_FLAGS]


def test_parts_list_is_the_folder():
    assert sorted(p.name for p in PARTS_DIR.iterdir()) == sorted(PARTS)
