"""The live widgets a cell's reply streams into, pooled for the kernel's life.

A reply streams into a :class:`~aivvm_magic.rendering.frontend.LiveHTML`, drawn with
JupyterLab's own rendered-HTML styles, so that it looks as the static output that replaces it.
Opening a fresh widget costs two comm models (the widget and its layout) opened now and closed
later, each a message to the frontend and back, and the widget's module with the first. So the
widget freed when one reply ends is cleared (no saved widget state holds an old reply) and
shows the next reply, in that reply's own cell.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["WidgetPool", "close_widget", "widget_pool"]


def close_widget(widget: Any) -> None:
    """Close ``widget`` and the layout and style models it owns, freeing their comms."""
    for model in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
        if model is not None:
            model.close()


class WidgetPool:
    """Live HTML widgets waiting for their next reply."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def take(self) -> Any:
        """An open live widget, reused if one is idle."""
        with self._lock:
            while self._idle:
                widget = self._idle.pop()
                if widget.comm is not None:  # not closed meanwhile (Widget.close_all, say)
                    return widget
        from .frontend import LiveHTML

        widget = LiveHTML()
        widget.add_class("aivvm-stream")
        return widget

    def give_back(self, widget: Any) -> None:
        """Clear ``widget``, whose view is gone, and keep it for the next reply."""
        if widget.comm is None:
            return
        widget.value = ""
        with self._lock:
            self._idle.append(widget)

    def close(self) -> None:
        """Close the idle widgets (when the extension is unloaded)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for widget in idle:
            close_widget(widget)

    def __len__(self) -> int:
        return len(self._idle)


#: The live widgets of this kernel, shared by every cell's live view.
widget_pool = WidgetPool()
