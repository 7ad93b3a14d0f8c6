"""Package-level API: version, include folder, configuration."""
import os
import re
import subprocess
import sys

import gn_native as gn


def test_version_is_a_version_string():
    parts = gn.__version__.split(".")
    assert len(parts) >= 2 and all(p.isdigit() for p in parts[:2]), gn.__version__


def test_get_include_holds_the_c_header():
    header = os.path.join(gn.get_include(), "gn_native.h")
    assert os.path.isfile(header)
    with open(header) as f:
        assert "Python.h" not in f.read(), "the C API header must not need Python"


def _config_value(text, key):
    """The value printed on show_config()'s `key: value` line (None when there is no such line)."""
    m = re.search(rf"^\s*{key}\s*:\s*(\S+)\s*$", text, re.MULTILINE)
    return None if m is None else m.group(1)


def test_config_value_reads_the_whole_line():
    text = "     isa: avx2\n threads: 12\n"
    assert _config_value(text, "isa") == "avx2"
    assert _config_value(text, "threads") == "12"
    assert _config_value(text, "threads") != "2"       # "2" of "avx2" or "12" is not a match
    assert _config_value("threads: 2 of 4\n", "threads") is None


def test_show_config_names_the_simd_path_and_threads(capsys):
    old = gn.get_num_threads()
    try:
        for n in (3, 1):   # set, so that the printed number must follow the setting
            gn.set_num_threads(n)
            cfg = gn.show_config()
            text = capsys.readouterr().out
            assert _config_value(text, "isa") in ("scalar", "avx2"), text
            assert _config_value(text, "threads") == str(n), text
            if cfg is not None:
                assert cfg["isa"] == _config_value(text, "isa") and cfg["threads"] == n, cfg
    finally:
        gn.set_num_threads(old)


def test_public_names():
    for name in ("group_norm", "group_norm_forward", "group_norm_backward", "GroupNorm",
                 "get_num_threads", "set_num_threads", "get_include", "show_config"):
        assert callable(getattr(gn, name)), name


def test_import_needs_only_numpy():
    """`import gn_native` must not pull in a deep-learning framework or CuPy."""
    code = ("import sys, gn_native; bad = [m for m in ('torch', 'cupy', 'jax', 'tensorflow') "
            "if m in sys.modules]; print(bad); assert not bad")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(gn.__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr


def test_plan_is_frozen_and_carries_the_c_enums():
    """A Plan's layout/stats/affine compare equal to their names and carry the values
    of gn_native.h's enums (from capi.pxd through _cpu), so _cpu needs no lookup."""
    import dataclasses

    import numpy as np
    import pytest

    from gn_native import _cpu, _validate as V
    x = np.zeros((2, 3, 4, 6), np.float32)
    p = V.plan(x, 3, np.ones(3, np.float32), None, 1e-5, "batch", -1, layout="nhwc")
    assert (p.layout, p.stats, p.affine) == ("nhwc", "batch", "group")
    assert (p.layout.code, p.stats.code, p.affine.code) == (
        _cpu.LAYOUT_NHWC, _cpu.STATS_BATCH, _cpu.AFFINE_GROUP)
    assert V.with_layout(p, "nchw").layout.code == _cpu.LAYOUT_NCHW
    assert len({_cpu.AFFINE_NONE, _cpu.AFFINE_CHANNEL, _cpu.AFFINE_GROUP}) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.groups = 2


def test_import_from_the_source_folder_says_so():
    """`import gn_native` from a checkout whose core is not built names the cause and
    the fix, instead of Python's "circular import" message."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "gn_native")
    if not os.path.isfile(os.path.join(root, "setup.py")) or any(
            f.startswith("_cpu.") and f.endswith((".so", ".pyd")) for f in os.listdir(src)):
        import pytest
        pytest.skip("no source checkout beside the tests, or its core is built in place")
    res = subprocess.run([sys.executable, "-c", "import gn_native"], cwd=root,
                         capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert res.returncode != 0
    assert "ImportError" in res.stderr and "source folder" in res.stderr, res.stderr[-2000:]
    assert "pip install ." in res.stderr and "circular import" not in res.stderr
