"""The fusion engine: dispatch, strategies (modes), judge and accounting."""

from .engine import FusionContext, fuse, fuse_events
from .events import FusionEvent
from .request import FusionRequest
from .strategies import Strategy, get_strategy, register_strategy, strategy_names

__all__ = [
    "FusionContext",
    "FusionEvent",
    "FusionRequest",
    "Strategy",
    "fuse",
    "fuse_events",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]
