"""Dask arrays (gn_native.dask, and gn_native.group_norm given a Dask array).

Against the in-memory call on the computed array: bit for bit when chunks split
only N (and the channels on group boundaries), within 1 ulp of y when they split
the spatial axes; on the threaded scheduler and on a 2-worker distributed
LocalCluster.  Also: building the graph runs nothing, the merge is one task,
channel chunks off the group boundaries are rechunked with a warning, and the
accuracy target of SPEC.md (float32 at data offset 1e4) holds across chunks.
"""
import ast
import doctest
import inspect
import itertools
import warnings
import pathlib

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="Dask is not installed (the [dask] extra)")
distributed = pytest.importorskip("distributed", reason="distributed is not installed "
                                                        "(the [dask] extra)")

import dask  # noqa: E402

import gn_native as gn  # noqa: E402
from gn_native import dask as gnd  # noqa: E402
from gn_native import stages  # noqa: E402
from conftest import F16, F32, F64, channel_axis, dtype_params, stat_dtype  # noqa: E402
import reference  # noqa: E402

PerformanceWarning = da.PerformanceWarning


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process: a real scheduler, with the
    transfers and task placement of a cluster, that starts in a fraction of a second
    (worker processes take seconds each on 2 cores); not the default scheduler, so
    the other tests run on threads."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


def _compute(arrays, client=None):
    if client is None:
        return dask.compute(*arrays, scheduler="threads")
    return tuple(client.gather(client.compute(list(arrays))))


def _data(shape, dtype, seed=0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + offset).astype(dtype)


def _chunks(shape, ca, n=None, c=None, spatial=None):
    """Chunks of shape: n along N, c along the channels, spatial along the others
    (each None: one chunk)."""
    nd = len(shape)
    ca = ca % nd
    out = []
    for a, s in enumerate(shape):
        want = n if a == 0 else c if a == ca else spatial
        out.append(s if want is None else want)
    return tuple(out)


def _assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    u = f"u{got.dtype.itemsize}"
    np.testing.assert_array_equal(got.view(u), want.view(u))


# (shape, n_groups, N chunk, channel chunk on group boundaries or None, affine, activation)
N_SPLIT = [
    ((8, 6, 5, 5), 3, 3, None, "channel", None),
    ((5, 4), 2, 2, None, "none", None),
    ((4, 8, 3, 2, 2), 8, 1, 2, "group", "silu"),
    ((7, 12, 9), 4, 2, 6, "channel", "relu"),
]


def _affine(kind, c, g, seed=1):
    if kind == "none":
        return None, None
    n = c if kind == "channel" else g
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(np.float32),
            rng.standard_normal(n).astype(np.float32))


def _nhwc(shape):
    return (shape[0],) + tuple(shape[2:]) + (shape[1],)


def _case(shape, layout):
    return shape if layout == "nchw" else _nhwc(shape)


@pytest.mark.parametrize("case", N_SPLIT, ids=[str(c[0]) for c in N_SPLIT])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("st", ["sample", "batch"])
@pytest.mark.parametrize("dtype", dtype_params())      # bfloat16 too, with ml_dtypes
def test_n_chunks_bit_identical(case, layout, st, dtype):
    shape, g, nc, cc, affine, act = case
    ca = channel_axis(layout)
    shape = _case(shape, layout)
    a = _data(shape, dtype, seed=len(shape))
    gamma, beta = _affine(affine, shape[ca], g)
    x = da.from_array(a, chunks=_chunks(shape, ca, n=nc, c=cc))
    lazy = gn.group_norm_forward(x, g, gamma, beta, stats=st, channel_axis=ca, activation=act)
    assert all(isinstance(r, da.Array) for r in lazy)
    y, mean, rstd = _compute(lazy)
    want = gn.group_norm_forward(a, g, gamma, beta, stats=st, channel_axis=ca, activation=act)
    for got, w in zip((y, mean, rstd), want):
        _assert_same(got, w)
    assert mean.dtype == stat_dtype(dtype)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("st", ["sample", "batch"])
