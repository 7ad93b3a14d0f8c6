# Type information for gn_native.dask (Dask arrays in, lazy Dask arrays out).
from typing import SupportsIndex

from dask.array import Array
from numpy.typing import ArrayLike

__all__ = ["group_norm", "group_norm_forward"]

def group_norm_forward(
    x: Array | ArrayLike, n_groups: SupportsIndex, gamma: Array | ArrayLike | None = None,
    beta: Array | ArrayLike | None = None, eps: float = 1e-5, *, stats: str = "sample",
    channel_axis: int = 1, activation: str | None = None, recompute: bool = True,
) -> tuple[Array, Array, Array]: ...
def group_norm(
    x: Array | ArrayLike, n_groups: SupportsIndex, gamma: Array | ArrayLike | None = None,
    beta: Array | ArrayLike | None = None, eps: float = 1e-5, *, stats: str = "sample",
    channel_axis: int = 1, activation: str | None = None, recompute: bool = True,
) -> Array: ...
