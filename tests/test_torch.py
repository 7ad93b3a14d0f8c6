"""Parity with torch.nn.functional.group_norm (standard GN, per-channel affine)."""
import numpy as np
import pytest

import gn_native as gn
from conftest import make_affine, make_data

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [
    pytest.param((3, 6, 5, 7), 3, id="odd"),
    pytest.param((2, 8, 1, 1), 4, id="1x1"),
    pytest.param((2, 32, 8, 8), 8, id="c32"),
    pytest.param((4, 6, 9), 6, id="1d_k1"),
    pytest.param((2, 4, 3, 4, 5), 1, id="3d_one_group"),
    pytest.param((5, 12), 3, id="no_spatial"),
]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
# (forward, backward) tolerances between two independent implementations
TOL = {np.float32: (2e-5, 2e-4), np.float64: (1e-12, 1e-10)}


def _allclose(a, b, tol, what):
    b = b.detach().numpy() if hasattr(b, "detach") else b
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=what)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,g", SHAPES)
def test_forward_and_backward_match_torch(shape, g, dtype, affine):
    x = make_data(shape, dtype, 0)
    dy = make_data(shape, dtype, 1)
    gamma, beta = make_affine("channel" if affine else "none", shape[1], g, dtype, 0)
    ftol, btol = TOL[dtype]

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    wt = torch.from_numpy(gamma.copy()).requires_grad_(True) if affine else None
    bt = torch.from_numpy(beta.copy()).requires_grad_(True) if affine else None
    yt = F.group_norm(xt, g, wt, bt, 1e-5)
    yt.backward(torch.from_numpy(dy))

    y, mean, rstd = gn.group_norm_forward(x, g, gamma, beta, 1e-5)
    _allclose(y, yt, ftol, "y")
    n, c = shape[:2]
    hw = int(np.prod(shape[2:], dtype=np.int64))
    _, mt, rt = torch.ops.aten.native_group_norm(torch.from_numpy(x), wt, bt, n, c, hw, g, 1e-5)
    _allclose(mean, mt.reshape(n, g), ftol, "mean")
    _allclose(rstd, rt.reshape(n, g), ftol, "rstd")

    dx, dgamma, dbeta = gn.group_norm_backward(dy, x, mean, rstd, g, gamma)
    _allclose(dx, xt.grad, btol, "dx")
    if affine:
        _allclose(dgamma, wt.grad, btol, "dgamma")
        _allclose(dbeta, bt.grad, btol, "dbeta")


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_tensor_matches_torch(dtype):
    """A torch channels_last tensor, seen by NumPy as NCHW with NHWC memory."""
    x = make_data((2, 16, 5, 6), dtype, 2)
    gamma, beta = make_affine("channel", 16, 4, dtype, 2)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    yt = F.group_norm(xt, 4, torch.from_numpy(gamma), torch.from_numpy(beta), 1e-5)
    y = gn.group_norm(xt.numpy(), 4, gamma, beta)
    _allclose(y, yt, TOL[dtype][0], "y")
    assert np.moveaxis(y, 1, -1).flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_tensor_input_matches_numpy_input(dtype):
    x = make_data((2, 6, 4, 4), dtype, 3)
    gamma, beta = make_affine("channel", 6, 3, dtype, 3)
    y = gn.group_norm(torch.from_numpy(x), 3, torch.from_numpy(gamma), torch.from_numpy(beta))
    assert isinstance(y, torch.Tensor) and y.dtype == getattr(torch, np.dtype(dtype).name)
    np.testing.assert_array_equal(y.numpy(), gn.group_norm(x, 3, gamma, beta))


def test_float32_large_mean_is_more_accurate_than_torch():
    """The spec's accuracy bar: |mean|/std = 1e4 in float32, max abs error <= 1e-5."""
    import reference as ref
    x = make_data((2, 16, 16, 16), np.float32, 4, loc=1e4)
    y_ref = ref.forward(x, 4)[0]
    err = np.max(np.abs(gn.group_norm(x, 4).astype(np.float64) - y_ref))
    err_torch = np.max(np.abs(F.group_norm(torch.from_numpy(x), 4).numpy().astype(np.float64) - y_ref))
    assert err <= 1e-5, f"gn_native error {err:.3g} (torch: {err_torch:.3g})"