@pytest.mark.parametrize("dtype", dtype_params([F32, F64, F16]))
def test_n_chunks_bit_identical_on_a_cluster(client, layout, st, dtype):
    shape, g = _case((9, 8, 6, 5), layout), 4
    ca = channel_axis(layout)
    a = _data(shape, dtype, seed=3)
    gamma, beta = _affine("channel", 8, g)
    x = da.from_array(a, chunks=_chunks(shape, ca, n=2, c=4))     # 5 x 2 blocks
    got = _compute(gnd.group_norm_forward(x, g, gamma, beta, stats=st, channel_axis=ca), client)
    want = gn.group_norm_forward(a, g, gamma, beta, stats=st, channel_axis=ca)
    for gt, w in zip(got, want):
        _assert_same(gt, w)


SPATIAL = [((6, 8, 9, 7), 4, (2, 4, 4, 3)), ((3, 6, 50), 2, (1, 3, 17)),
           ((2, 4, 3, 4, 5), 2, (2, 2, 2, 3, 2))]


@pytest.mark.parametrize("case", SPATIAL, ids=[str(c[0]) for c in SPATIAL])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("st", ["sample", "batch"])
@pytest.mark.parametrize("dtype", dtype_params([F32, F64, F16]))
@pytest.mark.parametrize("budget", ["default", "one group"])
def test_spatial_chunks_bit_identical(case, layout, st, dtype, budget):
    """Spatial chunks: the statistics pass reads whole samples (rechunked within Dask's
    array.chunk-size, cutting N and the channels on group boundaries when needed),
    normalize x's own blocks, so y, mean and rstd are the in-memory call's bits."""
    shape, g, chunks = case
    ca = channel_axis(layout)
    shape, chunks = _case(shape, layout), _case(chunks, layout)
    a = _data(shape, dtype, seed=5, offset=3.0)
    gamma, beta = _affine("channel", shape[ca], g)
    x = da.from_array(a, chunks=chunks)
    k, size = shape[ca] // g, a.size // (shape[0] * shape[ca])
    cfg = {} if budget == "default" else {"array.chunk-size": k * size * a.itemsize}
    with dask.config.set(cfg):
        lazy = gnd.group_norm_forward(x, g, gamma, beta, stats=st, channel_axis=ca)
    assert lazy[0].chunks == x.chunks
    got = _compute(lazy)
    for gt, w in zip(got, gn.group_norm_forward(a, g, gamma, beta, stats=st, channel_axis=ca)):
        _assert_same(gt, w)


@pytest.mark.parametrize("case", SPATIAL, ids=[str(c[0]) for c in SPATIAL])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("st", ["sample", "batch"])
@pytest.mark.parametrize("dtype", dtype_params([F32, F16]))
def test_spatial_chunks_larger_than_the_budget(case, layout, st, dtype):
    """When one sample's group of values exceeds array.chunk-size, the statistics pass
    still reads each group whole (a PerformanceWarning says so): the in-memory bits."""
    shape, g, chunks = case
    ca = channel_axis(layout)
    shape, chunks = _case(shape, layout), _case(chunks, layout)
    a = _data(shape, dtype, seed=5, offset=3.0)
    gamma, beta = _affine("channel", shape[ca], g)
    x = da.from_array(a, chunks=chunks)
    with dask.config.set({"array.chunk-size": "64B"}):
        with pytest.warns(PerformanceWarning, match="array.chunk-size"):
            lazy = gnd.group_norm_forward(x, g, gamma, beta, stats=st, channel_axis=ca)
    assert lazy[0].chunks == x.chunks
    for gt, w in zip(_compute(lazy),
                     gn.group_norm_forward(a, g, gamma, beta, stats=st, channel_axis=ca)):
        _assert_same(gt, w)


