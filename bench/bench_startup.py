"""Start time of the commands that must not import TensorFlow (target < 0.3 s)."""

import subprocess
import sys

from _common import report, time_command

TINYFORGE = [sys.executable, "-m", "tinyforge"]


def main() -> None:
    for args in (["--help"], ["boards"], ["boards", "--json"]):
        median, _ = time_command(TINYFORGE + args, runs=7)
        report(f"tinyforge {' '.join(args)}", median, target=0.3)
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, tinyforge.cli as c; c.build_parser(); "
         "print(int('tensorflow' in sys.modules), int('numpy' in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    print(f"modules loaded by the parser: tensorflow={probe[0]} numpy={probe[1]} (want 0 0)")


if __name__ == "__main__":
    main()
