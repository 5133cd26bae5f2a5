"""The arena head of every model at hand: TFLM's greedy plan, tinyforge's offline plan, the
lower bound and the time to plan, for the board's kernels (CMSIS-NN, Chirale 2.0.0) and the
host runtime's (reference); and, as a check, what the real host runtime planned with and
without the embedded plan.

    python bench/bench_memory.py [--arena] [--time-limit S]

--arena also measures the smallest arena the host runtime runs each model in, with and
without the plan (a binary search of forked probes: a few seconds per model).
"""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _common import CACHE, model_300k  # noqa: E402

from tinyforge.model import (  # noqa: E402
    arena,
    host_runtime,
    memory_embed,
    memory_planner,
    memory_report,
)


def tensorflow_models() -> list[Path]:
    """The test suites' TensorFlow-made models, made once into bench/.cache."""
    out = CACHE / "memory-models"
    if not (out / "conv1d_int8.tflite").exists():
        if importlib.util.find_spec("tensorflow") is None:
            return []
        out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        for script in ("make_memory_models.py", "make_models.py"):
            subprocess.run([sys.executable, str(ROOT / "tests" / "models" / script), str(out)],
                           check=True, capture_output=True, env=env)
    keep = ("residual", "concat", "unet", "mean", "conv_int8", "conv1d", "dense_int8",
            "big_arena")
    return sorted(p for p in out.glob("*.tflite") if p.name.startswith(keep))


def models() -> list[tuple[str, bytes]]:
    from memory_graphs import FloatNet  # noqa: F401  (the hand-built graphs of the tests)
    from test_memory import chain_model
    from test_memory_runtime import concat_model, residual_model

    found = [("gesture_int8 (bundled)", (ROOT / "tinyforge/example/gesture_int8.tflite")
              .read_bytes())]
    sine = Path(host_runtime.runtime_module().__file__).parent / "sine_float.tflite"
    if sine.exists():
        found.append(("sine_float (tflite-micro)", sine.read_bytes()))
    found += [(p.stem, p.read_bytes()) for p in tensorflow_models()]
    if importlib.util.find_spec("tensorflow") is not None:
        found.append(("cnn_300k_int8", model_300k().read_bytes()))
    spec = importlib.util.find_spec("pymicro_wakeword")
    if spec is not None:
        for path in sorted(Path(spec.origin).parent.joinpath("models").glob("*.tflite")):
            found.append((f"{path.stem} (microWakeWord)", path.read_bytes()))
    found += [("chain_float (hand-built)", chain_model()),
              ("residual_float (hand-built)", residual_model()),
              ("concat_float (hand-built)", concat_model())]
    return found


def row(name: str, data: bytes, time_limit: float, measure_arena: bool) -> None:
    lines = []
    for kernels, secondary in (("cmsis-nn", "reference"), ("reference", None)):
        plan = memory_report.plan_model(data, name, kernels=kernels, secondary=secondary,
                                        time_limit_s=time_limit)
        floor = plan.minimum_bytes or plan.lower_bound_bytes
        mark = "optimal" if plan.optimal else f"gap {plan.planned_bytes - floor} B"
        limit = " (time limit)" if plan.time_limit_hit else ""
        lines.append(f"  {kernels:9} greedy {plan.greedy_bytes:7} B  plan {plan.planned_bytes:7} B"
                     f"  lower bound {plan.lower_bound_bytes:7} B  {mark:9} {plan.method:9}"
                     f" {plan.seconds:6.2f} s{limit}")
        if kernels == "reference":
            host = memory_report.host_head_bytes(data)
            planned = memory_embed.embed_offline_plan(data, plan.offsets) if plan.improves \
                else data
            host_planned = memory_report.host_head_bytes(planned)
            check = "" if host is None else \
                f"  host runtime head {host} B -> {host_planned} B with the plan"
            if measure_arena and host is not None:
                before = arena.measure_on_host(data, name).minimum_bytes
                after = arena.measure_on_host(planned, name).minimum_bytes
                check += f"; smallest host arena {before} B -> {after} B"
            lines.append(check or "  (the host runtime cannot run this model)")
    print(name)
    print("\n".join(lines))


def synthetic(time_limit: float) -> None:
    """The search alone on random lifetimes of growing size (seeded), to show how it scales."""
    import random

    from tinyforge.model.memory import Buffer, greedy_plan, peak_load

    rng = random.Random(5)
    print("synthetic graphs (random sizes and lifetimes, seeded)")
    for count in (25, 50, 100, 200, 400):
        buffers = []
        for i in range(count):
            first = rng.randint(0, count // 2)
            buffers.append(Buffer(16 * rng.randint(1, 64), first, first + rng.randint(0, 6),
                                  str(i)))
        solution = memory_planner.optimise(buffers, time_limit_s=time_limit)
        print(f"  {count:4} buffers  greedy {greedy_plan(buffers).size:7} B  plan "
              f"{solution.size:7} B  lower bound {peak_load(buffers):7} B  "
              f"{'optimal' if solution.proven_minimum else 'not proven'}"
              f"{' (time limit)' if solution.time_limit_hit else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arena", action="store_true",
                        help="also measure the smallest host arena with and without the plan")
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    for name, data in models():
        row(name, data, args.time_limit, args.arena)
    synthetic(args.time_limit)


if __name__ == "__main__":
    main()
