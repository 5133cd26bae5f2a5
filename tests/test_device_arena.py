"""The TFLM trees a device arena is measured with, and the cache that remembers the figures
(tinyforge/board/tflm_source.py, tinyforge/flows/device_arena.py).

The measurement itself (a firmware built for qemu-m4 and probed in QEMU) is in
test_qemu_models.py, TFLM tier; here the figures are recorded the way a measurement records
them, so these tests need neither QEMU nor a TFLM tree.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tinyforge.board import profiles
from tinyforge.board.tflm_source import downloaded_tflm, tree_digest
from tinyforge.flows import device_arena, memory_plan
from tinyforge.model import checks
from tinyforge.model.arena import ArenaMeasurement

EXAMPLE = Path(__file__).resolve().parent.parent / "tinyforge" / "example" / "gesture_int8.tflite"
SINE_FLOAT = Path(__import__("tflite_micro").__file__).parent / "python" / "tflite_micro" / \
    "sine_float.tflite"
DEVICE_FIGURE = ArenaMeasurement(minimum_bytes=2784, reported_bytes=2244, probes=9,
                                 seconds=1.5, source="device")


@pytest.fixture
def board() -> profiles.Board:
    return profiles.load_board("nano33ble")


@pytest.fixture
def prepared(board) -> checks.PreparedModel:
    return checks.prepare(EXAMPLE.read_bytes(), EXAMPLE.name, board, strict=False)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """An empty arena cache for each test (~/.cache/tinyforge/arena-measurements.json)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "tinyforge" / "arena-measurements.json"


def _tflm_tree(folder: Path, kernel: str = "int conv() { return 1; }\n") -> Path:
    """The shape of an Arduino TFLM library: library.properties and src/tensorflow/..."""
    micro = folder / "src" / "tensorflow" / "lite" / "micro"
    (micro / "kernels").mkdir(parents=True)
    (micro / "micro_mutable_op_resolver.h").write_text("// the op resolver\n")
    (micro / "kernels" / "conv.cpp").write_text(kernel)
    (folder / "library.properties").write_text("name=Chirale_TensorFlowLite\nversion=2.0.0\n")
    return folder


def _download(project: Path, board: profiles.Board, tree: Path, uri: str | None = None) -> Path:
    """`tree` as PlatformIO leaves the board's pinned lib_deps entry in a project."""
    copy = project / ".pio" / "libdeps" / board.id / board.tflm["library"]
    shutil.copytree(tree, copy)
    spec = {"owner": None, "id": None, "name": board.tflm["library"], "requirements": None,
            "uri": uri if uri is not None else "git+" + board.tflm["source"]}
    (copy / ".piopm").write_text(json.dumps({"type": "library", "name": board.tflm["library"],
                                             "version": "2.0.0+sha.46da2f9", "spec": spec}))
    return copy


# --- finding PlatformIO's download of the pinned library ------------------------------------

def test_the_pinned_library_downloaded_into_a_project_is_found_by_its_piopm(tmp_path, board):
    tree = _tflm_tree(tmp_path / "tree")
    copy = _download(tmp_path / "p", board, tree)
    assert downloaded_tflm(board, tmp_path / "p") == copy.resolve()
    # The profile's own spelling of the source (without PlatformIO's git+) is the same source.
    (copy / ".piopm").write_text(json.dumps({"spec": {"uri": board.tflm["source"]}}))
    assert downloaded_tflm(board, tmp_path / "p") == copy.resolve()


@pytest.mark.parametrize("piopm", [
    json.dumps({"spec": {"uri": "git+https://github.com/spaziochirale/Chirale_TensorFlowLite.git"
                                "#0000000000000000000000000000000000000000"}}),  # another commit
    json.dumps({"spec": {"uri": None}}),
    json.dumps({"spec": "git+https://github.com/spaziochirale/Chirale_TensorFlowLite.git"}),
    "{not json",
    None,  # no .piopm: not something PlatformIO installed
    "FIFO",  # never read (it would block)
])
def test_anything_but_the_pinned_download_is_not_taken_for_it(tmp_path, board, piopm):
    copy = _download(tmp_path / "p", board, _tflm_tree(tmp_path / "tree"))
    if piopm is None:
        (copy / ".piopm").unlink()
    elif piopm == "FIFO":
        (copy / ".piopm").unlink()
        os.mkfifo(copy / ".piopm")
    else:
        (copy / ".piopm").write_text(piopm)
    assert downloaded_tflm(board, tmp_path / "p") is None


