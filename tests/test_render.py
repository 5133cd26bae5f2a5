"""Rendering a model project: exact ops, exact model bytes, determinism, user edits, pio check.

Renders run `tinyforge build --no-compile` as a library call in this process (the `in_process`
fixture gives it the CLI's environment); the command line itself is checked where its exit
status and messages are the point.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from tinyforge.board import resolver
from tinyforge.flows import build
from tinyforge.model import reader

REPO = Path(__file__).resolve().parent.parent
BOARD_TABLE = REPO / "boards" / "tflm" / "Chirale_TensorFlowLite-2.0.0.toml"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".pio" not in p.parts}


def _render(model: Path, project: Path, **options) -> build.BuildResult:
    """`tinyforge build --model MODEL --project-dir PROJECT --no-compile [options]`."""
    return build.build(build.BuildOptions(model=Path(model), project_dir=project, compile=False,
                                          **options))


def _pio_config(project: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "platformio", "project", "config", "-d",
                           str(project)], capture_output=True, text=True, env=env, timeout=120)


def test_rendered_resolver_registers_exactly_the_models_ops(in_process, models, tmp_path):
    model = models / "conv_int8.tflite"
    project = tmp_path / "p"
    _render(model, project)
    header = (project / "src" / "op_resolver.h").read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(\)", header)
    table = resolver.load_table("tflm/Chirale_TensorFlowLite-2.0.0.toml")
    by_method = {m: op for op, m in table.builtin.items()}
    registered = sorted(by_method[m] for m in methods)
    expected = reader.read_model_file(model)[1].op_names
    assert registered == expected == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE",
                                      "SOFTMAX"]
    assert "MicroMutableOpResolver<kOpCount>" in header
    assert "constexpr int kOpCount = 5;" in header
    assert _pio_config(project, in_process).returncode == 0


def test_embedded_array_is_byte_identical_to_the_model(in_process, models, tmp_path, gxx):
    model = models / "conv_int8.tflite"
    project = tmp_path / "p"
    _render(model, project)
    dump = tmp_path / "dump.cpp"
    dump.write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<uintptr_t>(g_model) % 16 != 0) return 3;\n"
        "  fwrite(g_model, 1, g_model_len, stdout);\n  return 0;\n}\n")
    exe = tmp_path / "dump"
    subprocess.run([gxx, "-std=c++14", "-Wall", "-Werror", "-I", project / "src", dump,
                    project / "src" / "model_data.cpp", "-o", exe], check=True)
    out = subprocess.run([exe], capture_output=True, check=True).stdout
    assert out == model.read_bytes()
    assert (project / ".tinyforge" / "model.tflite").read_bytes() == model.read_bytes()


def test_rendering_twice_gives_identical_trees(in_process, models, tmp_path):
    model = models / "conv_int8.tflite"
    first, second = tmp_path / "a", tmp_path / "b"
    _render(model, first, demo_input=models / "conv_demo.npy")
    _render(model, second, demo_input=models / "conv_demo.npy")
    assert _tree(first) == _tree(second)
    before = {p: f.stat().st_mtime_ns for p, f in
              ((p, first / p) for p in _tree(first))}
    actions = _render(model, first, demo_input=models / "conv_demo.npy").to_json()["files"]
    assert set(actions.values()) == {"identical"}
    after = {p: (first / p).stat().st_mtime_ns for p in _tree(first)}
    assert before == after, "an identical render must not touch any file"


def test_manifest_records_inputs(in_process, models, tmp_path):
    model = models / "dense_int8.tflite"
    project = tmp_path / "p"
    _render(model, project)
    manifest = json.loads((project / ".tinyforge" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest["board"] == "nano33ble"
    assert manifest["tinyforge_version"]
    assert manifest["protocol_version"] == 1
    for relative, digest in manifest["files"].items():
        assert hashlib.sha256((project / relative).read_bytes()).hexdigest() == digest


def test_user_edit_is_never_overwritten_silently(tinyforge, in_process, models, tmp_path):
    project = tmp_path / "p"
    _render(models / "conv_int8.tflite", project)
    sketch = project / "src" / "main.cpp"
    edited = sketch.read_text() + "\n// my change\n"
    sketch.write_text(edited)
    snapshot = _tree(project)
    result = tinyforge("build", "--model", models / "dense_int8.tflite", "--project-dir",
                       project, "--no-compile")
    assert result.returncode == 1
    assert "src/main.cpp" in result.stderr and "--overwrite" in result.stderr
    assert _tree(project) == snapshot, "a refused render must write nothing"
    _render(models / "dense_int8.tflite", project, overwrite=True)
    assert "// my change" not in sketch.read_text()


def test_unedited_generated_files_are_updated_for_a_new_model(in_process, models, tmp_path):
    project = tmp_path / "p"
    _render(models / "conv_int8.tflite", project)
    actions = _render(models / "dense_int8.tflite", project).to_json()["files"]
    assert actions["src/model_data.cpp"] == "update"
    assert actions["src/tf_protocol.cpp"] == "identical"
    assert "AddFullyConnected" in (project / "src" / "op_resolver.h").read_text()
    assert "AddConv2D" not in (project / "src" / "op_resolver.h").read_text()


def test_labels_with_awkward_characters_compile_to_the_same_bytes(in_process, models, tmp_path,
                                                                  gxx):
    labels = ['say "hi" back\\slash', "caf\u00e9 \u2603 tri??/graph", "*/ end"]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    weird_model = tmp_path / 'we"ird\\name.tflite'
    weird_model.write_bytes((models / "conv_int8.tflite").read_bytes())
    project = tmp_path / "p"
    _render(weird_model, project, labels=labels_file)
    dump = tmp_path / "labels.cpp"
    dump.write_text(
        '#include <cstdio>\n#include "model_settings.h"\n'
        "int main() {\n  for (int i = 0; i < kLabelCount; ++i) {\n"
        "    fputs(kLabels[i], stdout);\n    fputc(0, stdout);\n  }\n  return 0;\n}\n")
    exe = tmp_path / "labels"
    subprocess.run([gxx, "-std=c++14", "-Wall", "-Werror", "-Wtrigraphs", "-I", project / "src",
                    dump, project / "src" / "model_settings.cpp", project / "src" /
                    "model_data.cpp", "-o", exe], check=True)
    out = subprocess.run([exe], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [label.encode("utf-8") for label in labels]


def test_c_string_escapes_newlines_and_controls(gxx, tmp_path):
    from tinyforge.project.templates import c_comment, c_string
    text = "line1\nline2\r\t\x01\"\\?\u00fc end\\"
    source = tmp_path / "s.cpp"
    source.write_text(f"// {c_comment(text)}\n#include <cstdio>\n"
                      f"int main() {{ fputs({c_string(text)}, stdout); return 0; }}\n")
    exe = tmp_path / "s"
    subprocess.run([gxx, "-Wall", "-Werror", source, "-o", exe], check=True)
    assert subprocess.run([exe], capture_output=True, check=True).stdout == text.encode()


def test_rendered_project_passes_platformio_check_for_every_board(in_process, models, tmp_path):
    from tinyforge.board import profiles
    for board in profiles.load_all():
        project = tmp_path / board.id
        _render(models / "conv_int8.tflite", project, board=board.id)
        ini = (project / "platformio.ini").read_text()
        assert str(tmp_path) not in ini and str(REPO) not in ini, "a path of this machine"
        config = _pio_config(project, in_process)
        assert config.returncode == 0, config.stdout + config.stderr
        assert f"env:{board.id}" in config.stdout


def test_the_report_compares_with_the_project_before_the_build(tmp_path):
    """A measurement render in between (qemu-m4's arena build writes the user's project)
    must not turn a new file into 'identical' or an unchanged one into 'update'."""
    from tinyforge.project import writer
    root = tmp_path / "p"
    final = {"a.h": b"arena 2912\n", "b.cpp": b"same\n"}
    measurement = {"a.h": b"arena 238528\n", "b.cpp": b"same\n"}
    before = writer.plan(root, final)
    writer.write(root, measurement, {})
    after = writer.write(root, final, {})
    assert after.actions == {"a.h": "update", "b.cpp": "identical"}    # against the measurement
    assert writer.actions_since(before, final, after) == {"a.h": "create", "b.cpp": "create"}
    # Built again from the same model: nothing changed since before this build.
    before = writer.plan(root, final)
    writer.write(root, measurement, {})
    after = writer.write(root, final, {})
    assert writer.actions_since(before, final, after) == {"a.h": "identical",
                                                          "b.cpp": "identical"}
    # Another arena: the header is an update, whatever the measurement did in between.
    changed = dict(final, **{"a.h": b"arena 3008\n"})
    before = writer.plan(root, changed)
    writer.write(root, measurement, {})
    after = writer.write(root, changed, {})
    assert writer.actions_since(before, changed, after) == {"a.h": "update", "b.cpp": "identical"}


def test_the_line_buffer_is_one_host_message_for_every_model(models, tmp_path):
    from tinyforge.model.fit import HOST_LINE_BYTES
    for model in ("conv_int8.tflite", "image96_int8.tflite"):
        project = tmp_path / model
        _render(models / model, project)
        settings = (project / "src" / "model_settings.h").read_text()
        assert f"constexpr size_t kMaxLineLength = {HOST_LINE_BYTES};" in settings
        sketch = (project / "src" / "main.cpp").read_text()
        assert "char line_buffer[kMaxLineLength + 1];" in sketch
        assert "reinterpret_cast" not in sketch     # TFLM's int dims are used as they are
