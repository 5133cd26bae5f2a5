"""Which of a model's operators use a kernel known to differ from the wheel's (board data).

The table is `boards/tflm/known-differences.toml` (`board/differences.py`). `inspect` and
`build` warn when the reference is the tflite-micro wheel, so a difference that `validate`
would then report is said before building, with the op and the way to avoid it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..board import differences
from ..board.differences import KnownDifference
from .layers import model_operators, tensor_summaries


@dataclass(frozen=True)
class DifferingOperator:
    index: int                 # node index in subgraph 0
    op: str
    difference: KnownDifference

    def describe(self) -> str:
        return f"op {self.index} {self.op} ({self.difference.dtype})"

    def to_json(self) -> dict:
        return {"index": self.index, "op": self.op, "dtype": self.difference.dtype,
                "when": self.difference.when, "max_lsb": self.difference.max_lsb,
                "measured": self.difference.measured,
                "why": self.difference.why, "wheel": self.difference.wheel}


def find(model: bytes, library: str, version: str) -> list[DifferingOperator]:
    """The operators of subgraph 0 (node order) whose kernel in `library` `version` is known
    to differ from the tflite-micro wheel's."""
    known = differences.load(library, version)
    if not known:
        return []
    tensors = tensor_summaries(model)
    found = []
    for index, (op, inputs, outputs) in enumerate(model_operators(model)):
        for difference in known:
            if difference.op == op and _applies(difference, inputs, outputs, tensors):
                found.append(DifferingOperator(index, op, difference))
                break
    return found


def _applies(difference: KnownDifference, inputs: list[int], outputs: list[int],
             tensors) -> bool:
    if not inputs or not outputs or inputs[0] < 0:
        return False
    source, result = tensors[inputs[0]], tensors[outputs[0]]
    if source.dtype != difference.dtype:
        return False
    if difference.when == "always":
        return True
    return (source.scale, source.zero_point) != (result.scale, result.zero_point)