def test_spatial_chunks_do_not_depend_on_the_scheduler(client):
    """The merge is one task in a fixed order: threads, a cluster and the synchronous
    scheduler give the same bits, again and again."""
    shape, g = (6, 8, 9, 7), 2
    a = _data(shape, F32, seed=7, offset=100.0)
    x = da.from_array(a, chunks=(2, 4, 5, 4))   # 24 blocks
    for st in ("sample", "batch"):
        with dask.config.set({"array.chunk-size": "64B"}), \
                pytest.warns(PerformanceWarning):           # one group per block
            lazy = gnd.group_norm_forward(x, g, stats=st)
        ref = dask.compute(*lazy, scheduler="sync")
        for got in (_compute(lazy), _compute(lazy, client), _compute(lazy, client)):
            for gt, w in zip(got, ref):
                _assert_same(gt, w)


def test_accuracy_at_offset_1e4():
    """SPEC.md: float32 data with |mean|/std up to 1e4, max abs error of y <= 1e-5 against
    the float64 reference of the same values, with chunks along every axis."""
    shape, g = (8, 16, 12, 12), 4
    a = (np.random.default_rng(11).standard_normal(shape) + 1e4).astype(F32)
    x = da.from_array(a, chunks=(3, 8, 5, 7))
    for st, budget in itertools.product(("sample", "batch"), ("128MiB", "64B")):
        with dask.config.set({"array.chunk-size": budget}), \
                warnings.catch_warnings():          # 64B: one group per block, warned
            warnings.simplefilter("ignore", PerformanceWarning)
            y = gnd.group_norm(x, g, stats=st).compute(scheduler="threads")
        ref = reference.forward(a, g, stats=st)[0]
        assert np.abs(y - ref).max() <= 1e-5, (st, budget)


def test_channel_chunks_off_group_boundaries_are_rechunked():
    shape, g = (4, 12, 5), 4                     # K = 3
    a = _data(shape, F32, seed=2)
    x = da.from_array(a, chunks=(2, (2, 4, 5, 1), 5))
    with pytest.warns(PerformanceWarning, match=r"multiples of 3") as rec:
        y = gn.group_norm(x, g, stats="batch")
    assert rec[0].filename == __file__           # attributed to the caller's line
    assert y.chunks[1] == (3, 3, 6)              # boundaries 2, 6, 11 -> 3, 6, 12
    _assert_same(y.compute(), gn.group_norm(a, g, stats="batch"))
    with pytest.warns(PerformanceWarning, match=r"rechunked to \(12,\)"):
        gnd.group_norm(da.from_array(a, chunks=(2, (1, 11), 5)), 1)


def test_group_aligned_channel_chunks_give_no_warning(recwarn):
    x = da.from_array(_data((4, 12, 5), F32), chunks=(2, 6, 5))
    gnd.group_norm(x, 4)
    assert not [w for w in recwarn if issubclass(w.category, PerformanceWarning)]


