"""tinyforge's own PlatformIO core dir (tinyforge.toolchain.offline_core) and the qemu_m4 dev-platform.

The setup tests run the real seeding (real toolchain, real scons wheel); the build tests run
real `pio run` with every HTTP client pointed at a dead proxy, so they prove PlatformIO needs
no network for qemu-m4.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qemu_support import block_network, build, require_emulator, seeded_core, write_project

from tinyforge import resources
from tinyforge.board import profiles
from tinyforge.errors import (DoesNotFitError, TinyforgeError, ToolMissingError,
                              UnwritableFolderError)
from tinyforge.flows.doctor import emulator_checks
from tinyforge.toolchain import offline_core, pio, programs

TOOLCHAIN = "toolchain-gccarmnoneeabi"


@pytest.fixture
def empty_path(tmp_path, monkeypatch) -> Path:
    """A PATH with nothing on it: no compiler, no QEMU."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


# --- environment and core dir choice --------------------------------------------------------

def test_pio_environment_isolates_the_core_and_silences_network_chatter(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORMIO_PACKAGES_DIR", "/somewhere/else")
    monkeypatch.setenv("TINYFORGE_TEST_MARKER", "kept")
    env = pio.environment(tmp_path)
    assert env["PLATFORMIO_CORE_DIR"] == str(tmp_path)
    assert env["PLATFORMIO_DISABLE_UPGRADE_CHECK"] == "true"
    assert env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] == "no"
    assert env["PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL"] == "9999"
    assert "PLATFORMIO_PACKAGES_DIR" not in env
    assert env["TINYFORGE_TEST_MARKER"] == "kept"


