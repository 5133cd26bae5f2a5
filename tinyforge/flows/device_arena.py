"""Measuring the arena on the emulated Cortex-M4 (qemu-m4): 32-bit, the board's own kernels.

The model firmware is built for qemu-m4 with the largest arena the board's RAM allows, run
in QEMU, and asked over serial (PROBE arena=N, docs/protocol.md) whether the model allocates
and invokes with only N bytes. A binary search over N finds the device's minimum in a few
milliseconds per probe; the firmware build is the slow part (the TFLM library compiles once
per project, ~4 min on 2 cores, then a model change rebuilds in seconds).

This needs the arm-none-eabi toolchain, QEMU and a TFLM library tree. Results are cached by
model, TFLM source and tinyforge version, so `inspect` can report a figure `build` measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .. import units
from ..board import profiles
from ..device import emulator, protocol
from ..device.conversation import Conversation
from ..errors import DeviceError, DeviceMeasurementUnavailable, DoesNotFitError, TinyforgeError
from ..model import fit
from ..model.arena import ALIGNMENT, ArenaMeasurement, ArenaPlan, plan_from_device, smallest_fitting
from ..model.checks import PreparedModel
from ..project import firmware, writer
from ..toolchain import pio, programs

log = logging.getLogger(__name__)


MEASURE_BOARD = "qemu-m4"
BOOT_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 10.0
# RAM of the measurement firmware that the fit estimate does not see (padding between
# statics, the C library's state), on top of the framework figure and the sketch's statics.
_PROBE_FIRMWARE_SLACK = 4096
_CACHE_VERSION = 1


def unavailable_reason(board: profiles.Board, tflm_root: Path | None) -> str | None:
    """Why the device measurement cannot run here, or None when it can."""
    if not board.cpu.startswith("cortex-m4"):
        return f"{board.id} is not a Cortex-M4 board"
    if tflm_root is None:
        return "no TFLM library tree (--tflm or TINYFORGE_TFLM)"
    try:
        programs.find_toolchain()
        programs.find_qemu()
    except TinyforgeError as error:
        return error.message
    return None


def measure(prepared: PreparedModel, tflm_root: Path, *, project_dir: Path | None = None,
            use_cache: bool = True, overwrite: bool = True) -> ArenaMeasurement:
    """The smallest arena the model runs with on the emulated Cortex-M4.

    `project_dir` defaults to a cache folder of tinyforge's own; for a user's project, pass
    `overwrite=False` so the measurement build never replaces files the user edited.
    """
    key = _cache_key(prepared, tflm_root)
    if use_cache and (cached := _cache_load(key)):
        log.info("arena: the emulated Cortex-M4's figure, measured before (cached)")
        return cached
    board = profiles.load_board(MEASURE_BOARD)
    project_dir = project_dir or _default_project_dir(tflm_root)
    started = time.monotonic()
    ceiling = _ceiling(board, prepared)
    elf = _build_probe_firmware(board, prepared, tflm_root, project_dir, ceiling, overwrite)
    search = _ProbeSearch(elf, ceiling)
    try:
        minimum = search.run()
    finally:
        search.close()
    measurement = ArenaMeasurement(minimum_bytes=minimum, reported_bytes=search.reported,
                                   probes=search.probes, seconds=time.monotonic() - started,
                                   source="device")
    log.debug("arena: %s on the emulated Cortex-M4 (%d probes)", units.size(minimum),
              search.probes)
    _cache_store(key, measurement)
    return measurement


def choose(prepared: PreparedModel, board: profiles.Board, tflm_root: Path | None, mode: str,
           *, project_dir: Path | None = None, overwrite: bool = True) -> ArenaPlan:
    """The arena plan for `mode`: "host", "device" (required) or "auto" (device when possible)."""
    host_plan = prepared.arena
    if mode == "host":
        return host_plan
    reason = unavailable_reason(board, tflm_root)
    if reason is not None:
        if mode == "device":
            raise DeviceMeasurementUnavailable(
                f"cannot measure the arena on the emulated Cortex-M4: {reason}",
                hint="install the toolchain and QEMU (`tinyforge doctor` says how) and give a "
                     "TFLM tree with --tflm, or use --arena host")
        log.info("arena: using the host measurement (no device measurement: %s)", reason)
        return host_plan
    device = measure(prepared, tflm_root, project_dir=project_dir, overwrite=overwrite)
    return plan_from_device(device, host_plan.host)


def cached(prepared: PreparedModel, tflm_root: Path | None) -> ArenaMeasurement | None:
    """A device figure measured before for this model and TFLM source, if any."""
    return _cache_load(_cache_key(prepared, tflm_root)) if tflm_root else None


def _ceiling(board: profiles.Board, prepared: PreparedModel) -> int:
    """The biggest arena the measurement firmware can hold within the board's RAM."""
    sketch = sum(fit.sketch_ram(board, prepared.info, len(prepared.ops)).values())
    free = (board.ram_bytes - board.memory["framework_ram_bytes"] - sketch
            - _PROBE_FIRMWARE_SLACK)
    return max(ALIGNMENT, free // ALIGNMENT * ALIGNMENT)


def _build_probe_firmware(board, prepared: PreparedModel, tflm_root: Path, project_dir: Path,
                          ceiling: int, overwrite: bool) -> Path:
    probe_plan = ArenaPlan(arena_bytes=ceiling, margin_bytes=0, used=prepared.arena.used,
                           host=prepared.arena.host, device=None,
                           note="measurement build: the largest arena the RAM allows")
    inputs = firmware.FirmwareInputs(
        board=board, model=prepared.data, info=prepared.info, ops=prepared.ops,
        resolver=prepared.resolver, arena=probe_plan, labels=[], demo_input=None,
        tflm_source=tflm_root)
    writer.write(project_dir, firmware.project_files(inputs), firmware.manifest(inputs),
                 overwrite=overwrite)
    core = pio.core_dir_for(board)
    pio.check_packages(board, project_dir, core, local_tflm=True)
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
                              f"{units.size(self.ceiling)}")
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
            raise DeviceError(f"the measurement firmware refused PROBE: {answer.msg}")
        return answer.fields.get("status") == "ok"

    def _start(self) -> None:
        self.link = emulator.launch(self.elf)
        self.conversation = Conversation(self.link)
        boot = self.conversation.wait_for(lambda e: isinstance(e, protocol.Boot),
                                          timeout=BOOT_TIMEOUT_S, what="BOOT message")
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
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(str(tflm_root).encode()).hexdigest()[:12]
    return cache / "tinyforge" / "arena-probe" / tag


def _cache_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tinyforge" / "arena-measurements.json"


def _cache_key(prepared: PreparedModel, tflm_root: Path | None) -> str:
    from .. import __version__
    header = b""
    if tflm_root is not None:
        from ..board.resolver import find_header
        header = find_header(tflm_root).read_bytes()
    tflm = hashlib.sha256(str(tflm_root).encode() + header).hexdigest()[:16]
    return f"v{_CACHE_VERSION}:{__version__}:{prepared.info.sha256}:{tflm}"


def _cache_load(key: str) -> ArenaMeasurement | None:
    try:
        entry = json.loads(_cache_path().read_text()).get(key)
    except (OSError, ValueError):
        return None
    if not entry:
        return None
    try:
        return ArenaMeasurement(**entry)
    except TypeError:
        return None


def _cache_store(key: str, measurement: ArenaMeasurement) -> None:
    path = _cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[key] = measurement.to_json()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError as exc:  # a cache is never worth failing a build for
        log.debug("cannot write the arena cache %s: %s", path, exc)
