"""The chat panel: :class:`ChatPanel` (the view) and its :mod:`.sender` (the messages)."""

from __future__ import annotations

from .chat_panel import ChatPanel

__all__ = ["ChatPanel"]