def test_building_the_graph_runs_nothing(monkeypatch):
    """Lazy until computed: no stage runs when the graph is built (meta is given, so
    Dask does not call the functions on empty arrays either); computing it runs one
    partial and one normalize per block, and exactly one merge."""
    calls = {"stats_partial": 0, "stats_merge": 0, "normalize": 0}
    for name in calls:
        real = getattr(stages, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(stages, name, counted)
    x = da.from_array(_data((6, 8, 10, 4), F32), chunks=(2, 4, 5, 4))     # 3 x 2 x 2 blocks
    y, mean, rstd = gn.group_norm_forward(x, 4, np.ones(8, np.float32), stats="batch")
    y2 = gn.group_norm(x, 2, activation="gelu")
    assert calls == {"stats_partial": 0, "stats_merge": 0, "normalize": 0}
    merges = [k for k in dict(y.__dask_graph__()) if "gn_native-merge" in str(k)]
    assert len(merges) == 1
    dask.compute(y, mean, rstd, scheduler="sync")
    # the statistics pass reads whole samples (3 x 2 blocks), normalize x's 12 blocks
    assert calls == {"stats_partial": 6, "stats_merge": 1, "normalize": 12}
    y2.compute(scheduler="sync")
    assert calls["stats_merge"] == 2


@pytest.mark.parametrize("recompute", [True, False])
def test_recompute_makes_the_blocks_again_instead_of_holding_them(recompute):
    """recompute=True (default): the normalize pass runs x's tasks again after the merge,
    so no block of x waits in memory for the statistics; False: once, held."""
    made = []

    def block(block_id=None):
        made.append(block_id)
        return _data((2, 4, 5), F32, seed=block_id[0])
    x = da.map_blocks(block, chunks=((2,) * 4, (4,), (5,)), dtype=F32,
                      meta=np.empty((0, 0, 0), F32))
    y = gnd.group_norm(x, 2, stats="batch", recompute=recompute)
    deps = y.__dask_graph__().get_all_dependencies()
    x_keys = set(x.__dask_keys__()[i][0][0] for i in range(4))
    uses_x = {d for k in y.__dask_keys__() for blk in k for kk in blk for d in deps[kk]} & x_keys
    assert bool(uses_x) == (not recompute)
    got = y.compute(scheduler="sync")
    assert len(made) == (8 if recompute else 4)
    _assert_same(got, gn.group_norm(x.compute(), 2, stats="batch"))


def test_same_call_same_graph_names():
    """Names come from dask.base.tokenize of the inputs and options: the same call
    gives the same keys (shared by Dask), another option other keys."""
    x = da.from_array(_data((4, 4, 3), F32), chunks=(2, 4, 3))
    assert gnd.group_norm(x, 2).name == gnd.group_norm(x, 2).name
    assert gnd.group_norm(x, 2).name != gnd.group_norm(x, 2, stats="batch").name
    assert gnd.group_norm(x, 2).name != gnd.group_norm(x, 2, eps=1e-3).name


def test_dask_gamma_and_beta_stay_lazy():
    a = _data((6, 8, 5), F32)
    g, b = _affine("group", 8, 4)
    x = da.from_array(a, chunks=(3, 4, 5))
    gd, bd = da.from_array(g, chunks=2), da.from_array(b, chunks=4)
    y = gnd.group_norm(x, 4, gd, bd, stats="batch", activation="gelu_tanh")
    _assert_same(y.compute(), gn.group_norm(a, 4, g, b, stats="batch", activation="gelu_tanh"))


def test_mixed_affine_kinds_and_lists():
    """gamma per group beside beta per channel (the in-memory call expands the first),
    float64 weights with float32 data, and lists."""
    a = _data((4, 6, 7), F32)
    g = [0.5, 2.0, -1.0]
    b = np.linspace(-1, 1, 6)
    x = da.from_array(a, chunks=(1, 2, 7))
    _assert_same(gnd.group_norm(x, 3, g, b).compute(), gn.group_norm(a, 3, g, b))


def test_empty_input():
    """As the in-memory call: an empty y and NaN statistics, bit for bit."""
    for shape, st in (((0, 4, 3), "sample"), ((0, 4, 3), "batch"), ((2, 4, 0), "sample"),
                      ((2, 4, 0), "batch")):
        a = np.empty(shape, F32)
        got = dask.compute(*gnd.group_norm_forward(da.from_array(a), 2, stats=st))
        for gt, w in zip(got, gn.group_norm_forward(a, 2, stats=st)):
            _assert_same(gt, w)


def test_errors_come_at_build_time():
    x = da.from_array(_data((4, 6, 5), F32), chunks=(2, 6, 5))
    with pytest.raises(ValueError, match="n_groups"):
        gn.group_norm(x, 4)
    with pytest.raises(TypeError, match="n_groups"):
        gnd.group_norm(x, 2.0)
    with pytest.raises(ValueError, match="gamma"):
        gnd.group_norm(x, 3, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="stats"):
        gnd.group_norm(x, 3, stats="global")
    with pytest.raises(TypeError, match="recompute"):
        gnd.group_norm(x, 3, recompute=None)
    with pytest.raises(TypeError, match="x"):
        gnd.group_norm(x.astype(np.int32), 3)
    for kw in ({"out": np.empty((4, 6, 5), F32)}, {"add": np.ones(6, F32)},
               {"mean": np.zeros((4, 3)), "var": np.ones((4, 3))}):
        with pytest.raises(TypeError, match=f"{next(iter(kw))}= is not supported with a Dask"):
            gn.group_norm_forward(x, 3, **kw)
    with pytest.raises(TypeError, match="Dask"):
        gn.group_norm_backward(x, x, np.zeros((4, 3), F32), np.ones((4, 3), F32), 3)
    unknown = x[x[:, 0, 0] > 0]                  # rows unknown until computed
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        gnd.group_norm(unknown, 3)


def test_torch_names_reach_the_dask_path():
    a = _data((4, 6, 5), F32)
    x = da.from_array(a, chunks=(2, 6, 5))
    w = np.arange(6, dtype=np.float32)
    y = gn.group_norm(input=x, num_groups=3, weight=w, bias=w)
    assert isinstance(y, da.Array)
    _assert_same(y.compute(), gn.group_norm(a, 3, w, w))


def test_without_dask_the_import_error_names_the_extra(monkeypatch):
    import importlib
    import sys
    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.setitem(sys.modules, name, None)     # as if not installed
    monkeypatch.delitem(sys.modules, "gn_native.dask")
    with pytest.raises(ImportError, match=r'pip install "gn_native\[dask\]"'):
        importlib.import_module("gn_native.dask")
    monkeypatch.undo()
    assert importlib.import_module("gn_native.dask") is gnd


# ---- documentation and type information of gn_native.dask --------------------------

@pytest.mark.parametrize("name", gnd.__all__)
def test_docstring_and_examples(name):
    obj = getattr(gnd, name)
    doc = inspect.getdoc(obj)
    for section in ("Parameters", "Returns", "See Also", "Examples"):
        assert f"\n{section}\n" + "-" * len(section) in doc, f"{name}: no {section} section"
    documented = doc.split("\nParameters\n")[1].split("\nReturns\n")[0]
    for p in inspect.signature(obj).parameters:
        assert p in documented, f"{name}: parameter {p} is not documented"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in finder.find(obj, name, globs={}):
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.attempted and res.failed == 0, f"{name}: {res.failed} examples failed"


def test_stub_covers_the_runtime_signatures():
    path = pathlib.Path(gnd.__file__).with_suffix(".pyi")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in gnd.__all__:
        a = defs[name].args
        stub = {p.arg: ("positional", i >= len(a.args) - len(a.defaults))
                for i, p in enumerate(a.args)}
        stub.update({p.arg: ("keyword", d is not None)
                     for p, d in zip(a.kwonlyargs, a.kw_defaults)})
        rt = {p.name: ("keyword" if p.kind is p.KEYWORD_ONLY else "positional",
                       p.default is not p.empty)
              for p in inspect.signature(getattr(gnd, name)).parameters.values()}
        assert stub == rt, f"gn_native/dask.pyi: {name}"


def test_the_benchmark_runs():
    """bench/scaleout_dask.py's measure(), which bench/scaleout.py reports, on a small
    array: every figure present, the Dask result bit-identical to the in-memory one."""
    import importlib.util
    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "scaleout_dask.py"
    spec = importlib.util.spec_from_file_location("scaleout_dask", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.measure(shape=(4, 16, 8, 8), n_groups=4, chunk_n=2, repeats=1)
    assert r["bit_identical"] and r["blocks"] == 2
    for k in ("in_memory_ms", "dask_persist_ms", "dask_store_ms", "dask_compute_ms"):
        assert r[k] > 0
    assert "Dask y.store(out)" in bench.report(r)
