"""The latency band, energy and power model, the board's [power] figures and the record of
measured cycles per instruction (tinyforge.model.cost, tinyforge.project.cycle_ratios).

Every expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tinyforge import resources
from tinyforge.board import profiles
from tinyforge.errors import BoardProfileError, InputError
from tinyforge.model import cost, macs
from tinyforge.project import cycle_ratios

EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"
SHA = "ab" * 32


@pytest.fixture(scope="module")
def nano():
    return profiles.load_board("nano33ble")


@pytest.fixture(scope="module")
def power(nano):
    return cost.PowerFigures.from_board(nano)


def test_the_nano_profile_holds_the_datasheet_figures(nano, power):
    assert nano.power["source"].startswith("nRF52840 Product Specification")
    assert (power.supply_v, power.run_dcdc_a, power.run_ldo_a, power.sleep_a) == \
        (3.0, pytest.approx(3.3e-3), pytest.approx(6.3e-3), pytest.approx(3.16e-6))
    # The emulated board has none: its estimates are made for the board it emulates.
    assert cost.PowerFigures.from_board(profiles.load_board("qemu-m4")) is None


def test_a_million_instructions_at_64_mhz():
    band = cost.latency_band(1_000_000, 64_000_000)
    # 1.2 and 2.0 cycles per instruction: 1.2e6 / 64e6 s = 18.75 ms, 2e6 / 64e6 s = 31.25 ms.
    assert (band.seconds_low, band.seconds_high) == (pytest.approx(0.01875),
                                                      pytest.approx(0.03125))
    assert not band.measured and "assumed, not measured" in band.basis
    assert band.to_json()["cycles"] == [1_200_000, 2_000_000]
    measured = cost.latency_band(1_000_000, 64_000_000, measured_cpi=1.5, measured_basis="DWT")
    # 1.5e6 / 64e6 s = 23.4375 ms at both ends.
    assert measured.seconds_low == measured.seconds_high == pytest.approx(0.0234375)
    assert measured.measured and measured.basis == "DWT"


def test_energy_and_average_power_at_one_decision_per_second(power):
    band = cost.latency_band(1_000_000, 64_000_000)
    dcdc, ldo = cost.energy_estimates(band, power, 1.0)
    assert (dcdc.regulator, ldo.regulator) == ("dcdc", "ldo")
    # E = 3.0 V x 3.3 mA x 18.75 ms = 185.625 uJ; x 31.25 ms = 309.375 uJ.
    assert dcdc.energy_j == (pytest.approx(185.625e-6), pytest.approx(309.375e-6))
    # P = 3.0 V x (3.3 mA x 0.01875 + 3.16 uA x 0.98125) = 0.19492725 mW
    #     3.0 V x (3.3 mA x 0.03125 + 3.16 uA x 0.96875) = 0.31855875 mW
    assert dcdc.power_w == (pytest.approx(0.19492725e-3), pytest.approx(0.31855875e-3))
    assert dcdc.within_budget is True
    # LDO: 3.0 V x (6.3 mA x 0.01875 + 3.16 uA x 0.98125) = 0.36367725 mW, and 0.59980875 mW.
    assert ldo.power_w == (pytest.approx(0.36367725e-3), pytest.approx(0.59980875e-3))
    assert ldo.within_budget is True


def test_the_budget_verdict_follows_the_band(power):
    band = cost.latency_band(1_000_000, 64_000_000)
    dcdc, ldo = cost.energy_estimates(band, power, 5.0)
    # DC/DC at 5 Hz: 0.9367 mW at 1.2 CPI (under 1 mW), 1.5549 mW at 2.0 CPI (over): it depends.
    assert dcdc.power_w[0] < cost.TINYML_BUDGET_W < dcdc.power_w[1]
    assert dcdc.within_budget is None
    # LDO at 5 Hz: 1.78 mW even at 1.2 CPI.
    assert ldo.power_w[0] == pytest.approx(3.0 * (6.3e-3 * 0.09375 + 3.16e-6 * 0.90625))
    assert ldo.within_budget is False
    # 40 decisions per second with a 31.25 ms inference: 1.25 s of work per second.
    fast = cost.energy_estimates(band, power, 40.0)[0]
    assert not fast.feasible and fast.within_budget is False


def test_sleep_only_is_the_sleep_power(power):
    band = cost.latency_band(0, 64_000_000)
    dcdc = cost.energy_estimates(band, power, 1.0)[0]
    # 3.0 V x 3.16 uA = 9.48 uW
    assert dcdc.power_w == (pytest.approx(9.48e-6), pytest.approx(9.48e-6))
    assert dcdc.energy_j == (0.0, 0.0)


def test_summary_joins_macs_and_instruction_counts(nano, power):
    layers = macs.layer_costs(EXAMPLE.read_bytes())
    counts = {layer.index: 1000 for layer in layers}
    counts[3] = 11_000  # the second convolution: 11,000 of 19,000 instructions
    result = cost.summary(layers, nano, instructions=counts, power=power, decisions_per_s=2)
    assert result["totals"] == {"operators": 9, "macs": 9188, "instructions": 19_000}
    row = result["layers"][3]
    assert (row["op"], row["macs"], row["instructions"]) == ("CONV_2D", 4992, 11_000)
    assert row["instruction_share"] == pytest.approx(11 / 19)
    assert row["mac_share"] == pytest.approx(4992 / 9188)
    # 19,000 x 1.2 / 64 MHz = 356.25 us; x 2.0 = 593.75 us.
    assert result["latency"]["seconds"] == [pytest.approx(356.25e-6), pytest.approx(593.75e-6)]
    assert [e["regulator"] for e in result["energy"]] == ["dcdc", "ldo"]
    json.dumps(result)  # plain data for --json


def test_summary_without_instructions_has_no_latency(nano, power):
    layers = macs.layer_costs(EXAMPLE.read_bytes())
    result = cost.summary(layers, nano, power=power)
    assert result["latency"] is None and result["energy"] is None
    assert all(row["instructions"] is None for row in result["layers"])
    with pytest.raises(ValueError, match="operators the graph does not have"):
        cost.summary(layers, nano, instructions={42: 10})


# --- the measured ratio ------------------------------------------------------------------------

def test_a_recorded_ratio_is_found_again_for_the_same_board_and_model(tmp_path):
    path = tmp_path / "ratios.json"
    assert cycle_ratios.lookup("nano33ble", SHA, path=path) is None
    recorded = cycle_ratios.record("nano33ble", SHA, 2_000_000, 2_700_000,
                                   source="DWT->CYCCNT", path=path)
    assert recorded.cycles_per_instruction == pytest.approx(1.35)
    found = cycle_ratios.lookup("nano33ble", SHA, path=path)
    assert found == recorded
    assert cycle_ratios.lookup("nano33ble", "cd" * 32, path=path) is None
    assert cycle_ratios.lookup("other-board", SHA, path=path) is None
    document = json.loads(path.read_text())
    assert document["version"] == 1 and f"nano33ble/{SHA}" in document["ratios"]


def test_bad_ratios_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "ratios.json"
    with pytest.raises(InputError, match="positive counts"):
        cycle_ratios.record("nano33ble", SHA, 0, 10, source="x", path=path)
    with pytest.raises(InputError, match="not a model sha256"):
        cycle_ratios.record("nano33ble", "xyz", 10, 10, source="x", path=path)
    path.write_text('{"version": 1, "ratios": {"a": {"board": "a", "model_sha256": "b", '
                    '"instructions": -1, "cycles": 5}}}')
    with pytest.raises(InputError, match="not a file of measured cycle ratios") as caught:
        cycle_ratios.lookup("nano33ble", SHA, path=path)
    assert "delete" in caught.value.hint
    path.write_text("[1, 2")
    with pytest.raises(InputError, match="unreadable"):
        cycle_ratios.lookup("nano33ble", SHA, path=path)


# --- the [power] table of a profile -----------------------------------------------------------

def _profile_with(tmp_path: Path, power_table: str) -> Path:
    source = resources.boards_dir() / "nano33ble.toml"
    text = source.read_text()
    text = text[: text.index("[power]")] + power_table
    folder = tmp_path / "boards"
    folder.mkdir()
    shutil.copytree(resources.boards_dir() / "tflm", folder / "tflm")
    path = folder / "nano33ble.toml"
    path.write_text(text)
    return path


def test_a_power_table_with_a_wrong_value_or_field_is_refused(tmp_path):
    path = _profile_with(tmp_path, '[power]\nsource = "x"\nsupply_v = 3.0\nrun_dcdc_ma = -1\n'
                                   'run_ldo_ma = 6.3\nsleep_ua = 3.16\nsleep_mw = 1\n')
    with pytest.raises(BoardProfileError) as caught:
        profiles.load_profile(path)
    assert "unknown field 'power.sleep_mw'" in caught.value.details
    path.write_text(path.read_text().replace("sleep_mw = 1\n", ""))
    with pytest.raises(BoardProfileError) as caught:
        profiles.load_profile(path)
    assert "power.run_dcdc_ma is -1; it must be a positive number" in caught.value.details
    path.write_text(path.read_text().replace("sleep_ua = 3.16\n", "").replace("-1", "3.3"))
    with pytest.raises(BoardProfileError) as caught:
        profiles.load_profile(path)
    assert "missing field 'power.sleep_ua'" in caught.value.details


def test_a_profile_without_a_power_table_loads(tmp_path):
    board = profiles.load_profile(_profile_with(tmp_path, ""))
    assert board.power == {}
