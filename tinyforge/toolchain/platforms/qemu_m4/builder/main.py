# SCons build script of tinyforge's `qemu-m4` PlatformIO dev-platform: bare-metal
# Cortex-M4F firmware (no framework) linked for QEMU's mps2-an386 machine with the
# Arduino Nano 33 BLE's flash and RAM limits (ldscripts/qemu-m4.ld).
#
# Project options it reads from platformio.ini:
#   custom_tflm_exclude  library files to leave out of the build, one pattern per line
#                        (or comma-separated), relative to the library root, e.g.
#                        `tensorflow/lite/micro/debug_log.cpp` or `peripherals/*`.
#                        tinyforge writes it from the board profile's [tflm] exclude_sources:
#                        which files are Arduino-only depends on the TFLM library, so the
#                        list is data, not code.
#
# `pio run -t upload` runs the firmware in QEMU with the UART on the terminal (quit with
# Ctrl-A X). tinyforge itself does not use it: `tinyforge flash` and `tinyforge selftest`
# start QEMU through tinyforge.device.emulator, which connects the UART to a TCP socket.

import fnmatch
import os

from SCons.Script import ARGUMENTS, COMMAND_LINE_TARGETS, AlwaysBuild, Default, DefaultEnvironment  # pylint: disable=import-error

env = DefaultEnvironment()
platform = env.PioPlatform()

MACHINE_FLAGS = ["-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]

env.Replace(
    # .pio/build/<env>/firmware.elf, the name tinyforge (and most platforms) use.
    PROGNAME="firmware",
    AR="arm-none-eabi-gcc-ar",
    AS="arm-none-eabi-as",
    CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++",
    GDB="arm-none-eabi-gdb",
    OBJCOPY="arm-none-eabi-objcopy",
    RANLIB="arm-none-eabi-gcc-ranlib",
    SIZETOOL="arm-none-eabi-size",
    ARFLAGS=["rc"],
    # What counts against the board's flash: code, constants, tables and the initial
    # values of .data (stored in flash, copied to RAM at boot).
    SIZEPROGREGEXP=(r"^(?:\.isr_vector|\.text|\.rodata|\.ARM\.extab|\.ARM\.exidx|"
                    r"\.preinit_array|\.init_array|\.fini_array|\.data)\s+(\d+).*"),
    SIZEDATAREGEXP=r"^(?:\.data|\.bss|\.noinit)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGSUFFIX=".elf",
    # Absolute, and no -T of our own: PlatformIO adds `-T $LDSCRIPT_PATH` itself.
    LDSCRIPT_PATH=os.path.join(platform.get_dir(), "ldscripts", "qemu-m4.ld"),
)

env.Append(
    ASFLAGS=MACHINE_FLAGS,
    ASPPFLAGS=["-x", "assembler-with-cpp"],
    # -g1: line tables and function names only (nothing in flash), so the pc= of a fault
    # line can be looked up with addr2line at almost no compile-time cost.
    CCFLAGS=MACHINE_FLAGS + ["-Os", "-g1", "-ffunction-sections", "-fdata-sections", "-Wall"],
    CFLAGS=["-std=gnu11"],
    # gnu++14 like the Arduino mbed core of the real board, so code that builds here
    # builds there. No exceptions or RTTI: TFLM needs neither and they cost flash.
    CXXFLAGS=["-std=gnu++14", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics",
              "-fno-use-cxa-atexit"],
    CPPDEFINES=[("F_CPU", "$BOARD_F_CPU"), "TINYFORGE_QEMU_M4"],
    LINKFLAGS=MACHINE_FLAGS + [
        "-Os", "-Wl,--gc-sections", "--specs=nano.specs",
        # newlib-nano leaves float formatting out of printf unless asked.
        "-u", "_printf_float",
        "-Wl,-Map,${BUILD_DIR}/${PROGNAME}.map",
    ],
    LIBS=["stdc++", "m", "c", "gcc"],
)

# Link with g++ so libstdc++'s support code (operator new, static init guards) resolves.
env.Replace(LINK="$CXX")


def _excluded_patterns():
    raw = env.GetProjectOption("custom_tflm_exclude", "")
    if isinstance(raw, (list, tuple)):
        raw = "\n".join(raw)
    items = [item.strip() for line in raw.splitlines() for item in line.split(",")]
    return [item.replace("\\", "/").strip("/") for item in items if item]


EXCLUDED = _excluded_patterns()
PROJECT_SRC_DIR = os.path.realpath(env.subst("$PROJECT_SRC_DIR"))
VERBOSE = int(ARGUMENTS.get("PIOVERBOSE", 0))


def _drop_excluded_library_files(node):
    """Build middleware: `None` drops a library file named in custom_tflm_exclude."""
    path = os.path.realpath(node.srcnode().get_abspath())
    # Only library files: the project's own sources (the board runtime that replaces
    # these files) are never dropped, whatever their names.
    if path.startswith(PROJECT_SRC_DIR + os.sep):
        return node
    posix = path.replace(os.sep, "/")
    for pattern in EXCLUDED:
        if fnmatch.fnmatch(posix, "*/" + pattern):
            if VERBOSE:
                print("qemu-m4: leaving out %s (custom_tflm_exclude: %s)" % (path, pattern))
            return None
    return node


if EXCLUDED:
    env.AddBuildMiddleware(_drop_excluded_library_files)

if "nobuild" in COMMAND_LINE_TARGETS:
    target_elf = os.path.join("$BUILD_DIR", "${PROGNAME}.elf")
else:
    target_elf = env.BuildProgram()

AlwaysBuild(env.Alias("nobuild", target_elf))
target_buildprog = env.Alias("buildprog", target_elf, target_elf)

target_size = env.AddPlatformTarget(
    "size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"),
    "Program Size", "Calculate program size")

env.Replace(
    UPLOADER="qemu-system-arm",
    UPLOADERFLAGS=["-M", "mps2-an386", "-nographic", "-semihosting", "-kernel"],
    UPLOADCMD="$UPLOADER $UPLOADERFLAGS $SOURCE",
)
env.AddPlatformTarget(
    "upload", target_elf,
    env.VerboseAction("$UPLOADCMD", "Running $SOURCE in QEMU (mps2-an386); quit with Ctrl-A X"),
    "Upload", "Run the firmware in QEMU with the UART on this terminal")

Default([target_buildprog, target_size])
