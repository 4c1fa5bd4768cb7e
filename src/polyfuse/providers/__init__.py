"""Providers: one async model interface over OpenAI-compatible HTTP and local llama.cpp."""

from .base import ChatModel, Delta, MemberSpec, ModelKind, StreamEvent, parse_member, parse_pool
from .pricing import PriceTable
from .registry import HOSTED_PRESETS, ProviderHub

__all__ = [
    "ChatModel",
    "Delta",
    "StreamEvent",
    "ModelKind",
    "MemberSpec",
    "parse_member",
    "parse_pool",
    "PriceTable",
    "ProviderHub",
    "HOSTED_PRESETS",
]
