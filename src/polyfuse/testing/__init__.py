"""Test helpers for polyfuse and for code embedding it: a scripted in-process model and (with the ``dev``
extra) a real OpenAI-compatible HTTP upstream on loopback with scripted behaviour."""

from .scripted import Reply, ScriptedModel, label_of, scripted_hub

__all__ = ["Reply", "ScriptedModel", "label_of", "scripted_hub"]
