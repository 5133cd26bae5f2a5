"""Where the flash and RAM went: a breakdown of a GNU ld map file by what the bytes are for.

The linker's map lists every output section (`.text`, `.data`, ...) and, inside it, every
input section with its address, size and origin: an object file, `archive.a(member.o)`,
`*fill*` or `linker stubs`. Each input section is put in one category: the model array, the
tensor arena, TFLM kernels (per op), the TFLM runtime, the serial protocol, the sketch, the
board runtime or framework, libc/libm/libgcc/libstdc++, fill and alignment, or "other"
(listed by origin, never dropped).

Sizes are attributed by address, not by adding up the sizes ld prints: merged string
sections (`.rodata.*.str1.1`) are listed with their pre-merge sizes and overlap. Walking each
output section from its start address, every byte goes to the input section that covers it
first; gaps go to "fill and alignment". So each region's categories add up exactly to the
sizes of its output sections, which `check_against_elf()` compares with the ELF's own
section headers (`arm-none-eabi-size -A`). A region counts the output sections PlatformIO
counts for the board's platform (its SIZEPROGREGEXP/SIZEDATAREGEXP), so the totals are the
`Flash:`/`RAM:` figures `pio run` prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import proc
from ..errors import InputError
from ..system import APT_INSTALL, TOOLCHAIN_PREFIX

__all__ = ["CATEGORIES", "Breakdown", "MapFile", "breakdown", "check_against_elf",
           "classify", "elf_section_sizes", "parse_map", "read_map", "region_patterns"]

# Largest map file read (a TFLM firmware's map is ~0.5 MB; a map is never near this).
MAX_MAP_BYTES = 64 * 1024 * 1024
SIZE_TIMEOUT_S = 30.0

# (key, label) in the order reports show them.
CATEGORIES = (
    ("model", "model (g_model)"),
    ("arena", "tensor arena"),
    ("tflm_kernels", "TFLM kernels"),
    ("tflm_runtime", "TFLM interpreter, allocator, flatbuffers"),
    ("protocol", "serial protocol (tf_protocol)"),
    ("sketch", "sketch"),
    ("board", "board runtime / framework"),
    ("libc", "libc (newlib)"),
    ("libm", "libm"),
    ("libgcc", "libgcc and crt"),
    ("libstdcxx", "libstdc++ / libsupc++"),
    ("padding", "fill and alignment"),
    ("other", "other"),
)
_CATEGORY_KEYS = tuple(key for key, _ in CATEGORIES)

# The output sections PlatformIO adds up for `Flash:` and `RAM:`, per dev-platform: the
# regular expressions of its builder (applied to `size -A -d` lines, "name size addr").
_PLATFORM_SIZE_REGEXPS = {
    # tinyforge/toolchain/platforms/qemu_m4/builder/main.py (a test reads them from there)
    "tinyforge:qemu_m4": (
        r"^(?:\.isr_vector|\.text|\.rodata|\.ARM\.extab|\.ARM\.exidx|"
        r"\.preinit_array|\.init_array|\.fini_array|\.data)\s+(\d+).*",
        r"^(?:\.data|\.bss|\.noinit)\s+(\d+).*"),
    # platform-nordicnrf52 v10.11.0 builder/main.py
    "nordicnrf52": (
        r"^(?:\.text|\.data|\.rodata|\.text.align|\.ARM.exidx)\s+(\d+).*",
        r"^(?:\.data|\.bss|\.noinit)\s+(\d+).*"),
}

# --- classification tables: data about TFLM, newlib and the Arduino mbed core -----------

# TFLM library members that are the runtime, not a kernel (Chirale_TensorFlowLite 2.0.0).
_TFLM_RUNTIME = {
    "all_ops_resolver", "common", "debug_log", "error_reporter", "fake_micro_context",
    "flatbuffer_conversions", "flatbuffer_conversions_bridge", "flatbuffer_utils",
    "greedy_memory_planner", "linear_memory_planner", "memory_helpers",
    "non_persistent_arena_buffer_allocator", "non_persistent_buffer_planner_shim",
    "op_resolver", "op_resolver_bridge", "persistent_arena_buffer_allocator",
    "recording_micro_allocator", "recording_single_arena_buffer_allocator", "schema_utils",
    "single_arena_buffer_allocator", "system_setup", "test_helpers", "test_helper_custom_ops",
    "mock_micro_graph", "tensor_utils_api",
}
# The audio frontend and its FFT ship in the TFLM library but are no interpreter part.
_TFLM_FRONTEND_PREFIXES = ("fft", "filterbank", "frontend", "kiss_fft", "log_lut", "log_scale",
                           "noise_reduction", "pcan_gain_control", "window")
# Helpers several kernels share: counted as kernels, under "(shared)".
_TFLM_SHARED_KERNEL_CODE = {"kernel_util", "kernel_runner", "micro_tensor_utils",
                            "portable_tensor_utils", "tensor_utils", "quantization_util"}
# Kernel files whose name is not their op's name.
_KERNEL_FILE_OPS = {
    "conv": "CONV_2D", "depthwise_conv": "DEPTHWISE_CONV_2D",
    "pooling": "AVERAGE_POOL_2D / MAX_POOL_2D", "reduce": "MEAN / SUM / REDUCE_MAX",
    "elementwise": "ABS / SIN / COS / LOG / SQRT / RSQRT / SQUARE",
    "activations": "RELU / RELU6", "maximum_minimum": "MAXIMUM / MINIMUM",
    "comparisons": "EQUAL / NOT_EQUAL / GREATER / LESS ...", "logical": "LOGICAL_AND / LOGICAL_OR",
    "arg_min_max": "ARG_MIN / ARG_MAX", "lstm_eval": "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "l2norm": "L2_NORMALIZATION", "select": "SELECT_V2",
    "detection_postprocess": "TFLite_Detection_PostProcess", "ethosu": "ETHOSU",
    "circular_buffer": "CIRCULAR_BUFFER", "if": "IF", "while": "WHILE",
}
# CMSIS-NN functions, by name prefix (first match wins; order matters).
_CMSIS_NN_OPS = (
    ("arm_convolve", "CONV_2D"), ("arm_nn_mat_mult_kernel_s8_s16", "CONV_2D"),
    ("arm_nn_mat_mult_s8", "CONV_2D"),
    ("arm_depthwise_conv", "DEPTHWISE_CONV_2D"), ("arm_nn_depthwise_conv", "DEPTHWISE_CONV_2D"),
    ("arm_fully_connected", "FULLY_CONNECTED"), ("arm_max_pool", "MAX_POOL_2D"),
    ("arm_avgpool", "AVERAGE_POOL_2D"), ("arm_softmax", "SOFTMAX"),
    ("arm_nn_softmax", "SOFTMAX"), ("arm_elementwise_add", "ADD"),
    ("arm_elementwise_mul", "MUL"), ("arm_svdf", "SVDF"), ("arm_nn_vec_mat_mult_t_svdf", "SVDF"),
    ("arm_concatenation", "CONCATENATION"), ("arm_reshape", "RESHAPE"),
    ("arm_relu", "RELU / RELU6"), ("arm_lstm", "UNIDIRECTIONAL_SEQUENCE_LSTM"),
    ("arm_transpose_conv", "TRANSPOSE_CONV"),
)
SHARED_KERNEL_CODE = "(shared)"
AUDIO_FRONTEND = "(audio frontend)"

_LIBC_ARCHIVES = {"libc", "libc_nano", "libg", "libg_nano", "libnosys", "librdimon",
                  "librdimon_nano"}
_LIBSTDCXX_ARCHIVES = {"libstdc++", "libstdc++_nano", "libsupc++", "libsupc++_nano"}
# The Arduino mbed core: PlatformIO builds the core and the variant into these archives,
# links the precompiled mbed OS (libmbed.a) and, on the nRF52840, the CryptoCell libraries.
_FRAMEWORK_ARCHIVES = {"libFrameworkArduino", "libFrameworkArduinoVariant", "libmbed",
                       "libcc_310_core", "libcc_310_ext", "libcc_310_trng"}
# Libraries of the Arduino mbed core itself (ArduinoCore-mbed/libraries) that sketches or
# TFLM pull in (Chirale's peripherals.h includes Wire.h).
_FRAMEWORK_LIBRARIES = {"Wire", "SPI", "PDM", "Scheduler", "USBHID", "USBMSD", "ThreadDebug",
                        "KernelDebug", "mbed-memory-status", "MRI"}
_BOARD_RUNTIME_PREFIXES = ("qemu_m4_", "board_runtime")
# A board runtime's sensor source (qemu_m4_sensors.cpp) is rendered only with a sensor
# pipeline, whose state the fit estimate counts (tinyforge.pipeline.ram): with the sketch, so a
# framework figure learned from a pipeline firmware's map does not count its buffers again.
_SENSOR_SOURCE_SUFFIX = "_sensors"

# --- the map file ------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSection:
    name: str        # ".text._ZN6tflite...", "*fill*", "COMMON"
    address: int
    size: int
    origin: str      # object file, "archive.a(member.o)", "" for fill


@dataclass
class OutputSection:
    name: str
    address: int
    size: int
    load_address: int | None = None
    inputs: list[InputSection] = field(default_factory=list)


@dataclass
class MapFile:
    sections: list[OutputSection]
    memory: dict[str, tuple[int, int]]  # region name -> (origin, length)

    def section(self, name: str) -> OutputSection | None:
        return next((s for s in self.sections if s.name == name), None)


_OUTPUT_HEAD = re.compile(r"^(\.[^\s]+|[A-Za-z_][^\s]*)(?:\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)"
                          r"(?:\s+load address 0x([0-9a-fA-F]+))?)?\s*$")
_ADDRESS_SIZE = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)"
                           r"(?:\s+load address 0x([0-9a-fA-F]+))?(?:\s+(.*?))?\s*$")
_INPUT = re.compile(r"^ ([^\s]+)(?:\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)(?:\s+(.*?))?)?\s*$")
_MEMORY_LINE = re.compile(r"^(\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)")
_NOT_OUTPUT_SECTIONS = {"LOAD", "START", "END", "OUTPUT", "INCLUDE", "GROUP"}


def read_map(path: Path) -> MapFile:
    """Read and parse a map file; a missing or foreign file is an `InputError` naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MAP_BYTES:
            raise InputError(f"{path} is {size:,} bytes: too large for a linker map file",
                             hint="give the .map file the linker wrote with -Wl,-Map")
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(f"linker map file {path} does not exist",
                         hint="build the firmware with this tinyforge: its platform writes "
                              "firmware.map next to firmware.elf") from None
    except OSError as exc:
        raise InputError(f"cannot read linker map file {path}: {exc.strerror}",
                         hint="check the file is readable by you, or build again") from None
    parsed = parse_map(text)
    if not parsed.sections:
        raise InputError(f"{path} is not a GNU ld map file (no 'Linker script and memory map')",
                         hint="give the .map file the linker wrote with -Wl,-Map")
    return parsed


