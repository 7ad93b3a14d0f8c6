"""100,000 calls do not grow the process's memory.

Resident set size (from /proc/self/statm) after a warm-up, then again after
100,000 forward + backward calls on a tiny input: any per-call leak of a C
buffer (the core mallocs its partial sums every call) or of a Python object
would add megabytes.  The threshold (4 MiB) is generous against allocator
noise; a leak of 40 bytes a call reaches it.  About 20 s in all.
"""
import gc
import os

import numpy as np
import pytest

import gn_native as gn
from conftest import BF16, F16, F32, F64, make_data

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc"),
]
CALLS = 100_000
THRESHOLD = 4 << 20


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(step, calls=CALLS, warmup=2_000):
    for _ in range(warmup):
        step()
    gc.collect()
    before = rss()
    for _ in range(calls):
        step()
    gc.collect()
    return rss() - before


def _functional(dtype, layout, stats, affine="channel", shape=(2, 4, 3, 3), g=2):
    ax = 1 if layout == "nchw" else -1
    if layout == "nhwc":
        shape = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    c = shape[ax]
    x = make_data(shape, dtype, 0)
    dy = make_data(shape, dtype, 1)
    n = c if affine == "channel" else g
    gamma = np.full(n, 1.5, dtype) if affine else None
    beta = np.full(n, 0.25, dtype) if affine else None

    def step():
        y, m, r = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
        gn.group_norm_backward(dy, x, m, r, g, gamma, stats=stats, channel_axis=ax)
    return step


CASES = {
    "float32-nchw-sample": lambda: _functional(F32, "nchw", "sample"),
    "float64-nhwc-batch": lambda: _functional(F64, "nhwc", "batch", "group"),
    "float16-nchw-batch": lambda: _functional(F16, "nchw", "batch", None),
    "float16-nhwc-sample": lambda: _functional(F16, "nhwc", "sample"),
}
if BF16 is not None:
    CASES["bfloat16-nchw-sample"] = lambda: _functional(BF16, "nchw", "sample", "group")


@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_do_not_leak(case):
    grew = growth(CASES[case]())
    assert grew < THRESHOLD, f"{case}: RSS grew by {grew / 2**20:.1f} MiB over {CALLS} calls"


def test_out_and_given_statistics_do_not_leak():
    x = make_data((2, 6, 5), F32, 0)
    out = np.empty_like(x)
    mean = np.zeros((2, 3), np.float32)
    var = np.ones((2, 3), np.float32)

    def step():
        gn.group_norm(x, 3, out=out)
        gn.group_norm(x, 3, mean=mean, var=var)
    grew = growth(step)
    assert grew < THRESHOLD, f"RSS grew by {grew / 2**20:.1f} MiB"


def test_layer_does_not_leak():
    layer = gn.GroupNorm(2, 4, track_running_stats=True)
    x = make_data((2, 4, 3, 3), F32, 0)
    dy = make_data((2, 4, 3, 3), F32, 1)

    def step():
        layer(x)
        layer.backward(dy)
    grew = growth(step, calls=CALLS // 2)
    assert grew < THRESHOLD, f"RSS grew by {grew / 2**20:.1f} MiB"


def test_refused_calls_do_not_leak():
    x = make_data((2, 6, 5), F32, 0)
    bad = np.ones(5, np.float32)

    def step():
        for kwargs in ({"gamma": bad}, {"eps": -1.0}, {"stats": "nope"}):
            try:
                gn.group_norm(x, 3, **kwargs)
            except ValueError:
                pass
    grew = growth(step, calls=CALLS // 3)
    assert grew < THRESHOLD, f"RSS grew by {grew / 2**20:.1f} MiB"


def test_threaded_calls_do_not_leak():
    """Inputs large enough for OpenMP threads (per-call partial buffers, thread teams)."""
    steps = [_functional(F32, "nhwc", "sample", shape=(2, 8, 64, 64), g=4),
             _functional(F32, "nchw", "batch", shape=(2, 8, 64, 64), g=4)]

    def step():
        for s in steps:
            s()
    grew = growth(step, calls=600, warmup=50)
    assert grew < THRESHOLD, f"RSS grew by {grew / 2**20:.1f} MiB over 600 calls"