def test_a_download_that_is_not_a_tflm_tree_is_not_used(tmp_path, board):
    copy = _download(tmp_path / "p", board, _tflm_tree(tmp_path / "tree"))
    (copy / "src" / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h").unlink()
    assert downloaded_tflm(board, tmp_path / "p") is None
    assert downloaded_tflm(board, tmp_path / "no-project") is None


def test_a_trees_digest_is_its_content_wherever_it_lives(tmp_path, board):
    tree = _tflm_tree(tmp_path / "tree")
    copy = _download(tmp_path / "p", board, tree)  # adds PlatformIO's .piopm
    (copy / ".git").mkdir()
    (copy / ".git" / "HEAD").write_text("46da2f989205a9216229d38cd3d1c657d79d6781\n")
    assert tree_digest(copy) == tree_digest(tree)
    edited = _tflm_tree(tmp_path / "edited", kernel="int conv() { return 2; }\n")
    assert tree_digest(edited) != tree_digest(tree)
    moved = tmp_path / "moved"
    shutil.copytree(tree, moved)
    (moved / "src" / "tensorflow" / "lite" / "micro" / "kernels" / "conv.cpp").rename(
        moved / "src" / "tensorflow" / "lite" / "micro" / "conv.cpp")
    assert tree_digest(moved) != tree_digest(tree)
    if os.geteuid() != 0:  # root reads any file
        (moved / "library.properties").chmod(0)
        assert tree_digest(moved) is None


# --- the cache: keyed by content, found without a tree for the pinned library ---------------

def test_a_figure_measured_with_the_pinned_download_is_found_without_any_tree(
        tmp_path, board, prepared, own_cache):
    copy = _download(tmp_path / "p", board, _tflm_tree(tmp_path / "tree"))
    library = device_arena.Library.find(board, None, tmp_path / "p")
    assert library.root == copy.resolve() and library.pinned_source == board.tflm["source"]
    assert device_arena.choose(prepared, board, None, "auto").used.source == "host"
    device_arena.record(prepared, library, DEVICE_FIGURE)
    plan = device_arena.choose(prepared, board, None, "auto")  # a plain `inspect`
    assert plan.used.source == "device" and plan.device.minimum_bytes == 2784
    assert plan.arena_bytes >= 2784 and plan.host.minimum_bytes == prepared.arena.host.minimum_bytes
    assert device_arena.choose(prepared, board, None, "device").device == plan.device
    assert str(tmp_path) not in own_cache.read_text(), "the cache holds no path"


def test_a_figure_measured_with_a_local_tree_is_found_for_any_copy_of_that_tree(
        tmp_path, board, prepared):
    tree = _tflm_tree(tmp_path / "tree")
    device_arena.record(prepared, device_arena.Library.find(board, tree, None), DEVICE_FIGURE)
    elsewhere = shutil.copytree(tree, tmp_path / "elsewhere")
    assert device_arena.choose(prepared, board, elsewhere, "auto").device == DEVICE_FIGURE
    # A tree of unknown origin is never taken for the board's pinned library.
    assert device_arena.choose(prepared, board, None, "auto").used.source == "host"
    edited = _tflm_tree(tmp_path / "edited", kernel="int conv() { return 2; }\n")
    assert device_arena.Library.find(board, edited, None).digest != \
        device_arena.Library.find(board, tree, None).digest


def test_a_cached_figure_belongs_to_one_model(tmp_path, board, prepared):
    copy_project = tmp_path / "p"
    _download(copy_project, board, _tflm_tree(tmp_path / "tree"))
    device_arena.record(prepared, device_arena.Library.find(board, None, copy_project),
                        DEVICE_FIGURE)
    other = checks.prepare(SINE_FLOAT.read_bytes(), SINE_FLOAT.name, board, strict=False)
    assert other.info.sha256 != prepared.info.sha256
    assert device_arena.choose(other, board, None, "auto").used.source == "host"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 2, "measurements": []}',
                                     '{"v1:0.1.0:abc:def": {"minimum_bytes": 1}}', "EDITED"])
def test_an_unreadable_or_old_cache_is_ignored_and_rewritten(tmp_path, board, prepared,
                                                             own_cache, content):
    copy_project = tmp_path / "p"
    _download(copy_project, board, _tflm_tree(tmp_path / "tree"))
    library = device_arena.Library.find(board, None, copy_project)
    if content == "EDITED":  # a real entry whose figure is no longer a number
        device_arena.record(prepared, library, DEVICE_FIGURE)
        content = own_cache.read_text().replace('"minimum_bytes": 2784', '"minimum_bytes": "x"')
    own_cache.parent.mkdir(parents=True, exist_ok=True)
    own_cache.write_text(content)
    assert device_arena.choose(prepared, board, None, "auto").used.source == "host"
    device_arena.record(prepared, library, DEVICE_FIGURE)
    assert device_arena.choose(prepared, board, None, "auto").used.source == "device"


def test_plain_inspect_shows_the_device_figure_build_measured(tinyforge, cli_env, tmp_path,
                                                              board, prepared):
    """The command line, with no --tflm and no TINYFORGE_TFLM (cli_env drops it)."""
    copy_project = tmp_path / "p"
    _download(copy_project, board, _tflm_tree(tmp_path / "tree"))
    library = device_arena.Library.find(board, None, copy_project)
    device_arena.record(prepared, library, DEVICE_FIGURE)
    # build measures the model with its offline plan too (--memory-plan auto, docs/memory.md).
    planned, _ = memory_plan.plan_model(prepared, board, "auto", strict=False)
    assert planned is not prepared
    device_arena.record(planned, library, DEVICE_FIGURE)
    env = dict(cli_env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    report = json.loads(tinyforge("inspect", EXAMPLE, "--board", "nano33ble", "--json",
                                  env=env, check_rc=0).stdout)
    assert report["arena"]["source"] == "device"
    assert report["arena"]["device"]["minimum_bytes"] == 2784
    assert report["arena_bytes"] < report["arena"]["host"]["minimum_bytes"]
    assert report["memory_plan"]["arena"]["without_plan"]["source"] == "device"
