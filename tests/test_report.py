"""`tinyforge report`: the plots, the self-contained page, the flow over a real build, and the
page opened in headless Chromium (no console errors, nothing fetched, a screenshot).

The page is made from hand-made data (tensor lifetimes, a validate report, instruction
counts) and from a real self-test firmware built offline, validated in QEMU and reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from chromium_support import Chromium, find_chromium
from qemu_support import block_network, require_emulator, seeded_core

from tinyforge.board import profiles
from tinyforge.errors import InputError
from tinyforge.flows import report as report_flow
from tinyforge.flows import validate
from tinyforge.model import cost, macs
from tinyforge.project import last_build
from tinyforge.project import selftest as selftest_project
from tinyforge.report import page, plots
from tinyforge.report.data import Lifetimes, ReportData, TensorLifetime
from tinyforge.toolchain import linkmap, pio

EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"
MBED_MAP = (Path(__file__).resolve().parent / "data" / "nano33ble-style.map").read_text()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hand_made_lifetimes() -> Lifetimes:
    # The example's activations, planned by hand: offsets never overlap while alive.
    tensors = [TensorLifetime("input", 0, 1, 96, 0), TensorLifetime("conv1", 1, 2, 240, 96),
               TensorLifetime("pool1", 2, 3, 120, 336), TensorLifetime("conv2", 3, 4, 208, 0),
               TensorLifetime("pool2", 4, 6, 96, 208), TensorLifetime("fc1", 6, 7, 16, 0),
               TensorLifetime("fc2", 7, 8, 4, 16), TensorLifetime("out", 8, 8, 4, 32)]
    # Alive at op 2: conv1 + pool1 = 360 bytes, the most at any operator. The plan's figures
    # as a build's model gives them (flows/report.lifetimes_of).
    return Lifetimes(tensors, operator_count=9, lower_bound=360, planned_bytes=456,
                     greedy_bytes=480, offline_bytes=456, plan_seconds=0.0123,
                     planner="offline")


def hand_made_validation() -> dict:
    return {"samples": 128, "exact_matches": 127, "max_lsb": 1, "mean_lsb": 0.002,
            "max_abs": 0.0039, "mean_abs": 1e-5, "top1_agreement": 1.0,
            "latency_us": {"min": 150, "median": 164, "max": 190}, "max_lsb_allowed": 0,
            "max_abs_allowed": 1e-4, "passed": False, "reference": "host TFLM",
            "mismatches": [{"sample": 3, "output": 0, "device": [-128, 5, 127, -128],
                            "host": [-128, 4, 127, -128]}],
            "a_field_added_later": {"anything": [1, 2]}}


def full_data() -> ReportData:
    board = profiles.load_board("nano33ble")
    layers = macs.layer_costs(EXAMPLE.read_bytes())
    instructions = {layer.index: 3000 + 40 * layer.macs for layer in layers}
    summary = cost.summary(layers, board, instructions=instructions,
                           power=cost.PowerFigures.from_board(board), decisions_per_s=5)
    breakdown = linkmap.breakdown(linkmap.parse_map(MBED_MAP), "nordicnrf52")
    return ReportData(
        title="gesture_int8.tflite on <Nano 33 BLE> & friends",
        board={"id": board.id, "name": board.name, "flash_bytes": board.flash_bytes,
               "ram_bytes": board.ram_bytes},
        model={"name": "gesture_int8.tflite", "sha256": "ab" * 32, "bytes": 7080},
        lifetimes=hand_made_lifetimes(), cost=summary, breakdown=breakdown.to_json(),
        breakdown_check=[], validation=hand_made_validation())


def test_occupancy_and_lower_bound_of_hand_made_lifetimes():
    lifetimes = hand_made_lifetimes()
    assert lifetimes.occupancy() == [96, 336, 360, 328, 304, 96, 112, 20, 8]
    assert max(lifetimes.occupancy()) == lifetimes.lower_bound
    again = Lifetimes.from_json({"tensors": [{"name": "a", "first_op": 0, "last_op": 1,
                                              "bytes": 10}], "lower_bound": 10})
    assert again.operator_count == 2 and again.tensors[0].size == 10


@pytest.mark.slow  # draws every plot with matplotlib: seconds of CPU
def test_every_plot_is_a_png_and_the_same_data_gives_the_same_bytes():
    data = full_data()
    images = [plots.lifetimes_png(data.lifetimes), plots.layers_png(data.cost["layers"]),
              plots.memory_png(data.breakdown, data.board),
              plots.validation_png(data.validation)]
    assert all(image.startswith(PNG_MAGIC) and len(image) > 5000 for image in images)
    assert plots.memory_png(data.breakdown, data.board) == images[2]


@pytest.mark.slow  # draws every plot with matplotlib: seconds of CPU
def test_the_page_is_self_contained_and_escapes_what_it_shows():
    rendered = page.render(full_data())
    html = rendered.html
    assert rendered.sections == dict.fromkeys(page.SECTIONS, "ok")
    assert sorted(rendered.pngs) == ["layers.png", "lifetimes.png", "memory.png",
                                     "validation.png"]
    assert "<script" not in html
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', html)
    assert "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 4
    assert "&lt;Nano 33 BLE&gt; &amp; friends" in html
    assert "1.2 – 2" in html and "assumed, not measured" in html
    assert "TFLM kernels by op" in html and "CONV_2D" in html
    assert "lower bound" in html.lower()
    # The memory plan: TFLM's greedy head, tinyforge's plan, the bound, the time to plan.
    assert "<td>TFLM&#x27;s greedy plan</td><td>480 B</td>" in html
    assert "<td>tinyforge&#x27;s offline plan</td><td>456 B</td>" in html
    assert "<td>time to plan</td><td>12.3 ms</td>" in html
    assert "head (tensors and scratch buffers) takes 456 B with the offline plan" in html
    assert page.render(full_data()).html == html


def test_validation_per_output_is_read_from_mismatches_or_from_per_output_fields():
    assert plots.output_summary(hand_made_validation()) == {
        0: {"samples_differing": 1, "max_lsb": 1}}
    given = dict(hand_made_validation(), outputs=[{"index": 0, "samples_differing": 2,
                                                   "max_lsb": 3}, {"index": 1}])
    assert plots.output_summary(given) == {0: {"samples_differing": 2, "max_lsb": 3},
                                           1: {"samples_differing": 0, "max_lsb": 0}}


def test_missing_sections_say_why():
    data = full_data()
    data.lifetimes = data.validation = None
    data.missing = {"lifetimes": "not computed", "validation": "validate never ran"}
    rendered = page.render(data)
    assert rendered.sections["lifetimes"] == "missing: not computed"
    assert rendered.sections["validation"] == "missing: validate never ran"
    assert "Not available: validate never ran" in rendered.html
    assert "Tensor lifetimes and arena occupancy" in rendered.html
    assert sorted(rendered.pngs) == ["layers.png", "memory.png"]


@pytest.mark.slow  # draws every plot with matplotlib: seconds of CPU
def test_the_written_report_drops_plots_whose_data_went_away(tmp_path):
    report_flow.write(full_data(), tmp_path)
    assert (tmp_path / "validation.png").is_file()
    data = full_data()
    data.validation = None
    result = report_flow.write(data, tmp_path)
    assert not (tmp_path / "validation.png").exists()
    assert result.html.read_text().startswith("<!DOCTYPE html>")


def test_a_saved_validate_report_is_read_back_for_the_same_model_only(tmp_path):
    class Report:
        def to_json(self):
            return hand_made_validation()

    board = profiles.load_board("qemu-m4")
    build = last_build.LastBuild(tmp_path, {"model": {"sha256": "ab" * 32}}, board)
    assert last_build.load_validation(build) == (
        None, "`tinyforge validate` has not run on this build yet")
    saved = Report()
    assert last_build.save_validation(build, saved) is saved
    assert last_build.load_validation(build) == (hand_made_validation(), None)
    rebuilt = last_build.LastBuild(tmp_path, {"model": {"sha256": "cd" * 32}}, board)
    report, why = last_build.load_validation(rebuilt)
    assert report is None and "another model" in why
    (tmp_path / last_build.VALIDATION_PATH).write_text("{broken")
    with pytest.raises(InputError, match="unreadable"):
        last_build.load_validation(build)


def test_the_report_command_without_a_build_says_what_to_do(tinyforge, tmp_path):
    result = tinyforge("report", "--project-dir", tmp_path / "nothing")
    assert result.returncode == 1
    assert "not a tinyforge project" in result.stderr and "hint:" in result.stderr


# --- in a browser ------------------------------------------------------------------------------

def open_in_chromium(html: Path, screenshot: Path) -> Chromium:
    browser = Chromium(find_chromium())
    try:
        browser.open(html.resolve().as_uri())
        assert browser.problems() == []
        assert browser.requested_urls() == [html.resolve().as_uri()]
        assert browser.evaluate("Array.from(document.images).every("
                                "i => i.complete && i.naturalWidth > 0)") is True
        browser.screenshot(screenshot)
    finally:
        browser.close()
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    return browser


@pytest.mark.slow
def test_the_report_opens_in_headless_chromium_without_errors(tmp_path):
    result = report_flow.write(full_data(), tmp_path / "report")
    browser = open_in_chromium(result.html, tmp_path / "screenshot.png")
    print(f"screenshot: {tmp_path / 'screenshot.png'}")
    assert browser.process.returncode is not None


@pytest.mark.slow
def test_the_page_check_can_fail(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><script>console.error('broken')</script>"
                   "<img src='http://127.0.0.1:9/x.png'>")
    with pytest.raises(AssertionError):
        open_in_chromium(bad, tmp_path / "bad.png")


@pytest.mark.emulator
@pytest.mark.slow
def test_report_of_a_validated_self_test_firmware(tmp_path, tmp_path_factory, monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    board = profiles.load_board("qemu-m4")
    project = tmp_path / "selftest"
    selftest_project.render_project(project, board)
    pio.build(project, board, seeded_core(tmp_path_factory), timeout=600)
    validated = validate.validate_last_build(project_dir=project, random_count=8)
    assert validated.passed
    saved = json.loads((project / last_build.VALIDATION_PATH).read_text())["report"]
    assert saved["samples"] == 8 and saved["passed"] is True

    result = report_flow.report_last_build(project_dir=project)
    assert result.html == project / "report" / "report.html"
    assert result.sections["memory"] == "ok" and result.sections["validation"] == "ok"
    # The self-test firmware has no model: its layers say so instead of disappearing.
    assert result.sections["layers"].startswith("missing:")
    html = result.html.read_text()
    assert "The categories add up to the ELF" in html
    open_in_chromium(result.html, tmp_path / "selftest-report.png")
