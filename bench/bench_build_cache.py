"""A second project's build with TFLM's objects shared, against the first (qemu-m4).

Two `tinyforge build --board qemu-m4` runs in two new projects, with two different models
(the bundled gesture example, then a small CNN with other ops), an empty shared object cache
and an empty arena cache: the first compiles TFLM, the second takes TFLM's objects from the
cache (docs/project.md, "Compiled objects are shared"). Each figure is the whole command:
checks, the arena measured on the emulated Cortex-M4 (one build, in the project itself) and
the final build.

Needs arm-none-eabi-gcc, QEMU and a TFLM library tree in $TINYFORGE_TFLM (e.g. a checkout of
Chirale_TensorFlowLite v2.0.0); it says so and exits when one is missing. Takes ~5 minutes on
2 cores. `--keep-cache DIR` (a new or empty folder) keeps the filled object cache there, for
example as TINYFORGE_BUILD_CACHE_DIR of a later TFLM-tier test run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, model_small_cnn  # noqa: E402

from tinyforge.errors import ToolMissingError  # noqa: E402
from tinyforge.toolchain import programs  # noqa: E402

EXAMPLE = REPO / "tinyforge" / "example" / "gesture_int8.tflite"


def missing_requirement() -> str | None:
    tree = os.environ.get("TINYFORGE_TFLM")
    if not tree or not Path(tree).is_dir():
        return ("needs a TFLM library tree: set TINYFORGE_TFLM (e.g. a checkout of "
                "Chirale_TensorFlowLite v2.0.0)")
    try:
        programs.find_toolchain()
        programs.find_qemu()
    except ToolMissingError as error:
        return error.message
    return None


def timed_build(model: Path, project: Path, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tinyforge", "build", "--board", "qemu-m4",
                           "--model", str(model), "--project-dir", str(project), "--json"],
                          env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"tinyforge build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-cache", type=Path, metavar="DIR",
                        help="a new or empty folder for the object cache, kept afterwards")
    args = parser.parse_args()
    reason = missing_requirement()
    if reason:
        print(f"bench_build_cache: skipped: {reason}")
        return
    if args.keep_cache and args.keep_cache.exists() and any(args.keep_cache.iterdir()):
        sys.exit(f"--keep-cache {args.keep_cache} is not empty: the first build must start cold")
    second_model = model_small_cnn()
    with tempfile.TemporaryDirectory(prefix="tinyforge-bench-") as scratch:
        root = Path(scratch)
        objects = (args.keep_cache or root / "build-cache").resolve()
        env = dict(os.environ, XDG_CACHE_HOME=str(root / "xdg"),
                   TINYFORGE_PIO_CORE_DIR=str(root / "core"),
                   TINYFORGE_BUILD_CACHE_DIR=str(objects))
        subprocess.run([sys.executable, "-m", "tinyforge", "setup"], env=env, check=True,
                       capture_output=True)
        rows = []
        for label, model, project in (("first project (TFLM compiled)", EXAMPLE, "first"),
                                      ("second project, other model (TFLM cached)",
                                       second_model, "second")):
            seconds, result = timed_build(model, root / project, env)
            rows.append((label, model.name, seconds, result["arena"]["device"]["seconds"]))
        cache_bytes = sum(p.stat().st_size for p in objects.rglob("*") if p.is_file())
    for label, model, seconds, measuring in rows:
        print(f"{label:<44} {seconds:7.1f} s  ({model}; {measuring:.1f} s of it the "
              "measurement build and probes)")
    first, second = rows[0][2], rows[1][2]
    print(f"{'second / first':<44} {second / first:7.1%}  (the shared object cache holds "
          f"{cache_bytes / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
