"""Every bad input gets a clear message naming it, a fix, exit code 1, and nothing written."""

from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import handlers_installed, watchdog

SINE_FLOAT = Path(__import__("tflite_micro").__file__).parent / "python" / "tflite_micro" / \
    "sine_float.tflite"


def _refused(result, *phrases: str, project: Path | None = None) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    if project is not None:
        assert not project.exists(), "a refused build must not leave a project behind"


def _build(tinyforge, model, project, *extra):
    return tinyforge("build", "--model", model, "--project-dir", project, "--no-compile", *extra)


def test_not_a_tflite_file(tinyforge, tmp_path):
    model = tmp_path / "notes.tflite"
    model.write_text("this is not a model\n")
    _refused(_build(tinyforge, model, tmp_path / "p"), "notes.tflite",
             "not a TensorFlow Lite model", project=tmp_path / "p")


def test_missing_model_file(tinyforge, tmp_path):
    _refused(_build(tinyforge, tmp_path / "nope.tflite", tmp_path / "p"), "nope.tflite",
             "does not exist", project=tmp_path / "p")


def test_unknown_model_kind(tinyforge, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07onnx")
    _refused(_build(tinyforge, model, tmp_path / "p"), "model.onnx", project=tmp_path / "p")


def test_truncated_flatbuffer(tinyforge, models, tmp_path):
    model = tmp_path / "cut.tflite"
    model.write_bytes((models / "conv_int8.tflite").read_bytes()[:1500])
    _refused(_build(tinyforge, model, tmp_path / "p"), "cut.tflite", "truncated or corrupt",
             project=tmp_path / "p")


def test_corrupt_flatbuffer(tinyforge, tmp_path):
    data = bytearray(os.urandom(4096))
    data[0:4] = (0xFFFFFF00).to_bytes(4, "little")  # root table offset far outside the file
    data[4:8] = b"TFL3"
    model = tmp_path / "garbage.tflite"
    model.write_bytes(bytes(data))
    _refused(_build(tinyforge, model, tmp_path / "p"), "garbage.tflite", "truncated or corrupt",
             project=tmp_path / "p")


def test_float_model_where_int8_is_required(tinyforge, tmp_path):
    result = _build(tinyforge, SINE_FLOAT, tmp_path / "p")
    _refused(result, "sine_float.tflite", "float edges where an integer model is required",
             "float32",
             "--quantize float32", project=tmp_path / "p")
    accepted = _build(tinyforge, SINE_FLOAT, tmp_path / "p", "--quantize", "float32")
    assert accepted.returncode == 0, accepted.stderr


def test_all_unsupported_ops_are_named(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "unsupported_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "3 ops", "ATAN2", "GELU", "TOPK_V2", "Chirale_TensorFlowLite 2.0.0",
             project=tmp_path / "p")
    assert "FULLY_CONNECTED" not in result.stderr


def test_custom_ops_are_named_as_custom(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "custom_op.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "Erfinv (custom op)", "MatrixDeterminant (custom op)", "AddCustom",
             project=tmp_path / "p")


def test_per_channel_dense_weights_are_refused_for_a_tflm_that_ignores_them(tinyforge, models,
                                                                          tmp_path):
    result = _build(tinyforge, models / "dense_per_channel_int8.tflite", tmp_path / "p")
    _refused(result, "dense_per_channel_int8.tflite", "per-channel FULLY_CONNECTED",
             "Chirale_TensorFlowLite 2.0.0", "tinyforge build --model MODEL.keras",
             project=tmp_path / "p")


def test_unsupported_type_is_caught_by_the_host_dry_run(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "fp16.tflite", tmp_path / "p", "--quantize", "float32")
    _refused(result, "fp16.tflite", "host TFLM", "DEQUANTIZE", project=tmp_path / "p")


def test_model_too_big_for_flash(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "big_flash_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "does not fit", "flash", "983,040", "--force", project=tmp_path / "p")
    forced = _build(tinyforge, models / "big_flash_float.tflite", tmp_path / "p",
                    "--quantize", "float32", "--force")
    assert forced.returncode == 0 and "may not fit" in forced.stderr


def test_arena_too_big_for_ram(tinyforge, models, tmp_path):
    result = _build(tinyforge, models / "big_arena_float.tflite", tmp_path / "p",
                    "--quantize", "float32")
    _refused(result, "does not fit", "RAM", "262,144", "tensor arena", project=tmp_path / "p")


EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example"


def test_missing_calibration_for_int8_conversion(tinyforge, tmp_path):
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p")
    _refused(result, "calibration", "--calibration", project=tmp_path / "p")
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p", "--calibration",
                    tmp_path / "missing.npz")
    _refused(result, "missing.npz", project=tmp_path / "p")


@pytest.mark.tensorflow
def test_wrongly_shaped_calibration(tinyforge, tmp_path):
    import numpy as np
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((4, 3, 32), dtype=np.float32))
    result = _build(tinyforge, EXAMPLE / "gesture.keras", tmp_path / "p", "--calibration",
                    samples)
    _refused(result, "samples.npy", "[4, 3, 32]", "[1, 32, 3]", project=tmp_path / "p")


def test_unknown_board_lists_known_ones(tinyforge, tmp_path):
    result = tinyforge("build", "--board", "uno", "--no-compile", "--project-dir", tmp_path / "p")
    _refused(result, "unknown board 'uno'", "nano33ble", project=tmp_path / "p")


@pytest.mark.parametrize("change, phrase", [
    ('flash_bytes = 983_040', "missing field 'memory.flash_bytes'"),
    ('flash_bytes = "lots"', "'memory.flash_bytes' must be an integer"),
    ('flash_byte = 983_040\nflash_bytes = 983_040', "unknown field 'memory.flash_byte'"),
    ('usb_app = "2341-805a"', "serial.usb_app must look like"),
    ('[memory', "not valid TOML"),
])
def test_invalid_board_profile(tinyforge, cli_env, tmp_path, change, phrase):
    original = (Path(__file__).parent.parent / "boards" / "nano33ble.toml").read_text()
    if change == 'flash_bytes = 983_040':
        text = original.replace("flash_bytes = 983_040\n", "")
    elif change.startswith("usb_app"):
        text = original.replace('usb_app = "2341:805a"', change)
    elif change == "[memory":
        text = original.replace("[memory]", "[memory")
    else:
        text = original.replace("flash_bytes = 983_040", change)
    boards = tmp_path / "myboards"
    boards.mkdir()
    (boards / "nano33ble.toml").write_text(text)
    env = dict(cli_env, TINYFORGE_BOARDS_PATH=str(boards))
    result = tinyforge("build", "--no-compile", "--project-dir", tmp_path / "p", env=env)
    _refused(result, str(boards / "nano33ble.toml"), phrase, project=tmp_path / "p")


