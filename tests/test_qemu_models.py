"""Real models on the emulated Cortex-M4: built with the board's TFLM library, run in QEMU,
their int8 outputs compared through `tinyforge validate` with the host build of the same
library (the reference when a tree is at hand, docs/reference.md).

The model tests need a TFLM library source tree ($TINYFORGE_TFLM, e.g. a checkout of
Chirale_TensorFlowLite v2.0.0 kept outside the repository) and take ~5 minutes the first time:
the library's 211 files compile once per project.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from qemu_support import require_emulator, seeded_core, write_project

from tinyforge.board import profiles
from tinyforge.device import emulator, protocol
from tinyforge.device.conversation import Conversation
from tinyforge.errors import DoesNotFitError
from tinyforge.model import fit
from tinyforge.toolchain import pio

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "tinyforge" / "example"


@pytest.fixture(scope="module")
def qemu_project(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("qemu-models") / "project"


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_bundled_example_runs_on_qemu_and_matches_host_tflm(tinyforge, tflm_tree, qemu_project,
                                                            tmp_path_factory, cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    run = tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--project-dir",
                    qemu_project, "--json", env=env, timeout=1800, check_rc=0)
    built = json.loads(run.stdout)
    # A new project: every file is new, although the arena measurement wrote it first.
    assert set(built["files"].values()) == {"create"}
    # PlatformIO's own lines stay behind -v; above all the measurement build's RAM bar, which
    # is nearly all the RAM on purpose.
    assert not [line for line in run.stderr.splitlines()
                if line.strip().startswith(("Linking", "RAM:", "Flash:"))], run.stderr
    arena = built["arena"]
    assert arena["source"] == "device"
    assert arena["device"]["minimum_bytes"] < arena["host"]["minimum_bytes"]
    assert built["build"]["flash_used"] < 983_040 and built["build"]["ram_used"] < 262_144
    # The bundled example has a demo input: its 96 bytes are linked and estimated.
    elf = Path(built["build"]["firmware"])
    assert _linked_bytes(elf.with_suffix(".map"))["model_settings.o"] > 96
    assert built["fit"]["flash_sketch"] == fit.SKETCH_CODE_BYTES + 96
    report = json.loads(tinyforge("validate", "--project-dir", qemu_project, "--data",
                                  EXAMPLE / "calibration.npz", "--json", env=env,
                                  check_rc=0).stdout)
    assert report["samples"] == 128
    # The reference is the board's own TFLM compiled for the host (the build's --tflm tree).
    assert report["reference"].startswith("host build of Chirale_TensorFlowLite 2.0.0 at ")
    assert report["exact_matches"] == 128, report["mismatches"]
    assert report["top1_agreement"] == 1.0
    monitor = tinyforge("monitor", "--project-dir", qemu_project, "--count", "1", "--timeout",
                        "20", env=env, check_rc=0)
    assert "shake" in monitor.stdout  # the built-in demo input is a shake


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_convolutional_int8_model_matches_host_tflm(tinyforge, tflm_tree, models, qemu_project,
                                                      tmp_path_factory, cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    # Same project as the example: only the model's files change, so this build is incremental.
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--model", models / "conv_int8.tflite", "--project-dir",
                                 qemu_project, "--json", env=env, timeout=1800,
                                 check_rc=0).stdout)
    assert built["ops"] == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"]
    assert built["arena"]["source"] == "device"
    report = json.loads(tinyforge("validate", "--project-dir", qemu_project, "--random", "40",
                                  "--json", env=env, check_rc=0).stdout)
    assert report["reference"].startswith("host build of Chirale_TensorFlowLite 2.0.0 at ")
    assert report["exact_matches"] == 40, report["mismatches"]


@pytest.mark.emulator
def test_firmware_too_big_for_flash_is_refused_at_link_time_with_numbers(tmp_path,
                                                                        tmp_path_factory):
    require_emulator()
    core = seeded_core(tmp_path_factory)
    sketch = (
        '#include "board_runtime.h"\n'
        "// 1.1 MB of constants: more than the Nano 33 BLE's 983,040 bytes of flash.\n"
        "extern const unsigned char kBlob[1100000];\n"
        "const unsigned char kBlob[1100000] = {1};\n"
        "void setup() { BoardSerialBegin(115200); BoardSerialWrite((const char*)kBlob, 1); }\n"
        "void loop() {}\n")
    write_project(tmp_path, sketch)
    with pytest.raises(DoesNotFitError) as caught:
        pio.build(tmp_path, profiles.load_board("qemu-m4"), core, timeout=600)
    error = caught.value
    assert "does not fit" in error.message
    assert "FLASH: over by" in error.details
    over = int(error.details.split("over by ")[1].split(" ")[0].replace(",", ""))
    assert 100_000 < over < 150_000


@pytest.mark.tflm_tree
def test_measuring_in_the_users_project_never_replaces_an_edited_file(tinyforge, tflm_tree,
                                                                      models, tmp_path, cli_env,
                                                                      tmp_path_factory):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    project = tmp_path / "p"
    tinyforge("build", "--board", "qemu-m4", "--model", models / "conv_int8.tflite",
              "--project-dir", project, "--arena", "host", "--no-compile", env=env, check_rc=0)
    sketch = project / "src" / "main.cpp"
    sketch.write_text(sketch.read_text() + "// mine\n")
    result = tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree, "--model",
                       models / "dense_int8.tflite", "--project-dir", project, env=env)
    assert result.returncode == 1
    assert "src/main.cpp" in result.stderr and "--overwrite" in result.stderr
    assert sketch.read_text().endswith("// mine\n")
    assert not (project / ".pio").exists(), "nothing was built"


def _as_platformio_downloaded_it(tflm_tree: Path, project: Path, board) -> Path:
    """The TFLM tree where PlatformIO puts the board's pinned lib_deps entry, with its .piopm."""
    copy = project / ".pio" / "libdeps" / board.id / board.tflm["library"]
    shutil.copytree(tflm_tree, copy, ignore=shutil.ignore_patterns(".git"))
    spec = {"owner": None, "id": None, "name": board.tflm["library"], "requirements": None,
            "uri": "git+" + board.tflm["source"]}
    (copy / ".piopm").write_text(json.dumps({"type": "library", "name": board.tflm["library"],
                                             "version": "2.0.0+sha.46da2f9", "spec": spec}))
    return copy
