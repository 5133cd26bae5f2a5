"""Throughput of the serial protocol decoder (tinyforge.device.protocol.Decoder), in messages per second.

The stream is what a board sends: RES lines ending in \\r\\n, fed to the decoder in 4 KiB
reads like a serial port delivers them. The target is 50,000 RES messages/s with 10 outputs
(a 10-class classifier): at 115,200 baud a board can send at most ~620 such lines per second,
so the host keeps up with a link ~80 times faster than the serial port.

Run: .venv/bin/python bench/bench_decoder.py
"""

from __future__ import annotations

import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyforge.device import protocol

TARGET_MSGS_PER_S = 50_000
CHUNK_BYTES = 4096
REPEATS = 5


def _float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def res_stream(messages: int, values: int, seed: int = 1) -> bytes:
    """RES lines of one int8 output tensor with `values` values, as a device writes them."""
    rng = random.Random(seed)
    scale, zero_point = 0.00390625, -128
    lines = []
    for seq in range(messages):
        q = [rng.randint(-128, 127) for _ in range(values)]
        f = [_float32((v - zero_point) * scale) for v in q]
        lines.append(protocol.encode("RES", eol=protocol.DEVICE_EOL, seq=seq, src="host",
                                     us=rng.randint(100, 50_000), q0=q, f0=f))
    return b"".join(lines)


def measure(stream: bytes, messages: int) -> tuple[float, float]:
    """Best of REPEATS runs, in messages per second of CPU time and of wall time.

    CPU time is the decoder's own cost; wall time also counts whatever else the machine was
    doing (builds on 2 cores can halve it), so the verdict uses CPU time.
    """
    chunks = [stream[i:i + CHUNK_BYTES] for i in range(0, len(stream), CHUNK_BYTES)]
    best_cpu = best_wall = 0.0
    for _ in range(REPEATS):
        decoder = protocol.Decoder()
        wall, cpu = time.perf_counter(), time.process_time()
        decoded = 0
        for chunk in chunks:
            decoded += len(decoder.feed(chunk))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if decoded != messages:
            raise SystemExit(f"decoded {decoded} events, expected {messages}")
        best_cpu = max(best_cpu, messages / cpu)
        best_wall = max(best_wall, messages / wall)
    return best_cpu, best_wall


def main() -> int:
    cases = [(20_000, 10), (20_000, 3), (500, 1000)]
    headline = 0.0
    for messages, values in cases:
        stream = res_stream(messages, values)
        cpu_rate, wall_rate = measure(stream, messages)
        line_bytes = len(stream) / messages
        print(f"RES with {values:4d} outputs ({line_bytes:6.0f} B/line): "
              f"{cpu_rate:9,.0f} msgs/s CPU time ({cpu_rate * line_bytes / 1e6:5.1f} MB/s), "
              f"{wall_rate:9,.0f} msgs/s wall time")
        if values == 10:
            headline = cpu_rate
    verdict = "meets" if headline >= TARGET_MSGS_PER_S else "MISSES"
    print(f"decoder {verdict} the target of {TARGET_MSGS_PER_S:,} msgs/s for 10 outputs "
          f"({headline:,.0f} msgs/s)")
    return 0 if headline >= TARGET_MSGS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
