"""The flash/RAM breakdown from GNU ld map files (tinyforge.toolchain.linkmap).

A hand-written map in ld's format checks the parser's corners (wrapped names, fill, merged
strings that overlap, load addresses, archive members of newlib, TFLM, CMSIS-NN and the
Arduino mbed core) with sums done by hand. Real firmware built offline for qemu-m4 checks
that the breakdown adds up to the ELF's section headers and to PlatformIO's totals: the
self-test firmware in the default tier, a model firmware in the TFLM tier.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from qemu_support import block_network, require_emulator, seeded_core

from tinyforge import resources
from tinyforge.board import profiles
from tinyforge.errors import InputError
from tinyforge.project import selftest as selftest_project
from tinyforge.toolchain import linkmap, pio

# A Nano 33 BLE-style link written by hand in GNU ld's map format, with the names the Arduino
# mbed core's PlatformIO build gives. Sizes are small so the expected sums can be checked by hand.
MBED_MAP = (Path(__file__).resolve().parent / "data" / "nano33ble-style.map").read_text()


@pytest.fixture(scope="module")
def mbed_breakdown() -> linkmap.Breakdown:
    return linkmap.breakdown(linkmap.parse_map(MBED_MAP), "nordicnrf52@10.11.0")


def test_the_parser_reads_sections_with_wrapped_names_fill_and_load_addresses():
    parsed = linkmap.parse_map(MBED_MAP)
    names = [s.name for s in parsed.sections]
    assert names == [".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data", ".bss", ".heap",
                     ".stack_dummy", ".comment"]
    text = parsed.section(".text")
    assert (text.address, text.size) == (0x10000, 0x300)
    conv = text.inputs[1]
    assert conv.name == ".text._ZN6tflite3ops5micro8Register_CONV_2DEv"
    assert (conv.address, conv.size) == (0x10100, 0x40)
    assert conv.origin.endswith("libChirale_TensorFlowLite.a(conv.cpp.o)")
    assert [i.name for i in text.inputs].count("*fill*") == 1
    assert parsed.section(".data").load_address == 0x10428
    assert parsed.section(".ARM.extab").size == 0
    assert parsed.memory == {"FLASH": (0x10000, 0xF0000), "RAM": (0x20000000, 0x40000)}


def test_flash_categories_add_up_by_hand(mbed_breakdown):
    flash = mbed_breakdown.flash
    # The nordicnrf52 platform counts .text, .data, .rodata, .text.align and .ARM.exidx.
    assert flash.sections == {".text": 0x300, ".rodata": 0x120, ".ARM.exidx": 0x8,
                              ".data": 0x20}
    assert flash.total == 0x300 + 0x120 + 0x8 + 0x20
    categories = {k: v for k, v in flash.categories.items() if v}
    assert categories == {
        "model": 0x80 + 0x4,
        "tflm_kernels": 0x40 + 0x30 + 0x10,
        "tflm_runtime": 0x20,
        # .text: setup; .rodata: main's strings (0x20 of the 0x40 listed: 0x10384 + 0x30 of
        # tf_protocol's strings already covers up to 0x103b4, ld lists merged strings with
        # overlapping ranges); .data: g_count.
        "sketch": 0x18 + (0x40 - 0x14) + 0x4,
        "protocol": 0x20 + 0x30,
        # variant's vector table, the board runtime, mbed OS, Wire, the core's main;
        # .rodata: mbed_error; .data: mbed_rtx_conf.
        "board": 0x100 + 0x10 + 0x40 + 0x10 + 0x20 + 0x3c + 0x1c,
        "libc": 0x20, "libgcc": 0x20 + 0x8, "libstdcxx": 0x10, "libm": 0x10,
        # explicit fill (8 + 4) and the gap from 0x102e0 to the end of .text.
        "padding": 0x8 + 0x4 + 0x20,
        "other": 0x20,
    }
    assert sum(flash.categories.values()) == flash.total
    assert flash.kernels == {"CONV_2D": 0x40 + 0x30, "(shared)": 0x10}
    assert list(flash.other) == [".pio/build/nano33ble/lib7c0/libArduino_LSM9DS1.a"
                                 "(LSM9DS1.cpp.o)"]


def test_ram_counts_data_and_bss_and_names_what_platformio_leaves_out(mbed_breakdown):
    ram = mbed_breakdown.ram
    assert ram.sections == {".data": 0x20, ".bss": 0x858}
    categories = {k: v for k, v in ram.categories.items() if v}
    assert categories == {"arena": 0x800, "sketch": 0x4 + 0x40, "board": 0x1c + 0x10,
                          "padding": 0x8}
    assert sum(ram.categories.values()) == ram.total == 0x878
    # The heap and the stack are in RAM, allocated by the linker script, but not counted.
    assert mbed_breakdown.ram_not_counted == {".heap": 0x1000, ".stack_dummy": 0x400}


@pytest.mark.parametrize("origin, expected", [
    ("x/libChirale_TensorFlowLite.a(depthwise_conv.o)", ("tflm_kernels", "DEPTHWISE_CONV_2D")),
    ("x/libChirale_TensorFlowLite.a(arm_depthwise_conv_s8_opt.o)",
     ("tflm_kernels", "DEPTHWISE_CONV_2D")),
    ("x/libChirale_TensorFlowLite.a(fully_connected_common.o)",
     ("tflm_kernels", "FULLY_CONNECTED")),
    ("x/libChirale_TensorFlowLite.a(arm_fully_connected_s8.o)", ("tflm_kernels", "FULLY_CONNECTED")),
    ("x/libChirale_TensorFlowLite.a(softmax_common.o)", ("tflm_kernels", "SOFTMAX")),
    ("x/libChirale_TensorFlowLite.a(arm_elementwise_add_s8.o)", ("tflm_kernels", "ADD")),
    ("x/libChirale_TensorFlowLite.a(reduce.o)", ("tflm_kernels", "MEAN / SUM / REDUCE_MAX")),
    ("x/libChirale_TensorFlowLite.a(kernel_util.o)", ("tflm_kernels", "(shared)")),
    ("x/libChirale_TensorFlowLite.a(arm_q7_to_q15_with_offset.o)", ("tflm_kernels", "(shared)")),
    ("x/libChirale_TensorFlowLite.a(micro_allocator.o)", ("tflm_runtime", "micro_allocator")),
    ("x/libChirale_TensorFlowLite.a(greedy_memory_planner.o)",
     ("tflm_runtime", "greedy_memory_planner")),
    ("x/libChirale_TensorFlowLite.a(flatbuffer_conversions.o)",
     ("tflm_runtime", "flatbuffer_conversions")),
    ("x/libChirale_TensorFlowLite.a(filterbank.c.o)", ("tflm_kernels", "(audio frontend)")),
    # PlatformIO without lib_archive: TFLM objects by path.
    (".pio/build/e/lib31d/Chirale_TensorFlowLite/tensorflow/lite/micro/kernels/cmsis_nn/conv.o",
     ("tflm_kernels", "CONV_2D")),
    ("/usr/lib/gcc/arm-none-eabi/12.2.1/thumb/v7e-m+fp/hard/crtbegin.o", ("libgcc", "crtbegin")),
    ("/usr/lib/arm-none-eabi/lib/thumb/v7e-m+fp/hard/crt0.o", ("libc", "crt0")),
    ("/x/libsupc++_nano.a(new_op.o)", ("libstdcxx", "new_op")),
    ("/x/libnosys.a(sbrk.o)", ("libc", "sbrk")),
    ("/x/libcc_310_core.a(crys_rsa.o)", ("board", "libcc_310_core")),
    (".pio/build/qemu-m4/src/qemu_m4_startup.o", ("board", "qemu_m4_startup")),
    # The sensor source's buffers are the pipeline's, which the fit estimate counts.
    (".pio/build/qemu-m4/src/qemu_m4_sensors.o", ("sketch", "qemu_m4_sensors")),
    (".pio/build/nano33ble/src/board_sensors_arduino.cpp.o", ("sketch", "board_sensors_arduino")),
    (".pio/build/qemu-m4/src/selftest.o", ("sketch", "selftest")),
    ("linker stubs", ("other", "linker stubs")),
])
def test_origins_are_classified(origin, expected):
    section = linkmap.InputSection(".text.f", 0, 4, origin)
    assert linkmap.classify(section) == expected


def test_the_qemu_platform_rules_are_the_builders_own():
    builder = (resources.platforms_dir() / "qemu_m4" / "builder" / "main.py").read_text()
    flash = re.search(r'SIZEPROGREGEXP=\((.*?)\),', builder, re.DOTALL).group(1)
    ram = re.search(r'SIZEDATAREGEXP=(r".*?")', builder).group(1)
    flash_regexp = "".join(eval(part) for part in re.findall(r'r"[^"]*"', flash))
    assert linkmap.region_patterns("tinyforge:qemu_m4") == (re.compile(flash_regexp),
                                                           re.compile(eval(ram)))


def test_unknown_platforms_and_non_map_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="no flash/RAM section rules"):
        linkmap.region_patterns("ststm32")
    junk = tmp_path / "firmware.map"
    junk.write_text("not a map\n")
    with pytest.raises(InputError, match="not a GNU ld map file"):
        linkmap.read_map(junk)
    with pytest.raises(InputError, match="does not exist"):
        linkmap.read_map(tmp_path / "missing.map")


def test_a_map_that_disagrees_with_the_elf_is_reported(mbed_breakdown):
    sizes = {".text": 0x300, ".rodata": 0x120, ".ARM.exidx": 0x8, ".data": 0x20, ".bss": 0x858}
    assert linkmap.check_against_elf(mbed_breakdown, sizes) == []
    problems = linkmap.check_against_elf(mbed_breakdown, dict(sizes, **{".text": 0x304}))
    assert len(problems) == 1 and problems[0].startswith("flash:")


# --- real firmware ---------------------------------------------------------------------------

def _check_real_breakdown(project: Path, report: pio.BuildReport, board) -> linkmap.Breakdown:
    elf = project / ".pio" / "build" / board.id / "firmware.elf"
    result = linkmap.breakdown(linkmap.read_map(elf.with_suffix(".map")),
                               board.platformio["platform"], tflm_library=board.tflm["library"])
    assert linkmap.check_against_elf(result, linkmap.elf_section_sizes(elf)) == []
    assert result.flash.total == report.flash_used
    assert result.ram.total == report.ram_used
    for region in (result.flash, result.ram):
        assert sum(region.categories.values()) == region.total
        # Alignment and fill are a few bytes per section; much more means a missed entry.
        assert region.categories["padding"] < 0.01 * region.total + 64
        assert region.categories["other"] == 0, region.other
    return result


@pytest.mark.emulator
@pytest.mark.slow
def test_the_self_test_firmware_breakdown_adds_up(tmp_path, tmp_path_factory, monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    board = profiles.load_board("qemu-m4")
    project = tmp_path / "selftest"
    selftest_project.render_project(project, board)
    report = pio.build(project, board, seeded_core(tmp_path_factory), timeout=600)
    result = _check_real_breakdown(project, report, board)
    flash = result.flash.categories
    assert flash["protocol"] > 3000 and flash["libc"] > 10_000 and flash["board"] > 500
    assert flash["tflm_kernels"] == flash["tflm_runtime"] == flash["model"] == 0
    assert result.ram_not_counted.get("._stack_reserve", 0) >= 16 * 1024
    print(json.dumps(result.to_json(), indent=1))


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_model_firmware_breakdown_adds_up_and_names_its_kernels(tinyforge, tflm_tree,
                                                                  tmp_path_factory, cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    project = tmp_path_factory.mktemp("linkmap-model") / "project"
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--project-dir", project, "--arena", "host", "--json",
                                 env=env, timeout=3600, check_rc=0).stdout)
    board = profiles.load_board("qemu-m4")
    report = pio.BuildReport(seconds=0, ram_used=built["build"]["ram_used"],
                             flash_used=built["build"]["flash_used"])
    result = _check_real_breakdown(project, report, board)
    flash, ram = result.flash, result.ram
    model_bytes = built["model"]["bytes"]
    # g_model (g_model_len too, unless the linker dropped it as unused).
    assert model_bytes <= flash.categories["model"] <= model_bytes + 16
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE"} <= set(flash.kernels)
    assert flash.categories["tflm_runtime"] > 10_000
    assert ram.categories["arena"] == built["arena"]["arena_bytes"]
    print(json.dumps(result.to_json(), indent=1))