def _answer(talk: Conversation, lines: list[bytes], seq: int) -> protocol.Result:
    for line in lines:
        talk.send(line)
    answer = talk.wait_for(lambda e: isinstance(e, (protocol.Result, protocol.DeviceErrorMessage))
                           and e.seq == seq, timeout=30, what=f"answer to IN seq={seq}")
    assert isinstance(answer, protocol.Result), answer
    return answer


def _object_statics(obj: Path) -> dict[str, int]:
    """Size of every variable in static RAM (.bss/.data) an object file defines."""
    nm = shutil.which("arm-none-eabi-nm")
    out = subprocess.run([nm, "-S", "-C", obj], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[2] in "bBdD":
            sizes[parts[3].replace("(anonymous namespace)::", "")] = int(parts[1], 16)
    return sizes


def _linked_bytes(map_file: Path) -> dict[str, int]:
    """Flash bytes each object contributes to the linked firmware, from the linker map."""
    text = map_file.read_text()
    text = text[text.index("Linker script and memory map"):]
    flash_sections = (".text", ".rodata", ".data", ".init_array")
    sizes: dict[str, int] = defaultdict(int)
    output, pending = None, False
    for line in text.splitlines():
        if (header := re.match(r"^(\.[\w.]+)(\s|$)", line)):
            output, pending = header.group(1), False
            continue
        if output not in flash_sections:
            continue
        if (entry := re.match(r"^ \S+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)", line)):
            sizes[Path(entry.group(2)).name] += int(entry.group(1), 16)
        elif re.match(r"^ \S+$", line):
            pending = True              # a long section name: its figures are on the next line
        elif pending and (entry := re.match(r"^\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)", line)):
            sizes[Path(entry.group(2)).name] += int(entry.group(1), 16)
            pending = False
    return sizes


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_the_library_platformio_downloaded_gives_the_device_arena_without_a_tree(
        tinyforge, tflm_tree, tmp_path, tmp_path_factory, cli_env):
    """A nano33ble project whose pinned TFLM PlatformIO has downloaded: its arena is measured on
    the emulated M4 with that copy (no --tflm, no TINYFORGE_TFLM), and a plain `inspect` shows
    the same figure from the cache."""
    require_emulator()
    # An arena cache of its own: the other tests measured this model with the same content.
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)),
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    board = profiles.load_board("nano33ble")
    project = tmp_path / "p"
    _as_platformio_downloaded_it(tflm_tree, project, board)
    model = EXAMPLE / "gesture_int8.tflite"
    built = json.loads(tinyforge("build", "--board", "nano33ble", "--model", model,
                                 "--project-dir", project, "--no-compile", "--json", env=env,
                                 timeout=1800, check_rc=0).stdout)
    assert built["arena"]["source"] == "device"
    probes = list((tmp_path / "xdg" / "tinyforge" / "arena-probe").glob("*/platformio.ini"))
    assert len(probes) == 1 and f"symlink://{project.resolve()}/.pio/libdeps" in \
        probes[0].read_text(), "measured with the downloaded copy"
    ini = (project / "platformio.ini").read_text()
    assert f"Chirale_TensorFlowLite={board.tflm['source']}" in ini and "symlink" not in ini
    inspected = json.loads(tinyforge("inspect", model, "--board", "nano33ble", "--json", env=env,
                                     check_rc=0).stdout)
    assert inspected["arena"]["source"] == "device"
    assert inspected["arena"]["device"] == built["arena"]["device"]
    assert inspected["arena_bytes"] == built["arena"]["arena_bytes"]