def parse_map(text: str) -> MapFile:
    """The output and input sections of a GNU ld map file's text."""
    lines = text.splitlines()
    memory = _memory_configuration(lines)
    try:
        start = lines.index("Linker script and memory map") + 1
    except ValueError:
        return MapFile([], memory)
    sections: list[OutputSection] = []
    current: OutputSection | None = None
    pending_output: str | None = None   # an output section name whose numbers are on the next line
    pending_input: str | None = None    # the same for an input section
    for line in lines[start:]:
        if not line.strip():
            continue
        if pending_output is not None:
            pending, pending_output = pending_output, None
            match = _ADDRESS_SIZE.match(line)
            current = OutputSection(pending, int(match.group(1), 16), int(match.group(2), 16),
                                    _hex(match.group(3))) if match else \
                OutputSection(pending, 0, 0)
            sections.append(current)
            if match:
                continue
        if pending_input is not None:
            pending, pending_input = pending_input, None
            match = _ADDRESS_SIZE.match(line)
            if match and current is not None:
                current.inputs.append(InputSection(pending, int(match.group(1), 16),
                                                   int(match.group(2), 16), match.group(4) or ""))
                continue
        if not line[0].isspace():
            head = _OUTPUT_HEAD.match(line)
            if not head or head.group(1) in _NOT_OUTPUT_SECTIONS or "(" in head.group(1):
                current = None if line.startswith("OUTPUT(") else current
                continue
            if head.group(2) is None:
                pending_output = head.group(1)
                continue
            current = OutputSection(head.group(1), int(head.group(2), 16),
                                    int(head.group(3), 16), _hex(head.group(4)))
            sections.append(current)
            continue
        if current is None:
            continue
        match = _INPUT.match(line)
        if not match or match.group(1).startswith(("*(", "KEEP", "SORT", "[")):
            continue
        name = match.group(1)
        if "(" in name and name != "*fill*":
            continue  # a wildcard pattern line such as `*crtbegin.o(.ctors)`
        if match.group(2) is None:
            pending_input = name
            continue
        origin = "" if name == "*fill*" else (match.group(4) or "")
        current.inputs.append(InputSection(name, int(match.group(2), 16),
                                           int(match.group(3), 16), origin))
    return MapFile(sections, memory)


