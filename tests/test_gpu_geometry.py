"""Launch geometry of the GPU kernels (gn_native._gpu_geometry): no GPU, no CuPy needed."""
import random

import pytest

from gn_native import _gpu_geometry as G

# (n, c, spatial, groups): tiny, odd, one group, one channel per group, no
# spatial, big groups, many groups, and more than 2**31 elements.
SHAPES = [
    (1, 1, 1, 1), (1, 2, 1, 2), (2, 6, 35, 3), (3, 5, 7, 5), (1, 3, 1, 1), (7, 13, 11, 13),
    (2, 64, 1, 32), (32, 256, 4096, 32), (1, 32, 1 << 20, 32), (1, 4, 1 << 22, 1),
    (8, 4096, 1, 1), (4096, 64, 1, 64), (1, 3, 7, 3), (16, 2048, 49, 1),
    (64, 512, 128 * 128, 32),            # 2**29 elements
    (1, 64, 1 << 26, 32),                 # 2**32 elements in 32 groups
    (3, 2, (1 << 31) + 1, 1),             # one group of more than 2**31 elements
    (1 << 20, 2048, 1, 32),               # 2**31 elements, 2**25 groups
    (128, 4, 1 << 30, 4),                 # many groups of 2**30 values: too many for int counters
]
STATS = ("sample", "batch")
LAYOUTS = ("nchw", "nhwc")


def _check_launch(launch, kind):
    assert 1 <= launch.grid <= G.GRID_X_MAX
    # the kernels are compiled (__launch_bounds__) and checked (gpu_check) for max_block(kind)
    assert 1 <= launch.block <= G.max_block(kind) <= G.BLOCK_MAX
    assert launch.block & (launch.block - 1) == 0, "kernels tree-reduce over a power-of-two block"
    assert 0 < launch.smem <= G.max_dynamic_smem(kind) <= G.SMEM_LIMIT


def test_pow2ceil_and_ceil_div():
    assert [G.pow2ceil(v) for v in (0, 1, 2, 3, 4, 5, 1023, 1024, 1025)] == [1, 1, 2, 4, 4, 8, 1024, 1024, 2048]
    assert G.pow2ceil(2**40 + 1) == 2**41
    assert G.ceil_div(7, 2) == 4 and G.ceil_div(8, 2) == 4 and G.ceil_div(0, 3) == 0