def test_pio_environment_adds_the_shared_object_cache_after_the_users_own_scripts(
        tmp_path, monkeypatch):
    script = f"pre:{resources.platforms_dir() / 'shared_object_cache.py'}"
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, str(tmp_path / "objects"))
    monkeypatch.setenv("PLATFORMIO_EXTRA_SCRIPTS", "pre:mine.py, post:also_mine.py")
    env = pio.environment(tmp_path)
    assert env["PLATFORMIO_EXTRA_SCRIPTS"].split("\n") == ["pre:mine.py", "post:also_mine.py",
                                                           script]
    assert env[pio.ENV_BUILD_CACHE_DIR] == str(tmp_path / "objects")
    assert pio.environment(tmp_path) == env  # never added twice
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, "")  # off
    env = pio.environment(tmp_path)
    assert env["PLATFORMIO_EXTRA_SCRIPTS"] == "pre:mine.py, post:also_mine.py"
    monkeypatch.delenv(pio.ENV_BUILD_CACHE_DIR)
    monkeypatch.delenv("PLATFORMIO_EXTRA_SCRIPTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    env = pio.environment(tmp_path)
    assert env[pio.ENV_BUILD_CACHE_DIR] == str(tmp_path / "xdg" / "tinyforge" / "build-cache")
    assert env["PLATFORMIO_EXTRA_SCRIPTS"] == script


def test_pio_environment_names_are_the_ones_platformio_reads(tmp_path):
    """PlatformIO itself must see the settings (a misspelt name would be silently ignored)."""
    code = ("from platformio import app; print(app.get_setting('enable_telemetry'), "
            "app.get_setting('check_platformio_interval'))")
    out = subprocess.run([sys.executable, "-c", code], env=pio.environment(tmp_path),
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == ["False", "9999"]


def test_a_passed_project_check_is_remembered_for_the_same_file_only(tmp_path, monkeypatch):
    """`pio project config` costs ~0.7 s; the same bytes under the same PlatformIO pass again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    project, core = tmp_path / "p", tmp_path / "core"
    project.mkdir()
    ini = project / "platformio.ini"
    checks = []
    real_run = pio.proc.run

    def counting(argv, **kwargs):
        checks.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(pio.proc, "run", counting)

    def check(text: str) -> int:
        ini.write_text(text)
        before = len(checks)
        pio.validate_project(project, core)
        return len(checks) - before

    good = "[env:x]\nplatform = native\n"
    assert (check(good), check(good)) == (1, 0)
    assert check(good + "build_flags = -DX\n") == 1          # other bytes: checked
    monkeypatch.setenv("PLATFORMIO_SETTING_FOO", "1")       # another PlatformIO setting
    assert check(good) == 1
    for text in (good + "build_flags = -DH=${sysenv.HOME}\n",   # depends on more than the file
                 "[platformio]\nextra_configs = more.ini\n" + good):
        assert (check(text), check(text)) == (1, 1)
    bad = good + "not an option line\n"
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(TinyforgeError):
            check(bad)


def test_core_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(offline_core.ENV_CORE_DIR, str(tmp_path / "from-env"))
    assert offline_core.core_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert offline_core.core_dir() == tmp_path / "from-env"
    monkeypatch.delenv(offline_core.ENV_CORE_DIR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert offline_core.core_dir() == tmp_path / "home" / ".tinyforge" / "platformio"


# --- missing tools ---------------------------------------------------------------------------

def test_setup_without_toolchain_names_the_apt_command(tmp_path, empty_path):
    with pytest.raises(ToolMissingError) as caught:
        offline_core.setup(tmp_path / "core")
    assert "arm-none-eabi-gcc" in caught.value.message
    assert "apt-get install --no-install-recommends" in caught.value.hint
    assert "gcc-arm-none-eabi" in caught.value.hint
    assert not (tmp_path / "core" / "packages").exists()


def test_setup_without_qemu_names_the_apt_command(tmp_path, monkeypatch):
    require_emulator()
    # The real toolchain, but no QEMU on PATH.
    only_gcc = tmp_path / "bin"
    only_gcc.mkdir()
    toolchain = programs.find_toolchain()
    for program in toolchain.programs:
        (only_gcc / program).symlink_to(toolchain.bin_dir / program)
    monkeypatch.setenv("PATH", str(only_gcc))
    with pytest.raises(ToolMissingError) as caught:
        offline_core.setup(tmp_path / "core")
    assert "qemu-system-arm" in caught.value.message
    assert "--no-install-recommends" in caught.value.hint and "qemu-system-arm" in caught.value.hint


def test_doctor_checks_say_what_is_missing_and_how_to_fix_it(tmp_path, empty_path):
    checks = {c.name: c for c in emulator_checks(tmp_path / "core")}
    assert not checks["arm-none-eabi toolchain"].ok
    assert "--no-install-recommends" in checks["arm-none-eabi toolchain"].hint
    assert not checks["QEMU"].ok and "qemu-system-arm" in checks["QEMU"].hint
    assert checks["SCons for PlatformIO"].ok  # the wheel is a dev dependency
    assert not checks["PlatformIO core dir"].ok
    assert "tinyforge setup" in checks["PlatformIO core dir"].hint
    assert all(isinstance(c.as_dict()["detail"], str) for c in checks.values())


# --- seeding ---------------------------------------------------------------------------------

def test_setup_seeds_packages_platformio_accepts_and_is_idempotent(tmp_path, monkeypatch):
    require_emulator()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    core = tmp_path / "core"
    first = offline_core.setup(core)
    assert [a for a, _, _ in first.actions] == ["create", "create", "create"]
    assert first.changed
    second = offline_core.setup(core)
    assert [a for a, _, _ in second.actions] == ["identical"] * 3
    assert not second.changed
    assert offline_core.is_ready(core)
    assert not (tmp_path / "home").exists()  # ~/.platformio (and ~) untouched

    scons = core / "packages" / "tool-scons"
    assert json.loads((scons / "package.json").read_text())["version"] == "4.41101.0"
    assert json.loads((scons / ".piopm").read_text())["spec"]["owner"] == "platformio"
    version = subprocess.run([sys.executable, str(scons / "scons.py"), "--version"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert "4.11.1" in version
    gcc = core / "packages" / TOOLCHAIN / "bin" / "arm-none-eabi-gcc"
    assert gcc.is_symlink()
    assert subprocess.run([gcc, "-dumpversion"], capture_output=True, text=True,
                          check=True).stdout.strip() == programs.find_toolchain().gcc_version


def test_a_platform_link_of_a_copy_that_moved_is_pointed_here_again(tmp_path):
    """A core dir prepared by a checkout that moved (or by another one) links the qemu-m4
    dev-platform there: not ready, and `setup` links this copy's folder again."""
    require_emulator()
    core = tmp_path / "core"
    offline_core.setup(core)
    link = core / "platforms" / "qemu_m4.pio-link"
    ours = json.loads(link.read_text())
    assert ours["cwd"] == str(resources.platforms_dir() / "qemu_m4")
    assert (Path(ours["cwd"]) / "platform.json").is_file()
    moved = dict(ours, cwd="/gone/tinyforge/toolchain/platforms/qemu_m4")
    link.write_text(json.dumps(moved))
    assert not offline_core.is_ready(core)
    actions = {what: action for action, what, _ in offline_core.setup(core).actions}
    assert actions["platform qemu_m4"] == "replace"
    assert json.loads(link.read_text()) == ours and offline_core.is_ready(core)


def test_setup_replaces_a_package_that_no_longer_matches(tmp_path):
    require_emulator()
    core = tmp_path / "core"
    offline_core.setup(core)
    manifest = core / "packages" / "tool-scons" / "package.json"
    manifest.write_text('{"name": "tool-scons", "version": "4.40000.0"}')
    actions = {what: action for action, what, _ in offline_core.setup(core).actions}
    assert actions["tool-scons"] == "replace"
    assert actions[TOOLCHAIN] == "identical"
    assert json.loads(manifest.read_text())["version"] == "4.41101.0"
    leftovers = [p.name for p in (core / "packages").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_interrupted_setup_leaves_no_partial_package(tmp_path, monkeypatch):
    require_emulator()

    def failing_copy(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(offline_core.shutil, "copytree", failing_copy)
    # A full disk is reported like any unwritable core dir: with the folder and a hint.
    with pytest.raises(UnwritableFolderError, match="No space left on device") as raised:
        offline_core.setup(tmp_path / "core")
    assert "TINYFORGE_PIO_CORE_DIR" in raised.value.hint
    assert list((tmp_path / "core" / "packages").iterdir()) == []


# --- real `pio run` through the platform -----------------------------------------------------

HELLO = """\
#include <stdio.h>
#include "board_runtime.h"
void setup() { BoardSerialBegin(115200); printf("hello %.2f\\r\\n", 1.5); }
void loop() {}
"""


@pytest.mark.emulator
def test_pio_run_builds_offline_for_the_hard_float_thumb_target(tmp_path_factory, tmp_path,
                                                                monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    core = seeded_core(tmp_path_factory)
    write_project(tmp_path / "p", HELLO)
    report = build(tmp_path / "p", core)
    elf = Path(report.firmware)
    assert elf.name == "firmware.elf" and report.flash_used and report.ram_used
    assert report.flash_total == 983_040 and report.ram_total == 262_144
    attributes = subprocess.run(["arm-none-eabi-readelf", "-A", elf], capture_output=True,
                                text=True, check=True).stdout
    assert "Tag_CPU_arch: v7E-M" in attributes
    assert "Tag_ABI_VFP_args: VFP registers" in attributes  # -mfloat-abi=hard throughout
    # Linked against the Thumb hard-float multilib (an A32 libc would fault on a Cortex-M4).
    mapfile = (elf.parent / "firmware.map").read_text()
    assert "thumb/v7e-m+fp/hard/libc_nano.a" in mapfile


@pytest.mark.emulator
@pytest.mark.parametrize("region, declaration", [
    ("FLASH", "const uint8_t big[990000] = {1};"),
    ("RAM", "uint8_t big[250000];"),
])
def test_firmware_too_big_for_the_board_fails_at_link_time(tmp_path_factory, tmp_path,
                                                            monkeypatch, region, declaration):
    require_emulator()
    block_network(monkeypatch)
    sketch = f"""\
#include <stdint.h>
#include "board_runtime.h"
{declaration}
volatile uint32_t sink;
void setup() {{ sink = big[sink]; }}
void loop() {{}}
"""
    write_project(tmp_path / "p", sketch)
    with pytest.raises(DoesNotFitError) as caught:
        build(tmp_path / "p", seeded_core(tmp_path_factory))
    assert f"{region}: over by" in caught.value.details


@pytest.mark.emulator
def test_excluded_library_sources_are_left_out_of_the_build(tmp_path_factory, tmp_path,
                                                            monkeypatch):
    """custom_tflm_exclude (from [tflm] exclude_sources) drops a library's files by pattern."""
    require_emulator()
    block_network(monkeypatch)
    library = tmp_path / "fakelib"
    (library / "src" / "arduino_only").mkdir(parents=True)
    (library / "library.properties").write_text("name=fakelib\nversion=1.0.0\n"
                                                "architectures=mbed_nano\n")
    (library / "src" / "fakelib.h").write_text("int kept();\n")
    (library / "src" / "kept.cpp").write_text("int kept() { return 7; }\n")
    (library / "src" / "arduino_only" / "serial.cpp").write_text("#include <Arduino.h>\n")
    (library / "src" / "debug_log.cpp").write_text("#error this file must not be compiled\n")
    sketch = '#include "fakelib.h"\n#include "board_runtime.h"\n' \
             "volatile int v;\nvoid setup() { v = kept(); }\nvoid loop() {}\n"
    write_project(tmp_path / "p", sketch, extra_ini=(
        f"lib_deps = symlink://{library}\nlib_compat_mode = off\n"
        "custom_tflm_exclude =\n    debug_log.cpp\n    arduino_only/*\n"))
    report = build(tmp_path / "p", seeded_core(tmp_path_factory))
    assert report.firmware


# --- the shared object cache (tinyforge/toolchain/platforms/shared_object_cache.py) ---------

def _library(folder: Path) -> Path:
    """A small Arduino-style library; each function's value depends on its source text."""
    (folder / "src").mkdir(parents=True)
    (folder / "library.properties").write_text("name=Foo\nversion=1.0.0\narchitectures=*\n")
    (folder / "src" / "foo.h").write_text("int foo_a();\nint foo_b();\n")
    for name in ("a", "b"):
        (folder / "src" / f"foo_{name}.cpp").write_text(
            f'#include "foo.h"\nint foo_{name}() {{ return {ord(name)}; }}\n')
    return folder


def _foo_project(project: Path, version: int, lib_deps: str) -> None:
    sketch = ('#include "foo.h"\n#include "board_runtime.h"\n'
              f'const char kVersion[] = "sketch-version-{version}";\n'
              "volatile int sink;\n"
              "void setup() { sink = foo_a() + foo_b() + kVersion[sink]; }\nvoid loop() {}\n")
    write_project(project, sketch, extra_ini=f"lib_compat_mode = off\nlib_deps = {lib_deps}\n")


def _downloaded_copy(project: Path, library: Path, url: str) -> None:
    """The library as PlatformIO leaves a downloaded lib_deps entry (its .piopm names the URL)."""
    copy = project / ".pio" / "libdeps" / "qemu-m4" / "Foo"
    shutil.copytree(library, copy)
    (copy / ".piopm").write_text(json.dumps({
        "type": "library", "name": "Foo", "version": "1.0.0",
        "spec": {"owner": None, "id": None, "name": "Foo", "requirements": None,
                 "uri": f"git+{url}"}}))


@pytest.mark.emulator
def test_library_objects_are_shared_between_projects_and_copies_of_a_library(
        tmp_path_factory, tmp_path, monkeypatch):
    """A second project takes the library's objects from the cache, also when its copy of the
    library lives elsewhere (PlatformIO's download into each project's .pio/libdeps)."""
    require_emulator()
    block_network(monkeypatch)
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, str(tmp_path / "objects"))
    core = seeded_core(tmp_path_factory)
    library = _library(tmp_path / "Foo")
    _foo_project(tmp_path / "linked", 1, f"Foo=symlink://{library}")
    first = build(tmp_path / "linked", core)
    assert first.cached_files == 0 and first.compiled_files >= 3
    url = "https://example.invalid/Foo.git#0123456789abcdef0123456789abcdef01234567"
    _foo_project(tmp_path / "downloaded", 2, f"Foo={url}")
    _downloaded_copy(tmp_path / "downloaded", library, url)
    lines: list[str] = []
    second = pio.build(tmp_path / "downloaded", profiles.load_board("qemu-m4"), core,
                       on_line=lines.append, timeout=600)
    compiled = [line for line in lines if line.startswith("Compiling ")]
    assert not [line for line in compiled if "/Foo/" in line], compiled
    assert second.cached_files == 3  # foo_a.o, foo_b.o and libFoo.a
    # Only library objects are shared: the project's own sources compile in each project.
    assert len(compiled) == first.compiled_files - 2
    objects = sorted(p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()
                     and len(p.name) > 16)
    assert len(objects) == 3


@pytest.mark.emulator
def test_a_project_rebuilt_after_another_gets_its_own_code(tmp_path_factory, tmp_path,
                                                          monkeypatch):
    """PlatformIO's own build_cache_dir shares SCons' signature records between projects, and a
    project whose sources became what another one built last kept its old firmware (measured
    with PlatformIO 6.2.0). The shared object cache keeps those records per project."""
    require_emulator()
    block_network(monkeypatch)
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, str(tmp_path / "objects"))
    core = seeded_core(tmp_path_factory)
    library = _library(tmp_path / "Foo")
    for project, version in (("a", 1), ("b", 2), ("a", 2)):
        _foo_project(tmp_path / project, version, f"Foo=symlink://{library}")
        elf = Path(build(tmp_path / project, core).firmware).read_bytes()
        assert f"sketch-version-{version}".encode() in elf, (project, version)
        assert f"sketch-version-{3 - version}".encode() not in elf


@pytest.mark.emulator
def test_the_users_own_build_cache_dir_is_left_as_platformio_uses_it(tmp_path_factory, tmp_path,
                                                                     monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, str(tmp_path / "objects"))
    monkeypatch.setenv("PLATFORMIO_BUILD_CACHE_DIR", str(tmp_path / "theirs"))
    library = _library(tmp_path / "Foo")
    _foo_project(tmp_path / "p", 1, f"Foo=symlink://{library}")
    build(tmp_path / "p", seeded_core(tmp_path_factory))
    assert any((tmp_path / "theirs").glob(".sconsign*"))  # PlatformIO put its records there
    assert not (tmp_path / "objects").exists()


@pytest.mark.emulator
def test_an_unusable_object_cache_never_fails_a_build(tmp_path_factory, tmp_path, monkeypatch):
    require_emulator()
    block_network(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(pio.ENV_BUILD_CACHE_DIR, str(blocker / "objects"))
    _foo_project(tmp_path / "p", 1, f"Foo=symlink://{_library(tmp_path / 'Foo')}")
    lines: list[str] = []
    report = pio.build(tmp_path / "p", profiles.load_board("qemu-m4"),
                       seeded_core(tmp_path_factory), on_line=lines.append, timeout=600)
    assert report.firmware and report.cached_files == 0
    assert any("cannot write the shared object cache" in line for line in lines)
