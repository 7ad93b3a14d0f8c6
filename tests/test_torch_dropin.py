"""From PyTorch to gn_native by changing an import (issue 15): torch's argument names,
the layer's weight/bias and state_dict, from_torch/to_torch, mixed precision, torch
tensors in and out (bfloat16 included), and the configuration errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gn_native as gn
from conftest import assert_bit_identical, make_data

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          cwd=os.path.dirname(sys.executable))


def test_torch_keyword_names():
    x = torch.randn(2, 8, 5, 5)
    w, b = torch.rand(8) + 0.5, torch.randn(8)
    want = F.group_norm(x, num_groups=4, weight=w, bias=b, eps=1e-5)
    y = gn.group_norm(x, num_groups=4, weight=w, bias=b, eps=1e-5)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    y2, mean, rstd = gn.group_norm_forward(x, num_groups=4, weight=w, bias=b)
    assert_bit_identical(y2.numpy(), y.numpy())
    assert_bit_identical(gn.group_norm(x.numpy(), 4, w.numpy(), b.numpy()), y.numpy())
    with pytest.raises(TypeError, match="both n_groups and num_groups"):
        gn.group_norm(x, 4, num_groups=4)
    with pytest.raises(TypeError, match="both gamma and weight"):
        gn.group_norm(x, 4, w, weight=w)
    with pytest.raises(TypeError, match="n_groups"):
        gn.group_norm(x)
    # F.group_norm(input=..., ...) and module(input=...): every argument torch names
    assert_bit_identical(gn.group_norm(input=x, num_groups=4, weight=w, bias=b).numpy(),
                         y.numpy())
    assert_bit_identical(gn.group_norm_forward(input=x, num_groups=4, weight=w, bias=b)[0].numpy(),
                         y.numpy())
    with pytest.raises(TypeError, match="both x and input"):
        gn.group_norm(x, 4, input=x)
    layer = gn.GroupNorm(num_groups=4, num_channels=8)
    assert_bit_identical(layer(input=x).numpy(), layer(x).numpy())
    with pytest.raises(TypeError, match="both x and input"):
        layer(x, input=x)


def test_layer_torch_names_attributes_and_dtypes():
    layer = gn.GroupNorm(num_groups=4, num_channels=8, eps=1e-5, affine=True, device=None,
                         dtype=torch.float64)
    assert layer.dtype == np.float64 and layer.weight is layer.gamma and layer.bias is layer.beta
    layer.weight = np.full(8, 2.0)
    assert np.array_equal(layer.gamma, np.full(8, 2.0))
    with pytest.raises(TypeError, match="both n_channels and num_channels"):
        gn.GroupNorm(4, 8, num_channels=8)
    with pytest.raises(TypeError, match="missing n_channels"):
        gn.GroupNorm(4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_state_dict_loads(channels_last):
    m = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    if channels_last:     # a model saved channels_last: its GroupNorm parameters stay 1-D
        m = m.to(memory_format=torch.channels_last)
    layer = gn.GroupNorm(4, 8, channel_axis=-1 if channels_last else 1)
    layer.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(layer.weight, m.weight.detach().numpy())
    np.testing.assert_array_equal(layer.bias, m.bias.detach().numpy())
    x = torch.randn(3, 8, 6, 6)
    xin = x.permute(0, 2, 3, 1).contiguous() if channels_last else x
    y = layer(xin)
    y = y.permute(0, 3, 1, 2) if channels_last else y
    torch.testing.assert_close(torch.as_tensor(y), m(x).detach(), rtol=1e-5, atol=1e-5)


def test_from_torch_and_to_torch_round_trip():
    m = torch.nn.GroupNorm(2, 6, eps=1e-3)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_()
    layer = gn.GroupNorm.from_torch(m)
    assert (layer.n_groups, layer.n_channels, layer.eps, layer.affine) == (2, 6, 1e-3, True)
    back = layer.to_torch()
    assert isinstance(back, torch.nn.GroupNorm) and back.eps == 1e-3
    torch.testing.assert_close(back.weight, m.weight, rtol=0, atol=0)
    torch.testing.assert_close(back.bias, m.bias, rtol=0, atol=0)
    assert gn.GroupNorm.from_torch(torch.nn.GroupNorm(2, 6, affine=False)).gamma is None
    with pytest.raises(ValueError, match="activation='silu'"):
        gn.GroupNorm(2, 6, activation="silu").to_torch()
    bf = gn.GroupNorm.from_torch(torch.nn.GroupNorm(2, 6).to(torch.bfloat16))
    assert bf.dtype.name == "bfloat16" and bf.to_torch().weight.dtype == torch.bfloat16


class _ResBlock(torch.nn.Module):
    """A ResNet-GN / UNet-style block: GN, SiLU, conv, GN, SiLU, conv, plus the skip."""

    def __init__(self, c):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.GroupNorm(8, c), torch.nn.GroupNorm(4, c, eps=1e-6)
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_converting_every_groupnorm_of_a_model(channels_last):
    """Every GroupNorm of a small model, converted with from_torch, gives the module's
    output on the input the module saw, layer by layer (and its gradient)."""
    torch.manual_seed(0)
    model = _ResBlock(16)
    for mod in model.modules():
        if isinstance(mod, torch.nn.GroupNorm):
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_()
    x = torch.randn(2, 16, 12, 12)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(
            memory_format=torch.channels_last)
    seen = {}

    def hook(mod, inp, out):
        seen[mod] = (inp[0].detach(), out.detach())
    for mod in model.modules():
        if isinstance(mod, torch.nn.GroupNorm):
            mod.register_forward_hook(hook)
    model(x)
    assert len(seen) == 2
    for mod, (inp, out) in seen.items():
        layer = gn.GroupNorm.from_torch(mod)
        y = layer(inp)                       # channels_last tensors run as NHWC, no copy
        assert isinstance(y, torch.Tensor)
        torch.testing.assert_close(y, out, rtol=1e-5, atol=1e-5)
        dy = torch.randn_like(out)
        xr = inp.clone().requires_grad_(True)
        mod(xr).backward(dy)
        dx = layer.backward(dy)
        torch.testing.assert_close(torch.as_tensor(dx), xr.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.as_tensor(layer.dgamma), mod.weight.grad,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tdt", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_mixed_precision_as_torch(tdt):
    """float32 weights with 16-bit data: outputs in the data's dtype, the gradients of the
    weights in theirs; the numbers of torch's mixed-type group_norm."""
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(1)
    x = (torch.randn(2, 8, 6, 6) * 2 + 1).to(tdt)
    w, b = torch.rand(8) + 0.5, torch.randn(8)
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    yt = F.group_norm(xr, 4, wr, br)
    assert yt.dtype == tdt
    y, mean, rstd = gn.group_norm_forward(x, 4, w, b)
    assert isinstance(y, torch.Tensor) and y.dtype == tdt and mean.dtype == torch.float32
    ulp = 2.0 ** (-10 if tdt == torch.float16 else -7)
    torch.testing.assert_close(y.float(), yt.float(), rtol=2 * ulp, atol=2 * ulp)
    dy = torch.randn(2, 8, 6, 6).to(tdt)
    yt.backward(dy)
    dx, dw, db = gn.group_norm_backward(dy, x, mean, rstd, 4, w)
    assert dx.dtype == tdt and dw.dtype == torch.float32 and db.dtype == torch.float32
    torch.testing.assert_close(dx.float(), xr.grad.float(), rtol=4 * ulp, atol=4 * ulp)
    torch.testing.assert_close(dw, wr.grad, rtol=4 * ulp, atol=4 * ulp * float(wr.grad.abs().max()))


