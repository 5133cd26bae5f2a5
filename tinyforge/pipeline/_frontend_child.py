"""Child process: TensorFlow's audio_microfrontend on clips the parent wrote.

`python -m tinyforge.pipeline._frontend_child REQUEST.json`; reads clips.npz from the work
folder, writes frames.npz there. Only this process imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(request_path: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from tinyforge.pipeline.audio import run_op

    request = json.loads(Path(request_path).read_text())
    work = Path(request["work_dir"])
    with np.load(work / "clips.npz", allow_pickle=False) as clips:
        frames = {f"frames{i}": run_op(clips[f"clip{i}"], request["options"])
                  for i in range(request["count"])}
    partial = work / "frames.partial.npz"
    np.savez(partial, **frames)
    os.replace(partial, work / "frames.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