def test_grid_is_clamped():
    assert G.grid_for(0) == 1
    assert G.grid_for(5) == 5
    assert G.grid_for(2**40) == G.GRID_X_MAX


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("stats", STATS)
def test_forward_geometry(shape, stats):
    n, c, sp, g = shape
    m = (c // g) * sp
    geo = G.forward_geometry(n, c, sp, g, stats)
    _check_launch(geo.launch, "fwd_fused" if geo.path == "fused" else "stats_partial")
    if geo.path == "fused":
        assert stats == "sample"
        assert geo.launch.grid == min(n * g, G.GRID_X_MAX)
        assert geo.launch.smem == 24 * geo.launch.block
        assert m + 8 * geo.launch.block < 2**31          # the kernels count a group's values in int
        # per-thread counts stay exact in float32 (the Welford state)
        assert G.ceil_div(m, geo.launch.block) < 2**24
    else:
        assert geo.path == "split"
        assert geo.parts * geo.chunk >= m > (geo.parts - 1) * geo.chunk   # chunks tile each group
        assert 1 <= geo.chunk <= G.SPLIT_MAX_CHUNK < 2**30   # ... and a chunk's
        assert G.ceil_div(geo.chunk, geo.launch.block) < 2**24
        q, r = geo.merge_shape
        assert q * r == geo.parts * n * g                                 # one partial per item
        assert r == (n * g if stats == "sample" else g)
        assert geo.launch.grid == min(geo.parts * n * g, G.GRID_X_MAX)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_geometry(shape, stats, layout):
    n, c, sp, g = shape
    k = c // g
    geo = G.backward_geometry(n, c, sp, g, stats, layout)
    _check_launch(geo.launch, "bwd_fused" if geo.path == "fused" else "bwd_partial")
    t, tx = geo.launch.block, geo.tx_len
    assert 1 <= tx <= t and tx & (tx - 1) == 0
    if geo.path == "fused":
        assert stats == "sample"
        assert geo.launch.smem == 16 * (t + k)       # tree buffers + per-channel sums
        assert k * sp < G.FUSED_MAX_GROUP            # int counters over the group's positions
    else:
        assert geo.parts * geo.chunk >= sp > (geo.parts - 1) * geo.chunk
        assert geo.chunk <= G.SPLIT_MAX_CHUNK
        clen = t // tx if layout == "nchw" else tx
        ntiles = G.ceil_div(c, clen)
        assert ntiles * clen >= c
        q, r = geo.sum_shape
        assert q * r == geo.parts * n * c
        assert r == (n * c if stats == "sample" else c)
        assert geo.launch.grid == min(geo.parts * n * ntiles, G.GRID_X_MAX)


def test_unet_shape_gets_a_block_its_kernels_fit():
    """(1, 320, 64, 64) in 32 groups (Stable Diffusion's UNet): 40,960 values a group."""
    f = G.forward_geometry(1, 320, 64 * 64, 32, "sample")
    b = G.backward_geometry(1, 320, 64 * 64, 32, "sample", "nchw")
    assert f.path == b.path == "fused"
    assert f.launch.block == b.launch.block == G.FUSED_BLOCK_MAX


def test_raw_defines_are_the_geometry():
    d = dict(o[2:].split("=") for o in G.raw_defines())
    assert int(d["GN_FUSED_BLOCK_MAX"]) == G.max_block("fwd_fused") == G.max_block("bwd_fused")
    assert int(d["GN_SPLIT_BLOCK"]) == G.max_block("stats_partial") == G.max_block("bwd_partial")
    assert int(d["GN_FUSED_MIN_BLOCKS"]) >= 1 and int(d["GN_SPLIT_MIN_BLOCKS"]) >= 1


def test_path_choice():
    # many groups, or small groups: one block per group
    assert G.forward_geometry(32, 256, 4096, 32, "sample").path == "fused"
    assert G.forward_geometry(1, 4, 9, 2, "sample").path == "fused"
    # few large groups, and every stats="batch" call: two stages
    assert G.forward_geometry(1, 32, 1 << 20, 32, "sample").path == "split"
    assert G.forward_geometry(32, 256, 4096, 32, "batch").path == "split"
    # backward keeps per-channel sums in shared memory: too many channels per group -> split
    assert G.backward_geometry(2, 4096, 1, 1, "sample", "nchw").path == "split"
    assert G.backward_geometry(32, 256, 4096, 32, "sample", "nhwc").path == "fused"


def test_split_gives_enough_blocks():
    geo = G.forward_geometry(1, 32, 1 << 20, 32, "sample")
    assert geo.parts * 32 >= 1024
    geo = G.backward_geometry(1, 32, 1 << 20, 32, "batch", "nhwc")
    assert geo.launch.grid >= 1024


def test_tile_tx_is_coalesced():
    # NCHW: threads run along the spatial axis; NHWC: along the channels
    assert G.tile_tx("nchw", 256, 4096, 1) == 256       # one channel: the whole block on it
    assert G.tile_tx("nchw", 1024, 4096, 8) == 128      # eight channels at once
    assert G.tile_tx("nchw", 256, 4096, 512) == 32      # never below a warp
    assert G.tile_tx("nchw", 256, 49, 2) == 64
    assert G.tile_tx("nchw", 256, 1, 8) == 1
    assert G.tile_tx("nhwc", 256, 4096, 8) == 8
    assert G.tile_tx("nhwc", 256, 4096, 3) == 4
    assert G.tile_tx("nhwc", 256, 1, 2048) == 256


def test_geometry_depends_on_shape_only():
    """No device property enters: a shape reduces in the same order on every GPU."""
    import inspect
    for fn in (G.forward_geometry, G.backward_geometry):
        params = set(inspect.signature(fn).parameters)
        assert params <= {"n", "c", "spatial", "groups", "stats", "layout"}


DIVISORS = [1, 2, 3, 5, 7, 9, 48, 49, 64, 640, 1000, 4095, 65537, 2**20 + 7, 2**30, 2**31 - 1, 2**31]


@pytest.mark.parametrize("d", DIVISORS)
def test_fastdiv(d):
    magic, shift = G.fastdiv(d)
    assert 0 < magic <= 0xFFFFFFFF and 0 <= shift <= 31
    rnd = random.Random(d)
    nums = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, 2**31 - 1, 2**31 - 2, 2**30}
    nums |= {rnd.randrange(2**31) for _ in range(2000)}
    nums |= {q * d + r for q in (1, 3, 1000) for r in (0, d - 1) if q * d + r < 2**31}
    for v in nums:
        if 0 <= v < 2**31:
            assert G.fastdiv_apply(v, magic, shift) == v // d, (v, d)


