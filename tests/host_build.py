"""Compiled test harnesses kept between test sessions, keyed by everything that makes them.

The C++ tests build harnesses with the host g++ (AddressSanitizer and UBSan make that seconds
each) and, with -n auto, once per worker. Here a compiler command's output is kept in
pytest's cache (.pytest_cache/, like the models of conftest.py) under a key of:

- the compiler's `--version` text;
- the command line, with its output and this session's temporary folder left out;
- the bytes of every file the compiler reads: each source and header it reports with `-M`
  (system headers included), and every other input named on the command line (objects).

The same key means the compiler would be given the same bytes with the same flags, so its
output is the one it made before (what ccache's "depend mode" relies on too). Any change to a
firmware source, a header, a flag or the compiler misses the cache and compiles, and a failed
compile is never stored: the test sees the compiler's errors as before.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

_CACHE_NAME = "tinyforge-host-builds"
_PROBE_TIMEOUT_S = 120


class HostBuilds:
    def __init__(self, cache_root: Path | None, session_tmp: Path):
        self.cache_root = cache_root          # None: no cache (pytest -p no:cacheprovider)
        self.session_tmp = os.path.realpath(session_tmp)
        self._versions: dict[str, str] = {}

    def build(self, argv, output: Path, compile_it: Callable[[], None]) -> None:
        """Make `output` as `compile_it` would (it runs `argv`), from the cache when it can."""
        argv = [str(arg) for arg in argv]
        output = Path(output)
        key = self._key(argv, output) if self.cache_root is not None else None
        kept = self.cache_root / key / output.name if key else None
        if kept is not None and kept.is_file():
            shutil.copy2(kept, output)
            return
        compile_it()
        if kept is not None:
            _store(output, kept)

    def _key(self, argv: list[str], output: Path) -> str | None:
        deps = self._dependencies(argv, output)
        if deps is None:
            return None
        command = _without_output(argv, output)
        digest = hashlib.sha256()
        digest.update(self._version(argv[0]).encode())
        for arg in command:
            digest.update(arg.replace(self.session_tmp, "<tmp>").encode() + b"\0")
        inputs = set(deps) | {os.path.realpath(arg) for arg in command[1:]
                              if os.path.isfile(arg)}
        for path in sorted(inputs):
            digest.update(path.replace(self.session_tmp, "<tmp>").encode() + b"\0")
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()[:24]

    def _dependencies(self, argv: list[str], output: Path) -> list[str] | None:
        """Every file the compiler reads for the sources of `argv`, from its own `-M`."""
        sources = [arg for arg in argv[1:] if re.search(r"\.(c|cc|cpp|cxx)$", arg)]
        if not sources:
            return []
        command = [arg for arg in _without_output(argv, output) if arg != "-c"]
        command = [command[0], "-M", *(arg for arg in command[1:]
                                       if not arg.endswith((".o", ".a")))]
        probe = subprocess.run(command, capture_output=True, text=True, check=False,
                               timeout=_PROBE_TIMEOUT_S)
        if probe.returncode != 0:
            return None  # the compile itself reports why
        text = probe.stdout.replace("\\\n", " ")
        files = []
        for rule in text.splitlines():
            if ":" in rule:
                files += rule.split(":", 1)[1].split()
        return sorted({os.path.realpath(path) for path in files})

    def _version(self, compiler: str) -> str:
        if compiler not in self._versions:
            self._versions[compiler] = subprocess.run(
                [compiler, "--version"], capture_output=True, text=True, check=True,
                timeout=_PROBE_TIMEOUT_S).stdout
        return self._versions[compiler]


def cache_root(config) -> Path | None:
    cache = getattr(config, "cache", None)
    return None if cache is None else cache.mkdir(_CACHE_NAME)


def _without_output(argv: list[str], output: Path) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "-o":
            skip = True
            continue
        kept.append(arg)
    return kept


def _store(output: Path, kept: Path) -> None:
    """Into the cache atomically: another worker may store the same key at the same time."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    staging = kept.with_name(f".{kept.name}.{os.getpid()}")
    shutil.copy2(output, staging)
    os.replace(staging, kept)
