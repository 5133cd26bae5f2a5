"""Monitor start time (target < 0.5 s, no TensorFlow import): from starting the command to
having opened the board's port and stopped again, on a real pty standing in for the board."""

import os
import subprocess
import sys
import tempfile
import tty
from pathlib import Path

from _common import REPO, report, time_command

TINYFORGE = [sys.executable, "-m", "tinyforge"]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory) / "p"
        subprocess.run(TINYFORGE + ["build", "--project-dir", str(project), "--no-compile",
                                    "--arena", "host"], check=True, capture_output=True,
                       cwd=REPO)
        master, slave = os.openpty()
        tty.setraw(slave)
        port = os.ttyname(slave)
        median, best = time_command(TINYFORGE + ["monitor", "--project-dir", str(project),
                                                 "--port", port, "--timeout", "0.01"], runs=7)
        os.close(slave)
        os.close(master)
    report("tinyforge monitor (start, open, stop)", median, target=0.5,
           extra=f"  best {best * 1000:.0f} ms")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, tinyforge.flows.monitor, tinyforge.device.sources, "
         "tinyforge.project.last_build; print(int('tensorflow' in sys.modules), "
         "int('numpy' in sys.modules))"], capture_output=True, text=True, check=True)
    tf, np = probe.stdout.split()
    print(f"modules loaded by the monitor: tensorflow={tf} numpy={np} (want 0 0)")


if __name__ == "__main__":
    main()
