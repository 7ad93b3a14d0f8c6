"""gn_native.gpu_check: compiles what runs, with CuPy's options, and fails on kernels a GPU would refuse.

Needs CuPy and NVRTC (the gpu-check extra), no GPU.  CI runs the full check
(`python -m gn_native.gpu_check`) before the test suite; these tests run
small parts of it and plant kernels that must fail it.
"""
import pytest

from gn_native import _gpu_geometry as G, _gpu_kernels as K

cupy = pytest.importorskip("cupy", reason="CuPy not installed (pip install .[gpu-check])")
gpu_check = pytest.importorskip("gn_native.gpu_check")

# A kernel with more live values than registers at 512 threads: 96 doubles
# loaded and kept until a sum of products over all of them.
HEAVY = r"""
template <int BOUNDED>
__global__ void gn_heavy(double* y, const double* x, int n) {
    double v[96];
#pragma unroll
    for (int i = 0; i < 96; ++i) v[i] = x[i * n + threadIdx.x];
    double acc = 0.0;
#pragma unroll
    for (int i = 0; i < 96; ++i)
#pragma unroll
        for (int j = i + 1; j < 96; j += 7) acc += v[i] * v[j];
    y[threadIdx.x] = acc;
}
template <> __global__ void __launch_bounds__(1024, 1) gn_heavy<1>(double* y, const double* x, int n) {
    double v[96];
#pragma unroll
    for (int i = 0; i < 96; ++i) v[i] = x[i * n + threadIdx.x];
    double acc = 0.0;
#pragma unroll
    for (int i = 0; i < 96; ++i)
#pragma unroll
        for (int j = i + 1; j < 96; j += 7) acc += v[i] * v[j];
    y[threadIdx.x] = acc;
}
template <int K_>
__global__ void gn_big_smem(double* y) {
    __shared__ double buf[5000];         // 40,000 bytes, plus the kind's dynamic shared memory
    buf[threadIdx.x] = threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = buf[4999 - threadIdx.x];
}
"""


def _planted(monkeypatch, names, kinds):
    v = K.RawVariant("planted", "nchw", tuple(names), tuple(kinds), HEAVY)
    monkeypatch.setattr(K, "variants", lambda dtypes=K.DTYPES: [v])


