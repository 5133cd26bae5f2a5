"""Compiling a board's TFLM library tree for the host: the reference with the board's kernels.

The `tflite-micro` wheel is TFLM of another year with reference kernels; the board runs its
own library (Chirale_TensorFlowLite 2.0.0, CMSIS-NN kernels). `build_host_library(tree)`
compiles the very sources the board's firmware compiles, with the host's g++/gcc, plus
tinyforge's small C API (`native/`), into one shared library that `host_tflm.py` loads.

- Same sources: every C/C++ file under the tree's `src/`, as PlatformIO builds the library,
  minus the Arduino-only files a bare-metal target replaces (the `exclude_sources` of the
  emulated board's profile); `native/tinyforge_host_target.cpp` replaces them.
- Same kernel variants: `-DARDUINO`, the define the library's headers select the CMSIS-NN
  registrations with (and the board profile's own `[tflm] build_flags`). Without the Cortex-M
  DSP extension CMSIS-NN takes its plain-C path; the results are specified to be the same.
- Cached by content: the key hashes every file of the tree's `src/`, the flags, the
  compiler's version and the shim's sources. The library is built in a staging folder and
  renamed into `$XDG_CACHE_HOME/tinyforge/host-tflm/<key>/` at once, so a second use costs a
  hash of the tree (~30 ms) and an interrupted build leaves nothing half-made.
docs/reference.md describes it all.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import proc
from ..board.float_code import NO_CONTRACTION
from ..errors import ChildProcessFailed, ChildTimeoutError, HostBuildError

log = logging.getLogger(__name__)

LIBRARY_FILE = "libtinyforge_tflm_host.so"
BUILD_INFO_FILE = "build.json"
NATIVE_DIR = Path(__file__).resolve().parent / "native"
SHIM_SOURCES = ("tinyforge_tflm_host.cpp", "tinyforge_host_target.cpp")
SHIM_HEADERS = ("tinyforge_tflm_host.h",)
SOURCE_SUFFIXES = (".c", ".cc", ".cpp")
# The define the Arduino library's headers pick their CMSIS-NN kernel variants with
# (kernels/conv.h: `#if defined(ARDUINO)` declares Register_CONV_2D_INT8 and friends).
BOARD_DEFINES = ("-DARDUINO",)
# The board build's language modes (the qemu-m4 builder, like the Arduino mbed core).
CXX_FLAGS = ("-std=gnu++14", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics")
C_FLAGS = ("-std=gnu11",)
# Host code generation: -Os like the board build (the same inlining); position-independent
# for a shared library; only the C API exported; warnings off (the library's, not ours: the
# board build shows them). Float a*b+c is never fused, on the board either
# (tinyforge.board.float_code): the same expressions round the same way on any host CPU.
HOST_FLAGS = ("-Os", "-fPIC", "-fvisibility=hidden", "-w") + NO_CONTRACTION
LINK_FLAGS = ("-shared", "-Wl,-z,defs", "-Wl,--gc-sections", "-lm")
COMPILE_TIMEOUT_S = 600.0
COMPILER_HINT = ("install the host C/C++ compiler (Debian: apt-get install g++), or run "
                 "without a TFLM tree to use the tflite-micro wheel as the reference")
# Bumped when the layout of the cache or of build.json changes.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class HostLibrary:
    """A compiled host build of one TFLM tree."""

    path: Path          # the shared library
    tree: Path
    library: str        # the tree's library.properties name (e.g. Chirale_TensorFlowLite)
    version: str        # and version (2.0.0)
    key: str
    sources: int        # how many of the tree's files were compiled
    compiled_now: bool  # False when it came from the cache
    seconds: float      # the compile time (of the original build when cached)

    @property
    def label(self) -> str:
        return f"host build of {self.library} {self.version}"

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(path=str(self.path), tree=str(self.tree))
        return data


def build_host_library(tree: Path, *, extra_defines: tuple[str, ...] = (),
                       exclude: tuple[str, ...] | None = None, jobs: int | None = None,
                       cache_dir: Path | None = None) -> HostLibrary:
    """The host build of the TFLM library tree at `tree` (its root: library.properties, src/).

    Compiled on first use, one compiler process per source file (`jobs` at a time, default
    the CPU count), then taken from the cache. `extra_defines` are the board profile's TFLM
    build flags; `exclude` the library's Arduino-only files (default: the emulated board's).
    """
    tree = Path(tree).resolve()
    src = tree / "src"
    if not src.is_dir():
        raise HostBuildError(f"{tree} has no src/ folder: not an Arduino TFLM library tree",
                             hint="give the library's root folder (library.properties, src/)")
    patterns = tuple(exclude) if exclude is not None else default_exclusions()
    defines = tuple(dict.fromkeys(BOARD_DEFINES + tuple(extra_defines)))
    cxx, cc = _compilers()
    sources = tree_sources(tree, patterns)
    code = HOST_FLAGS
    key = cache_key(tree, defines, _compiler_identity(cxx, cc), code)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    library, version = library_identity(tree)
    installed = _load_installed(root / key, tree, library, version, key)
    if installed is not None:
        return installed
    started = time.monotonic()
    log.info("compiling %s %s for the host as the reference runtime: %d files, once "
             "(cached in %s)...", library, version, len(sources) + len(SHIM_SOURCES), root)
    _build_and_install(root, key, tree, sources, defines + code, cxx, cc, jobs, library,
                       version)
    seconds = time.monotonic() - started
    log.info("host TFLM built in %.0f s", seconds)
    return HostLibrary(path=root / key / LIBRARY_FILE, tree=tree, library=library,
                       version=version, key=key, sources=len(sources), compiled_now=True,
                       seconds=seconds)


def cache_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tinyforge" / "host-tflm"


def default_exclusions() -> tuple[str, ...]:
    """The library's Arduino-only files, as the emulated bare-metal board leaves them out."""
    from ..board import profiles

    board = profiles.load_board("qemu-m4")
    return tuple(board.tflm.get("exclude_sources", ()))


