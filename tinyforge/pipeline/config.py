"""`tinyforge.toml`: the input pipeline of a model, as data (docs/pipeline.md lists every key).

Read with tomllib and validated like board profiles: unknown keys are errors (a typo cannot
fall back to a default), every value's type and range is checked, and every problem names
the file and the key. Keys that are absent take defaults derived from the model
(`tinyforge.pipeline.derive`); this module only knows the file.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..errors import PipelineConfigError

CONFIG_NAME = "tinyforge.toml"
KINDS = ("host", "imu", "microphone")
FEATURE_MODES = ("micro_speech", "quantize", "float")
IMU_AXIS_NAMES = ("ax", "ay", "az", "gx", "gy", "gz")
# A pipeline file is a few dozen lines; anything far bigger is not one.
MAX_CONFIG_BYTES = 64 * 1024
DOC_HINT = "see docs/pipeline.md for every key of tinyforge.toml, its type and range"


@dataclass(frozen=True)
class Key:
    """What one key of the file may hold."""

    kind: str                       # int, number, bool, str, axes, numbers
    low: float | None = None        # inclusive bounds of numbers (list items too)
    high: float | None = None
    choices: tuple[str, ...] = ()
    low_exclusive: bool = False
    high_exclusive: bool = False


# Every key of the file, by table. Bounds keep the device's integers in range and catch
# values that cannot be meant (a 0 Hz rate, a 10-minute averaging window).
KEYS: dict[str, dict[str, Key]] = {
    "pipeline": {"input": Key("str", choices=KINDS)},
    "imu": {
        "rate_hz": Key("number", 1, 1000),
        "window": Key("int", 1, 4096),
        "stride": Key("int", 1, 65535),
        "axes": Key("axes"),
        "offset": Key("numbers", -1e6, 1e6),
        "scale": Key("numbers", -1e6, 1e6),
        "recording_rate_hz": Key("number", 1, 10000),
    },
    "imu.trigger": {
        "threshold_g": Key("number", 0, 12, low_exclusive=True),
        "pre_samples": Key("int", 0, 4095),
    },
    "microphone": {
        "window": Key("int", 1, 1024),
        "stride": Key("int", 1, 1024),
        "discard_ms": Key("int", 0, 10000),
        "features": Key("str", choices=FEATURE_MODES),
        "feature_scale": Key("number", 0, 1e6, low_exclusive=True),
    },
    "microphone.frontend": {
        "window_ms": Key("int", 10, 64),
        "stride_ms": Key("int", 1, 64),
        "channels": Key("int", 1, 64),
        "lower_hz": Key("number", 0, 8000),
        "upper_hz": Key("number", 0, 8000, low_exclusive=True),
        "smoothing_bits": Key("int", 0, 15),
        "even_smoothing": Key("number", 0, 1),
        "odd_smoothing": Key("number", 0, 1),
        "min_signal_remaining": Key("number", 0, 1),
        "pcan": Key("bool"),
        "pcan_strength": Key("number", 0, 4),
        "pcan_offset": Key("number", 0, 10000),
        "gain_bits": Key("int", 0, 30),
        "log_scale": Key("bool"),
        "scale_shift": Key("int", 0, 15),
    },
    "decisions": {
        "enabled": Key("bool"),
        "average_ms": Key("int", 0, 60000),   # 0: each inference decides alone
        # A score above 255/256 cannot exist, so such a threshold would never fire.
        "threshold": Key("number", 0, 255 / 256, low_exclusive=True, high_exclusive=True),
        "minimum_count": Key("int", 1, 1000),
        "suppression_ms": Key("int", 0, 600000),
        "background": Key("int", -1, 63),
    },
}


@dataclass
class ConfigValues:
    """The validated values of one file, by dotted key ("imu.rate_hz"); absent keys absent."""

    values: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    tables: set[str] = field(default_factory=set)   # the tables the file has, even empty

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.values

    def has_table(self, table: str) -> bool:
        return table in self.tables


def read_config(path: Path) -> ConfigValues:
    """Read and validate one tinyforge.toml; every problem names the file and the key."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineConfigError(f"{path} is not valid TOML: {exc}",
                                  hint="fix the syntax error at the position shown") from None
    problems: list[str] = []
    config = ConfigValues(path=path)
    _walk(data, "", config, problems)
    if problems:
        raise config_error(path, problems)
    return config


