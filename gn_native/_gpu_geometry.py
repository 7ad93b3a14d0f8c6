"""Launch geometry of the GPU kernels: plain functions of the shape, no CuPy.

Everything here depends only on the problem's sizes, never on the device
(SM count, clock), so a given input gives bit-identical results on every
GPU: the chunking of a reduction fixes its summation order.

Limits honoured (tests/test_gpu_geometry.py checks them for tiny, odd and
> 2**31-element shapes): blockDim.x a power of two no larger than the
kernel's `max_block` (which the RawKernels are compiled for, with
__launch_bounds__: see `raw_defines`), gridDim.x <= 2**31 - 1 (the kernels
loop over their work items, so any size fits), and dynamic shared memory
<= 48 KiB (the default without an opt-in attribute).

Registers: a block may use at most 65,536 of them on every GPU from sm_75
to sm_120.  `max_block(kind)` is the largest block each kernel is ever
launched with, `min_blocks(kind)` how many of those an SM must be able to
hold; ptxas keeps each kernel within 65536 / (max_block * min_blocks)
registers per thread, and `python -m gn_native.gpu_check` verifies, per
kernel and architecture, registers x max_block <= 65536 with no spills.
The RawKernels index with 64-bit integers throughout; the CuPy elementwise
kernels switch to 64-bit division above 2**31 elements (`flat_params`).
"""
from dataclasses import dataclass

GRID_X_MAX = 2**31 - 1
BLOCK_MAX = 1024             # CUDA's limit; each kernel has its own, below
SMEM_LIMIT = 48 * 1024
REGISTERS_PER_BLOCK = 65536  # sm_75 .. sm_120

# Path choice (see forward_geometry): one block per (n, g) when there are
# enough groups to fill the device, or when a group is small enough for one
# block to finish quickly; otherwise a two-stage (split) reduction.
FUSED_MIN_GROUPS = 128
FUSED_MAX_SMALL_GROUP = 1 << 16
FUSED_ITEMS_PER_THREAD = 32
FUSED_MIN_BLOCK = 64
# The fused kernels take 68 to 128 registers per thread (sm_75 to sm_120,
# NVRTC 13.4; ptxas holds the 16-bit backward to the 128 that 512 threads
# allow, without spilling, on sm_100 and sm_120): 1024 threads would need
# <= 64, which they cannot reach without spilling.
FUSED_BLOCK_MAX = 512
FUSED_MIN_BLOCKS = 1

SPLIT_BLOCK = 256
SPLIT_MIN_BLOCKS = 2         # <= 128 registers per thread (they take 57 to 87)
SPLIT_MIN_CHUNK = 4096       # elements per stage-1 block, at least
SPLIT_MAX_CHUNK = 1 << 24    # per-thread counts stay exact in float32
SPLIT_TARGET_ITEMS = 2048    # stage-1 blocks to aim for


