"""Firmware templates that must compile cleanly wherever they go.

- board_runtime.h declares setup()/loop() as ArduinoCore-API's Common.h does (C linkage), so
  a file may include it before or after Arduino.h; checked with the host g++ against a
  declaration written the same way.
- The qemu-m4 start-up never calls main() (ISO C++ forbids it; -Wpedantic says so).
The real Arduino mbed core compile is described in docs/boards.md; the model sketch itself
compiles in the TFLM tier (tests/test_qemu_models.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMON = REPO / "firmware_templates" / "common"
QEMU_RUNTIME = REPO / "firmware_templates" / "runtime" / "qemu-m4"
# How ArduinoCore-API's api/Common.h declares the entry points (inside extern "C").
ARDUINO_DECLARATION = ('#ifdef __cplusplus\nextern "C" {\n#endif\nvoid setup(void);\n'
                       'void loop(void);\n#ifdef __cplusplus\n}\n#endif\n')
SKETCH = "void setup() {}\nvoid loop() {}\n"


@pytest.mark.parametrize("order", ["runtime header first", "Arduino header first"])
def test_board_runtime_h_agrees_with_arduinos_declaration_of_setup_and_loop(gxx, tmp_path,
                                                                            order):
    (tmp_path / "Arduino.h").write_text(ARDUINO_DECLARATION)
    includes = ['#include "board_runtime.h"', '#include "Arduino.h"']
    if order == "Arduino header first":
        includes.reverse()
    source = tmp_path / "sketch.cpp"
    source.write_text("\n".join(includes) + "\n" + SKETCH)
    obj = tmp_path / "sketch.o"
    result = subprocess.run([gxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", f"-I{COMMON}",
                             f"-I{tmp_path}", "-c", str(source), "-o", str(obj)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True,
                             check=True).stdout.split()
    # C linkage: the Arduino core's main() finds them by their plain names.
    assert "setup" in symbols and "loop" in symbols


def test_qemu_m4_start_up_compiles_pedantically_without_calling_main(tmp_path):
    compiler = shutil.which("arm-none-eabi-g++")
    if compiler is None:
        pytest.skip("arm-none-eabi-g++ is not installed (`make setup` installs it as root)")
    result = subprocess.run(
        [compiler, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
         "-std=gnu++14", "-Os", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
         f"-I{COMMON}", f"-I{QEMU_RUNTIME}", "-c", str(QEMU_RUNTIME / "qemu_m4_startup.cpp"),
         "-o", str(tmp_path / "startup.o")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