@pytest.mark.slow
@pytest.mark.tflm_tree
def test_a_qemu_project_measures_and_builds_with_its_own_downloaded_library(
        tinyforge, tflm_tree, models, tmp_path, tmp_path_factory, cli_env):
    """The measurement build in the project itself keeps the pinned lib_deps entry, so the
    final build changes no platformio.ini line (which would make PlatformIO rebuild all)."""
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)),
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    board = profiles.load_board("qemu-m4")
    project = tmp_path / "p"
    _as_platformio_downloaded_it(tflm_tree, project, board)
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--model",
                                 models / "conv_int8.tflite", "--project-dir", project,
                                 "--arena", "device", "--json", env=env, timeout=1800,
                                 check_rc=0).stdout)
    assert built["arena"]["source"] == "device"
    assert f"Chirale_TensorFlowLite={board.tflm['source']}" in \
        (project / "platformio.ini").read_text()
    # The measurement built TFLM; the final build only what the measured arena changed (an
    # edited platformio.ini would have made PlatformIO start over: TFLM again, from the cache).
    assert built["build"]["compiled_files"] < 10 and built["build"]["cached_files"] == 0, \
        built["build"]
    report = json.loads(tinyforge("validate", "--project-dir", project, "--random", "8",
                                  "--json", env=env, check_rc=0).stdout)
    assert report["exact_matches"] == 8, report["mismatches"]
def test_a_96x96_input_travels_in_chunks_and_matches_host_tflm(tinyforge, tflm_tree, models,
                                                               qemu_project, tmp_path_factory,
                                                               cli_env):
    require_emulator()
    env = dict(cli_env, TINYFORGE_PIO_CORE_DIR=str(seeded_core(tmp_path_factory)))
    built = json.loads(tinyforge("build", "--board", "qemu-m4", "--tflm", tflm_tree,
                                 "--model", models / "image96_int8.tflite", "--project-dir",
                                 qemu_project, "--json", env=env, timeout=1800,
                                 check_rc=0).stdout)
    input_bytes = 96 * 96
    elf = Path(built["build"]["firmware"])
    with emulator.launch(elf) as link:
        talk = Conversation(link)
        boot = talk.wait_for(lambda e: isinstance(e, protocol.Boot), timeout=15, what="BOOT")
        assert boot.max_line == fit.HOST_LINE_BYTES == 512
        sample = bytes(range(256)) * (input_bytes // 256)
        lines = protocol.encode_input_lines(1, sample, boot.max_line)
        assert len(lines) > 30 and all(len(line) - 1 <= boot.max_line for line in lines)
        first = _answer(talk, lines, 1)
        # The whole input as one line, as firmware before chunked IN took it: 18 KB of hex is
        # far too long for the line buffer now.
        talk.send(protocol.encode_input(2, sample))
        refused = talk.wait_for(lambda e: isinstance(e, protocol.DeviceErrorMessage),
                                timeout=15, what="ERR")
        assert refused.code == "LINE_TOO_LONG"
        # A PROBE whose arena is too small fails, and the firmware still answers inputs:
        # it rebuilt its interpreter on the whole arena.
        talk.send(protocol.encode("PROBE", arena=1024))
        probe = talk.wait_for(lambda e: isinstance(e, protocol.OtherMessage)
                              and e.type == "ARENA", timeout=15, what="ARENA")
        assert probe.fields["status"] == "error"
        again = _answer(talk, protocol.encode_input_lines(3, sample, boot.max_line), 3)
        assert again.outputs == first.outputs
    report = json.loads(tinyforge("validate", "--project-dir", qemu_project, "--random", "12",
                                  "--json", env=env, check_rc=0).stdout)
    assert report["samples"] == 12
    assert report["exact_matches"] == 12, report["mismatches"]

    # The estimate's sketch figures are what this firmware really declares and links.
    objects = elf.parent / "src"
    statics = _object_statics(objects / "main.o")
    parts = built["fit"]["ram_sketch_parts"]
    assert statics.pop("line_buffer") == parts["line_buffer"] == fit.HOST_LINE_BYTES + 1
    assert statics.pop("interpreter_storage") == parts["interpreter"]
    assert statics.pop("resolver") == parts["resolver"]
    assert statics.pop("tensor_arena") == built["arena"]["arena_bytes"]
    assert _object_statics(objects / "tf_protocol.o") == {}    # the protocol keeps no state
    state = sum(statics.values())
    assert state <= parts["protocol_state"] < state + 32, statics
    linked = _linked_bytes(elf.with_suffix(".map"))
    sketch = linked["main.o"] + linked["tf_protocol.o"] + linked["model_settings.o"]
    assert linked["model_settings.o"] < 1024      # no demo input: its array is not linked
    flash_sketch = built["fit"]["flash_sketch"]
    assert flash_sketch == fit.SKETCH_CODE_BYTES
    assert flash_sketch - 1500 < sketch <= flash_sketch, (sketch, flash_sketch)
