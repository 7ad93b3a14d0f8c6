"""Every code block of README.md runs.

- Each ```python block runs alone, in a fresh interpreter in an empty folder,
  and must exit 0: a block may not lean on names defined by an earlier one.
- The ```c block is compiled with the README's build line,
  `cc demo.c $(python -m gn_native --cflags --libs)`, and run; the same line,
  word for word, builds the shipped examples/c/demo.c, which must pass its checks.
- The ```bash blocks are not run: they create virtual environments and
  `pip install` the package and its extras (what .ci/run does on a fresh
  clone), which a test run inside an installed environment cannot repeat.
  Only their shape is checked: they name no script or folder that is missing.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_cbuild

import gn_native

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
cb = load_cbuild()
CC = cb.compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler found (set CC)")
# the README's build line for a C consumer, as the text gives it
BUILD_LINE = "cc demo.c $(python -m gn_native --cflags --libs)"


def code_blocks(text, lang):
    """The bodies of the ```lang fenced blocks of a Markdown text, in order."""
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)


def _readme():
    return README.read_text(encoding="utf-8")


def _env():
    """No PYTHONPATH into the source tree: the blocks import the installed gn_native."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_WAIT_POLICY"] = "passive"
    return env


def test_code_blocks_finds_each_fenced_block():
    text = "a\n```python\nx = 1\n```\nb\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert code_blocks(text, "python") == ["x = 1\n", "y = 2\nz = 3\n"]
    assert code_blocks(text, "bash") == ["ls\n"]
    assert code_blocks(text, "c") == []


def test_readme_has_the_blocks_this_file_runs():
    text = _readme()
    assert len(code_blocks(text, "python")) >= 2
    assert len(code_blocks(text, "c")) == 1
    assert BUILD_LINE in text, f"the README no longer says `{BUILD_LINE}`: update this test"
    fences = re.findall(r"^```(\w*)", text, re.MULTILINE)
    langs = set(fences[0::2])  # opening fences
    assert langs <= {"python", "c", "bash"}, f"a block of a kind this file does not run: {langs}"


@pytest.mark.parametrize("index", range(len(code_blocks(_readme(), "python"))))
def test_python_block_runs_alone(index, tmp_path):
    block = code_blocks(_readme(), "python")[index]
    res = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (
        f"README python block {index + 1} fails when run alone:\n{block}\n"
        f"--- stderr ---\n{res.stderr[-4000:]}")


def _build_line(src_name):
    """The README's build line for `src_name`, with this test's interpreter and compiler."""
    return (BUILD_LINE.replace("demo.c", src_name)
            .replace("python -m", f'"{sys.executable}" -m')
            .replace("cc ", f"{CC} ", 1))


@needs_cc
def test_c_block_builds_with_the_readme_line_and_runs(tmp_path):
    (tmp_path / "readme.c").write_text(code_blocks(_readme(), "c")[0])
    cb.run(_build_line("readme.c"), cwd=tmp_path, env=_env())
    res = cb.run([str(tmp_path / "a.out")], env=_env(), timeout=120, check=False)
    assert res.returncode == 0, f"README C block: exit {res.returncode}\n{res.stdout}{res.stderr}"


@needs_cc
def test_readme_line_builds_the_shipped_demo(tmp_path):
    shutil.copy(cb.EXAMPLE_C / "demo.c", tmp_path / "demo.c")
    cb.run(_build_line("demo.c"), cwd=tmp_path, env=_env())
    res = cb.run([str(tmp_path / "a.out")], env=_env(), timeout=120, check=False)
    assert res.returncode == 0 and "demo: all checks passed" in res.stdout, (
        f"exit {res.returncode}\n{res.stdout}{res.stderr}")


def test_bash_blocks_name_existing_paths():
    """The install blocks are not run (see the module docstring); the scripts they
    name exist, and the modules they run with -m can be found."""
    for block in code_blocks(_readme(), "bash"):
        scripts = re.findall(r"(?<![\w./-])((?:bench|tests|examples)/[\w./-]*\.(?:py|sh))", block)
        for path in scripts:
            assert (REPO / path).exists(), f"README bash block names missing {path}"
        for mod in re.findall(r"-m (gn_native[\w.]*)", block):
            assert mod == "gn_native" or (
                Path(gn_native.__file__).parent / (mod.split(".", 1)[1] + ".py")).is_file(), mod
