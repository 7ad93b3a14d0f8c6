# Type information for gn_native.stages (gn_native/stages.py).
# NumPy arrays in give NumPy arrays out; CuPy arrays in give CuPy arrays (Any).
from typing import Any, SupportsIndex

from numpy.typing import ArrayLike, DTypeLike, NDArray

_Array = NDArray[Any]
_Param = ArrayLike | None

PARTIAL_FIELDS: tuple[str, ...]
SUM_FIELDS: tuple[str, ...]
__all__: list[str]

def stats_partial(x: Any, n_groups: SupportsIndex, *, eps: float = 1e-5,
                  channel_axis: int = 1) -> Any: ...
def stats_merge(partials: Any, *, eps: float = 1e-5) -> tuple[Any, Any, Any]: ...
def normalize(x: Any, mean: Any, rstd: Any, n_groups: SupportsIndex, gamma: _Param = None,
              beta: _Param = None, *, stats: str = "batch", channel_axis: int = 1,
              activation: str | None = None, out: Any = None) -> Any: ...
def backward_reduce(dy: Any, x: Any, mean: Any, rstd: Any, n_groups: SupportsIndex,
                    gamma: _Param = None, beta: _Param = None, *, stats: str = "batch",
                    channel_axis: int = 1, activation: str | None = None) -> Any: ...
def backward_apply(dy: Any, x: Any, mean: Any, rstd: Any, sums: Any, n_groups: SupportsIndex,
                   gamma: _Param = None, beta: _Param = None, *, stats: str = "batch",
                   channel_axis: int = 1, activation: str | None = None,
                   out: Any = None) -> Any: ...
def param_grads(sums: Any, rstd: Any, n_groups: SupportsIndex, gamma: _Param = None,
                beta: _Param = None, *, stats: str = "batch",
                dtype: DTypeLike) -> tuple[Any, Any]: ...