def config_error(path: Path | None, problems: list[str]) -> PipelineConfigError:
    where = str(path) if path else "the pipeline configuration"
    if len(problems) == 1:
        return PipelineConfigError(f"{where}: {problems[0]}", hint=DOC_HINT)
    return PipelineConfigError(f"{where} has {len(problems)} problems",
                               details="\n".join(f"  - {p}" for p in problems), hint=DOC_HINT)


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise PipelineConfigError(f"pipeline file {path} does not exist",
                                  hint="check the path given to --config") from None
    except IsADirectoryError:
        raise PipelineConfigError(f"{path} is a directory, not a pipeline file",
                                  hint=f"give the path of a {CONFIG_NAME}") from None
    except OSError as exc:
        raise PipelineConfigError(f"cannot read pipeline file {path}: {exc.strerror}",
                                  hint="check the file's permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise PipelineConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
                                  "a pipeline file is a few dozen lines", hint=DOC_HINT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineConfigError(f"{path} is not UTF-8 text",
                                  hint="save it as UTF-8 TOML") from None


def _walk(table: dict, prefix: str, config: ConfigValues, problems: list[str]) -> None:
    known = KEYS.get(prefix, {})
    children = _child_tables(prefix)
    for name, value in table.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in children:
            if not isinstance(value, dict):
                problems.append(f"'{dotted}' must be a table ([{dotted}])")
                continue
            config.tables.add(dotted)
            _walk(value, dotted, config, problems)
        elif name in known:
            problem = check_value(dotted, value, known[name])
            if problem:
                problems.append(problem)
            else:
                config.values[dotted] = _normalise(value, known[name])
        else:
            problems.append(_unknown(dotted, name, list(known) + sorted(children), prefix))


def _child_tables(prefix: str) -> set[str]:
    if not prefix:
        return {t for t in KEYS if "." not in t}
    start = prefix + "."
    return {t[len(start):] for t in KEYS if t.startswith(start) and "." not in t[len(start):]}


def _unknown(dotted: str, name: str, candidates: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    where = f"in [{prefix}]" if prefix else "at the top level"
    suggestion = f"; did you mean '{close[0]}'?" if close else \
        f"; known here: {', '.join(candidates)}" if candidates else ""
    return f"unknown key '{dotted}' {where}{suggestion}"


def check_value(dotted: str, value: Any, key: Key) -> str | None:
    """The problem with `value` for `key`, or None."""
    if key.kind == "bool":
        return None if isinstance(value, bool) else f"'{dotted}' must be true or false"
    if key.kind == "str":
        if not isinstance(value, str):
            return f"'{dotted}' must be a string, one of: {', '.join(key.choices)}"
        if key.choices and value not in key.choices:
            return f"'{dotted}' is '{value}'; it must be one of: {', '.join(key.choices)}"
        return None
    if key.kind == "axes":
        return _check_axes(dotted, value)
    if key.kind == "numbers":
        if not isinstance(value, list) or not value:
            return f"'{dotted}' must be a list of numbers, one per axis"
        for index, item in enumerate(value):
            problem = _check_number(f"{dotted}[{index}]", item, key)
            if problem:
                return problem
        return None
    return _check_number(dotted, value, key)


def _check_number(dotted: str, value: Any, key: Key) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if key.kind == "int" else "a number"
        return f"'{dotted}' must be {kind}, not {type(value).__name__}"
    if key.kind == "int" and not isinstance(value, int):
        return f"'{dotted}' must be an integer, not {value!r}"
    if not math.isfinite(value):
        return f"'{dotted}' must be finite, not {value}"
    low_ok = key.low is None or (value > key.low if key.low_exclusive else value >= key.low)
    high_ok = key.high is None or (value < key.high if key.high_exclusive else value <= key.high)
    if not (low_ok and high_ok):
        low = "(" if key.low_exclusive else "["
        high = ")" if key.high_exclusive else "]"
        return (f"'{dotted}' is {value!r}, out of range: it must be in "
                f"{low}{_fmt(key.low)}, {_fmt(key.high)}{high}")
    return None


def _check_axes(dotted: str, value: Any) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        return f"'{dotted}' must be a list of axis names from {', '.join(IMU_AXIS_NAMES)}"
    unknown = [a for a in value if a not in IMU_AXIS_NAMES]
    if unknown:
        return (f"'{dotted}' has unknown axes {unknown}; the axes are "
                f"{', '.join(IMU_AXIS_NAMES)}")
    if len(set(value)) != len(value):
        return f"'{dotted}' names an axis twice: {value}"
    return None


def _normalise(value: Any, key: Key) -> Any:
    if key.kind == "number":
        return float(value)
    if key.kind == "numbers":
        return tuple(float(v) for v in value)
    if key.kind == "axes":
        return tuple(value)
    return value


def _fmt(value: float | None) -> str:
    if value is None:
        return "any"
    return f"{value:g}" if isinstance(value, float) else str(value)


def find_config(*folders: Path | None) -> Path | None:
    """The tinyforge.toml of the first folder that has one (beside the model, then the
    project). Two different files are refused rather than one silently preferred."""
    found = [Path(f) / CONFIG_NAME for f in folders if f is not None]
    found = [p for p in dict.fromkeys(found) if p.is_file()]
    if len(found) > 1 and len({p.read_bytes() for p in found}) > 1:
        raise PipelineConfigError(
            f"two different pipeline files apply: {found[0]} and {found[1]}",
            hint="keep one of them, or name the one to use with --config")
    return found[0] if found else None