def test_fastdiv_rejects_out_of_range():
    with pytest.raises(ValueError):
        G.fastdiv(0)
    with pytest.raises(ValueError):
        G.fastdiv(2**31 + 1)


def test_flat_params_switch_to_64_bit_above_2_31():
    small = G.flat_params(2, 6, 35, 3, "sample", "nchw")
    assert small[5] == 1 and small[:4] == (6, 35, 2, 3)
    assert small[6:8] == G.fastdiv(6)
    assert G.flat_params(2, 6, 35, 3, "batch", "nhwc")[3:5] == (0, 1)   # gn = 0: statistics per g
    assert G.flat_params(1, 1, 2**31, 1, "sample", "nchw")[5] == 1
    big = G.flat_params(3, 2, (1 << 31) + 1, 1, "sample", "nchw")
    assert big[5] == 0 and big[6:] == (1, 0, 1, 0, 1, 0)


def test_index_regime():
    assert G.index_regime(1000, 4) == "i32"
    assert G.index_regime(2**29, 4) == "i32"
    assert G.index_regime(2**29 + 1, 4) == "mixed"
    assert G.index_regime(2**31, 2) == "mixed"
    assert G.index_regime(2**31 + 1, 2) == "i64"
    assert G.index_regime(2**30 + 1, 2) == "mixed"


# ---------------------------------------------------------------------------
# The stages (issue 14): stats="batch" on one GPU or many.

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_stage_geometry(shape, layout):
    """Chunks tile each group / each channel's positions, a chunk counts in int, and the chunking
    never depends on N: a sample's partial rows and sums are the same bits in any batch."""
    n, c, sp, g = shape
    m = (c // g) * sp
    f = G.stats_rows_geometry(n, c, sp, g)
    _check_launch(f.launch, "stats_rows")
    assert f.parts * f.chunk >= m > (f.parts - 1) * f.chunk and 1 <= f.chunk < 2**30
    assert f.launch.grid == min(n * g * f.parts, G.GRID_X_MAX)
    b = G.bwd_reduce_geometry(n, c, sp, layout)
    _check_launch(b.launch, "bwd_reduce")
    assert b.parts * b.chunk >= sp > (b.parts - 1) * b.chunk and 1 <= b.chunk < 2**30
    for other in (1, 3, 1 << 12):
        assert G.stats_rows_geometry(other, c, sp, g).chunk == f.chunk
        assert G.bwd_reduce_geometry(other, c, sp, layout).chunk == b.chunk
        assert G.bwd_reduce_geometry(other, c, sp, layout).tx_len == b.tx_len


@pytest.mark.parametrize("outputs", [0, 1, 127, 128, 129, 10**6, 2**40])
def test_stage_launch(outputs):
    launch = G.stage_launch(outputs)
    assert launch.block == G.STAGE_BLOCK == G.max_block("stats_merge") and launch.smem == 0
    assert 1 <= launch.grid <= G.GRID_X_MAX
    assert launch.grid * launch.block >= outputs or launch.grid == G.GRID_X_MAX   # grid-stride loops past it
