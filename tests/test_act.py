"""The activation maths of issue 13 (gn_native/src/act.h, act_avx2.h), on its own.

Compiles tests/c/test_act.c against the checkout's gn_native/src/ (act.h is
not installed) with the core's flags (_build_config.REQUIRED_CFLAGS +
-O2, plus the AVX2 flags and -DGN_HAVE_AVX2=1 where the compiler takes them),
and runs it: scalar == AVX2 bit for bit over a strided sweep of all float32
bit patterns, the max-ulp table of exp, erf, tanh, every activation and
derivative against long double libm, the float64 versions on a sample.  Then
the special values (+-inf, NaN, +-0, tiny, huge) against torch's CPU results.
"""
import math
import struct
from pathlib import Path

import pytest

from conftest import load_cbuild

import gn_native
from gn_native import _build_config as cfg

cb = load_cbuild()
CC = cb.compiler()
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler found (set CC)")
TEST_ACT = cb.TESTS_C / "test_act.c"


def _src_dir():
    """The folder that holds act.h: the installed package's src/, else the checkout's."""
    for d in (cb.core_sources(), cb.REPO / "gn_native" / "src"):
        if d is not None and (Path(d) / "act.h").is_file():
            return Path(d)
    pytest.fail("act.h is in neither the installed package's src/ nor the checkout "
                "(reinstall gn_native: pip install .)")


def _build(workdir, avx2):
    """test_act built with the core's flags; avx2: with the AVX2 path where possible.
    Returns (exe, whether the AVX2 path was compiled in)."""
    flags = [*cfg.REQUIRED_CFLAGS, "-O2", "-Wall", "-Wextra"]
    with_avx2 = (avx2 and cfg.is_x86()
                 and cb.can_compile(CC, cfg.ISA_FLAGS["avx2"], workdir, name="avx2_probe"))
    if with_avx2:
        flags += [*cfg.ISA_FLAGS["avx2"], f"-D{cfg.isa_define('avx2')}=1"]
    exe = Path(workdir) / ("test_act_avx2" if with_avx2 else "test_act_scalar")
    cb.run([*CC.split(), *flags, f"-I{_src_dir()}", f"-I{gn_native.get_include()}",
            str(TEST_ACT), "-o", str(exe), "-lm"])
    return exe, with_avx2


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("act")
    return {"avx2": _build(d, True), "scalar": _build(d, False)}


