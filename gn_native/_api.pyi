# Type information for gn_native's functional API (gn_native/_api.py).
# NumPy arrays in give NumPy arrays out; any other input (a list, a CuPy array, a
# torch or JAX array) gives Any, as the result's type then depends on the input.
from typing import Any, SupportsIndex, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

_Array = NDArray[Any]
_Param = ArrayLike | None

@overload
def group_norm(
    x: np.ndarray[Any, Any], n_groups: SupportsIndex | None = None, gamma: _Param = None,
    beta: _Param = None, eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1,
    out: Any = None, mean: _Param = None, var: _Param = None, activation: str | None = None,
    add: _Param = None, input: None = None, num_groups: SupportsIndex | None = None,
    weight: _Param = None, bias: _Param = None,
) -> _Array: ...
@overload
def group_norm(
    x: Any = None, n_groups: SupportsIndex | None = None, gamma: Any = None, beta: Any = None,
    eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1, out: Any = None,
    mean: Any = None, var: Any = None, activation: str | None = None, add: Any = None,
    input: Any = None, num_groups: SupportsIndex | None = None, weight: Any = None,
    bias: Any = None,
) -> Any: ...

# 3 results, or 4 with sum_out= (the sum x + add as the 4th)
@overload
def group_norm_forward(
    x: np.ndarray[Any, Any], n_groups: SupportsIndex | None = None, gamma: _Param = None,
    beta: _Param = None, eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1,
    out: Any = None, mean: _Param = None, var: _Param = None, running_mean: Any = None,
    running_var: Any = None, momentum: float = 0.1, activation: str | None = None,
    add: _Param = None, sum_out: None = None, input: None = None,
    num_groups: SupportsIndex | None = None, weight: _Param = None, bias: _Param = None,
) -> tuple[_Array, _Array, _Array]: ...
@overload
def group_norm_forward(
    x: np.ndarray[Any, Any], n_groups: SupportsIndex | None = None, gamma: _Param = None,
    beta: _Param = None, eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1,
    out: Any = None, mean: _Param = None, var: _Param = None, running_mean: Any = None,
    running_var: Any = None, momentum: float = 0.1, activation: str | None = None,
    add: _Param = None, sum_out: np.ndarray[Any, Any], input: None = None,
    num_groups: SupportsIndex | None = None, weight: _Param = None, bias: _Param = None,
) -> tuple[_Array, _Array, _Array, _Array]: ...
@overload
def group_norm_forward(
    x: Any = None, n_groups: SupportsIndex | None = None, gamma: Any = None, beta: Any = None,
    eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1, out: Any = None,
    mean: Any = None, var: Any = None, running_mean: Any = None, running_var: Any = None,
    momentum: float = 0.1, activation: str | None = None, add: Any = None, sum_out: None = None,
    input: Any = None, num_groups: SupportsIndex | None = None, weight: Any = None,
    bias: Any = None,
) -> tuple[Any, Any, Any]: ...
@overload
def group_norm_forward(
    x: Any = None, n_groups: SupportsIndex | None = None, gamma: Any = None, beta: Any = None,
    eps: float = 1e-5, *, stats: str = "sample", channel_axis: int = 1, out: Any = None,
    mean: Any = None, var: Any = None, running_mean: Any = None, running_var: Any = None,
    momentum: float = 0.1, activation: str | None = None, add: Any = None, sum_out: Any,
    input: Any = None, num_groups: SupportsIndex | None = None, weight: Any = None,
    bias: Any = None,
) -> tuple[Any, Any, Any, Any]: ...

# (dx, dgamma, dbeta)
@overload
def group_norm_backward(
    dy: np.ndarray[Any, Any], x: ArrayLike, mean: ArrayLike, rstd: ArrayLike,
    n_groups: SupportsIndex, gamma: _Param = None, beta: _Param = None, *,
    stats: str = "sample", channel_axis: int = 1, out: Any = None, frozen: bool = False,
    activation: str | None = None,
) -> tuple[_Array, _Array, _Array]: ...
@overload
def group_norm_backward(
    dy: Any, x: Any, mean: Any, rstd: Any, n_groups: SupportsIndex, gamma: Any = None,
    beta: Any = None, *, stats: str = "sample", channel_axis: int = 1, out: Any = None,
    frozen: bool = False, activation: str | None = None,
) -> tuple[Any, Any, Any]: ...

def array_module(device: str) -> Any: ...
def __getattr__(name: str) -> Any: ...  # the module's private helpers
