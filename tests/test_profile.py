"""`tinyforge profile`, fast tier: the PROF message, the per-layer figures, the saved result,
the limits and their exit code. The firmware itself runs in tests/test_profile_qemu.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyforge import cli
from tinyforge.board import profiles
from tinyforge.device import protocol
from tinyforge.errors import (EXIT_LIMIT_EXCEEDED, ProfileLimitExceeded,
                              ProfileUnavailableError)
from tinyforge.flows import profile
from tinyforge.model import macs
from tinyforge.project import last_build

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = REPO / "tinyforge" / "example" / "gesture_int8.tflite"
# A PROF as the qemu-m4 firmware sends it for the bundled example (9 operators).
COSTS = [120, 21_480, 1_960, 41_920, 1_520, 120, 6_840, 920, 3_040]
OVERHEAD = 75


def prof_line(**overrides) -> bytes:
    fields = {"seq": 0, "src": "host", "unit": "instructions", "ops": len(COSTS),
              "cost": ",".join(map(str, COSTS)), "total": sum(COSTS) + 9 * 40,
              "overhead": OVERHEAD, "dropped": 0}
    fields.update(overrides)
    # The host encoder writes the same grammar as the device's (docs/protocol.md section 1).
    return protocol.encode("PROF", eol=protocol.DEVICE_EOL, **fields)


def decode(line: bytes):
    events = protocol.Decoder().feed(line)
    assert len(events) == 1
    return events[0]


def test_prof_is_decoded_and_parsed():
    message = decode(prof_line())
    assert isinstance(message, protocol.OtherMessage) and message.type == "PROF"
    prof = protocol.parse_profile(message)
    assert prof.costs == COSTS and prof.unit == "instructions" and prof.overhead == OVERHEAD
    assert prof.total == sum(COSTS) + 360 and prof.dropped == 0 and prof.seq == 0


@pytest.mark.parametrize("overrides, problem", [
    ({"ops": 8}, "ops=8 but cost has 9 items"),
    ({"cost": "1,-2,3", "ops": 3}, "negative"),
    ({"unit": "ticks"}, "unit"),
    ({"total": "x"}, "total is not a uint32"),
    ({"cost": "1,,2", "ops": 3}, "cost is not a list of integers"),
])
def test_malformed_prof_is_refused_naming_the_field(overrides, problem):
    with pytest.raises(ValueError, match=problem):
        protocol.parse_profile(decode(prof_line(**overrides)))


def test_prof_without_a_required_key_is_refused():
    message = decode(prof_line())
    del message.fields["overhead"]
    with pytest.raises(ValueError, match="missing overhead"):
        protocol.parse_profile(message)


def _build(tmp_path: Path, manifest_extra: dict | None = None) -> last_build.LastBuild:
    project = tmp_path / "project"
    (project / ".tinyforge").mkdir(parents=True, exist_ok=True)
    (project / ".tinyforge" / "model.tflite").write_bytes(EXAMPLE_MODEL.read_bytes())
    from tinyforge.model.reader import read_model_file
    _, info = read_model_file(EXAMPLE_MODEL)
    manifest = {"board": "qemu-m4", "environment": "qemu-m4", "profile": True,
                "model": {"name": info.name, "sha256": info.sha256, "bytes": info.size,
                          "path": ".tinyforge/model.tflite"},
                "arena": {"arena_bytes": 2_848}}
    manifest.update(manifest_extra or {})
    return last_build.LastBuild(project, manifest, profiles.load_board("qemu-m4"))


def _report(tmp_path, prof_fields=None, **options) -> profile.ProfileReport:
    build = _build(tmp_path)
    layers = macs.layer_costs(EXAMPLE_MODEL.read_bytes())
    prof = protocol.parse_profile(decode(prof_line(**(prof_fields or {}))))
    result = protocol.Result(seq=0, src="host", us=76, outputs=[])
    return profile._report(build, layers, result, prof, profile.ProfileOptions(**options))


def test_table_joins_macs_and_instructions(tmp_path, in_process):
    report = _report(tmp_path)
    rows = report.summary["layers"]
    assert [r["instructions"] for r in rows] == COSTS
    assert [r["op"] for r in rows][:2] == ["RESHAPE", "CONV_2D"]
    assert rows[1]["macs"] == 2_160
    assert sum(r["instruction_share"] for r in rows) == pytest.approx(1.0)
    assert report.summary["totals"]["instructions"] == sum(COSTS)
    assert report.target == "nano33ble"
    latency = report.summary["latency"]
    assert latency["cycles_per_instruction"] == [1.2, 2.0] and not latency["measured"]
    assert latency["seconds"][0] == pytest.approx(sum(COSTS) * 1.2 / 64e6)


def test_overhead_accounting(tmp_path, in_process):
    within = _report(tmp_path).profiler
    assert within["unaccounted"] == 360 and within["overhead_total"] == 9 * OVERHEAD
    assert within["within_overhead"]
    beyond = _report(tmp_path, {"total": sum(COSTS) + 9 * OVERHEAD + 1}).profiler
    assert not beyond["within_overhead"]


def test_lines_show_every_figure(tmp_path, in_process):
    text = "\n".join(_report(tmp_path, decisions_per_s=2.0).lines())
    assert "CONV_2D" in text and "41,920" in text and "2,160" in text
    assert "CPI 1.2–2" in text and "64 MHz" in text
    assert "2 decisions/s" in text and "1 mW budget" in text
    assert "the ops add up to the total within it" in text


def test_limits_and_their_exit_code(tmp_path, in_process):
    report = _report(tmp_path, max_instructions=sum(COSTS) - 1, max_arena=4_096)
    assert [(l["name"], l["exceeded"]) for l in report.limits] == [
        ("instructions", True), ("arena_bytes", False)]
    with pytest.raises(ProfileLimitExceeded) as raised:
        profile.check_limits(report)
    assert raised.value.exit_code == EXIT_LIMIT_EXCEEDED == 4
    assert "instructions 77,920 > 77,919" in raised.value.message
    ok = _report(tmp_path, max_instructions=sum(COSTS), max_arena=2_848)
    profile.check_limits(ok)


def test_saved_profile_feeds_the_report(tmp_path, in_process):
    report = _report(tmp_path)
    build = _build(tmp_path)
    profile._save(build, report)
    assert profile.load_saved(build.project_dir, build.model_sha256) == dict(enumerate(COSTS))
    assert profile.load_saved(build.project_dir, "0" * 64) is None


def test_report_uses_the_saved_profile(tmp_path, in_process):
    from tinyforge.flows import report as report_flow

    build = _build(tmp_path)
    profile._save(build, _report(tmp_path))
    data = report_flow.collect(build)
    assert [row["instructions"] for row in data.cost["layers"]] == COSTS
    assert data.cost["latency"] is not None


def test_board_cycles_give_a_measured_ratio(tmp_path, in_process, monkeypatch):
    monkeypatch.setenv("TINYFORGE_CYCLE_RATIOS", str(tmp_path / "ratios.json"))
    _report(tmp_path)   # the qemu-m4 counts of this model, kept in the cache
    build = _build(tmp_path, {"board": "nano33ble", "environment": "nano33ble"})
    build = last_build.LastBuild(build.project_dir, build.manifest,
                                 profiles.load_board("nano33ble"))
    layers = macs.layer_costs(EXAMPLE_MODEL.read_bytes())
    cycles = [c * 3 // 2 for c in COSTS]
    prof = protocol.parse_profile(decode(prof_line(
        unit="cycles", cost=",".join(map(str, cycles)), total=sum(cycles) + 500)))
    result = protocol.Result(seq=0, src="host", us=1_900, outputs=[])
    report = profile._report(build, layers, result, prof, profile.ProfileOptions())
    assert report.cycles == cycles
    assert report.ratio["cycles_per_instruction"] == pytest.approx(
        (sum(cycles) + 500) / (sum(COSTS) + 360))
    assert report.summary["latency"]["measured"]
    assert [row["instructions"] for row in report.summary["layers"]] == COSTS


def test_cli_refuses_a_firmware_without_the_profiler(tmp_path, in_process, capsys):
    build = _build(tmp_path, {"profile": False})
    (build.project_dir / ".tinyforge" / "manifest.json").write_text(json.dumps(build.manifest))
    code = cli.main(["profile", "--project-dir", str(build.project_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["error"]["type"] == ProfileUnavailableError.__name__
    assert "--profile" in out["error"]["hint"]


def test_cli_limit_exit_code_with_json(tmp_path, in_process, capsys, monkeypatch):
    # The flow's real figures for a recorded PROF; only the device run is left out here
    # (tests/test_profile_qemu.py runs it on qemu-m4).
    report = _report(tmp_path, max_instructions=1_000)
    monkeypatch.setattr(profile, "profile", lambda options, ask=None: report)
    code = cli.main(["profile", "--max-instructions", "1000", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 4
    assert out["limits"][0]["exceeded"] and out["error"]["type"] == "ProfileLimitExceeded"


# --- the firmware's profiler, compiled for the host (needs TFLM's interface header) ---------

PROFILE_SRC = REPO / "firmware_templates" / "profile" / "src"
COMMON_SRC = REPO / "firmware_templates" / "common"
HARNESS_CPP = Path(__file__).resolve().parent / "cpp" / "profiler_harness.cpp"
PROTOCOL_DOC = REPO / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def profiler_harness(tflm_tree, gxx, tmp_path_factory) -> Path:
    from tinyforge import proc

    executable = tmp_path_factory.mktemp("profiler") / "profiler_harness"
    proc.run([gxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-O1",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
              f"-I{PROFILE_SRC}", f"-I{COMMON_SRC}", f"-I{tflm_tree / 'src'}", str(HARNESS_CPP),
              str(PROFILE_SRC / "tf_profiler.cpp"), str(COMMON_SRC / "tf_protocol.cpp"),
              "-o", str(executable)], timeout=300, what="g++ build of the profiler harness")
    return executable


def _run_harness(executable: Path, *args: str) -> tuple[protocol.Profile, str]:
    import subprocess

    out = subprocess.run([str(executable), *args], capture_output=True, timeout=60, check=True)
    assert out.stdout.endswith(b"\r\n") and out.stdout.count(b"\n") == 1
    return protocol.parse_profile(decode(out.stdout)), out.stdout[:-2].decode()


def test_firmware_profiler_counts_each_op_from_the_end_of_the_last(profiler_harness):
    prof, _ = _run_harness(profiler_harness, "1000", "0", "40000")
    # Each op: from the previous op's end (the first: from StartInvoke's read) to its own
    # EndEvent's read, so its work plus the one read before it.
    assert prof.costs == [1040, 40, 40040]
    # Calibration: 64 pairs of one read each, plus the read that ends it: ceil(65 * 40 / 64).
    assert prof.overhead == 41
    # Invoke: every op, and the read of the last EndEvent before EndInvoke's read.
    assert prof.total == sum(prof.costs) + 40
    unaccounted = prof.total - sum(prof.costs)
    assert 0 <= unaccounted <= prof.overhead * len(prof.costs)


def test_nested_events_count_towards_their_subgraph_0_op(profiler_harness):
    prof, _ = _run_harness(profiler_harness, "-nested")
    assert len(prof.costs) == 2 and prof.dropped == 0
    # The WHILE holds the nested MUL's work, and the read that ended the ADD.
    assert prof.costs == [40, 140]


def test_more_ops_than_the_table_are_dropped_not_overrun(profiler_harness):
    prof, _ = _run_harness(profiler_harness, *["10"] * 10)
    assert len(prof.costs) == 8 and prof.dropped == 2


def test_doc_prof_example_is_what_the_profiler_writes(profiler_harness):
    _, line = _run_harness(profiler_harness, "1160", "40480", "840")
    doc = PROTOCOL_DOC.read_text(encoding="utf-8")
    assert line in doc.splitlines(), line
