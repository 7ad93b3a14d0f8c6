"""The dtype lists agree: the C core's (src/dtypes.h), its kernel table, the
public header and .pxd, the Python list (gn_native._dtypes), the Cython
dispatch and the GPU kernels.  Adding a dtype to one list and not to another
fails here."""
import os
import re

import numpy as np
import pytest

import gn_native
from gn_native import _cpu, _dtypes, _gpu_kernels
from gn_native import _validate as V

PKG = os.path.dirname(os.path.abspath(gn_native.__file__))
# the C core's sources are not installed (the wheel holds what runs): the checkout's
SRC_PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gn_native")
SUFFIXES = [d.suffix for d in _dtypes.DTYPES]


def _read(*parts):
    with open(os.path.join(SRC_PKG if parts[0] == "src" else PKG, *parts), encoding="utf-8") as f:
        return f.read()


def test_c_list_is_the_python_list():
    text = _read("src", "dtypes.h")
    each = re.search(r"#define GN_FOR_EACH_DTYPE\(X\)(.*)", text).group(1)
    assert re.findall(r"GN_DTYPE_(\w+)\(X\)", each) == SUFFIXES
    # the instantiation list names each dtype once more (C cannot #include from a macro)
    assert re.findall(r"#define GN_DT GN_DTYPE_(\w+)", _read("src", "each_dtype.inc")) == SUFFIXES


def test_kernel_table_matches_the_python_list():
    table = _cpu.kernel_dtypes()
    assert [s for s, _, _ in table] == SUFFIXES
    for (sfx, item, stat), d in zip(table, _dtypes.DTYPES):
        assert stat == np.dtype(d.stat).itemsize, sfx
        dt = next((k for k, v in _dtypes.AVAILABLE.items() if v is d), None)
        if dt is not None:
            assert item == dt.itemsize, sfx


def test_every_available_dtype_dispatches_to_its_own_kernels():
    assert _cpu._CODES == {dt: SUFFIXES.index(d.suffix) for dt, d in _dtypes.AVAILABLE.items()}
    assert set(_dtypes.STAT) == set(_dtypes.AVAILABLE)
    # numpy, ml_dtypes (a test dependency): every listed dtype can be made here
    assert len(_dtypes.AVAILABLE) == len(_dtypes.DTYPES)


@pytest.mark.parametrize("d", _dtypes.DTYPES, ids=lambda d: d.name)
def test_each_dtype_runs_forward_normalize_and_backward(d):
    dt = next(k for k, v in _dtypes.AVAILABLE.items() if v is d)
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((2, 4, 3, 3)) * 3 + 1
    x = x64.astype(dt)
    g = np.linspace(0.5, 2, 4).astype(dt)
    for path in ("fast", "general"):    # a non-contiguous x leaves the fast path
        xin = x if path == "fast" else np.asfortranarray(x)
        y, mean, rstd = gn_native.group_norm_forward(xin, 2, g, g)
        assert y.dtype == dt and mean.dtype == rstd.dtype == np.dtype(d.stat)
        ref = x.astype(np.float64).reshape(2, 2, -1)
        np.testing.assert_allclose(mean, ref.mean(-1), rtol=1e-5, atol=1e-5)
        dx, dg, db = gn_native.group_norm_backward(xin, xin, mean, rstd, 2, g)
        assert dx.dtype == dg.dtype == db.dtype == dt
        np.testing.assert_allclose(db.astype(np.float64), x.astype(np.float64).sum((0, 2, 3)),
                                   rtol=1e-2)
    y2 = gn_native.group_norm_forward(x, 2, g, g, mean=mean, var=np.ones_like(mean))[0]
    assert y2.dtype == dt


def test_header_and_pxd_declare_each_dtype():
    header = _read("include", "gn_native.h")
    pxd = _read("capi.pxd")
    for text in (header, pxd):
        for fn in ("forward", "forward_var", "normalize", "backward", "backward_ex"):
            found = re.findall(rf"\bgn_{fn}_([a-z0-9]+)\(", text)
            assert found == SUFFIXES, (fn, found)


def test_gpu_kernels_cover_each_dtype():
    assert _gpu_kernels.DTYPES == tuple(d.name for d in _dtypes.DTYPES)
    math = _read("cuda", "gn_math.cuh")
    for d in _dtypes.DTYPES:
        assert _gpu_kernels.stat_dtype(d.name) == d.stat
        ctype = _gpu_kernels.RAW_CTYPE[d.name]
        assert ctype in ("float", "double") or f"struct {ctype} " in math, ctype
        assert np.dtype(d.gpu_io).itemsize == _cpu.kernel_dtypes()[SUFFIXES.index(d.suffix)][1]


def test_unsupported_dtype_names_every_supported_one():
    with pytest.raises(TypeError, match="gn_native supports") as e:
        V.check_dtype(np.dtype(np.int32), "x")
    for d in _dtypes.DTYPES:
        assert d.name in str(e.value)
    assert 'pip install "gn_native[bf16]"' in str(e.value)
