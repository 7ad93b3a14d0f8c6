"""Arrays of other frameworks in, the same kind of array out.

A torch CPU tensor or a JAX CPU array given as `x` is read without a copy as
a NumPy array (torch's bfloat16 through ml_dtypes), and every array result
goes back as that framework's array, again without a copy.  Nothing here
imports a framework: one is touched only when the caller passed its array,
whose module is then already loaded.  NumPy stays the only import-time
dependency.
"""
import sys

import numpy as np

from . import _dtypes


def framework(a):
    """'torch' or 'jax' for an array of those frameworks, else None."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith(("jax", "jaxlib")):
        return "jax"
    return None


def _bfloat16():
    if "bfloat16" not in _dtypes.NUMPY:
        raise TypeError('a bfloat16 tensor needs ml_dtypes: pip install "gn_native[bf16]"')
    return _dtypes.NUMPY["bfloat16"]


def to_numpy(a, name):
    """A framework's CPU array as an ndarray sharing its memory."""
    if framework(a) == "torch":
        torch = sys.modules["torch"]
        if a.device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {a.device}: gn_native's GPU path takes "
                            f"CuPy arrays (cupy.from_dlpack({name}) shares the memory)")
        t = a.detach().resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(_bfloat16())
        return t.numpy()
    try:
        return np.from_dlpack(a)         # JAX: its buffer, without a copy
    except Exception:
        return np.asarray(a)


def _from_numpy(fw, a):
    if fw == "torch":
        torch = sys.modules["torch"]
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)
    jax = sys.modules["jax"]
    try:
        return jax.dlpack.from_dlpack(a)
    except Exception:                    # a dtype DLPack cannot carry (bfloat16): a copy
        return jax.numpy.asarray(a)


def like(fw, result, keep=()):
    """`result` (an ndarray or a tuple of them) as arrays of framework `fw`; the
    objects in `keep` (the caller's own `out` tensors) are returned as they are."""
    def conv(r):
        if any(r is k for k in keep) or not isinstance(r, np.ndarray):
            return r
        return _from_numpy(fw, r)
    return tuple(conv(r) for r in result) if isinstance(result, tuple) else conv(result)
