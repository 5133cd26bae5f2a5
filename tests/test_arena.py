"""Arena sizing: the search, the host measurement, the margins."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyforge.model import arena

SINE_FLOAT = Path(__import__("tflite_micro").__file__).parent / "python" / "tflite_micro" / \
    "sine_float.tflite"


@pytest.mark.parametrize("minimum", [16, 512, 1936, 2000, 2784, 3888, 9616, 50000])
@pytest.mark.parametrize("reported", [1504, 1936, 2244, 9616, 30000])
def test_search_finds_the_threshold_from_any_starting_report(minimum, reported):
    asked = []

    def fits(size):
        asked.append(size)
        return size >= minimum

    assert arena.smallest_fitting(fits, start=reported, ceiling=1 << 20) == minimum
    assert all(size % 16 == 0 for size in asked)
    assert len(asked) <= 20


def test_search_gives_up_at_the_ceiling():
    assert arena.smallest_fitting(lambda size: False, start=1000, ceiling=4096) is None


def test_an_exact_report_costs_two_probes():
    asked = []
    assert arena.smallest_fitting(lambda s: asked.append(s) or s >= 9616, start=9616,
                                  ceiling=1 << 20) == 9616
    assert asked == [9616, 9600]


def test_host_measurement_of_the_sine_model_is_the_known_minimum():
    # ../shared/notes: the 64-bit host runtime reports 1,536 B for this model but needs 1,936.
    measurement = arena.measure_on_host(SINE_FLOAT.read_bytes(), "sine_float.tflite")
    assert (measurement.reported_bytes, measurement.minimum_bytes) == (1536, 1936)
    plan = arena.plan_from_host(measurement)
    assert plan.arena_bytes == arena.align(1936 + plan.margin_bytes)
    assert plan.margin_bytes == arena.align(int(1936 * 0.10) + 1024)
    assert "host" in plan.note


def test_device_plan_uses_the_small_margin():
    device = arena.ArenaMeasurement(2784, 2244, 7, 1.0, "device")
    plan = arena.plan_from_device(device, None)
    assert plan.margin_bytes == arena.align(int(2784 * 0.02) + 64) == 128
    assert plan.arena_bytes == 2912 and plan.to_json()["source"] == "device"


def test_a_crashing_probe_prints_nothing_through_an_inherited_fault_handler():
    """pytest (or PYTHONFAULTHANDLER) enables a fault handler on its own copy of stderr; a
    probe child that segfaults, as too-small arenas do, must not dump through it."""
    import subprocess
    import sys
    code = ("import ctypes, faulthandler, os\n"
            "faulthandler.enable(file=os.fdopen(os.dup(2), 'w'))\n"
            "from tinyforge.model import isolated\n"
            "print(isolated.call_isolated(ctypes.string_at, 0).signal)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "11", done.stderr
    assert "Fatal Python error" not in done.stderr