def ceil_div(a, b):
    return -(-a // b)


def pow2ceil(v):
    """Smallest power of two >= v (1 for v <= 1)."""
    v = int(v)
    return 1 if v <= 1 else 1 << (v - 1).bit_length()


def grid_for(items):
    """Blocks for `items` work items: kernels loop when items exceed the grid limit."""
    return max(1, min(int(items), GRID_X_MAX))


@dataclass(frozen=True)
class Launch:
    grid: int
    block: int
    smem: int        # dynamic shared memory, bytes


@dataclass(frozen=True)
class ForwardGeometry:
    path: str                  # "fused" (gn_fwd_fused) or "split"
    launch: Launch             # of gn_fwd_fused or gn_stats_partial
    parts: int = 1             # split: chunks per group (P)
    chunk: int = 0             # split: elements per chunk
    merge_shape: tuple = ()    # split: (Q, R) view of the partials, reduced over axis 0


@dataclass(frozen=True)
class BackwardGeometry:
    path: str                  # "fused" (gn_bwd_fused) or "split"
    launch: Launch             # of gn_bwd_fused or gn_bwd_partial
    tx_len: int                # threads along the contiguous axis of a tile
    parts: int = 1             # split: spatial chunks (P)
    chunk: int = 0             # split: positions per chunk
    sum_shape: tuple = ()      # split: (Q, R) view of the partials, reduced over axis 0


def fused_block(m):
    """Threads per block for one group of m elements."""
    t = pow2ceil(ceil_div(m, FUSED_ITEMS_PER_THREAD))
    return max(FUSED_MIN_BLOCK, min(FUSED_BLOCK_MAX, t))


# CuPy's own kernels: ElementwiseKernel launches blocks of 128 threads by
# default (_gpu passes this value explicitly), ReductionKernel blocks of 512
# (CuPy's _reduction._default_block_size, which gpu_check reads from CuPy).
ELEMENTWISE_BLOCK = 128
REDUCTION_BLOCK = 512

RAW_KINDS = ("fwd_fused", "stats_partial", "bwd_fused", "bwd_partial", "stats_rows", "bwd_reduce")
# The stages' one-thread-per-output kernels (dtype-free, one RawModule of
# their own, gn_native._gpu_kernels.stage_names): blocks of STAGE_BLOCK.
STAGE_KINDS = ("partial_fold", "stats_merge", "pair_sums")
STAGE_BLOCK = 128


def max_block(kind):
    """The largest block `kind` is ever launched with (a RawKernel kind, "elementwise" or "reduction")."""
    if kind in ("fwd_fused", "bwd_fused"):
        return FUSED_BLOCK_MAX
    if kind in ("stats_partial", "bwd_partial", "stats_rows", "bwd_reduce"):
        return SPLIT_BLOCK
    if kind in STAGE_KINDS:
        return STAGE_BLOCK
    if kind == "elementwise":
        return ELEMENTWISE_BLOCK
    if kind == "reduction":
        return REDUCTION_BLOCK
    raise ValueError(f"unknown kernel kind {kind!r}")


def max_dynamic_smem(kind):
    """The most dynamic shared memory a launch of `kind` asks for (bytes)."""
    if kind == "fwd_fused":
        return 3 * 8 * FUSED_BLOCK_MAX
    if kind == "stats_partial":
        return 3 * 8 * SPLIT_BLOCK
    if kind == "bwd_fused":
        return SMEM_LIMIT           # backward_geometry takes the split path past it
    if kind in ("bwd_partial", "stats_rows", "bwd_reduce"):
        return 16 * SPLIT_BLOCK
    return 0


def raw_defines():
    """The -D options the RawKernels are compiled with: their __launch_bounds__."""
    return (f"-DGN_FUSED_BLOCK_MAX={FUSED_BLOCK_MAX}", f"-DGN_FUSED_MIN_BLOCKS={FUSED_MIN_BLOCKS}",
            f"-DGN_SPLIT_BLOCK={SPLIT_BLOCK}", f"-DGN_SPLIT_MIN_BLOCKS={SPLIT_MIN_BLOCKS}",
            f"-DGN_STAGE_BLOCK={STAGE_BLOCK}")


def block_registers(regs, block):
    """Registers a block of `block` threads takes: allotted per warp, in units of 256."""
    return ceil_div(regs, 8) * 8 * 32 * ceil_div(block, 32)


# The kernels count a group's values (fused) or a chunk's (split) in 32 bits.
FUSED_MAX_GROUP = 1 << 30


def use_fused(n, groups, m, stats):
    return (stats == "sample" and m < FUSED_MAX_GROUP
            and (n * groups >= FUSED_MIN_GROUPS or m <= FUSED_MAX_SMALL_GROUP))


def split_chunk(m, groups_total):
    """Elements per stage-1 chunk of a group of m elements (groups_total groups in all)."""
    want = pow2ceil(ceil_div(m * groups_total, SPLIT_TARGET_ITEMS))
    return max(1, min(m, max(SPLIT_MIN_CHUNK, min(SPLIT_MAX_CHUNK, want))))


def forward_geometry(n, c, spatial, groups, stats):
    """How forward() computes the statistics of an (n, c, spatial) input."""
    k = c // groups
    m = k * spatial
    if use_fused(n, groups, m, stats):
        t = fused_block(m)
        return ForwardGeometry("fused", Launch(grid_for(n * groups), t, 3 * 8 * t))
    chunk = split_chunk(m, n * groups)
    parts = ceil_div(m, chunk)
    items = parts * n * groups
    q, r = (parts, n * groups) if stats == "sample" else (parts * n, groups)
    return ForwardGeometry("split", Launch(grid_for(items), SPLIT_BLOCK, 3 * 8 * SPLIT_BLOCK),
                           parts, chunk, (q, r))


TILE_MIN_TX = 32              # a warp's worth of consecutive addresses


def tile_tx(layout, block, spatial, channels):
    """Threads along the contiguous axis of a (channels x positions) tile.

    NCHW rows are channels of `spatial` contiguous values: tx covers the
    positions, and the block takes up to `channels` rows at once (tx shrinks
    down to a warp) so that one tree reduction serves many channels.  NHWC
    rows are positions of `channels` contiguous values: tx covers the
    channels.  Either way a warp reads consecutive addresses.
    """
    if layout == "nhwc":
        return min(block, pow2ceil(channels))
    tx = min(block, pow2ceil(spatial))
    while tx > TILE_MIN_TX and block // tx < channels:
        tx //= 2
    return tx


def bwd_fused_smem(block, k):
    return 16 * (block + k)


def backward_geometry(n, c, spatial, groups, stats, layout):
    """How backward() reduces dy and x of an (n, c, spatial) input."""
    k = c // groups
    m = k * spatial
    if use_fused(n, groups, m, stats):
        t = fused_block(m)
        if bwd_fused_smem(t, k) <= SMEM_LIMIT:
            tx = tile_tx(layout, t, spatial, k)
            return BackwardGeometry("fused", Launch(grid_for(n * groups), t, bwd_fused_smem(t, k)), tx)
    t = SPLIT_BLOCK
    tx = tile_tx(layout, t, spatial, c)
    clen = t // tx if layout == "nchw" else tx        # channels per tile
    ntiles = ceil_div(c, clen)
    per_pos = max(1, clen)
    want = pow2ceil(ceil_div(n * ntiles * spatial, SPLIT_TARGET_ITEMS))
    chunk = max(ceil_div(SPLIT_MIN_CHUNK, per_pos), min(want, ceil_div(SPLIT_MAX_CHUNK, per_pos)))
    chunk = max(1, min(spatial, chunk))
    parts = ceil_div(spatial, chunk)
    items = parts * n * ntiles
    q, r = (parts, n * c) if stats == "sample" else (parts * n, c)
    return BackwardGeometry("split", Launch(grid_for(items), t, 16 * t), tx, parts, chunk, (q, r))


# ---------------------------------------------------------------------------
# The stages (issue 14): stats="batch" runs them, on one GPU or many.  Their
# chunking comes from the sample's shape (C, spatial, G) and never from N, so
# that a sample's partial rows and channel sums are the same bits whatever
# else is in the batch, and a batch split across GPUs gives one GPU's bits.

@dataclass(frozen=True)
class StageGeometry:
    launch: Launch     # of gn_stats_rows or gn_bwd_reduce, for the local n
    parts: int         # chunks per group (forward) or per channel (backward): P
    chunk: int         # elements (forward) or positions (backward) per chunk
    tx_len: int = 0    # backward: threads along the contiguous axis of a tile


def stats_rows_geometry(n, c, spatial, groups):
    """How gn_stats_rows cuts each (sample, group) of c // groups * spatial values."""
    m = (c // groups) * spatial
    chunk = split_chunk(m, groups)
    parts = ceil_div(m, chunk)
    return StageGeometry(Launch(grid_for(n * groups * parts), SPLIT_BLOCK, 16 * SPLIT_BLOCK), parts, chunk)


def bwd_reduce_geometry(n, c, spatial, layout):
    """How gn_bwd_reduce cuts each sample's (channels x positions): tiles as backward_geometry's split."""
    t = SPLIT_BLOCK
    tx = tile_tx(layout, t, spatial, c)
    clen = t // tx if layout == "nchw" else tx
    ntiles = ceil_div(c, clen)
    per_pos = max(1, clen)
    want = pow2ceil(ceil_div(ntiles * spatial, SPLIT_TARGET_ITEMS))
    chunk = max(ceil_div(SPLIT_MIN_CHUNK, per_pos), min(want, ceil_div(SPLIT_MAX_CHUNK, per_pos)))
    chunk = max(1, min(spatial, chunk))
    parts = ceil_div(spatial, chunk)
    return StageGeometry(Launch(grid_for(n * ntiles * parts), t, 16 * t), parts, chunk, tx)


def stage_launch(outputs):
    """One thread per output (gn_partial_fold, gn_stats_merge, gn_pair_sums)."""
    return Launch(grid_for(ceil_div(max(1, outputs), STAGE_BLOCK)), STAGE_BLOCK, 0)


# ---------------------------------------------------------------------------
# Flat indexing in the elementwise kernels.

def fastdiv(d):
    """(magic, shift) with n // d == (umulhi(n, magic) + n) >> shift for 0 <= n < 2**31.

    Valid for 1 <= d <= 2**31 (gn_fastdiv in gn_math.cuh).
    """
    d = int(d)
    if not 1 <= d <= 2**31:
        raise ValueError(f"fastdiv divisor must be in [1, 2**31], got {d}")
    shift = (d - 1).bit_length()
    magic = ((1 << 32) * ((1 << shift) - d)) // d + 1
    assert magic <= 0xFFFFFFFF
    return magic, shift


def fastdiv_apply(n, magic, shift):
    """Python model of gn_fastdiv (32-bit unsigned arithmetic)."""
    t = (n * magic) >> 32
    return ((t + n) & 0xFFFFFFFF) >> shift


def small_index(size):
    """True when every flat index fits the 32-bit fast division (i < 2**31)."""
    return size <= 2**31


def flat_params(n, c, spatial, groups, stats, layout):
    """Scalars of gn_flat (gn_math.cuh), in the elementwise kernels' order."""
    k = c // groups
    small = small_index(n * c * spatial)
    mc, sc = fastdiv(c) if small else (1, 0)
    ms, ss = fastdiv(spatial) if small else (1, 0)
    mk, sk = fastdiv(k) if small else (1, 0)
    gn = groups if stats == "sample" else 0
    return (c, spatial, k, gn, int(layout == "nhwc"), int(small), mc, sc, ms, ss, mk, sk)


def index_regime(size, itemsize):
    """How CuPy indexes an elementwise kernel over `size` elements of `itemsize` bytes.

    CuPy marks an array 32-bit when its byte extent is <= 2**31 and the
    kernel's indexer 32-bit when its size is <= 2**31: "i32" (both), "mixed"
    (the indexer only) or "i64" (neither).  Each is its own compiled kernel.
    """
    arrays32 = size * itemsize <= 2**31
    indexer32 = size <= 2**31
    return "i32" if arrays32 else ("mixed" if indexer32 else "i64")
