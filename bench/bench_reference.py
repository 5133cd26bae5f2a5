"""The host reference runtimes: the host build of the board's TFLM tree (cold and cached) and
the per-inference time of both references (docs/reference.md).

Needs a TFLM tree ($TINYFORGE_TFLM) for the board-tree figures. `--cold` also compiles the
tree into a fresh temporary cache (several minutes on 2 cores); without it the cold time is
the one recorded when the cached build was made.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from _common import model_300k, report

from tinyforge.board import profiles
from tinyforge.model import arena, host_build, host_runtime, reader
from tinyforge.model.isolated import call_isolated
from tinyforge.model.reference import TreeRuntime, WheelRuntime

EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"
INVOKES = 200


def _tree_invokes(path: str, model: bytes, count: int) -> float:
    from tinyforge.model import host_tflm
    interpreter = host_tflm.Interpreter(host_tflm.load(Path(path)), model,
                                        host_runtime.generous_arena(len(model)),
                                        reader.inspect_bytes(model, "m").resource_variables)
    interpreter.check_allocated()
    details = interpreter.input_details(0)
    interpreter.set_input(0, np.zeros(details.shape, dtype=np.dtype(details.dtype)))
    started = time.perf_counter()
    for _ in range(count):
        interpreter.invoke()
    return (time.perf_counter() - started) / count


def _wheel_invokes(model: bytes, count: int) -> float:
    interpreter = host_runtime._interpreter(model, host_runtime.generous_arena(len(model)))
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    started = time.perf_counter()
    for _ in range(count):
        interpreter.invoke()
    return (time.perf_counter() - started) / count


def _batch_seconds(runtime, model: bytes, samples: int) -> float:
    info = reader.inspect_bytes(model, "m")
    spec = info.inputs[0]
    rng = np.random.default_rng(0)
    batch = [[rng.integers(-128, 128, spec.shape, dtype=np.int8)] for _ in range(samples)]
    started = time.perf_counter()
    runtime.run_batch(model, batch, len(info.outputs), "m")
    return time.perf_counter() - started


def main() -> None:
    tree = os.environ.get("TINYFORGE_TFLM")
    if not tree:
        print("skipped: set TINYFORGE_TFLM to a TFLM library tree (e.g. Chirale_TensorFlowLite)")
        return
    board = profiles.load_board("qemu-m4")
    defines = tuple(board.tflm.get("build_flags", ()))
    if "--cold" in sys.argv:
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            host_build.build_host_library(Path(tree), extra_defines=defines,
                                          cache_dir=Path(cache))
            report("host build of the tree, cold", time.perf_counter() - started,
                   extra=f"  {os.cpu_count()} parallel compilers")
    started = time.perf_counter()
    library = host_build.build_host_library(Path(tree), extra_defines=defines)
    cached = time.perf_counter() - started
    recorded = json.loads((library.path.parent / host_build.BUILD_INFO_FILE).read_text())
    report("host build of the tree, cold (recorded)", recorded["seconds"],
           extra=f"  {recorded['sources']} files of {library.library} {library.version}")
    report("host build of the tree, cached", cached, extra="  hash of the tree + lookup")
    tree_runtime, wheel = TreeRuntime(library), WheelRuntime()
    tree_runtime._prepare_fork()
    wheel._prepare_fork()
    for path in (EXAMPLE, model_300k()):
        model = path.read_bytes()
        name = f"{path.name} ({len(model) // 1024} KB)"
        tree_call = call_isolated(_tree_invokes, str(library.path), model, INVOKES)
        wheel_call = call_isolated(_wheel_invokes, model, INVOKES)
        report(f"invoke {name}: board tree", tree_call.value, extra=f"  mean of {INVOKES}")
        report(f"invoke {name}: wheel", wheel_call.value, extra=f"  mean of {INVOKES}")
        report(f"64 inputs {name}: board tree", _batch_seconds(tree_runtime, model, 64),
               extra="  run_batch: fork, allocate, 64 invokes")
        report(f"64 inputs {name}: wheel", _batch_seconds(wheel, model, 64),
               extra="  run_batch: fork, allocate, 64 invokes")
        for label, runtime in (("board tree", tree_runtime), ("wheel", wheel)):
            found = arena.measure_on_host(model, path.name, runtime)
            report(f"arena search {name}: {label}", found.seconds,
                   extra=f"  minimum {found.minimum_bytes} B (TFLM reports "
                         f"{found.reported_bytes} B), {found.probes} probes")


if __name__ == "__main__":
    main()