def test_project_dir_not_writable(tinyforge, models, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _build(tinyforge, models / "dense_int8.tflite", blocker / "project")
    _refused(result, "a-file", "--project-dir")
    if os.geteuid() != 0:  # root ignores directory permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _build(tinyforge, models / "dense_int8.tflite", locked / "project")
        _refused(result, "not writable", project=locked / "project")


@pytest.mark.slow  # nine interrupted renders in child processes
def test_ctrl_c_during_rendering_leaves_the_previous_project_intact(models, tmp_path, cli_env,
                                                                   tinyforge):
    def argv(model: str, project: Path) -> list[str]:
        return ["build", "--no-compile", "--project-dir", str(project), "--model",
                str(models / model)]

    # Renders are deterministic, so the complete project for each model is known in advance.
    complete = {}
    for model in ("conv_int8.tflite", "dense_int8.tflite"):
        tinyforge(*argv(model, tmp_path / model), check_rc=0)
        complete[model] = _snapshot(tmp_path / model)
    project = tmp_path / "p"
    tinyforge(*argv("conv_int8.tflite", project), check_rc=0)
    current, other = "conv_int8.tflite", "dense_int8.tflite"
    # Interrupt a render of the other model at many points, counted from the moment the child
    # has tinyforge's own handlers in place (a signal before that hits Python's start-up,
    # which tests/test_device_boundary.py covers): the project must always be one complete
    # render, never a mix, and every interrupted run exits 130 without a traceback. At delay
    # 0 the child has all its imports, the model checks and two arena searches still ahead of
    # its first write, so at least that run is interrupted before writing.
    interrupted_before_commit = 0
    for delay in (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.2, 1.6):
        child = subprocess.Popen([sys.executable, "-m", "tinyforge", *argv(other, project)],
                                 env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for_handlers(child)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert b"Traceback" not in err, err.decode()
        # 0 only when the signal came after the command had finished its work.
        assert child.returncode in (0, 130), (child.returncode, err)
        now = _snapshot(project)
        assert now in (complete[current], complete[other]), "the project is a mix of renders"
        if now == complete[other]:
            current, other = other, current
        elif child.returncode == 130:
            interrupted_before_commit += 1
    assert interrupted_before_commit, "no run was interrupted before writing"


def _wait_for_handlers(child: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not handlers_installed(child.pid):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "tinyforge never installed its signal handlers"
        time.sleep(0.002)


def _snapshot(project: Path) -> dict[str, bytes]:
    return {p.relative_to(project).as_posix(): p.read_bytes()
            for p in sorted(project.rglob("*")) if p.is_file()}


# --- the bad-input matrix -------------------------------------------------------------------
#
# Every row is one bad input. Each runs `tinyforge` (in this process through `cli.main`, under
# a watchdog that fails the test if the command blocks, on a FIFO say; or with spawn=True as a
# real child process where only a process shows it: start-up) with HOME, the caches, the
# PlatformIO core dirs and TMPDIR inside the case's own folder, and checks:
#   - exit code 1 (or 2), no traceback, the phrases, and a last line `hint: ...`;
#   - nothing written anywhere in the case's folder (HOME, caches, TMPDIR, the inputs, the
#     project): compared entry by entry with lstat, so FIFOs and sparse files are not read;
#   - no process left behind (this process's descendants, and any process carrying the
#     case's marker in its environment).

import contextlib
import dataclasses
import json
import resource
import stat
import struct
import uuid
import zipfile
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BOARDS = REPO / "boards"
GESTURE = EXAMPLE / "gesture_int8.tflite"
IS_ROOT = os.geteuid() == 0
TWO_GB = 2 * 1024 ** 3


class Case:
    """The folder of one bad-input case: inputs, a HOME, a TMPDIR and the project path."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.inputs = root / "inputs"
        self.project = root / "project"
        for folder in (self.home, self.tmp, self.inputs):
            folder.mkdir(parents=True)
        self.env = {
            "HOME": str(self.home), "TMPDIR": str(self.tmp),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "PLATFORMIO_CORE_DIR": str(self.home / ".platformio"),
            "TINYFORGE_PIO_CORE_DIR": str(self.home / ".tinyforge" / "platformio"),
        }
        self.unset: list[str] = []

    # Inputs.
    def file(self, name: str, data: bytes | str) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def fifo(self, name: str) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return path

    def sparse(self, name: str, size: int = TWO_GB) -> Path:
        path = self.inputs / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path

    def link(self, name: str, target: str | Path) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return path

    def profile(self, board: str, old: str, new: str, *, name: str | None = None) -> Path:
        """A copy of boards/BOARD.toml with `old` replaced (once) by `new`, found first."""
        text = (BOARDS / f"{board}.toml").read_text()
        assert text.count(old) == 1, old
        path = self.file(f"boards/{name or board}.toml", text.replace(old, new))
        self.env["TINYFORGE_BOARDS_PATH"] = str(path.parent)
        return path

    def project_with_manifest(self, manifest) -> Path:
        path = self.project / ".tinyforge" / "manifest.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode())
        return self.project

    def built_project(self, board: str) -> Path:
        """A project as `build` leaves it for `flash`: its manifest and an ELF."""
        self.project_with_manifest({"board": board})
        elf = self.project / ".pio" / "build" / board / "firmware.elf"
        elf.parent.mkdir(parents=True)
        elf.write_bytes(b"\x7fELF")
        return self.project

    # Command lines.
    def build(self, *extra, model: Path | None = GESTURE, board: str = "nano33ble") -> list:
        model_args = ["--model", model] if model is not None else []
        return ["build", "--board", board, "--no-compile", "--project-dir", self.project,
                *model_args, *extra]


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    make: Callable[[Case], list]    # makes the inputs, returns the command line
    phrases: tuple[str, ...]
    spawn: bool = False             # a real `tinyforge` process instead of cli.main
    needs_non_root: bool = False    # permissions mean nothing to root
    needs_emulator: bool = False    # reaches the device arena measurement (toolchain, QEMU)
    exit_code: int = 1


def _npy_header(shape, descr: str = "<f4", payload: bytes = b"") -> bytes:
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + payload


def _npz(members: dict[str, bytes]) -> bytes:
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npz_claiming(size: int) -> bytes:
    """A valid .npz whose member's uncompressed size, in both zip headers, says `size`."""
    data = bytearray(_npz({"x.npy": _npy_header((1, 32, 3), payload=bytes(384))}))
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)
    struct.pack_into("<I", data, 22, size)
    return bytes(data)


def _with_schema_version(model: bytes, version: int) -> bytes:
    """The model with its flatbuffer's schema version field rewritten."""
    from tinyforge.model import reader
    root = reader.schema().Model.GetRootAsModel(model, 0)
    position = root._tab.Pos + root._tab.Offset(4)  # field 0 of the Model table: version
    data = bytearray(model)
    struct.pack_into("<I", data, position, version)
    assert reader.inspect_bytes(bytes(data), "x").schema_version == version
    return bytes(data)


def _calibration(case: Case, path: Path) -> list:
    # The calibration is read (and refused) before TensorFlow is even looked for.
    return case.build("--calibration", path, model=EXAMPLE / "gesture.keras")


def _unwritable_home(case: Case) -> None:
    """HOME is a regular file: nothing can be created under it, not even by root."""
    home = case.file("home-is-a-file", "not a folder")
    case.env["HOME"] = str(home)
    for name in ("XDG_CACHE_HOME", "PLATFORMIO_CORE_DIR", "TINYFORGE_PIO_CORE_DIR"):
        del case.env[name]
        case.unset.append(name)


def _home_then(argv_of: Callable[[Case], list]) -> Callable[[Case], list]:
    def make(case: Case) -> list:
        _unwritable_home(case)
        return argv_of(case)
    return make


# A stand-in for a TFLM tree: just the resolver header, in TFLM's own form, for the gesture
# model's ops. The measurement fails before anything would be compiled.
_RESOLVER_HEADER = "\n".join(
    f"  TfLiteStatus Add{method}() {{\n    return AddBuiltin(BuiltinOperator_{op}, "
    f"Register_{op}(), Parse{method});\n  }}"
    for op, method in (("CONV_2D", "Conv2D"), ("FULLY_CONNECTED", "FullyConnected"),
                       ("MAX_POOL_2D", "MaxPool2D"), ("RESHAPE", "Reshape"),
                       ("SOFTMAX", "Softmax")))


def _arena_probe_in_unwritable_cache(case: Case) -> list:
    tree = case.inputs / "tflm"
    case.file("tflm/src/tensorflow/lite/micro/micro_mutable_op_resolver.h", _RESOLVER_HEADER)
    case.env["XDG_CACHE_HOME"] = str(case.file("cache", "a file, not a folder"))
    return ["inspect", GESTURE, "--arena", "device", "--tflm", tree]


def _readonly_home(case: Case) -> list:
    case.home.chmod(0o500)
    for name in ("XDG_CACHE_HOME", "PLATFORMIO_CORE_DIR", "TINYFORGE_PIO_CORE_DIR"):
        del case.env[name]
        case.unset.append(name)
    return case.build()


def _chmod_000(path: Path) -> Path:
    path.chmod(0)
    return path


N, Q = "nano33ble", "qemu-m4"
P = Case.profile  # shorthand in the table: P(case, board, old, new)

MATRIX = [
    # --- board profiles: paths stay in tinyforge's folders ---------------------------------
    Bad("profile-runtime-layer-escape",
        lambda c: (P(c, N, 'layer = "arduino"', 'layer = "../../.."'), c.build())[1],
        ("runtime.layer '../../..'", "arduino, qemu-m4")),
    Bad("profile-runtime-layer-unknown",
        lambda c: (P(c, N, 'layer = "arduino"', 'layer = "esp32"'), c.build())[1],
        ("runtime.layer 'esp32'",)),
    Bad("profile-resolver-table-escape",
        lambda c: (P(c, N, 'resolver_table = "tflm/Chirale_TensorFlowLite-2.0.0.toml"',
                     'resolver_table = "../../../../../../etc/passwd"'), c.build())[1],
        ("tflm.resolver_table '../../../../../../etc/passwd'", "relative path")),
    Bad("profile-resolver-table-absolute",
        lambda c: (P(c, N, 'resolver_table = "tflm/Chirale_TensorFlowLite-2.0.0.toml"',
                     'resolver_table = "/etc/hostname.toml"'), c.build())[1],
        ("tflm.resolver_table '/etc/hostname.toml'",)),
    Bad("profile-resolver-table-symlink-out",
        lambda c: (c.file("outside.toml", (BOARDS / "tflm" /
                                           "Chirale_TensorFlowLite-2.0.0.toml").read_bytes()),
                   c.link("boards/evil.toml", c.inputs / "outside.toml"),
                   P(c, N, 'resolver_table = "tflm/Chirale_TensorFlowLite-2.0.0.toml"',
                     'resolver_table = "evil.toml"'), c.build())[3],
        ("tflm.resolver_table 'evil.toml' not found next to the profile",)),
    Bad("profile-exclude-sources-escape",
        lambda c: (P(c, Q, '"peripherals/*",', '"../../*",'), c.build(board=Q))[1],
        ("tflm.exclude_sources[3] '../../*'",)),
    Bad("profile-exclude-sources-comma",
        lambda c: (P(c, Q, '"peripherals/*",', '"peripherals/*,src/*",'), c.build(board=Q))[1],
        ("tflm.exclude_sources[3]",)),
    Bad("profile-packages-escape",
        lambda c: (P(c, N, '"platforms/nordicnrf52",', '"../../../etc",'), c.build())[1],
        ("platformio.packages[0]",)),
    Bad("profile-platform-local-url",
        lambda c: (P(c, N, 'platform = "nordicnrf52@10.11.0"', 'platform = "file:///etc"'),
                   c.build())[1],
        ("platformio.platform 'file:///etc'", "not a local one")),
    Bad("profile-platform-path",
        lambda c: (P(c, N, 'platform = "nordicnrf52@10.11.0"',
                     'platform = "nordicnrf52/../../../tmp"'), c.build())[1],
        ("platformio.platform 'nordicnrf52/../../../tmp'", "not a path")),
    Bad("profile-platform-relative",
        lambda c: (P(c, N, 'platform = "nordicnrf52@10.11.0"', 'platform = "../../../tmp"'),
                   c.build())[1],
        ("platformio.platform '../../../tmp' is not a package spec",)),
    Bad("profile-tinyforge-platform-escape",
        lambda c: (P(c, Q, 'platform = "tinyforge:qemu_m4"', 'platform = "tinyforge:../../x"'),
                   c.build(board=Q))[1],
        ("platformio.platform 'tinyforge:../../x'",)),
    Bad("profile-tflm-source-symlink",
        lambda c: (P(c, N, 'source = "https://github.com/spaziochirale/Chirale_TensorFlowLite'
                           '.git#46da2f989205a9216229d38cd3d1c657d79d6781"',
                     'source = "symlink:///home"'), c.build())[1],
        ("tflm.source 'symlink:///home'",)),
    Bad("profile-tflm-library-path",
        lambda c: (P(c, N, 'library = "Chirale_TensorFlowLite"', 'library = "../../../tmp/x"'),
                   c.build())[1],
        ("tflm.library '../../../tmp/x'",)),
    # --- board profiles: no injection into platformio.ini or C++ ---------------------------
    Bad("profile-build-flags-newline",
        lambda c: (P(c, N, "build_flags = []",
                     'build_flags = ["-DX\\n[env:evil]\\nextra_scripts = /tmp/evil.py"]'),
                   c.build())[1],
        ("'platformio.build_flags[0]' holds a control character",)),
    Bad("profile-build-flags-comment",
        lambda c: (P(c, N, "build_flags = []", 'build_flags = ["-DX ;comment"]'), c.build())[1],
        ("platformio.build_flags[0] '-DX ;comment' must be one compiler flag",)),
    Bad("profile-build-flags-shell-command",
        lambda c: (P(c, N, "build_flags = []", 'build_flags = ["!echo pwned"]'), c.build())[1],
        ("platformio.build_flags[0] '!echo pwned'",)),
    Bad("profile-build-flags-interpolation",
        lambda c: (P(c, N, "build_flags = []", 'build_flags = ["-DX=${sysenv.HOME}"]'),
                   c.build())[1],
        ("platformio.build_flags[0]",)),
    Bad("profile-build-unflags-quote",
        lambda c: (P(c, N, 'build_unflags = ["-mfloat-abi=soft"]',
                     'build_unflags = ["-mfloat-abi=soft\\"", "-DY"]'), c.build())[1],
        ("platformio.build_unflags[0]",)),
    Bad("profile-tflm-build-flags-backslash",
        lambda c: (P(c, Q, 'build_flags = ["-DARDUINO"]', 'build_flags = ["-DARDUINO\\\\"]'),
                   c.build(board=Q))[1],
        ("tflm.build_flags[0]",)),
    Bad("profile-extra-option-runs-a-script",
        lambda c: (P(c, N, 'monitor_speed = "115200"', 'extra_scripts = "pre:/tmp/evil.py"'),
                   c.build())[1],
        ("'extra_scripts' is not an option a profile may set", "monitor_speed")),
    Bad("profile-extra-option-tinyforge-writes",
        lambda c: (P(c, N, 'monitor_speed = "115200"', 'lib_deps = "evil/library"'),
                   c.build())[1],
        ("'lib_deps' is not an option a profile may set",)),
    Bad("profile-extra-option-key-injection",
        lambda c: (P(c, N, 'monitor_speed = "115200"',
                     '"monitor_speed = 1\\n[env:x]\\nextra_scripts" = "x"'), c.build())[1],
        ("holds a control character",)),
    Bad("profile-extra-option-value-newline",
        lambda c: (P(c, N, 'monitor_speed = "115200"',
                     'monitor_speed = "115200\\nupload_command = rm -rf ~"'), c.build())[1],
        ("'platformio.extra_options.monitor_speed' holds a control character",)),
    Bad("profile-extra-option-value-comment",
        lambda c: (P(c, N, 'monitor_speed = "115200"', 'monitor_speed = "115200 ;x"'),
                   c.build())[1],
        ("platformio.extra_options.monitor_speed must be letters",)),
    Bad("profile-extra-option-not-a-string",
        lambda c: (P(c, N, 'monitor_speed = "115200"', "monitor_speed = 115200"), c.build())[1],
        ("platformio.extra_options.monitor_speed must be a string",)),
    Bad("profile-board-with-space",
        lambda c: (P(c, N, 'board = "nano33ble"', 'board = "nano33ble ;x"'), c.build())[1],
        ("platformio.board 'nano33ble ;x'",)),
    Bad("profile-framework-injection",
        lambda c: (P(c, N, 'framework = "arduino"', 'framework = "arduino\\nlib_deps = x"'),
                   c.build())[1],
        ("'platformio.framework' holds a control character",)),
    Bad("profile-include-injection",
        lambda c: (P(c, N, 'include = "Chirale_TensorFlowLite.h"',
                     'include = "Chirale_TensorFlowLite.h>\\n#include </etc/passwd"'),
                   c.build())[1],
        ("'tflm.include' holds a control character",)),
    Bad("profile-include-path-escape",
        lambda c: (P(c, N, 'include = "Chirale_TensorFlowLite.h"',
                     'include = "../../../../etc/passwd"'), c.build())[1],
        ("tflm.include '../../../../etc/passwd'",)),
    Bad("profile-include-closes-the-bracket",
        lambda c: (P(c, N, 'include = "Chirale_TensorFlowLite.h"', 'include = "a.h> //"'),
                   c.build())[1],
        ("tflm.include 'a.h> //'",)),
    Bad("profile-name-newline",
        lambda c: (P(c, N, 'name = "Arduino Nano 33 BLE Sense"',
                     'name = "x\\n[env:evil]\\nextra_scripts = /tmp/evil.py"'), c.build())[1],
        ("'name' holds a control character",)),
    Bad("profile-terminal-escape-in-sensors",
        lambda c: (P(c, N, 'rev1 = ["LSM9DS1 (9-axis IMU)",', 'rev1 = ["\\u001b[2J",'),
                   ["boards"])[1],
        ("'sensors.rev1[0]' holds a control character",)),
    Bad("profile-huge-string",
        lambda c: (P(c, N, 'mcu = "nRF52840"', f'mcu = "{"x" * 5000}"'), c.build())[1],
        ("'mcu' is 5,000 characters long",)),
    Bad("profile-resolver-table-injects-code",
        lambda c: (c.file("boards/mine.toml", (BOARDS / "tflm" / "Chirale_TensorFlowLite-2.0.0"
                                               ".toml").read_text().replace(
            'CONV_2D = "AddConv2D"', 'CONV_2D = "AddConv2D(); system(\\"reboot\\"); (void"')),
                   P(c, N, 'resolver_table = "tflm/Chirale_TensorFlowLite-2.0.0.toml"',
                     'resolver_table = "mine.toml"'), c.build())[2],
        ("resolver table", "mine.toml is invalid", "not to an AddXxx method name")),
    Bad("tflm-tree-path-breaks-platformio-ini",
        lambda c: (c.file("a,b/src/tensorflow/lite/micro/micro_mutable_op_resolver.h", ""),
                   c.build("--tflm", c.inputs / "a,b"))[1],
        ("holds a character that platformio.ini cannot carry",)),
    # --- board profiles: numbers in plausible ranges ----------------------------------------
    Bad("profile-negative-flash",
        lambda c: (P(c, N, "flash_bytes = 983_040", "flash_bytes = -1"), c.build())[1],
        ("memory.flash_bytes is -1; it must be positive",)),
    Bad("profile-zero-ram",
        lambda c: (P(c, N, "ram_bytes = 262_144", "ram_bytes = 0"), c.build())[1],
        ("memory.ram_bytes is 0",)),
    Bad("profile-absurd-flash",
        lambda c: (P(c, N, "flash_bytes = 983_040", "flash_bytes = 1_000_000_000_000"),
                   c.build())[1],
        ("memory.flash_bytes is 1,000,000,000,000",)),
    Bad("profile-framework-flash-above-flash",
        lambda c: (P(c, N, "framework_flash_bytes = 90_000",
                     "framework_flash_bytes = 983_040"), c.build())[1],
        ("memory.framework_flash_bytes is 983,040", "less than memory.flash_bytes")),
    Bad("profile-negative-framework-ram",
        lambda c: (P(c, N, "framework_ram_bytes = 65_536", "framework_ram_bytes = -5"),
                   c.build())[1],
        ("memory.framework_ram_bytes is -5",)),
    Bad("profile-negative-tflm-flash",
        lambda c: (P(c, N, "flash_base_bytes = 30_000", "flash_base_bytes = -1"), c.build())[1],
        ("tflm.flash_base_bytes is -1",)),
    Bad("profile-baud-7",
        lambda c: (P(c, N, "baud = 115_200", "baud = 7"), c.build())[1],
        ("serial.baud 7 is not a standard rate", "115200")),
    Bad("profile-baud-off-by-one",
        lambda c: (P(c, N, "baud = 115_200", "baud = 115_201"), c.build())[1],
        ("serial.baud 115,201 is not a standard rate",)),
    Bad("profile-clock-zero",
        lambda c: (P(c, N, "clock_hz = 64_000_000", "clock_hz = 0"), c.build())[1],
        ("clock_hz is 0",)),
    Bad("profile-clock-terahertz",
        lambda c: (P(c, N, "clock_hz = 64_000_000", "clock_hz = 1_000_000_000_000"),
                   c.build())[1],
        ("clock_hz is 1,000,000,000,000",)),
    Bad("profile-reenumerate-nan",
        lambda c: (P(c, N, "reenumerate_timeout_s = 10.0", "reenumerate_timeout_s = nan"),
                   c.build())[1],
        ("serial.reenumerate_timeout_s is nan",)),
    Bad("profile-reenumerate-negative",
        lambda c: (P(c, N, "reenumerate_timeout_s = 10.0", "reenumerate_timeout_s = -1.0"),
                   c.build())[1],
        ("serial.reenumerate_timeout_s is -1.0",)),
    Bad("profile-reenumerate-forever",
        lambda c: (P(c, N, "reenumerate_timeout_s = 10.0", "reenumerate_timeout_s = inf"),
                   c.build())[1],
        ("serial.reenumerate_timeout_s is inf",)),
    # --- board profiles: unreadable files ---------------------------------------------------
    Bad("profile-invalid-utf8",
        lambda c: (c.file("boards/nano33ble.toml", b"name = \"\xff\xfe\"\n"),
                   c.env.update(TINYFORGE_BOARDS_PATH=str(c.inputs / "boards")), c.build())[2],
        ("board profile", "is not UTF-8 text")),
    Bad("profile-is-a-directory",
        lambda c: ((c.inputs / "boards" / "nano33ble.toml").mkdir(parents=True),
                   c.env.update(TINYFORGE_BOARDS_PATH=str(c.inputs / "boards")), c.build())[2],
        ("nano33ble.toml is a directory",)),
    Bad("profile-huge-sparse",
        lambda c: ((c.inputs / "boards").mkdir(), c.sparse("boards/nano33ble.toml"),
                   c.env.update(TINYFORGE_BOARDS_PATH=str(c.inputs / "boards")), c.build())[3],
        ("board profile", "2,147,483,648 B")),
    Bad("profile-fifo",
        lambda c: (c.fifo("boards/nano33ble.toml"),
                   c.env.update(TINYFORGE_BOARDS_PATH=str(c.inputs / "boards")), c.build())[2],
        ("nano33ble.toml is a FIFO",)),
    Bad("profile-unreadable",
        lambda c: (_chmod_000(P(c, N, 'name = "Arduino Nano 33 BLE Sense"', 'name = "x"')),
                   c.build())[1],
        ("permission denied",), needs_non_root=True),
    # --- model files --------------------------------------------------------------------------
    Bad("model-fifo", lambda c: c.build(model=c.fifo("model.tflite")),
        ("model file", "is a FIFO (named pipe)")),
    Bad("model-fifo-inspect", lambda c: ["inspect", c.fifo("model.tflite")],
        ("is a FIFO",)),
    Bad("model-dev-zero", lambda c: ["inspect", "/dev/zero"],
        ("model file /dev/zero is a character device",)),
    Bad("model-symlink-to-dev-zero", lambda c: c.build(model=c.link("m.tflite", "/dev/zero")),
        ("is a character device",)),
    Bad("model-2gb-sparse", lambda c: ["inspect", c.sparse("big.tflite")],
        ("2,147,483,648 B", "4 times the board's 983,040 B of flash")),
    Bad("model-2gb-sparse-build", lambda c: c.build(model=c.sparse("big.tflite")),
        ("2,147,483,648 B",)),
    Bad("model-empty", lambda c: c.build(model=c.file("empty.tflite", b"")),
        ("not a TensorFlow Lite model",)),
    Bad("model-symlink-loop", lambda c: ["inspect", c.link("loop.tflite", "loop.tflite")],
        ("cannot be opened",)),
    Bad("model-under-a-file", lambda c: ["inspect", c.file("plain", "x") / "model.tflite"],
        ("cannot be opened",)),
    Bad("model-unreadable", lambda c: ["inspect", _chmod_000(c.file("m.tflite",
                                                                     GESTURE.read_bytes()))],
        ("permission denied", "chmod u+r"), needs_non_root=True),
    Bad("model-schema-version-4",
        lambda c: c.build(model=c.file("v4.tflite",
                                       _with_schema_version(GESTURE.read_bytes(), 4))),
        ("TFLite schema version 4", "TFLM accepts only version 3")),
    Bad("model-schema-version-2",
        lambda c: c.build(model=c.file("v2.tflite",
                                       _with_schema_version(GESTURE.read_bytes(), 2))),
        ("TFLite schema version 2",)),
    Bad("keras-fifo", lambda c: c.build(model=c.fifo("model.keras")),
        ("model", "model.keras is a FIFO")),
    Bad("keras-2gb-sparse", lambda c: c.build(model=c.sparse("model.keras")),
        ("2,147,483,648 B", "16 times the board's 983,040 B of flash")),
    Bad("saved-model-with-a-fifo",
        lambda c: (c.file("sm/saved_model.pb", b""), c.fifo("sm/variables/variables.index"),
                   c.build(model=c.inputs / "sm"))[2],
        ("SavedModel file", "is a FIFO")),
    # --- labels ---------------------------------------------------------------------------------
    Bad("labels-binary", lambda c: c.build("--labels", c.file("l.txt", b"a\x00\x00b\n" * 8)),
        ("labels file", "is a binary file")),
    Bad("labels-invalid-utf8", lambda c: c.build("--labels", c.file("l.txt", b"\xff\xfe\x00A")),
        ("labels file", "is not UTF-8 text", "offset 0")),
    Bad("labels-terminal-escape",
        lambda c: c.build("--labels", c.file("l.txt", "up\x1b[2J\ndown\nleft\nright\n")),
        ("label 1 holds control characters",)),
    Bad("labels-directory",
        lambda c: ((c.inputs / "l").mkdir(), c.build("--labels", c.inputs / "l"))[1],
        ("labels file", "is a directory")),
    Bad("labels-2gb-sparse", lambda c: c.build("--labels", c.sparse("l.txt")),
        ("labels file", "2,147,483,648 B")),
    Bad("labels-dev-zero", lambda c: c.build("--labels", "/dev/zero"),
        ("labels file /dev/zero is a character device",)),
    Bad("labels-fifo", lambda c: c.build("--labels", c.fifo("l.txt")),
        ("labels file", "is a FIFO")),
    Bad("labels-unreadable", lambda c: c.build("--labels", _chmod_000(c.file("l.txt", "a\n"))),
        ("permission denied",), needs_non_root=True),
    # --- demo input .npy --------------------------------------------------------------------------
    Bad("demo-header-claims-10^12-elements",
        lambda c: c.build("--demo-input", c.file("d.npy", _npy_header((10 ** 12,)))),
        ("demo input", "has 1,000,000,000,000 values", "needs 96")),
    Bad("demo-header-claims-more-than-the-file",
        lambda c: c.build("--demo-input", c.file("d.npy", _npy_header((1, 32, 3),
                                                                       payload=bytes(10)))),
        ("truncated or corrupt", "384 B")),
    Bad("demo-pickled-objects",
        lambda c: c.build("--demo-input",
                          c.file("d.npy", _npy_header((1, 32, 3), descr="|O", payload=b"x"))),
        ("Python objects",)),
    Bad("demo-strings",
        lambda c: c.build("--demo-input", c.file("d.npy", _npy_header((96,), descr="<U4",
                                                                       payload=bytes(384)))),
        ("holds <U4 values, not numbers",)),
    Bad("demo-not-npy", lambda c: c.build("--demo-input", c.file("d.npy", "1,2,3\n")),
        ("demo input", "not a valid .npy")),
    Bad("demo-dev-zero", lambda c: c.build("--demo-input", "/dev/zero"),
        ("demo input /dev/zero is a character device",)),
    Bad("demo-fifo", lambda c: c.build("--demo-input", c.fifo("d.npy")),
        ("demo input", "is a FIFO")),
    # --- calibration / validation data (.npy, .npz) -----------------------------------------------
    Bad("calibration-npy-claims-10^12-elements",
        lambda c: _calibration(c, c.file("c.npy", _npy_header((10 ** 12, 32, 3)))),
        ("declares a [1000000000000, 32, 3] float32 array", "nothing was allocated")),
    Bad("calibration-npy-truncated",
        lambda c: _calibration(c, c.file("c.npy", _npy_header((100, 32, 3), payload=bytes(64)))),
        ("truncated or corrupt", "38,400 B", "only 64 B")),
    Bad("calibration-npz-member-claims-10^12-elements",
        lambda c: _calibration(c, c.file("c.npz", _npz({"x.npy": _npy_header((10 ** 12,))}))),
        ("array 'x' of calibration file", "declares a [1000000000000] float32 array")),
    Bad("calibration-npz-member-unpacks-to-2gb",
        lambda c: _calibration(c, c.file("c.npz", _npz_claiming(TWO_GB))),
        ("its array 'x' unpacks to 2,147,483,648 B",)),
    Bad("calibration-npz-not-a-zip", lambda c: _calibration(c, c.file("c.npz", b"PK\x03\x04junk")),
        ("not a valid .npz file",)),
    Bad("calibration-dev-zero", lambda c: _calibration(c, c.link("c.npy", "/dev/zero")),
        ("is a character device",)),
    Bad("calibration-2gb-sparse", lambda c: _calibration(c, c.sparse("c.npz")),
        ("2,147,483,648 B",)),
    Bad("calibration-fifo", lambda c: _calibration(c, c.fifo("c.npz")),
        ("calibration file", "is a FIFO")),
    Bad("calibration-unreadable",
        lambda c: _calibration(c, _chmod_000(c.file("c.npy", _npy_header((1, 32, 3),
                                                                         payload=bytes(384))))),
        ("permission denied",), needs_non_root=True),
    # --- a project's manifest ---------------------------------------------------------------------
    Bad("manifest-binary", lambda c: (c.project_with_manifest(b"\x00\xff" * 64), c.build())[1],
        ("project manifest", "not UTF-8")),
    Bad("manifest-not-an-object", lambda c: (c.project_with_manifest([1, 2]), c.build())[1],
        ("not a JSON object",)),
    Bad("manifest-model-outside-the-project",
        lambda c: ["validate", "--project-dir", c.project_with_manifest(
            {"board": "qemu-m4", "model": {"path": "../../../../etc/passwd"}})],
        ("names a model outside the project",)),
    Bad("manifest-environment-escape",
        lambda c: ["flash", "--project-dir", c.project_with_manifest(
            {"board": "qemu-m4", "environment": "../../../tmp"})],
        ("has no valid environment",)),
    Bad("manifest-without-board",
        lambda c: ["monitor", "--project-dir", c.project_with_manifest({"files": {}})],
        ("has no valid board",)),
    Bad("manifest-fifo",
        lambda c: ((c.project / ".tinyforge").mkdir(parents=True),
                   os.mkfifo(c.project / ".tinyforge" / "manifest.json"), c.build())[2],
        ("project manifest", "is a FIFO")),
    # --- an unwritable HOME, cache or core dir ----------------------------------------------------
    Bad("home-unwritable-build-nano33ble", _home_then(lambda c: c.build()),
        ("cannot write PlatformIO's core dir", "PLATFORMIO_CORE_DIR=DIR")),
    Bad("home-unwritable-build-qemu-m4", _home_then(lambda c: c.build(board=Q)),
        ("cannot write tinyforge's PlatformIO core dir", "TINYFORGE_PIO_CORE_DIR=DIR")),
    Bad("home-unwritable-flash-nano33ble",
        _home_then(lambda c: ["flash", "--project-dir", c.built_project("nano33ble")]),
        ("cannot write PlatformIO's core dir", "PLATFORMIO_CORE_DIR=DIR")),
    Bad("home-unwritable-setup", _home_then(lambda c: ["setup"]),
        ("tinyforge's PlatformIO core dir", "TINYFORGE_PIO_CORE_DIR=DIR", "--core-dir")),
    Bad("home-unwritable-selftest", _home_then(lambda c: ["selftest"]),
        ("the self-test project folder", "XDG_CACHE_HOME=DIR", "--project-dir")),
    Bad("cache-is-a-file-selftest",
        lambda c: (c.env.update(XDG_CACHE_HOME=str(c.file("cache", "x"))), ["selftest"])[1],
        ("the self-test project folder", "XDG_CACHE_HOME=DIR")),
    Bad("core-dir-is-a-file-setup",
        lambda c: (c.env.update(TINYFORGE_PIO_CORE_DIR=str(c.file("core", "x"))), ["setup"])[1],
        ("tinyforge's PlatformIO core dir", "it exists and is not a folder")),
    Bad("cache-is-a-file-arena-probe", _arena_probe_in_unwritable_cache,
        ("the arena measurement's project folder", "XDG_CACHE_HOME=DIR"), needs_emulator=True),
    Bad("home-unwritable-build-spawned", _home_then(lambda c: c.build()),
        ("PLATFORMIO_CORE_DIR=DIR",), spawn=True),
    Bad("home-read-only", _readonly_home, ("PLATFORMIO_CORE_DIR", "permission denied"),
        needs_non_root=True),
]


@pytest.mark.parametrize("bad", MATRIX, ids=[bad.id for bad in MATRIX])
def test_bad_input(bad: Bad, tmp_path, in_process, monkeypatch, capsys):
    # in_process: a command run here sees what a child would (no TINYFORGE_TFLM of the
    # developer's shell, which would make `build` compile the host reference first).
    cli_env = in_process
    if bad.needs_non_root and IS_ROOT:
        pytest.skip("root reads and writes regardless of permissions")
    if bad.needs_emulator:
        from qemu_support import require_emulator
        require_emulator()
    case = Case(tmp_path / "case")
    try:
        _check_refusal(bad, case, cli_env, monkeypatch, capsys)
    finally:
        for path in (case.home, *case.inputs.rglob("*")):
            if not path.is_symlink():
                path.chmod(0o700)  # let pytest clean up


def _check_refusal(bad: Bad, case: Case, cli_env, monkeypatch, capsys) -> None:
    argv = [str(arg) for arg in bad.make(case)]
    project_existed = case.project.exists()
    before = _entries(case.root)
    if bad.spawn:
        code, stderr = _spawned(argv, case, cli_env)
    else:
        code, stderr = _in_process(argv, case, monkeypatch, capsys)
    assert code == bad.exit_code, (code, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("hint: ") and len(lines[-1]) > 12, stderr
    assert any(line.startswith("error: ") for line in lines), stderr
    for phrase in bad.phrases:
        assert phrase in stderr, (phrase, stderr)
    assert _entries(case.root) == before, "something was written: " + _difference(
        before, _entries(case.root))
    assert project_existed or not case.project.exists()


def _in_process(argv: list[str], case: Case, monkeypatch, capsys) -> tuple[int, str]:
    import logging
    import tempfile

    from tinyforge import cli

    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    for name in case.unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # recomputed from $TMPDIR
    monkeypatch.chdir(case.inputs)
    logger = logging.getLogger("tinyforge")
    saved = (logger.handlers[:], logger.level, logger.propagate,
             signal.getsignal(signal.SIGTERM))
    children = _descendants()
    capsys.readouterr()
    try:
        with _memory_capped(), watchdog(120):
            code = cli.main(argv)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[:3]
        signal.signal(signal.SIGTERM, saved[3])
    stderr = capsys.readouterr().err
    left = _descendants() - children
    assert not left, f"processes left behind: {sorted(left)}"
    return code, stderr


def _spawned(argv: list[str], case: Case, cli_env: dict) -> tuple[int, str]:
    marker = uuid.uuid4().hex
    env = {k: v for k, v in cli_env.items() if k not in case.unset}
    env.update(case.env, TINYFORGE_TEST_MARKER=marker)
    result = subprocess.run([sys.executable, "-m", "tinyforge", *argv], env=env,
                            cwd=case.inputs, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: _cap_memory(MEMORY_HEADROOM))
    left = _processes_with(marker)
    assert not left, f"processes left behind: {left}"
    return result.returncode, result.stderr


# A regression that believed an .npy header would try to allocate terabytes: with the address
# space capped it fails with MemoryError (a failed test) instead of exhausting the machine.
MEMORY_HEADROOM = 4 * 1024 ** 3


@contextlib.contextmanager
def _memory_capped():
    previous = resource.getrlimit(resource.RLIMIT_AS)
    _cap_memory(_address_space() + MEMORY_HEADROOM)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def _cap_memory(limit: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY
                                            else min(limit, hard), hard))


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _entries(root: Path) -> dict[str, tuple]:
    """Every entry under `root` by lstat (type and, for files, size and mtime), so FIFOs and
    sparse files are not read. A folder's own mtime is left out: a temporary file made and
    removed again (TMPDIR) leaves nothing behind."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        folder = stat.S_ISDIR(info.st_mode)
        entries[path.relative_to(root).as_posix()] = (
            info.st_mode, None if folder else info.st_size, None if folder else info.st_mtime_ns)
    return entries


def _difference(before: dict, after: dict) -> str:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return ", ".join(changed)


def _descendants() -> set[int]:
    """Live processes below this one (children of children included)."""
    parents = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat_file.parent.name)] = int(fields[1])
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment carries `marker` (a spawned CLI and all it started)."""
    needle = f"TINYFORGE_TEST_MARKER={marker}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


# --- beside the matrix ------------------------------------------------------------------------

def test_every_raised_tinyforge_error_passes_a_hint():
    """Static check: each `raise SomeTinyforgeError(...)` in tinyforge/ (and each construction of
    one, for errors built by helpers) passes `hint=` with something other than None."""
    import ast

    import tinyforge.errors as errors
    classes = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.TinyforgeError)}
    # Where a class's own constructor passes the hint on (errors.py's super().__init__ calls).
    allowed = {("errors.py", "TinyforgeError")}
    missing = []
    for path in sorted((REPO / "tinyforge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in classes or (path.name, name) in allowed:
                continue
            hint = next((k.value for k in node.keywords if k.arg == "hint"), None)
            if hint is None or (isinstance(hint, ast.Constant) and hint.value is None):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not missing, "errors raised without a hint:\n" + "\n".join(missing)


def test_inspect_reports_a_schema_version_tflm_refuses_as_not_runnable(tmp_path):
    from tinyforge.flows.inspection import inspect_model, summary_lines

    model = tmp_path / "v4.tflite"
    model.write_bytes(_with_schema_version(GESTURE.read_bytes(), 4))
    report = inspect_model(model, board_id="nano33ble", arena="host")
    assert report["schema_version"] == 4
    assert report["fits"] is False
    assert any("schema version 4" in f for f in report["unsupported_features"])
    assert "NOT buildable" in summary_lines(report)[-1]
    accepted = inspect_model(GESTURE, board_id="nano33ble", arena="host")
    assert accepted["fits"] is True and accepted["unsupported_features"] == []


_MALICIOUS = '''\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED-" + __name__).write_text("imported")
raise ImportError("tinyforge imported " + __name__ + " from the working directory")
'''


@pytest.fixture
def malicious_cwd(tmp_path, monkeypatch):
    """A working directory whose numpy.py, tensorflow.py, click.py... mark themselves imported."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    for name in ("numpy", "tensorflow", "keras", "click", "platformio", "jinja2", "serial",
                 "tflite_micro", "tinyforge"):
        (folder / f"{name}.py").write_text(_MALICIOUS)
    monkeypatch.chdir(folder)
    return folder


def _imported(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("IMPORTED-*"))


def test_python_children_never_import_from_the_working_directory(malicious_cwd, cli_env,
                                                                monkeypatch):
    from tinyforge import proc
    from tinyforge.model import convert
    from tinyforge.toolchain import pio

    # Empty and relative PYTHONPATH entries name the working directory too: children drop them.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), "", ".", "lib"]))
    assert pio.environment(malicious_cwd / "core")["PYTHONPATH"] == str(REPO)
    assert convert._child_env()["PYTHONPATH"] == str(REPO)

    env = dict(cli_env, PYTHONPATH=str(REPO))
    # The threat is real: a plain `python -m` there imports the fakes (tinyforge.py first).
    control = subprocess.run([sys.executable, "-m", "tinyforge.model._convert_child"], env=env,
                             capture_output=True, text=True)
    assert control.returncode != 0 and "from the working directory" in control.stderr
    assert _imported(malicious_cwd) == ["IMPORTED-tinyforge"]
    (malicious_cwd / "IMPORTED-tinyforge").unlink()
    # tinyforge's way to start a Python child, and the Python 3.10 form of it.
    for argv in (proc.python_module("tinyforge.model._convert_child"),
                 [sys.executable, "-c", proc._RUN_MODULE_WITHOUT_CWD,
                  "tinyforge.model._convert_child"]):
        child = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert child.returncode == 2 and "usage:" in child.stderr, child.stderr
    # PlatformIO, as tinyforge runs it (click, jinja2... lie in the working directory).
    assert "PlatformIO Core" in proc.run(pio.pio_argv("--version"), timeout=120,
                                         env=pio.environment(malicious_cwd / "core")).text
    # The command line itself, started as `python -m tinyforge` from there: its __main__ drops
    # the working directory from sys.path before importing anything else. (A tinyforge.py there
    # would be run in its place, as for any `python -m`; the `tinyforge` script has no such
    # problem.)
    (malicious_cwd / "tinyforge.py").unlink()
    cli = subprocess.run([sys.executable, "-m", "tinyforge", "inspect", GESTURE, "--arena",
                          "host"], env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert _imported(malicious_cwd) == []


@pytest.mark.tensorflow
def test_the_tensorflow_child_never_imports_from_the_working_directory(malicious_cwd, tmp_path):
    if subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                      cwd=tmp_path).returncode:
        pytest.skip("TensorFlow is not installed (run `make setup`)")
    from tinyforge.errors import TinyforgeError
    from tinyforge.model import convert

    # A zip that is no Keras model: the child imports TensorFlow (the real one), then fails
    # to load it and reports why; seconds instead of a whole conversion.
    source = tmp_path / "not-a-model.keras"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(TinyforgeError, match="cannot be loaded as a Keras model") as raised:
        convert.convert(source, calibration=None, quantize="float32",
                        output=tmp_path / "out.tflite")
    assert "not-a-model.keras" in raised.value.message and raised.value.hint
    assert _imported(malicious_cwd) == []


def test_an_edited_manifest_never_makes_a_render_delete_a_file_outside_the_project(tmp_path):
    from tinyforge.project import writer

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    project = tmp_path / "project"
    writer.write(project, {"a.txt": b"a"}, {"board": "nano33ble"})
    manifest = json.loads((project / writer.MANIFEST_PATH).read_text())
    manifest["files"]["../precious.txt"] = writer.sha256(b"keep me")
    (project / writer.MANIFEST_PATH).write_text(json.dumps(manifest))
    plan = writer.write(project, {"a.txt": b"a"}, {"board": "nano33ble"})
    assert plan.stale == [] and outside.read_text() == "keep me"


def test_a_board_made_in_code_cannot_copy_a_folder_outside_the_runtime_layers():
    from tinyforge.board import profiles
    from tinyforge.errors import BoardProfileError
    from tinyforge.project import selftest

    board = profiles.load_board("qemu-m4")
    escaped = dataclasses.replace(board, runtime={"layer": "../../.."})
    with pytest.raises(BoardProfileError, match="runtime.layer '../../..'") as raised:
        selftest.project_files(escaped)
    assert raised.value.hint


def test_validation_data_is_read_with_the_same_bounds(tmp_path):
    from tinyforge.device.protocol import TensorSpec
    from tinyforge.errors import CalibrationError
    from tinyforge.flows.validate import samples_from_file

    spec = TensorSpec(dtype="int8", shape=(1, 32, 3), scale=0.05, zero_point=0)
    huge = tmp_path / "inputs.npy"
    huge.write_bytes(_npy_header((10 ** 12, 32, 3), descr="|i1"))
    with pytest.raises(CalibrationError, match="nothing was allocated") as raised:
        samples_from_file(huge, spec)
    assert raised.value.hint
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((3, 32, 3), np.float32))
    assert len(samples_from_file(good, spec)) == 3


def test_validation_data_may_be_integers_the_input_holds(tmp_path):
    """Inputs already quantized are valid data: int8 as they are, or int64 (np.save of a
    list of ints) while every value fits; floats are quantized, out-of-range values refused."""
    from tinyforge.device.protocol import TensorSpec
    from tinyforge.errors import CalibrationError
    from tinyforge.flows.validate import samples_from_file

    spec = TensorSpec(dtype="int8", shape=(1, 4), scale=0.5, zero_point=-3)
    values = np.array([[-128, -1, 0, 127], [5, 6, 7, 8]])
    for dtype in (np.int8, np.int64, np.int16):
        path = tmp_path / f"{np.dtype(dtype).name}.npy"
        np.save(path, values.astype(dtype))
        samples = samples_from_file(path, spec)
        assert [s.dtype for s in samples] == [np.int8, np.int8]
        assert np.array_equal(np.stack(samples), values)
    floats = tmp_path / "floats.npy"
    np.save(floats, np.array([[1.0, -1.0, 0.0, 100.0]], np.float32))
    assert samples_from_file(floats, spec)[0].tolist() == [-1, -5, -3, 127]
    wide = tmp_path / "wide.npy"
    np.save(wide, np.array([[0, 1, 2, 300]]))
    with pytest.raises(CalibrationError, match="int8 holds -128 to 127") as raised:
        samples_from_file(wide, spec)
    assert "from 0 to 300" in raised.value.message and raised.value.hint
    float_spec = TensorSpec(dtype="float32", shape=(1, 4), scale=0.0, zero_point=0)
    with pytest.raises(CalibrationError, match="the model input is float32"):
        samples_from_file(wide, float_spec)


# Every folder Python would put temporary files in (the working directory too) made read-only
# by a read-only bind mount of itself, in a mount namespace of the test's own: the machine's
# /tmp is untouched, and a checkout or virtualenv under /tmp (a CI clone) stays readable.
_NO_TEMP_DIR = """
mkdir -p /usr/tmp 2>/dev/null
for d in "$PWD" /tmp /var/tmp /usr/tmp; do
  mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 97
done
cd "$PWD" || exit 97
exec "$@"
"""


def test_no_usable_temporary_folder_is_named_before_anything_starts(cli_env, tmp_path):
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount read-only folders over /tmp")
    work = tmp_path / "cwd"
    work.mkdir()
    project = tmp_path / "project"
    env = dict(cli_env, TMPDIR=str(tmp_path / "no-such-folder"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", _NO_TEMP_DIR, "sh",
         sys.executable, "-m", "tinyforge", "build", "--no-compile", "--project-dir",
         str(project)], env=env, cwd=work, capture_output=True, text=True, timeout=120)
    if result.returncode == 97:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    _refused(result, "cannot write temporary files", "no-such-folder", "TMPDIR=DIR",
             project=project)
    assert not (tmp_path / "no-such-folder").exists()
