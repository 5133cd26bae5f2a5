"""`inspect` on a ~300 KB model (target < 0.5 s without the arena search) and the search itself
(target < 5 s per model)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import model_300k, report, time_command  # noqa: E402

from tinyforge.model import arena, host_runtime, reader  # noqa: E402

SINE = Path(host_runtime.runtime_module().__file__).parent / "sine_float.tflite"
EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"


def main() -> None:
    model = model_300k()
    data = model.read_bytes()
    started = time.perf_counter()
    info = reader.inspect_bytes(data, model.name)
    host_runtime.dry_run(data, model.name)
    report(f"inspect {len(data) // 1024} KB model (parse + dry run)",
           time.perf_counter() - started, target=0.5, extra=f"  {len(info.op_names)} ops")
    median, _ = time_command([sys.executable, "-m", "tinyforge", "inspect", str(model),
                              "--arena", "host", "--json"], runs=5)
    report("tinyforge inspect --json (whole command)", median,
           extra="  includes Python start-up and the host arena search")
    for path in (SINE, EXAMPLE, model):
        if not path.exists():
            continue
        measurement = arena.measure_on_host(path.read_bytes(), path.name)
        report(f"arena search {path.name}", measurement.seconds, target=5.0,
               extra=f"  {measurement.minimum_bytes} B in {measurement.probes} probes")


if __name__ == "__main__":
    main()
