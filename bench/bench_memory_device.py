"""The offline memory plan on the emulated Cortex-M4: for each model, `tinyforge build --board
qemu-m4 --arena device` (--memory-plan auto: the arena measured with PROBE on the model as
given and on the planned model), then `tinyforge validate --random N` against the host
reference running the embedded (planned) model, and one line of figures per model.

    TINYFORGE_TFLM=/path/to/Chirale_TensorFlowLite python bench/bench_memory_device.py \
        [--random N] [--out DIR] [MODEL.tflite ...]

Without models: the bundled example and, when TensorFlow is installed, the memory tests'
models (tests/models/make_memory_models.py: conv1d, residual, concat). Needs the arm-none-eabi
toolchain, QEMU and a TFLM tree; the first build compiles TFLM (minutes), later ones take its
objects from the shared object cache.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import CACHE  # noqa: E402

from tinyforge.flows import build, validate  # noqa: E402
from tinyforge.model import memory_report  # noqa: E402


def default_models() -> list[Path | None]:
    """None is the bundled example (with its labels and demo input)."""
    models: list[Path | None] = [None]
    out = CACHE / "memory-models"
    if not (out / "conv1d_int8.tflite").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "tests/models/make_memory_models.py"),
                        str(out)], check=True, capture_output=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    models += [out / f"{name}_int8.tflite" for name in ("conv1d", "residual", "concat")]
    return models


def measure(model: Path | None, project: Path, random_count: int) -> str:
    result = build.build(build.BuildOptions(board="qemu-m4", model=model, project_dir=project,
                                            arena="device"))
    choice = result.memory_plan
    plan = choice.outcome.plan or memory_report.plan_model(result.model.data,
                                                           result.model.info.name)
    with_plan, without = choice.arena_with_plan, choice.arena_without_plan
    device = (with_plan or result.model.arena).device
    if without is not None:
        arena = (f"used {without.device.reported_bytes:>6,} -> {with_plan.device.reported_bytes:>6,}"
                 f"  smallest {without.device.minimum_bytes:>6,} -> "
                 f"{with_plan.device.minimum_bytes:>6,}")
    else:
        arena = (f"used {device.reported_bytes:>6,} (no plan)  smallest "
                 f"{device.minimum_bytes:>6,} (no plan)")
    report = validate.validate_last_build(project_dir=project, random_count=random_count)
    verdict = (f"{report.exact_matches}/{report.samples} identical"
               f"{'' if report.passed else ' FAILED'} ({report.reference})")
    name = model.name if model else "gesture_int8 (bundled)"
    return (f"{name:24} head greedy {plan.greedy_bytes:>6,} plan {plan.planned_bytes:>6,} "
            f"bound {plan.lower_bound_bytes:>6,}  {1000 * plan.seconds:7.1f} ms  {arena}  "
            f"{choice.outcome.action:>9}  arena {result.model.arena.arena_bytes:,}  "
            f"validate {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--random", type=int, default=32)
    parser.add_argument("--out", type=Path, help="where the projects go (default: a temp dir)")
    args = parser.parse_args()
    if not os.environ.get("TINYFORGE_TFLM"):
        sys.exit("set TINYFORGE_TFLM to a TFLM library tree (Chirale_TensorFlowLite 2.0.0)")
    models = args.models or default_models()
    with tempfile.TemporaryDirectory(prefix="bench-memory-device-") as temporary:
        out = args.out or Path(temporary)
        print("model                    arena head (board kernels), time to plan, device "
              "arena (arena_used_bytes and smallest) greedy -> plan, action, chosen arena, "
              "validate")
        for number, model in enumerate(models):
            print(measure(model, out / f"m{number}", args.random), flush=True)


if __name__ == "__main__":
    main()
