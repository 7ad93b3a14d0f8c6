# Type information for gn_native.GroupNorm (gn_native/layer.py).  The layer's arrays
# are NumPy arrays for a CPU layer and CuPy arrays for a GPU one: typed Any.
from typing import Any, Mapping, SupportsIndex

import numpy as np
from numpy.typing import DTypeLike, NDArray

class GroupNorm:
    n_groups: int
    n_channels: int
    eps: float
    affine: bool
    affine_per: str
    stats: str
    track_running_stats: bool
    momentum: float
    channel_axis: int
    dtype: np.dtype[Any]
    device: str
    xp: Any
    activation: str | None
    training: bool
    gamma: Any
    beta: Any
    dgamma: Any
    dbeta: Any
    dadd: Any
    running_mean: Any
    running_var: Any
    num_batches_tracked: int
    def __init__(
        self, n_groups: SupportsIndex | None = None, n_channels: SupportsIndex | None = None,
        eps: float = 1e-5, affine: bool = True, *, affine_per: str = "channel",
        stats: str = "sample", track_running_stats: bool = False, momentum: float = 0.1,
        dtype: Any = ..., device: str | None = "cpu", channel_axis: int = 1,
        activation: str | None = None, num_groups: SupportsIndex | None = None,
        num_channels: SupportsIndex | None = None,
    ) -> None: ...
    def train(self, mode: bool = True) -> GroupNorm: ...
    def eval(self) -> GroupNorm: ...
    def __call__(self, x: Any = None, add: Any = None, *, input: Any = None) -> Any: ...
    def forward(self, x: Any = None, add: Any = None, *, input: Any = None) -> Any: ...
    def backward(self, dy: Any) -> Any: ...
    def state_dict(self) -> dict[str, NDArray[Any]]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
    @property
    def weight(self) -> Any: ...
    @weight.setter
    def weight(self, value: Any) -> None: ...
    @property
    def bias(self) -> Any: ...
    @bias.setter
    def bias(self, value: Any) -> None: ...
    @classmethod
    def from_torch(cls, module: Any, **kwargs: Any) -> GroupNorm: ...
    def to_torch(self) -> Any: ...
