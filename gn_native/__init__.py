"""gn_native: Group Normalization without a deep-learning framework.

CPU work runs in a C core (OpenMP threads, SIMD chosen at run time) through
Cython with the GIL released; CuPy arrays run on the GPU.  The default
statistics are those of torch.nn.functional.group_norm.
"""
import operator as _operator
import os as _os

try:
    from . import _cpu
except ImportError:
    # Python's own message here blames a "circular import"; the real cause is
    # a source checkout, where the compiled core is not built.
    _src = _os.path.dirname(_os.path.abspath(__file__))
    if (_os.path.isfile(_os.path.join(_os.path.dirname(_src), "setup.py"))
            and not any(f.startswith("_cpu.") and f.endswith((".so", ".pyd"))
                        for f in _os.listdir(_src))):
        raise ImportError(
            f"you are importing gn_native from its source folder ({_src}), where its "
            "compiled core is not built; install it with `pip install .` and run Python "
            "from another folder") from None
    raise

from ._api import group_norm, group_norm_backward, group_norm_forward
from .layer import GroupNorm

__version__ = _cpu.version()

__all__ = ["group_norm", "group_norm_forward", "group_norm_backward", "GroupNorm",
           "get_num_threads", "set_num_threads", "get_include", "get_lib_dir",
           "show_config", "__version__"]

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def get_include():
    """Folder holding gn_native.h (C API) for C and Cython users."""
    return _os.path.join(_HERE, "include")


def get_lib_dir():
    """Folder holding libgn_native.so, the C core."""
    return _HERE


def get_num_threads():
    """Threads the CPU core uses (set_num_threads, else OMP_NUM_THREADS / threadpoolctl)."""
    return _cpu.get_num_threads()


def set_num_threads(n):
    """Use `n` CPU threads, 1 to 1024 (the C core's GN_MAX_THREADS); `None`
    returns to the default (OMP_NUM_THREADS / threadpoolctl / all cores)."""
    if n is None:
        _cpu.set_num_threads(0)
        return
    try:
        if isinstance(n, bool):
            raise TypeError
        n = _operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int (or None), got {type(n).__name__} {n!r}") from None
    if not 1 <= n <= _cpu.MAX_THREADS:
        raise ValueError(f"n must be between 1 and {_cpu.MAX_THREADS} threads, got {n}")
    _cpu.set_num_threads(n)


def show_config(print_out=True):
    """The build and run-time configuration (SIMD path, threads, OpenMP, GPU)."""
    try:
        from . import _gpu
        gpu = _gpu.describe()
    except Exception as e:  # CuPy missing or broken: say so
        gpu = f"unavailable ({e})"
    cfg = {
        "version": __version__,
        "isa": _cpu.isa(),
        "threads": _cpu.get_num_threads(),
        "openmp": _cpu.openmp_enabled(),
        "include": get_include(),
        "lib_dir": get_lib_dir(),
        "gpu": gpu,
    }
    if print_out:
        for k, v in cfg.items():
            print(f"{k:>8}: {v}")
    return cfg
