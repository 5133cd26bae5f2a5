"""The fit estimate learns the framework's figures from a real build's linker map."""

from __future__ import annotations

import shutil
from pathlib import Path

from tinyforge.board import profiles
from tinyforge.flows import fit_learning, inspection
from tinyforge.model import fit
from tinyforge.model.reader import read_model_file
from tinyforge.toolchain import linkmap

DATA = Path(__file__).resolve().parent / "data"
EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"
NANO = profiles.load_board("nano33ble")


def _firmware(tmp_path: Path) -> Path:
    elf = tmp_path / "firmware.elf"   # only its map is read
    shutil.copy(DATA / "nano33ble-style.map", elf.with_suffix(".map"))
    return elf


def test_framework_is_what_the_map_holds_besides_the_estimated_parts(tmp_path):
    elf = _firmware(tmp_path)
    flash, ram, toolchain = fit_learning.measure(NANO, elf.with_suffix(".map"))
    result = linkmap.breakdown(linkmap.read_map(elf.with_suffix(".map")),
                               NANO.platformio["platform"])
    # With the parts the estimate counts itself, the framework adds up to PlatformIO's totals.
    others = sum(result.flash.categories[k] for k in fit_learning.NOT_FRAMEWORK)
    assert flash + others == result.flash.total and flash > 0
    others = sum(result.ram.categories[k] for k in fit_learning.NOT_FRAMEWORK)
    assert ram + others == result.ram.total
    assert toolchain.startswith("gcc")


def test_a_recorded_build_replaces_the_profile_figures(tmp_path):
    store = tmp_path / "fit.json"
    assert fit_learning.lookup(NANO, path=store) is None
    measured = fit_learning.record(NANO, _firmware(tmp_path), path=store)
    assert measured is not None and fit_learning.lookup(NANO, path=store) == measured
    # Another board learns nothing from it.
    assert fit_learning.lookup(profiles.load_board("qemu-m4"), path=store) is None
    _, info = read_model_file(EXAMPLE)
    report = fit.estimate(NANO, info, op_count=5, arena_bytes=4096, measured=measured)
    assert report.flash_framework == measured.flash_bytes != NANO.memory["framework_flash_bytes"]
    assert report.ram_framework == measured.ram_bytes
    text = "\n".join(report.lines())
    assert f"framework {measured.flash_bytes:,} B" in text and "~" + f"{measured.flash_bytes:,}" not in text
    assert "framework measured: the linker map of" in text
    assert report.to_json()["framework_measured"]["flash_bytes"] == measured.flash_bytes


def test_no_map_or_a_broken_store_means_the_profile_figures(tmp_path):
    store = tmp_path / "fit.json"
    assert fit_learning.record(NANO, tmp_path / "nothing.elf", path=store) is None
    store.write_text("{not json")
    assert fit_learning.lookup(NANO, path=store) is None


def test_inspect_says_the_framework_is_measured(tmp_path, in_process, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fit_learning.record(NANO, _firmware(tmp_path))
    report = inspection.inspect_model(EXAMPLE, board_id="nano33ble", arena="host")
    assert report["fit"]["framework_measured"] is not None
    assert any(line.startswith("framework ") and "measured from" in line
               for line in inspection.summary_lines(report))
