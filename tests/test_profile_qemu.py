"""`tinyforge profile` on qemu-m4 with the board's TFLM library: the firmware's profiler, the
PROF message and the exact instruction counts of `-icount shift=7`.

Needs a TFLM library tree ($TINYFORGE_TFLM) and the arm-none-eabi toolchain with QEMU; the
first build compiles the library (minutes; its objects are shared through the build cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qemu_support import require_emulator, seeded_core

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tinyforge" / "example" / "gesture_int8.tflite"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A qemu-m4 profiling build of the bundled example, in its own working folder."""
    return tmp_path_factory.mktemp("profile-qemu")


def _env(cli_env, tmp_path_factory, work: Path) -> dict:
    return dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)),
                TINYFORGE_CYCLE_RATIOS=str(work / "ratios.json"))


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_two_runs_give_identical_per_op_instructions(tinyforge, tflm_tree, profiled,
                                                     tmp_path_factory, cli_env):
    require_emulator()
    env = _env(cli_env, tmp_path_factory, profiled)
    first = tinyforge("profile", "--model", EXAMPLE, "--tflm", tflm_tree, "--json",
                      env=env, cwd=profiled, timeout=3600, check_rc=0)
    # The second run uses the last build (recorded in ./build/), without rebuilding.
    second = tinyforge("profile", "--json", env=env, cwd=profiled, timeout=600, check_rc=0)
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    counts = [row["instructions"] for row in one["layers"]]
    assert counts == [row["instructions"] for row in two["layers"]]
    assert one["profiler"] == two["profiler"]
    assert one["unit"] == "instructions" and len(counts) == 9 and all(c > 0 for c in counts)
    # Exact counts, not multiples of the 40 instructions one timer tick is at -icount shift=0.
    assert any(c % 40 for c in counts)
    assert [row["op"] for row in one["layers"]][1] == "CONV_2D"


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_per_op_counts_add_up_to_the_total_within_the_measured_overhead(
        tinyforge, tflm_tree, profiled, tmp_path_factory, cli_env):
    require_emulator()
    env = _env(cli_env, tmp_path_factory, profiled)
    args = ("--model", EXAMPLE, "--tflm", tflm_tree) if not (profiled / "build").is_dir() else ()
    run = tinyforge("profile", *args, "--json", env=env, cwd=profiled, timeout=3600, check_rc=0)
    report = json.loads(run.stdout)
    profiler = report["profiler"]
    assert profiler["overhead_per_op"] > 0
    assert profiler["ops_sum"] == sum(row["instructions"] for row in report["layers"])
    assert 0 <= profiler["unaccounted"] <= profiler["overhead_total"], profiler
    assert profiler["within_overhead"]
    latency = report["latency"]
    assert latency["instructions"] == profiler["ops_sum"]
    assert latency["cycles_per_instruction"] == [1.2, 2.0]
    assert report["energy"] and report["energy"][0]["decisions_per_s"] == 1.0


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_limits_fail_with_exit_code_4_and_report_feeds_on_the_profile(
        tinyforge, tflm_tree, profiled, tmp_path_factory, cli_env):
    require_emulator()
    env = _env(cli_env, tmp_path_factory, profiled)
    args = ("--model", EXAMPLE, "--tflm", tflm_tree) if not (profiled / "build").is_dir() else ()
    run = tinyforge("profile", *args, "--max-instructions", "1000", "--json", env=env,
                    cwd=profiled, timeout=3600)
    assert run.returncode == 4, run.stderr
    out = json.loads(run.stdout)
    assert out["error"]["type"] == "ProfileLimitExceeded" and out["limits"][0]["exceeded"]
    assert "instructions" in run.stderr
    arena = out["arena"]["arena_bytes"]
    tinyforge("profile", "--max-arena", str(arena), env=env, cwd=profiled, check_rc=0)
    tinyforge("profile", "--max-arena", str(arena - 1), env=env, cwd=profiled, check_rc=4)
    report = tinyforge("report", "--json", env=env, cwd=profiled, timeout=600, check_rc=0)
    assert json.loads(report.stdout)["sections"]["layers"] == "ok"
    html = (profiled / "build" / "qemu-m4-profile" / "report" / "report.html").read_text()
    assert "instructions" in html
