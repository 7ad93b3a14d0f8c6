# Type information for the gn_native package (gn_native/__init__.py).
from typing import Any, SupportsIndex

from . import _cpu as _cpu
from . import stages as stages
from ._api import group_norm as group_norm
from ._api import group_norm_backward as group_norm_backward
from ._api import group_norm_forward as group_norm_forward
from .layer import GroupNorm as GroupNorm

__version__: str
__all__ = ["group_norm", "group_norm_forward", "group_norm_backward", "GroupNorm",
           "get_num_threads", "set_num_threads", "get_include", "get_lib_dir",
           "show_config", "__version__"]

def get_include() -> str: ...
def get_lib_dir() -> str: ...
def get_num_threads() -> int: ...
def set_num_threads(n: SupportsIndex | None) -> None: ...
def show_config(print_out: bool = True) -> dict[str, Any]: ...