def test_planted_heavy_kernel_fails_the_check(capsys, monkeypatch):
    """Too many registers for the largest block the geometry gives its kind: the launch would fail."""
    _planted(monkeypatch, ["gn_heavy<0>"], ["fwd_fused"])
    rc = gpu_check.main(["--arch", "sm_90", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    line = next(ln for ln in out.splitlines() if "gn_heavy<0>" in ln)
    assert line.startswith("FAIL") and f"x {G.max_block('fwd_fused')} threads" in line and "> 65536" in line
    assert "1 failed" in out


def test_planted_kernel_that_spills_fails_the_check(capsys, monkeypatch):
    """Held to 64 registers by __launch_bounds__(1024), the same kernel spills: also a failure."""
    _planted(monkeypatch, ["gn_heavy<1>"], ["stats_partial"])
    rc = gpu_check.main(["--arch", "sm_80", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert any(ln.startswith("FAIL") and "spills" in ln for ln in out.splitlines())


def test_planted_shared_memory_fails_the_check(capsys, monkeypatch):
    _planted(monkeypatch, ["gn_big_smem<0>"], ["fwd_fused"])
    rc = gpu_check.main(["--arch", "sm_75", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert any(ln.startswith("FAIL") and "shared memory 40000 + 12288" in ln for ln in out.splitlines())


def test_light_kernel_passes_with_the_same_kind(capsys, monkeypatch):
    """The check can pass: the same planted module's light kernel fits its block."""
    _planted(monkeypatch, ["gn_big_smem<0>"], ["stats_partial"])     # 40,000 + 6,144 bytes: fits
    rc = gpu_check.main(["--arch", "sm_75", "--no-cache", "--jobs", "1"])
    assert rc == 0, capsys.readouterr().out


def test_options_are_cupys_own():
    """What gpu_check compiles with is what CuPy's compile path passes NVRTC, not a copy of it."""
    src, opts = gpu_check.cupy_nvrtc_call(K.raw_source(), K.raw_options(), "sm_90", False,
                                          K.raw_names("float32", "nchw"))
    assert src == K.raw_source()                           # a RawModule's source is compiled as written
    for o in K.raw_options() + ("-ftz=true", "--device-as-default-execution-space", "-arch=sm_90"):
        assert o in opts, (o, opts)
    ew = K.normalize_spec("float16")
    src, opts = gpu_check.cupy_nvrtc_call("/* gn */", (), "sm_120", True)
    assert "#include <cupy/carray.cuh>" in src and src.rstrip().endswith("/* gn */")
    assert "-ftz=true" in opts and "-arch=sm_120" in opts and any(o.startswith("--std=") for o in opts)
    assert ew.name == "gn_normalize_float16"


def test_gpu_check_reports_resources_and_compiles_a_subset(capsys):
    rc = gpu_check.main(["--only", "gn_sum2", "--arch", "sm_80", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("ok   gn_sum2[T=float32;i32]"))
    regs, spill, smem, dyn, block = (int(w) for w in line.split()[3:8])
    assert 0 < regs <= 255 and spill == 0 and smem >= 512 * 16 and block == gpu_check.reduction_block()
    assert "0 failed" in out


def test_reduction_block_is_cupys():
    assert gpu_check.reduction_block() == G.REDUCTION_BLOCK


def test_gpu_check_fails_on_a_bad_kernel(capsys, monkeypatch):
    bad = K.Elementwise("gn_bad", "T x", "T y", "y = x + undefined_name;")
    monkeypatch.setattr(K, "variants", lambda dtypes=K.DTYPES: [K._ew(bad, {"T": "float32"})])
    rc = gpu_check.main(["--arch", "sm_80", "--no-cache", "--jobs", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "FAIL gn_bad" in captured.out and "undefined_name" in captured.err


def test_gpu_check_fails_loudly_if_cupy_codegen_breaks(capsys, monkeypatch):
    def broken(v):
        raise AttributeError("module 'cupy._core._kernel' has no attribute '_get_elementwise_kernel_code'")
    monkeypatch.setattr(gpu_check, "elementwise_source", broken)
    assert gpu_check.main(["--only", "gn_normalize", "--arch", "sm_80", "--no-cache"]) == 2
    assert "private source generation failed" in capsys.readouterr().err


def test_gpu_check_fails_loudly_if_cupys_compile_path_moves(capsys, monkeypatch):
    from cupy.cuda import compiler
    monkeypatch.delattr(compiler, "_get_arch_for_options_for_nvrtc")
    assert gpu_check.main(["--only", "gn_sum2", "--arch", "sm_80", "--no-cache"]) == 2
    assert "compile path" in capsys.readouterr().err


def test_parse_ptxas():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 12288 bytes smem, 400 bytes cmem[0]
"""
    assert gpu_check.parse_ptxas(log) == {"_Z1kv": {"regs": 72, "spill": 8, "stack": 8, "smem": 12288}}


@pytest.mark.parametrize("regs,block,fits", [(64, 1024, True), (65, 1024, False), (128, 512, True),
                                             (129, 512, False), (255, 256, True), (72, 896, True),
                                             (73, 896, False)])
def test_block_registers_follow_the_allocation_unit(regs, block, fits):
    # 65536 // (ceil(regs / 8) * 8 * 32) warps fit a block (gpu/README): 73 registers take 80
    assert (G.block_registers(regs, block) <= G.REGISTERS_PER_BLOCK) is fits
    why = gpu_check.violations({"regs": regs, "spill": 0, "smem": 0}, block, 0)
    assert (not why) is fits


def test_variants_cover_every_activation():
    """One RawModule per (dtype, layout, activation); the statistics pass only in the "none" one
    (it does not depend on the activation), the others' kernels carry their activation's id."""
    raw = [v for v in K.variants() if isinstance(v, K.RawVariant) and v.dtype != K.STAGES]
    assert len(raw) == len(K.DTYPES) * len(K.LAYOUTS) * len(K.ACTIVATIONS)
    assert len({v.label for v in raw}) == len(raw)
    for v in raw:
        assert ("stats_partial" in v.kinds) == (v.act == "none")
        assert set(v.kinds) == set(K.RAW_KINDS if v.act == "none" else K.ACT_KINDS)
        code = K.ACTIVATIONS[v.act]
        for kind, name in zip(v.kinds, v.names):
            if kind in K.ACT_KINDS:
                assert name.endswith(f", {code}>"), name
    assert "RawModule[float16,nchw]" in [v.label for v in raw if v.act == "none"]   # labels as before


def test_an_activation_module_passes(capsys):
    """SiLU's float32 kernels compile and fit their launches (the full run covers all of them)."""
    rc = gpu_check.main(["--only", "RawModule[float32,nhwc,silu]", "--arch", "sm_90", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "gn_bwd_fused<float, 1, 1, 1>" in out and "7 kernels x 1 archs" in out


def test_the_stages_module_passes(capsys):
    """The stages' dtype-free kernels (issue 14: fold, merge, pair sums) are one RawModule of their
    own, checked at their one-thread-per-output blocks; the per-dtype ones (gn_stats_rows,
    gn_bwd_reduce) sit in the "none" modules beside the statistics pass."""
    stage = [v for v in K.variants() if isinstance(v, K.RawVariant) and v.dtype == K.STAGES]
    assert len(stage) == 1 and stage[0].label == "RawModule[stages]"
    assert set(stage[0].kinds) == set(G.STAGE_KINDS)
    assert {"stats_rows", "bwd_reduce"} <= set(K.RAW_KINDS) - set(K.ACT_KINDS)
    rc = gpu_check.main(["--only", "RawModule[stages]", "--arch", "sm_80", "--no-cache", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in ("gn_partial_fold", "gn_stats_merge<double>", "gn_pair_sums<float>"):
        line = next(ln for ln in out.splitlines() if ln.split()[1:2] == [name])
        assert line.startswith("ok") and int(line.split()[7]) == G.STAGE_BLOCK, line
