"""Port discovery, with list_ports results modelled faithfully: pyserial's own ListPortInfo
objects carrying the fields Linux fills in for real USB CDC devices."""

from __future__ import annotations

import pytest
from serial.tools.list_ports_common import ListPortInfo

from tinyforge.board import profiles
from tinyforge.device import ports
from tinyforge.errors import DeviceError

NANO = profiles.load_board("nano33ble")


def usb_port(device: str, vid: int, pid: int, description: str, serial: str | None = None):
    port = ListPortInfo(device, skip_link_detection=True)
    port.vid, port.pid = vid, pid
    port.description, port.serial_number = description, serial
    port.hwid = f"USB VID:PID={vid:04X}:{pid:04X}" + (f" SER={serial}" if serial else "")
    return port


def uart(device: str):
    port = ListPortInfo(device, skip_link_detection=True)
    port.description = "ttyS0"
    return port


SKETCH = usb_port("/dev/ttyACM0", 0x2341, 0x805A, "Nano 33 BLE", "4E3A1B2C")
BOOTLOADER = usb_port("/dev/ttyACM1", 0x2341, 0x005A, "Nano 33 BLE", "4E3A1B2C")
OTHER_SKETCH = usb_port("/dev/ttyACM2", 0x2341, 0x805A, "Nano 33 BLE", "99AA77BB")
UNO = usb_port("/dev/ttyACM3", 0x2341, 0x0043, "Arduino Uno")
FTDI = usb_port("/dev/ttyUSB0", 0x0403, 0x6001, "FT232R USB UART")


def test_the_one_matching_board_is_chosen_among_other_devices():
    assert ports.choose_port(NANO, ports=[uart("/dev/ttyS0"), UNO, SKETCH, FTDI]) == \
        "/dev/ttyACM0"


def test_a_board_in_its_bootloader_is_found_by_the_bootloader_pid():
    matches = ports.matching_ports(NANO, [FTDI, BOOTLOADER])
    assert [(m.device, m.role) for m in matches] == [("/dev/ttyACM1", "bootloader")]
    assert ports.choose_port(NANO, ports=[FTDI, BOOTLOADER]) == "/dev/ttyACM1"


def test_explicit_port_wins_even_with_no_match():
    assert ports.choose_port(NANO, "/dev/ttyUSB7", ports=[]) == "/dev/ttyUSB7"


def test_several_boards_are_refused_and_listed():
    with pytest.raises(DeviceError) as caught:
        ports.choose_port(NANO, ports=[OTHER_SKETCH, SKETCH, UNO])
    error = caught.value
    assert error.exit_code == 2
    assert "refusing to guess" in error.message
    assert "/dev/ttyACM0" in error.details and "/dev/ttyACM2" in error.details
    assert "/dev/ttyACM3" not in error.details
    assert "--port" in error.hint


def test_several_boards_can_be_chosen_interactively():
    chosen = ports.choose_port(NANO, ports=[OTHER_SKETCH, SKETCH],
                                     ask=lambda matches: matches[1])
    assert chosen == "/dev/ttyACM2"


def test_no_board_lists_what_is_connected_and_suggests_the_double_tap():
    with pytest.raises(DeviceError) as caught:
        ports.choose_port(NANO, ports=[uart("/dev/ttyS0"), UNO, FTDI])
    error = caught.value
    assert "no Arduino Nano 33 BLE Sense found" in error.message
    assert "/dev/ttyUSB0: FT232R USB UART [0403:6001]" in error.details
    assert "/dev/ttyS0" in error.details
    assert "double-tap" in error.hint and "2341:805a" in error.hint


def test_no_ports_at_all():
    with pytest.raises(DeviceError) as caught:
        ports.choose_port(NANO, ports=[])
    assert "no serial ports at all" in caught.value.details


def test_wait_for_port_sees_the_sketch_come_back_after_the_bootloader():
    seen = iter([[BOOTLOADER], [], [SKETCH]])
    device = ports.wait_for_port(NANO, ("app",), timeout=5,
                                       list_function=lambda: next(seen))
    assert device == "/dev/ttyACM0"


def test_wait_for_port_gives_up():
    assert ports.wait_for_port(NANO, ("app",), timeout=0.3, list_function=list) is None


def test_flash_without_a_board_is_exit_2_listing_ports(tinyforge, models, tmp_path):
    project = tmp_path / "p"
    tinyforge("build", "--model", models / "dense_int8.tflite", "--project-dir", project,
              "--no-compile", check_rc=0)
    result = tinyforge("flash", "--project-dir", project)
    assert result.returncode == 1 and "no firmware yet" in result.stderr
    elf = project / ".pio" / "build" / "nano33ble" / "firmware.elf"
    elf.parent.mkdir(parents=True)
    elf.write_bytes(b"\x7fELF")  # only its presence matters before a port is chosen
    result = tinyforge("flash", "--project-dir", project)
    assert result.returncode == 2, result.stderr
    assert "no Arduino Nano 33 BLE Sense found" in result.stderr
    assert "Traceback" not in result.stderr


def test_flash_and_monitor_without_any_build(tinyforge, tmp_path):
    for command in ("flash", "monitor", "validate"):
        result = tinyforge(command, cwd=tmp_path)
        assert result.returncode == 1
        assert "no tinyforge build found" in result.stderr and "tinyforge build" in result.stderr
