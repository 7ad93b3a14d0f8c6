# Type information for the compiled module gn_native._cpu (gn_native/_cpu.pyx): the
# Cython wrapper over the C core.  Internal: the public API is gn_native's.  `p` is a
# gn_native._validate.Plan; arrays are C-contiguous NumPy arrays.
from typing import Any

import numpy as np

_Array = np.ndarray[Any, Any]

MAX_THREADS: int
LAYOUT_NCHW: int
LAYOUT_NHWC: int
STATS_SAMPLE: int
STATS_BATCH: int
AFFINE_NONE: int
AFFINE_CHANNEL: int
AFFINE_GROUP: int
ADD_FULL: int
ADD_NC: int
ADD_C: int
ACT_CODES: dict[str, int]

def kernel_dtypes() -> list[tuple[str, int, int]]: ...
def forward(p: Any, y: _Array, mean: _Array, rstd: _Array, x: _Array, gamma: _Array | None,
            beta: _Array | None, var: _Array | None = None, add: _Array | None = None,
            add_shape: Any = None, sum_out: _Array | None = None) -> None: ...
def forward_repeat(p: Any, y: _Array, mean: _Array, rstd: _Array, x: _Array,
                   gamma: _Array | None, beta: _Array | None, reps: int) -> None: ...
def normalize(p: Any, y: _Array, x: _Array, mean: _Array, rstd: _Array,
              gamma: _Array | None, beta: _Array | None) -> None: ...
def backward(p: Any, dx: _Array, dgamma: _Array, dbeta: _Array, dy: _Array, x: _Array,
             mean: _Array, rstd: _Array, gamma: _Array | None, beta: _Array | None = None,
             frozen: bool = False) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def isa() -> str: ...
def set_isa(name: str) -> None: ...
def openmp_enabled() -> bool: ...
def version() -> str: ...
# (y, mean, rstd) / (dx, dgamma, dbeta) for a plainly valid common call, else None
def forward_fast(x: Any, n_groups: Any, gamma: Any, beta: Any, eps: Any, stats: Any,
                 channel_axis: Any, out: Any, activation: Any = None
                 ) -> tuple[_Array, _Array, _Array] | None: ...
def backward_fast(dy: Any, x: Any, mean: Any, rstd: Any, n_groups: Any, gamma: Any, stats: Any,
                  channel_axis: Any, out: Any, beta: Any = None, activation: Any = None
                  ) -> tuple[_Array, _Array, _Array] | None: ...
