"""Our widgets' front end: anywidget models whose ES module and CSS ship with the package.

ipywidgets gives an ``HTML`` widget its own fonts and line height (13 px text on a 28 px line)
and no key events. These widgets are drawn by one small ES module of ours
(``static/widgets.js``, with ``static/widgets.css``), loaded by anywidget's prebuilt
JupyterLab extension: no build step, and no script in any output. The module only puts the
kernel's sanitised HTML in the page (inside JupyterLab's ``jp-RenderedHTMLCommon``, as a static
HTML output is), follows a transcript's newest message, sends a message on Enter, and gives
code blocks Copy and "Insert as a new cell".

- :class:`LiveHTML`: a reply while it streams, and the chat panel's transcript.
- :class:`MessageBox`: the chat panel's message box; Enter sends, Shift+Enter adds a line.
- :class:`CodeTools`: displayed after a cell's reply that has code blocks, while a kernel
  runs it; shows nothing itself.

A saved notebook keeps a widget's output but not its model, and JupyterLab then shows "Error
displaying widget: model not found" where a trusted notebook prefers the widget. So each static
output that stands beside one of these widgets carries
:func:`~aivvm_magic.rendering.assets.saved_output_style`, whose rules hide the widget's output
while it cannot be drawn, and the static copy while the widget can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from .assets import asset

__all__ = [
    "CodeTools",
    "LiveHTML",
    "MessageBox",
    "current_cell_id",
]


class _Widget(anywidget.AnyWidget):
    """The module and stylesheet every widget of ours shares; ``kind`` picks its view."""

    _esm = traitlets.Unicode(asset("widgets.js")).tag(sync=True)
    _css = traitlets.Unicode(asset("saved.css") + asset("widgets.css")).tag(sync=True)
    kind = traitlets.Unicode("").tag(sync=True)


class LiveHTML(_Widget):
    """Sanitised HTML (``value``), drawn with JupyterLab's rendered-HTML styles.

    ``follow`` keeps it scrolled to its end as ``value`` grows, unless the reader scrolled up;
    ``code_tools`` gives its finished code blocks Copy and Insert buttons, inserting below the
    cell ``cell_id``.
    """

    kind = traitlets.Unicode("html").tag(sync=True)
    value = traitlets.Unicode("").tag(sync=True)
    follow = traitlets.Bool(False).tag(sync=True)
    code_tools = traitlets.Bool(False).tag(sync=True)
    cell_id = traitlets.Unicode("").tag(sync=True)


class CodeTools(_Widget):
    """Copy and Insert for the code blocks of the reply displayed just before it."""

    kind = traitlets.Unicode("code_tools").tag(sync=True)
    cell_id = traitlets.Unicode("").tag(sync=True)


class MessageBox(_Widget):
    """A message box: Enter sends (``on_send`` callbacks get the text), Shift+Enter adds a
    line. ``value`` is what is typed, kept in step both ways."""

    kind = traitlets.Unicode("message_box").tag(sync=True)
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    rows = traitlets.Int(3).tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._senders: list[Callable[[str], Any]] = []
        self.on_msg(self._on_message)

    def on_send(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(text)`` when the user presses Enter (on the shell thread)."""
        self._senders.append(callback)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "send":
            text = content.get("text")
            if isinstance(text, str):
                for callback in self._senders:
                    callback(text)


def current_cell_id() -> str:
    """The id of the cell running now, as the front end sent it (``""`` when unknown)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        header = getattr(shell, "parent_header", None) or {}
    except Exception:  # noqa: BLE001 - an id is a nicety: no shell, no id
        return ""
    cell_id = header.get("metadata", {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else ""