def _memory_configuration(lines: list[str]) -> dict[str, tuple[int, int]]:
    try:
        start = lines.index("Memory Configuration") + 1
    except ValueError:
        return {}
    regions = {}
    for line in lines[start:]:
        if line.startswith("Linker script and memory map"):
            break
        match = _MEMORY_LINE.match(line)
        if match and match.group(1) != "*default*":
            regions[match.group(1)] = (int(match.group(2), 16), int(match.group(3), 16))
    return regions


def _hex(value: str | None) -> int | None:
    return int(value, 16) if value else None


# --- classification ----------------------------------------------------------------------

def _split_origin(origin: str) -> tuple[str | None, str]:
    """("libfoo", "member stem") for `path/libfoo.a(member.o)`, (None, stem) for an object."""
    match = re.match(r"^(.*?)\(([^()]*)\)$", origin)
    if match:
        archive = Path(match.group(1)).name
        return archive.removesuffix(".a"), _stem(match.group(2))
    return None, _stem(Path(origin).name)


def _stem(name: str) -> str:
    """`conv.o` and PlatformIO's `conv.cpp.o` both give `conv`."""
    for suffix in (".o", ".obj"):
        name = name.removesuffix(suffix)
    for suffix in (".cpp", ".cc", ".cxx", ".c", ".S", ".s"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def kernel_op(member: str) -> str:
    """The TFLite op a TFLM kernel or CMSIS-NN file implements, or "(shared)"."""
    if member.startswith("arm_"):
        return next((op for prefix, op in _CMSIS_NN_OPS if member.startswith(prefix)),
                    SHARED_KERNEL_CODE)
    if member in _TFLM_SHARED_KERNEL_CODE:
        return SHARED_KERNEL_CODE
    base = member.removesuffix("_common")
    return _KERNEL_FILE_OPS.get(base, base.upper())


def _tflm_category(member: str) -> tuple[str, str]:
    if member.startswith("micro_") and member not in _TFLM_SHARED_KERNEL_CODE:
        return "tflm_runtime", member
    if member in _TFLM_RUNTIME:
        return "tflm_runtime", member
    if member.startswith(_TFLM_FRONTEND_PREFIXES):
        return "tflm_kernels", AUDIO_FRONTEND
    return "tflm_kernels", kernel_op(member)


def classify(section: InputSection, *, tflm_library: str = "Chirale_TensorFlowLite"
             ) -> tuple[str, str]:
    """(category key, detail) of one input section; detail is the op for kernels and the
    origin for "other"."""
    if section.name == "*fill*":
        return "padding", "*fill*"
    if "tensor_arena" in section.name:
        return "arena", section.name
    archive, member = _split_origin(section.origin)
    if archive is not None:
        return _archive_category(archive, member, section.origin, tflm_library)
    path = section.origin.replace("\\", "/")
    if f"/{tflm_library}/" in path or f"/lib{tflm_library}" in path:
        return _tflm_category(member)
    if member in ("crti", "crtn", "crtbegin", "crtend"):
        return "libgcc", member
    if member in ("crt0", "crt1"):
        return "libc", member
    if "/src/" in path or path.startswith("src/"):
        return _sketch_category(member)
    if not section.origin:
        return "other", section.name
    return "other", section.origin


def _archive_category(archive: str, member: str, origin: str,
                      tflm_library: str) -> tuple[str, str]:
    if archive == f"lib{tflm_library}":
        return _tflm_category(member)
    if archive in _LIBC_ARCHIVES:
        return "libc", member
    if archive == "libm":
        return "libm", member
    if archive == "libgcc":
        return "libgcc", member
    if archive in _LIBSTDCXX_ARCHIVES:
        return "libstdcxx", member
    if archive in _FRAMEWORK_ARCHIVES or archive[3:] in _FRAMEWORK_LIBRARIES:
        return "board", archive
    return "other", origin


def _sketch_category(member: str) -> tuple[str, str]:
    if member == "model_data":
        return "model", member
    if member == "tf_protocol":
        return "protocol", member
    if member.startswith(_BOARD_RUNTIME_PREFIXES) and not member.endswith(_SENSOR_SOURCE_SUFFIX):
        return "board", member
    return "sketch", member


# --- the breakdown -----------------------------------------------------------------------

@dataclass
class Region:
    """One of PlatformIO's totals (flash or RAM), split by category."""

    name: str
    sections: dict[str, int]
    categories: dict[str, int]
    kernels: dict[str, int]   # TFLM kernel bytes by op
    other: dict[str, int]     # "other" bytes by origin

    @property
    def total(self) -> int:
        return sum(self.sections.values())

    def to_json(self) -> dict:
        return {"total": self.total, "sections": dict(self.sections),
                "categories": dict(self.categories),
                "kernels": dict(sorted(self.kernels.items(), key=lambda kv: -kv[1])),
                "other": dict(sorted(self.other.items(), key=lambda kv: -kv[1]))}


@dataclass
class Breakdown:
    map_path: str | None
    platform: str
    flash: Region
    ram: Region
    # Allocated in RAM but outside PlatformIO's RAM figure (the linker script's stack reserve).
    ram_not_counted: dict[str, int]

    def to_json(self) -> dict:
        return {"map": self.map_path, "platform": self.platform,
                "categories": dict(CATEGORIES),
                "flash": self.flash.to_json(), "ram": self.ram.to_json(),
                "ram_not_counted": dict(self.ram_not_counted)}


def region_patterns(platform: str) -> tuple[re.Pattern, re.Pattern]:
    """PlatformIO's (flash, RAM) size regexps for a board's `platformio.platform`."""
    key = platform if platform in _PLATFORM_SIZE_REGEXPS else platform.split("@")[0]
    if key not in _PLATFORM_SIZE_REGEXPS:
        raise InputError(f"no flash/RAM section rules for the PlatformIO platform '{platform}'",
                         hint="add its SIZEPROGREGEXP/SIZEDATAREGEXP to "
                              "tinyforge/toolchain/linkmap.py")
    flash, ram = _PLATFORM_SIZE_REGEXPS[key]
    return re.compile(flash), re.compile(ram)


def counted_sections(names_sizes: dict[str, int], pattern: re.Pattern) -> dict[str, int]:
    """The sections PlatformIO's regexp counts, the way it applies it to `size -A -d` lines."""
    return {name: size for name, size in names_sizes.items()
            if pattern.match(f"{name}  {size}  0")}


def breakdown(parsed: MapFile, platform: str, *, tflm_library: str = "Chirale_TensorFlowLite",
              map_path: str | None = None) -> Breakdown:
    """Flash and RAM of a linked firmware, by category, adding up to PlatformIO's totals."""
    flash_pattern, ram_pattern = region_patterns(platform)
    sizes = {s.name: s.size for s in parsed.sections}
    regions = {}
    for region, pattern in (("flash", flash_pattern), ("ram", ram_pattern)):
        counted = counted_sections(sizes, pattern)
        regions[region] = _region(region, [parsed.section(n) for n in counted], tflm_library)
    return Breakdown(map_path, platform, regions["flash"], regions["ram"],
                     _ram_not_counted(parsed, set(regions["ram"].sections)))


def _region(name: str, sections: list[OutputSection], tflm_library: str) -> Region:
    categories = dict.fromkeys(_CATEGORY_KEYS, 0)
    kernels: dict[str, int] = {}
    other: dict[str, int] = {}
    for section in sections:
        for entry, size in _attribute(section):
            if entry is None:
                categories["padding"] += size
                continue
            category, detail = classify(entry, tflm_library=tflm_library)
            categories[category] += size
            if category == "tflm_kernels":
                kernels[detail] = kernels.get(detail, 0) + size
            elif category == "other":
                other[detail] = other.get(detail, 0) + size
    return Region(name, {s.name: s.size for s in sections}, categories, kernels, other)


def _attribute(section: OutputSection) -> list[tuple[InputSection | None, int]]:
    """Every byte of the output section, given to the first input section covering it."""
    end = section.address + section.size
    cursor = section.address
    parts: list[tuple[InputSection | None, int]] = []
    ordered = sorted(enumerate(section.inputs), key=lambda item: (item[1].address, item[0]))
    for _, entry in ordered:
        if entry.size <= 0:
            continue
        start, stop = max(entry.address, cursor), min(entry.address + entry.size, end)
        if stop <= start:
            continue
        if start > cursor:
            parts.append((None, start - cursor))
        parts.append((entry, stop - start))
        cursor = stop
    if end > cursor:
        parts.append((None, end - cursor))
    return parts


def _ram_not_counted(parsed: MapFile, counted: set[str]) -> dict[str, int]:
    ram = parsed.memory.get("RAM")
    if ram is None:
        return {}
    low, high = ram[0], ram[0] + ram[1]
    return {s.name: s.size for s in parsed.sections
            if s.name not in counted and s.size and low <= s.address < high}


# --- checking against the ELF --------------------------------------------------------------

def elf_section_sizes(elf: Path) -> dict[str, int]:
    """Section name -> size from the ELF's section headers (`arm-none-eabi-size -A -d`)."""
    result = proc.run([TOOLCHAIN_PREFIX + "size", "-A", "-d", str(elf)], timeout=SIZE_TIMEOUT_S,
                      install_hint=APT_INSTALL, what="arm-none-eabi-size")
    sizes = {}
    for line in result.output:
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def check_against_elf(result: Breakdown, elf_sizes: dict[str, int]) -> list[str]:
    """Differences between the map's counted sections and the ELF's; empty when they agree."""
    problems = []
    flash_pattern, ram_pattern = region_patterns(result.platform)
    for region, pattern in ((result.flash, flash_pattern), (result.ram, ram_pattern)):
        # Empty output sections are in the map but not in the ELF.
        expected = {n: s for n, s in counted_sections(elf_sizes, pattern).items() if s}
        found = {n: s for n, s in region.sections.items() if s}
        if expected != found:
            problems.append(f"{region.name}: the map has {found}, the ELF {expected}")
        if sum(region.categories.values()) != region.total:
            problems.append(f"{region.name}: categories add up to "
                            f"{sum(region.categories.values())}, sections to {region.total}")
    return problems