def test_bfloat16_tensors_zero_copy_in_and_out():
    pytest.importorskip("ml_dtypes")
    x = torch.randn(2, 8, 4, 4).to(torch.bfloat16)
    out = torch.empty_like(x)
    y = gn.group_norm(x, 4, out=out)
    assert y is out and y.dtype == torch.bfloat16
    y2 = gn.group_norm(x, 4)
    assert y2.dtype == torch.bfloat16 and torch.equal(y2, out)
    x.zero_()                                  # in place: the call wrote into out's memory
    gn.group_norm(x, 4, out=out)
    assert torch.equal(out, torch.zeros_like(out))


def test_numpy_is_the_only_import_time_dependency():
    r = _run("import sys, numpy as np, gn_native as gn; gn.group_norm(np.ones((2, 4, 3), 'f4'), 2);"
             " print(sorted(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_isa_environment_variable_is_checked():
    bad = _run("import gn_native", GN_NATIVE_ISA="bogus")
    assert bad.returncode != 0 and "GN_NATIVE_ISA='bogus'" in bad.stderr
    assert "'auto'" in bad.stderr and "'scalar'" in bad.stderr and "'avx2'" in bad.stderr
    ok = _run("import gn_native as gn; print(gn.show_config.__module__, gn._cpu.isa())",
              GN_NATIVE_ISA="scalar")
    assert ok.returncode == 0 and ok.stdout.split()[-1] == "scalar", ok.stderr


def test_bfloat16_without_ml_dtypes_names_the_extra():
    code = ("import sys; sys.modules['ml_dtypes'] = None\n"
            "import gn_native as gn\n"
            "try:\n    gn.GroupNorm(2, 4, dtype='bfloat16')\n"
            "except TypeError as e:\n    print(e)\n")
    r = _run(code)
    assert r.returncode == 0 and 'pip install "gn_native[bf16]"' in r.stdout, r.stdout + r.stderr


def test_integer_input_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="integer and bool data are refused, as torch"):
        gn.group_norm(np.ones((2, 4, 3), np.int64), 2)
    with pytest.raises(TypeError, match="integer"):
        gn.group_norm(torch.ones((2, 4, 3), dtype=torch.int32), 2)
    x = make_data((2, 4, 3), np.float32, 0).tolist()       # a list of floats is an array-like
    assert isinstance(gn.group_norm(x, 2), np.ndarray)


def test_jax_arrays_in_give_jax_arrays_out():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = make_data((2, 8, 4, 4), np.float32, 3)
    xj = jnp.asarray(x)
    y = gn.group_norm(xj, 4)
    assert type(y) is type(xj) and y.dtype == jnp.float32
    assert_bit_identical(np.asarray(y), gn.group_norm(x, 4))
    y, mean, rstd = gn.group_norm_forward(xj, 4)
    dx, dgamma, dbeta = gn.group_norm_backward(jnp.ones_like(xj), xj, mean, rstd, 4)
    assert all(type(a) is type(xj) for a in (mean, rstd, dx, dgamma, dbeta))
    yb = gn.group_norm(xj.astype(jnp.bfloat16), 4)
    assert yb.dtype == jnp.bfloat16
