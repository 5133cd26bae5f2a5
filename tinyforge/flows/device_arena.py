"""Measuring the arena on the emulated Cortex-M4 (qemu-m4): 32-bit, the board's own kernels.

The model firmware is built for qemu-m4 with the largest arena the board's RAM allows, run
in QEMU, and asked over serial (PROBE arena=N, docs/protocol.md) whether the model allocates
and invokes with only N bytes. A binary search over N finds the device's minimum in a few
milliseconds per probe; the firmware build is the slow part (the TFLM library compiles once
per machine, 3-5 min on 2 cores, then comes from the shared object cache: a new project or
model builds in seconds).

This needs the arm-none-eabi toolchain, QEMU and a TFLM library tree: `--tflm`, or the board's
pinned library once PlatformIO has downloaded it into the user's project. Results are cached
by what determines them (tinyforge version, model sha256, the content of the TFLM tree), never
by a path; a measurement made with the pinned library is also found by the library's pinned
source, so a plain `inspect` reports the figure `build` measured without any tree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import storage, units, userfiles
from ..board import profiles
from ..board.tflm_source import downloaded_tflm, tree_digest
from ..device import emulator, protocol
from ..device.conversation import Conversation, wait_for_boot
from ..errors import DeviceError, DeviceMeasurementUnavailable, DoesNotFitError, TinyforgeError
from ..model import fit, memory_report
from ..model.arena import ALIGNMENT, ArenaMeasurement, ArenaPlan, plan_from_device, smallest_fitting
from ..model.checks import PreparedModel
from ..project import firmware, writer
from ..toolchain import pio, programs

log = logging.getLogger(__name__)


MEASURE_BOARD = "qemu-m4"
PROBE_TIMEOUT_S = 10.0
# RAM of the measurement firmware that the fit estimate does not see (padding between
# statics, the C library's state), on top of the framework figure and the sketch's statics.
_PROBE_FIRMWARE_SLACK = 4096
_CACHE_VERSION = 2
_MAX_CACHE_BYTES = 16 * userfiles.MiB
_MEASUREMENT_TYPES = {"minimum_bytes": int, "reported_bytes": int, "probes": int,
                      "seconds": (int, float), "source": str, "runtime": str}


def unavailable_reason(board: profiles.Board, tflm_root: Path | None) -> str | None:
    """Why the device measurement cannot run here, or None when it can."""
    if not board.cpu.startswith("cortex-m4"):
        return f"{board.id} is not a Cortex-M4 board"
    if tflm_root is None:
        return ("no TFLM library tree (--tflm or TINYFORGE_TFLM, or the board's pinned library "
                "downloaded by a first build)")
    try:
        programs.find_toolchain()
        programs.find_qemu()
    except TinyforgeError as error:
        return error.message
    return None


@dataclass(frozen=True)
class Library:
    """The TFLM library tree a measurement is made with."""

    root: Path
    digest: str | None          # tree_digest(): what the cache knows it by
    pinned_source: str | None   # the board's pinned source, when this is PlatformIO's download

    @classmethod
    def find(cls, board: profiles.Board, tflm_root: Path | None,
             downloads_in: Path | None) -> Library | None:
        """`tflm_root`, else the pinned library PlatformIO downloaded into `downloads_in`."""
        if tflm_root is not None:
            return cls(tflm_root, tree_digest(tflm_root), None)
        root = downloaded_tflm(board, downloads_in) if downloads_in is not None else None
        if root is None:
            return None
        log.info("arena: using %s as PlatformIO downloaded it (%s)", board.tflm["library"], root)
        return cls(root, tree_digest(root), board.tflm["source"])


def measure(prepared: PreparedModel, library: Library, *, project_dir: Path | None = None,
            overwrite: bool = True) -> ArenaMeasurement:
    """The smallest arena the model runs with on the emulated Cortex-M4 (and cache it).

    `project_dir` defaults to a cache folder of tinyforge's own; for a user's project, pass
    `overwrite=False` so the measurement build never replaces files the user edited.
    """
    board = profiles.load_board(MEASURE_BOARD)
    # A download inside the project being measured is the project's own dependency: render it
    # as the pinned one, like the final build, so platformio.ini stays the same for both.
    own_download = (library.pinned_source is not None and project_dir is not None
                    and library.root.is_relative_to(Path(project_dir).resolve()))
    project_dir = project_dir or _default_project_dir(library.root)
    started = time.monotonic()
    ceiling = _ceiling(board, prepared)
    elf = _build_probe_firmware(board, prepared, None if own_download else library.root,
                                project_dir, ceiling, overwrite)
    search = _ProbeSearch(elf, ceiling)
    try:
        minimum = search.run()
    finally:
        search.close()
    measurement = ArenaMeasurement(minimum_bytes=minimum, reported_bytes=search.reported,
                                   probes=search.probes, seconds=time.monotonic() - started,
                                   source="device")
    # The figure is the summary's (build, inspect): said once, there.
    log.debug("arena: %s on the emulated Cortex-M4 (%d probes)", units.size(minimum),
              search.probes)
    record(prepared, library, measurement)
    return measurement


def choose(prepared: PreparedModel, board: profiles.Board, tflm_root: Path | None, mode: str,
           *, project_dir: Path | None = None, overwrite: bool = True,
           downloads_in: Path | None = None, explain: bool = True) -> ArenaPlan:
    """The arena plan for `mode`: "host", "device" (required) or "auto" (device when possible).

    The library is `tflm_root`, else the board's pinned library if PlatformIO downloaded it
    into `downloads_in` (the user's project). Without either, a figure measured before with
    the pinned library is used if the cache has one. `explain=False` leaves out why the
    host figure is used: for a second model of the same build the reason is the same.
    """
    host_plan = prepared.arena
    if mode == "host":
        return host_plan
    library = Library.find(board, tflm_root, downloads_in)
    cached = (_cache_load(prepared, library.digest) if library
              else pinned_measurement(prepared, board))
    if cached is not None:
        log.info("arena: device figure from the cache (%s B)", f"{cached.minimum_bytes:,}")
        if library is not None:
            record(prepared, library)
        return plan_from_device(cached, host_plan.host)
    reason = unavailable_reason(board, library.root if library else None)
    if reason is not None:
        if mode == "device":
            raise DeviceMeasurementUnavailable(
                f"cannot measure the arena on the emulated Cortex-M4: {reason}",
                hint="install the toolchain and QEMU (`tinyforge doctor` says how) and give a "
                     "TFLM tree with --tflm, or use --arena host")
        if explain:
            log.info("arena: using the host measurement (no device measurement: %s)", reason)
        return host_plan
    device = measure(prepared, library, project_dir=project_dir, overwrite=overwrite)
    return plan_from_device(device, host_plan.host)


def pinned_measurement(prepared: PreparedModel, board: profiles.Board) -> ArenaMeasurement | None:
    """A device figure measured before for this model with the board's pinned TFLM library
    (found by its source, so no tree is needed)."""
    digest = _read_cache()["libraries"].get(board.tflm["source"])
    return _cache_load(prepared, digest) if isinstance(digest, str) else None


def _ceiling(board: profiles.Board, prepared: PreparedModel) -> int:
    """The biggest arena the measurement firmware can hold within the board's RAM."""
    sketch = sum(fit.sketch_ram(board, prepared.info, len(prepared.ops)).values())
    free = (board.ram_bytes - board.memory["framework_ram_bytes"] - sketch
            - _PROBE_FIRMWARE_SLACK)
    return max(ALIGNMENT, free // ALIGNMENT * ALIGNMENT)


def _build_probe_firmware(board, prepared: PreparedModel, tflm_source: Path | None,
                          project_dir: Path, ceiling: int, overwrite: bool) -> Path:
    """The measurement firmware; `tflm_source` None: the board's pinned library dependency."""
    probe_plan = ArenaPlan(arena_bytes=ceiling, margin_bytes=0, used=prepared.arena.used,
                           host=prepared.arena.host, device=None,
                           note="measurement build: the largest arena the RAM allows")
    inputs = firmware.FirmwareInputs(
        board=board, model=prepared.data, info=prepared.info, ops=prepared.ops,
        resolver=prepared.resolver, arena=probe_plan, labels=[], demo_input=None,
        tflm_source=tflm_source)
    writer.write(project_dir, firmware.project_files(inputs), firmware.manifest(inputs),
                 overwrite=overwrite)
    core = pio.core_dir_for(board)
    pio.check_packages(board, project_dir, core, local_tflm=tflm_source is not None)
    log.info("arena: building the model for the emulated Cortex-M4 to measure it "
             "(the first build compiles TFLM: a few minutes)...")
    # Its RAM/Flash figures (nearly all the RAM, on purpose) are never shown as the user's.
    report = pio.build(project_dir, board, core,
                       on_line=pio.progress_logger("measurement build"))
    return Path(report.firmware)


class _ProbeSearch:
    """Binary search over PROBE requests; a probe that crashes the firmware counts as 'no'."""

    def __init__(self, elf: Path, ceiling: int):
        self.elf = elf
        self.ceiling = ceiling
        self.probes = 0
        self.reported = 0
        self.link = None
        self.conversation = None

    def run(self) -> int:
        self._start()
        minimum = smallest_fitting(self.fits, start=self.reported, ceiling=self.ceiling)
        if minimum is None:
            raise DeviceError("the measurement firmware ran at boot but no probe fits within "
                              f"{units.size(self.ceiling)}",
                              hint="measure on the host instead: `--arena host`")
        return minimum

    def fits(self, size: int) -> bool:
        self.probes += 1
        try:
            self.conversation.send(protocol.encode("PROBE", arena=size))
            answer = self.conversation.wait_for(
                lambda e: isinstance(e, protocol.OtherMessage) and e.type == "ARENA"
                or isinstance(e, protocol.DeviceErrorMessage),
                timeout=PROBE_TIMEOUT_S, what=f"answer to PROBE arena={size}")
        except DeviceError as error:  # a too-small arena crashed the firmware
            log.debug("probe %d crashed the firmware: %s", size, error.message)
            self.close()
            self._start()
            return False
        if isinstance(answer, protocol.DeviceErrorMessage):
            raise DeviceError(f"the measurement firmware refused PROBE: {answer.msg}",
                              hint="measure on the host instead: `--arena host`")
        return answer.fields.get("status") == "ok"

    def _start(self) -> None:
        self.link = emulator.launch(self.elf)
        self.conversation = Conversation(self.link)
        boot = wait_for_boot(self.conversation, ask=False)
        if not boot.ok:
            raise DoesNotFitError(
                f"the model does not start on the emulated Cortex-M4 even with a "
                f"{units.size(self.ceiling)} arena (all the RAM the board leaves for it)",
                details=self.conversation.describe_tail(),
                hint="make the model's activations smaller (narrower layers, smaller input)")
        self.reported = boot.arena_used_bytes

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None


def _default_project_dir(tflm_root: Path) -> Path:
    tag = hashlib.sha256(str(tflm_root).encode()).hexdigest()[:12]
    return storage.require_writable(storage.cache_root() / "arena-probe" / tag,
                                    what="the arena measurement's project folder",
                                    variable=storage.CACHE_ENV)


def _cache_path() -> Path:
    return storage.cache_root() / "arena-measurements.json"


def _cache_key(prepared: PreparedModel, library: str) -> str:
    """What determines a device figure: the model, the TFLM library's content, tinyforge (its
    firmware and the qemu-m4 target) and the flags the measurement firmware is built with."""
    from .. import __version__
    board = profiles.load_board(MEASURE_BOARD)
    flags = json.dumps([board.platformio.get("build_flags", []),
                        board.tflm.get("build_flags", [])])
    target = hashlib.sha256(flags.encode()).hexdigest()[:12]
    key = f"{__version__}:{target}:{prepared.info.sha256}:{library}"
    # A planned model's firmware places its buffers from a compiled-in table, and needs less
    # arena than the greedy planner it used to run: never reuse a figure measured with that.
    if memory_report.fixed_layout(prepared.data, prepared.info.name) is not None:
        key += ":fixed-layout"
    return key


def _read_cache() -> dict:
    """{"version", "measurements": {key: figure}, "libraries": {pinned source: digest}}."""
    try:
        # Bounded like any file; an unreadable or damaged cache is an empty one.
        text = userfiles.read_text(_cache_path(), what="arena cache", limit=_MAX_CACHE_BYTES,
                                   hint="delete it; it is only a cache", missing_ok=True)
        data = json.loads(text) if text else None
    except (TinyforgeError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        data = {}
    return {"version": _CACHE_VERSION,
            "measurements": _table(data.get("measurements")),
            "libraries": _table(data.get("libraries"))}


def _table(value) -> dict:
    return value if isinstance(value, dict) else {}


def _cache_load(prepared: PreparedModel, library: str | None) -> ArenaMeasurement | None:
    if library is None:
        return None
    entry = _read_cache()["measurements"].get(_cache_key(prepared, library))
    if not isinstance(entry, dict) or set(entry) != set(_MEASUREMENT_TYPES):
        return None
    if not all(isinstance(entry[k], t) and not isinstance(entry[k], bool)
               for k, t in _MEASUREMENT_TYPES.items()):
        return None  # an edited or damaged cache is no measurement
    return ArenaMeasurement(**entry)


def record(prepared: PreparedModel, library: Library,
           measurement: ArenaMeasurement | None = None) -> None:
    """Cache `measurement` (if any) for this model and library and, for PlatformIO's download
    of a pinned library, which content that pinned source has; never fails."""
    if library.digest is None:
        return
    try:
        path = _cache_path()
    except TinyforgeError:  # no usable cache folder: nothing to remember
        return
    data = _read_cache()
    if measurement is not None:
        data["measurements"][_cache_key(prepared, library.digest)] = measurement.to_json()
    if library.pinned_source is not None:
        data["libraries"][library.pinned_source] = library.digest
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError as exc:  # a cache is never worth failing a build for
        log.debug("cannot write the arena cache %s: %s", path, exc)
