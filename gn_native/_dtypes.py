"""The dtypes gn_native computes in: the one Python list.

Each line matches a line of src/dtypes.h, the C core's list, through the C
suffix (``gn_forward_<suffix>``).  The Cython wrapper's kernel table is
built from the C list (src/kernel_table.h) and looked up by these lines;
tests/test_dtypes.py checks that the two lists, the kernel table and the
GPU kernels agree.  Adding a dtype is its line in src/dtypes.h and its line
here.

Standard library and NumPy only: the GPU kernel specs and gpu_check read
this list without CuPy.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str        # NumPy's name of the data dtype
    suffix: str      # the C core's name suffix (src/dtypes.h)
    stat: str        # dtype of mean, rstd and var; the GPU accumulates in it too
    gpu_io: str      # dtype the CuPy kernels see the data as (16-bit ones: their bits)
    gpu_ctype: str   # C++ storage type of the GPU RawKernels (cuda/gn_math.cuh)
    extra: str = ""  # the pip extra that provides the dtype, when NumPy has none


DTYPES = (
    DType("float32", "f32", "float32", "float32", "float"),
    DType("float64", "f64", "float64", "float64", "double"),
    DType("float16", "f16", "float32", "uint16", "gn_half"),
    DType("bfloat16", "bf16", "float32", "uint16", "gn_bfloat", extra="bf16"),
)
BY_NAME = {d.name: d for d in DTYPES}
BY_SUFFIX = {d.suffix: d for d in DTYPES}


def _numpy_dtype(d):
    """d as a NumPy dtype, or None when its extra is not installed."""
    if not d.extra:
        return np.dtype(d.name)
    try:  # bfloat16 comes from ml_dtypes, which is optional
        import ml_dtypes
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return np.dtype(getattr(ml_dtypes, d.name))


# the dtypes this process can make: NumPy dtype -> line
AVAILABLE = {dt: d for d, dt in ((d, _numpy_dtype(d)) for d in DTYPES) if dt is not None}
STAT = {dt: np.dtype(d.stat) for dt, d in AVAILABLE.items()}
NUMPY = {d.name: dt for dt, d in AVAILABLE.items()}   # name -> NumPy dtype, where available


def supported_names():
    """'float32, float64, float16, bfloat16 (pip install "gn_native[bf16]")' and so on."""
    return ", ".join(d.name + (f' (pip install "gn_native[{d.extra}]")' if d.extra else "")
                     for d in DTYPES)
