"""The fit estimate: every part of the firmware's flash and RAM, the sketch's own included.

The sketch's statics come from what firmware_templates/project/src/main.cpp.j2 declares: a
line buffer of one host message (the same for every model, since inputs arrive in chunks),
the interpreter, the op resolver and the protocol's state. tests/test_qemu_models.py checks
the figures against a real build's symbols; the last test here checks the TFLM object sizes of
the board profiles against the library itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyforge import resources
from tinyforge.board import profiles
from tinyforge.errors import DoesNotFitError
from tinyforge.model import fit, reader

NANO = profiles.load_board("nano33ble")


def _example() -> reader.ModelInfo:
    data = (resources.example_dir() / "gesture_int8.tflite").read_bytes()
    return reader.inspect_bytes(data, "gesture_int8.tflite")


def test_ram_counts_the_sketchs_own_statics():
    info = _example()            # one int8 [1,32,3] input, one output, 5 ops
    report = fit.estimate(NANO, info, op_count=5, arena_bytes=5136)
    assert report.ram_sketch_parts == {
        "line_buffer": 513,                       # kMaxLineLength + 1
        "interpreter": 176,                       # sizeof(tflite::MicroInterpreter)
        "resolver": 12 + 44 * 5,                  # sizeof(MicroMutableOpResolver<5>)
        "protocol_state": 96 + 28 * 2 + 8,        # parser, assembler, views, buffers
    }
    assert report.ram_sketch == 1081
    assert report.ram_total == NANO.memory["framework_ram_bytes"] + 5136 + 1081


def test_the_line_buffer_does_not_grow_with_the_input(models):
    small = _example()
    big = reader.read_model_file(models / "image96_int8.tflite")[1]   # 9,216 input bytes
    assert sum(t.byte_size for t in big.inputs) == 9216
    for info in (small, big):
        parts = fit.sketch_ram(NANO, info, op_count=5)
        assert parts["line_buffer"] == fit.HOST_LINE_BYTES + 1 == 513
    # Before chunked inputs it held one hex-encoded input: 18,496 B for this model.
    assert 2 * 9216 + 64 == 18_496


def test_flash_counts_the_sketch_code_and_its_demo_input_array():
    info = _example()
    assert fit.estimate(NANO, info, op_count=5, arena_bytes=5136).flash_sketch == \
        fit.SKETCH_CODE_BYTES                  # no demo input: the linker drops the array
    report = fit.estimate(NANO, info, op_count=5, arena_bytes=5136, demo_input_bytes=96)
    assert report.flash_sketch == fit.SKETCH_CODE_BYTES + 96     # kDemoInput[kInputBytes]
    assert report.flash_total == (NANO.memory["framework_flash_bytes"] + report.flash_tflm
                                  + report.flash_sketch + info.size)
    assert report.flash_tflm == 30_000 + 4_000 * 5


def test_json_and_text_carry_every_part_in_one_number_format():
    report = fit.estimate(NANO, _example(), op_count=5, arena_bytes=5136)
    data = report.to_json()
    for key in ("flash_sketch", "ram_sketch", "ram_sketch_parts", "flash_total", "ram_total"):
        assert key in data
    assert data["ram_total"] == report.ram_total and data["fits"] is True
    text = "\n".join(report.lines())
    assert "{" not in text and "'" not in text                      # no Python dicts
    assert "line buffer 513 B" in text and "interpreter 176 B" in text
    assert "framework ~65,536 B" in text and "of 262,144 B" in text
    # Every byte count of four digits or more has thousands separators.
    assert not re.search(r"(?<![\d,.])\d{4,} B", text), text


def test_a_misfit_names_the_numbers():
    report = fit.estimate(NANO, _example(), op_count=5, arena_bytes=300_000)
    with pytest.raises(DoesNotFitError) as caught:
        fit.check(report, NANO, "big.tflite")
    assert "RAM: needs ~" in caught.value.details and "300,000 B" in caught.value.details


SIZES_PROGRAM = """
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
static_assert(sizeof(tflite::MicroInterpreter) == {interpreter}, "interpreter_bytes");
static_assert(sizeof(tflite::MicroMutableOpResolver<1>) == {base} + {per_op}, "resolver");
static_assert(sizeof(tflite::MicroMutableOpResolver<7>) == {base} + 7 * {per_op}, "resolver");
"""


@pytest.mark.tflm_tree
@pytest.mark.parametrize("board", profiles.load_all(), ids=lambda b: b.id)
def test_tflm_object_sizes_of_the_profiles_are_the_librarys(board, tflm_tree, tmp_path):
    compiler = shutil.which("arm-none-eabi-g++")
    if compiler is None:
        pytest.skip("arm-none-eabi-g++ is not installed (`make setup` installs it as root)")
    assert board.pointer_bytes == 4
    tflm = board.tflm
    source = tmp_path / "sizes.cpp"
    source.write_text(SIZES_PROGRAM.format(interpreter=tflm["interpreter_bytes"],
                                           base=tflm["resolver_base_bytes"],
                                           per_op=tflm["resolver_per_op_bytes"]))
    src = Path(tflm_tree) / "src"
    result = subprocess.run(
        [compiler, "-mcpu=cortex-m4", "-mthumb", "-std=gnu++14", "-fno-rtti", "-fno-exceptions",
         "-DARDUINO", f"-I{src}", f"-I{src / 'third_party' / 'flatbuffers' / 'include'}",
         "-fsyntax-only", str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