def _run(exe, *args, timeout=300):
    res = cb.run([str(exe), *args], timeout=timeout, check=False)
    print(res.stdout)
    assert res.returncode == 0, (f"{Path(exe).name} {' '.join(args)} failed "
                                 f"(exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


@pytest.mark.parametrize("mode", [
    pytest.param("--quick", id="quick"),
    pytest.param("default", id="default_stride", marks=pytest.mark.slow),   # 8 s: CI's slow pass
])
def test_ulp_table_and_scalar_avx2_identity(builds, mode):
    """test_act.c's ulp table and scalar/AVX2 identity, with AVX2 where built: the
    coarse pass (every 65521st float32) in the quick suite, the default stride
    (every 2003rd, every 101st for the identity) with -m slow."""
    exe, with_avx2 = builds["avx2"]
    out = _run(exe) if mode == "default" else _run(exe, mode)
    assert " 0 failures" in out, out
    if with_avx2 and "checked against scalar" not in out:
        pytest.skip("built with AVX2, but this CPU lacks AVX2/FMA: the scalar path was checked")


def test_scalar_build_gives_the_same_bits(builds):
    """Without the AVX2 flags (fmaf becomes libm's correctly rounded fmaf) the
    scalar functions give the same bits as in the AVX2 build, and still pass."""
    (avx, _), (sca, _) = builds["avx2"], builds["scalar"]
    _run(sca, "--quick")
    assert _run(avx, "--special") == _run(sca, "--special")


# ---- special values against torch ----

def _special_rows(exe):
    rows = []
    for line in _run(exe, "--special").splitlines():
        kind, act, z, a, g = line.split()
        rows.append((kind, act, float.fromhex(z), float.fromhex(a), float.fromhex(g)))
    return rows


def _torch_fn(act):
    import torch.nn.functional as F
    return {"silu": F.silu, "gelu": F.gelu, "relu": F.relu,
            "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}[act]


def _torch(act, z, dtype):
    """torch's value and autograd gradient at z, one element on the CPU."""
    import torch
    x = torch.tensor([z], dtype=dtype, requires_grad=True)
    y = _torch_fn(act)(x)
    y.backward(torch.ones_like(y))
    return y.item(), x.grad.item()


def _f32(v):
    return struct.unpack("f", struct.pack("f", v))[0] if math.isfinite(v) else v


def _ulp32(v):
    """The float32 ulp at |v| (2^-149 below FLT_MIN)."""
    v = abs(v)
    e = math.frexp(v)[1] if v else -200       # v = m 2^e, m in [0.5, 1)
    return math.ldexp(1.0, max(e - 24, -149))


def _special_z(z):
    """The inputs whose results must be torch's: +-inf, NaN, +-0, tiny and huge."""
    return not math.isfinite(z) or abs(z) <= 1e-30 or abs(z) >= 1e13


def _close(ours, ref, kind, z):
    """NaN = NaN; zeros and infinities exactly (the sign of a zero aside: torch's
    own float32 kernels disagree on it).  Other values of special inputs to 4
    float32 ulps / 1e-13 relative in float64 (torch's exp and erf are not ours);
    of moderate inputs (|z| in 1..100) to 1e-5 relative or 1e-20 absolute, as
    torch loses the tails there to cancellation: its float64 gelu(-10) is 0
    (1 + erf(-7.07) = 0), gelu(-10) = -7.6e-23; its gelu'(-20) is -1.1042e-86,
    x phi(x) alone, where Phi(x) + x phi(x) = -1.1014e-86.  The ulp table of
    test_act.c covers those inputs against long double."""
    if math.isnan(ours) or math.isnan(ref):
        return math.isnan(ours) and math.isnan(ref)
    if ours == 0 or ref == 0 or math.isinf(ours) or math.isinf(ref):
        return ours == ref or (not _special_z(z) and abs(ours - ref) <= 1e-20)
    if not _special_z(z):
        return abs(ours - ref) <= 1e-5 * abs(ref) + 1e-20
    if kind == "f":
        return abs(ours - ref) <= 4 * _ulp32(ref)
    return abs(ours - ref) <= 1e-13 * abs(ref)


def _torch_f32_artifact(z, t32, t64):
    """Where torch's float32 kernel is off and we follow its float64 result instead
    (act.h's header): a NaN for a finite z (gelu_tanh' at |z| > ~1e13, where its
    z^3 overflows), or 0 where the float64 result is a representable float32
    (its float32 exp underflows early: silu(-90) = -7.4e-38, gelu(-10) = -7.6e-23)."""
    if math.isfinite(z) and math.isnan(t32) and not math.isnan(t64):
        return True
    return t32 == 0 and _f32(t64) != 0


def test_special_values_match_torch(builds):
    pytest.importorskip("torch")
    import torch
    exe, _ = builds["avx2"]
    rows = _special_rows(exe)
    assert len(rows) == 2 * 4 * 24, len(rows)
    bad, followed64 = [], []
    for kind, act, z, a, g in rows:
        t = _torch(act, z, torch.float32 if kind == "f" else torch.float64)
        t64 = _torch(act, z, torch.float64)
        for what, ours, ref, ref64 in (("a", a, t[0], t64[0]), ("a'", g, t[1], t64[1])):
            if _close(ours, ref, kind, z):
                continue
            if kind == "f" and _torch_f32_artifact(z, ref, ref64) and _close(ours, _f32(ref64), "f", z):
                followed64.append(f"{act} {what}({z!r}): torch float32 {ref!r}, "
                                  f"float64 {ref64!r}, ours {ours!r}")
                continue
            bad.append(f"{kind} {act} {what}({z!r}) = {ours!r}, torch {ref!r}")
    print("where torch's float32 kernel is off, act.h follows its float64 result:",
          *followed64, sep="\n  ")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_nonfinite_conventions(builds, act):
    """a(+inf) = +inf, a(-inf) = NaN, a(NaN) = NaN, a'(+-inf, NaN) = NaN: torch's."""
    exe, _ = builds["avx2"]
    for kind, name, z, a, g in _special_rows(exe):
        if name != act or math.isfinite(z):
            continue
        assert math.isnan(g), (kind, act, z, g)
        assert (a == z) if z == math.inf else math.isnan(a), (kind, act, z, a)


def test_relu_signs(builds):
    """relu(-0) = -0, relu'(+-0) = 0, relu'(NaN) = 1 (torch's threshold_backward)."""
    exe, _ = builds["avx2"]
    for kind, name, z, a, g in _special_rows(exe):
        if name != "relu":
            continue
        if z == 0:
            assert a == 0 and math.copysign(1, a) == math.copysign(1, z), (kind, z, a)
            assert g == 0, (kind, z, g)
        if math.isnan(z):
            assert math.isnan(a) and g == 1, (kind, a, g)
