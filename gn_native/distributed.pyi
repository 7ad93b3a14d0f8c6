# Type information for gn_native.distributed (gn_native/distributed.py).  `comm` is an
# mpi4py communicator (mpi4py.MPI.Comm), typed Any so that the stub needs no mpi4py.
# NumPy arrays in give NumPy arrays out; a torch/JAX array gives its kind (Any).
from typing import Any, SupportsIndex

from numpy.typing import ArrayLike, NDArray

from .layer import GroupNorm

_Array = NDArray[Any]
_Param = ArrayLike | None

__all__: list[str]

def group_norm(
    x: ArrayLike, n_groups: SupportsIndex, gamma: _Param = None, beta: _Param = None,
    eps: float = 1e-5, *, comm: Any, stats: str = "batch", channel_axis: int = 1,
    activation: str | None = None, out: Any = None,
) -> Any: ...
def group_norm_forward(
    x: ArrayLike, n_groups: SupportsIndex, gamma: _Param = None, beta: _Param = None,
    eps: float = 1e-5, *, comm: Any, stats: str = "batch", channel_axis: int = 1,
    activation: str | None = None, out: Any = None,
) -> tuple[Any, Any, Any]: ...
def group_norm_backward(
    dy: ArrayLike, x: ArrayLike, mean: ArrayLike, rstd: ArrayLike, n_groups: SupportsIndex,
    gamma: _Param = None, beta: _Param = None, *, comm: Any, stats: str = "batch",
    channel_axis: int = 1, activation: str | None = None, out: Any = None,
    param_grads: str = "global",
) -> tuple[Any, Any, Any]: ...

class SyncGroupNorm(GroupNorm):
    comm: Any
    def __init__(
        self, n_groups: SupportsIndex | None = None, n_channels: SupportsIndex | None = None,
        eps: float = 1e-5, affine: bool = True, *, comm: Any = None, stats: str = "batch",
        **kwargs: Any,
    ) -> None: ...
    def __call__(self, x: Any = None, add: None = None, *, input: Any = None) -> Any: ...
    def forward(self, x: Any = None, add: None = None, *, input: Any = None) -> Any: ...
    def backward(self, dy: Any) -> Any: ...
