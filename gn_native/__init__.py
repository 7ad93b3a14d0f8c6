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
from . import stages

__version__ = _cpu.version()

__all__ = ["group_norm", "group_norm_forward", "group_norm_backward", "GroupNorm",
           "get_num_threads", "set_num_threads", "get_include", "get_lib_dir",
           "show_config", "__version__"]

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def _check_isa_env():
    """GN_NATIVE_ISA, when set, must name a SIMD path this CPU runs (the C core
    alone would fall back silently): an error here lists the valid values."""
    want = _os.environ.get("GN_NATIVE_ISA", "")
    if want in ("", "auto"):
        return
    try:
        _cpu.set_isa(want)
    except ValueError:
        known = ("scalar", "avx2")
        raise ImportError(
            f"GN_NATIVE_ISA={want!r}: " + ("this CPU (or this build) cannot run it"
                                           if want in known else "unknown value")
            + "; valid values are 'auto' (the default: the best this CPU runs), 'scalar' and "
            "'avx2' (x86-64 with AVX2, FMA and F16C)") from None


_check_isa_env()


def get_include():
    """Return the folder holding ``gn_native.h``, the C API header.

    For C and Cython code that calls the C core directly: pass it to the
    compiler as an include directory (``-I``).

    Returns
    -------
    str
        Absolute path of the ``include`` folder inside the installed package.

    See Also
    --------
    get_lib_dir : Folder of the shared library to link against.

    Examples
    --------
    >>> import os
    >>> import gn_native as gn
    >>> os.path.isfile(os.path.join(gn.get_include(), "gn_native.h"))
    True
    """
    return _os.path.join(_HERE, "include")


def get_lib_dir():
    """Return the folder holding ``libgn_native.so``, the C core.

    For C and Cython code that links against the C core (``-L`` and an
    rpath).

    Returns
    -------
    str
        Absolute path of the installed ``gn_native`` package folder.

    See Also
    --------
    get_include : Folder of the C header.

    Examples
    --------
    >>> import os
    >>> import gn_native as gn
    >>> os.path.isdir(gn.get_lib_dir())
    True
    """
    return _HERE


def get_num_threads():
    """Return the number of threads the CPU core uses.

    This is the value given to `set_num_threads` when one was given, else
    the OpenMP default (``OMP_NUM_THREADS``, a threadpoolctl limit, or all
    cores).

    Returns
    -------
    int
        Number of CPU threads, at least 1.

    See Also
    --------
    set_num_threads : Change it.

    Examples
    --------
    >>> import gn_native as gn
    >>> gn.get_num_threads() >= 1
    True
    """
    return _cpu.get_num_threads()


def set_num_threads(n):
    """Set the number of threads the CPU core uses.

    The setting applies to every later CPU call in the process.  The
    results do not depend on it: any thread count gives the same bits.

    Parameters
    ----------
    n : int or None
        Number of threads, from 1 to 1024 (the C core's
        ``GN_MAX_THREADS``).  None returns to the default
        (``OMP_NUM_THREADS``, a threadpoolctl limit, or all cores).

    Raises
    ------
    TypeError
        If `n` is not an int or None (a bool or a float is refused).
    ValueError
        If `n` is outside 1 to 1024.

    See Also
    --------
    get_num_threads : The number in use.

    Examples
    --------
    >>> import gn_native as gn
    >>> gn.set_num_threads(1)
    >>> gn.get_num_threads()
    1
    >>> gn.set_num_threads(None)  # back to the default
    >>> gn.set_num_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: n must be between 1 and 1024 threads, got 0
    """
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
    """Return, and by default print, the build and run-time configuration.

    Reports the version, the SIMD path chosen at run time, the thread
    count, whether OpenMP is enabled, the C header and library folders, and
    the GPU (CuPy) backend or why it is unavailable.

    Parameters
    ----------
    print_out : bool, default True
        Print one ``key: value`` line per entry as well as returning them.

    Returns
    -------
    dict
        Keys ``"version"``, ``"isa"``, ``"threads"``, ``"openmp"``,
        ``"include"``, ``"lib_dir"`` and ``"gpu"``.

    See Also
    --------
    get_num_threads : The thread count alone.
    get_include : The C header folder alone.

    Examples
    --------
    >>> import gn_native as gn
    >>> cfg = gn.show_config(print_out=False)
    >>> sorted(cfg)
    ['gpu', 'include', 'isa', 'lib_dir', 'openmp', 'threads', 'version']
    >>> cfg["version"] == gn.__version__
    True
    """
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