def tree_sources(tree: Path, exclude: tuple[str, ...]) -> list[Path]:
    """Every C/C++ source under `tree/src`, sorted, minus the `exclude` patterns (relative to
    the library root, as in a board profile's exclude_sources)."""
    found = []
    for path in sorted((Path(tree) / "src").rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
            continue
        # The qemu-m4 builder's rule (its _drop_excluded_library_files), so both builds
        # leave out the same files.
        if any(fnmatch.fnmatch(path.as_posix(), "*/" + pattern) for pattern in exclude):
            continue
        found.append(path)
    return found


def library_identity(tree: Path) -> tuple[str, str]:
    """(name, version) from the tree's library.properties, or the folder name and 'unknown'."""
    name, version = Path(tree).name, "unknown"
    try:
        text = (Path(tree) / "library.properties").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name, version
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "name" and value.strip():
            name = value.strip()
        elif key.strip() == "version" and value.strip():
            version = value.strip()
    return name, version


def cache_key(tree: Path, defines: tuple[str, ...], compiler: str,
              code: tuple[str, ...] = HOST_FLAGS) -> str:
    """A hash of everything the library is made from: the tree's src/ and library.properties,
    the flags, the compiler and tinyforge's shim."""
    digest = hashlib.sha256()
    digest.update(f"format {_CACHE_FORMAT}\n".encode())
    for part in (compiler, *defines, *CXX_FLAGS, *C_FLAGS, *code, *LINK_FLAGS):
        digest.update(part.encode() + b"\0")
    files = [Path(tree) / "library.properties", *sorted((Path(tree) / "src").rglob("*"))]
    files += [NATIVE_DIR / name for name in SHIM_SOURCES + SHIM_HEADERS]
    for path in files:
        if not path.is_file():
            continue
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def _compilers() -> tuple[str, str]:
    cxx = proc.resolve_program(os.environ.get("CXX") or "g++", COMPILER_HINT)
    cc = proc.resolve_program(os.environ.get("CC") or "gcc", COMPILER_HINT)
    return cxx, cc


def _compiler_identity(cxx: str, cc: str) -> str:
    parts = []
    for program in (cxx, cc):
        version = proc.run([program, "-dumpfullversion"], timeout=30, what=program).text.strip()
        machine = proc.run([program, "-dumpmachine"], timeout=30, what=program).text.strip()
        parts.append(f"{program} {version} {machine}")
    return "; ".join(parts)


def _load_installed(folder: Path, tree: Path, library: str, version: str,
                    key: str) -> HostLibrary | None:
    path = folder / LIBRARY_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads((folder / BUILD_INFO_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    log.debug("host TFLM: %s from the cache (%s)", library, folder)
    return HostLibrary(path=path, tree=tree, library=library, version=version, key=key,
                       sources=int(info.get("sources", 0)), compiled_now=False,
                       seconds=float(info.get("seconds", 0.0)))


def _build_and_install(root: Path, key: str, tree: Path, sources: list[Path],
                       flags: tuple[str, ...], cxx: str, cc: str, jobs: int | None,
                       library: str, version: str) -> None:
    started = time.monotonic()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError as exc:
        raise HostBuildError(f"cannot write the host TFLM cache {root}: {exc.strerror}",
                             hint="make it writable, or set XDG_CACHE_HOME to a writable "
                                  "folder") from None
    try:
        objects = staging / "objects"
        objects.mkdir()
        jobs_list = [(path, tree / "src") for path in sources]
        jobs_list += [(NATIVE_DIR / name, NATIVE_DIR) for name in SHIM_SOURCES]
        compiled = _compile_all(jobs_list, objects, tree, flags, cxx, cc, jobs or
                                os.cpu_count() or 1, f"{library} {version}")
        output = staging / LIBRARY_FILE
        _run_compiler([cxx, "-o", str(output), *map(str, compiled), *LINK_FLAGS],
                      what=f"linking the host build of {library} {version}",
                      hint="a symbol missing at link time is usually an Arduino-only file "
                           "left out without a replacement; see docs/reference.md")
        shutil.rmtree(objects)
        _write_info(staging, tree, library, version, len(sources),
                    time.monotonic() - started, flags)
        try:
            os.rename(staging, root / key)
        except OSError:
            if not (root / key / LIBRARY_FILE).is_file():  # not another process's finished build
                raise
            log.debug("host TFLM: another process installed %s first", key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _compile_all(jobs_list: list[tuple[Path, Path]], objects: Path, tree: Path,
                 flags: tuple[str, ...], cxx: str, cc: str, jobs: int,
                 what: str) -> list[Path]:
    include = ["-I", str(tree / "src"), "-I", str(NATIVE_DIR)]
    argvs = []
    for number, (source, base) in enumerate(jobs_list):
        relative = source.relative_to(base).as_posix()
        output = objects / f"{number:04d}_{source.stem}.o"
        if source.suffix == ".c":
            argv = [cc, *C_FLAGS, *flags, *include, "-c", str(source), "-o", str(output)]
        else:
            argv = [cxx, *CXX_FLAGS, *flags, *include, "-c", str(source), "-o", str(output)]
        argvs.append((relative, argv, output))
    done = 0
    step = max(1, len(argvs) // 5)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_run_compiler, argv, what=f"compiling {relative}",
                               hint=_compile_hint(relative)): relative
                   for relative, argv, _ in argvs}
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                done += 1
                if done % step == 0 and done < len(argvs):
                    log.info("host TFLM: compiled %d of %d files", done, len(argvs))
        except BaseException:
            # Ctrl-C or a failed file: start nothing more; the running compilers finish.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    log.debug("host TFLM: compiled %d files of %s", len(argvs), what)
    return [output for _, _, output in argvs]


def _compile_hint(relative: str) -> str:
    return (f"{relative} does not compile for the host: if it is an Arduino-only file of the "
            "library, it belongs in the board profile's [tflm] exclude_sources; run with "
            "--verbose to see the compiler command")


def _run_compiler(argv: list[str], *, what: str, hint: str) -> None:
    try:
        proc.run(argv, timeout=COMPILE_TIMEOUT_S, what=what, install_hint=COMPILER_HINT)
    except (ChildProcessFailed, ChildTimeoutError) as error:
        raise HostBuildError(f"the host build of the board's TFLM failed: {error.message}",
                             details=error.details, hint=hint) from None


def _write_info(folder: Path, tree: Path, library: str, version: str, sources: int,
                seconds: float, flags: tuple[str, ...]) -> None:
    info = {"tree": str(tree), "library": library, "version": version, "sources": sources,
            "seconds": round(seconds, 1),
            "defines": [flag for flag in flags if flag.startswith("-D")],
            "flags": {"cxx": list(CXX_FLAGS), "c": list(C_FLAGS),
                      "code": [flag for flag in flags if not flag.startswith("-D")],
                      "link": list(LINK_FLAGS)}}
    try:
        temporary = folder / (BUILD_INFO_FILE + ".tmp")
        temporary.write_text(json.dumps(info, indent=1, sort_keys=True))
        os.replace(temporary, folder / BUILD_INFO_FILE)
    except OSError as exc:  # the record is informative; the library is what matters
        log.debug("cannot write %s: %s", folder / BUILD_INFO_FILE, exc)
