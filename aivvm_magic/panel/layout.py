"""The chat panel's widgets, built once and laid out: :class:`PanelLayout`.

Like ipywidgets' ``interactive``, the panel is a box that builds its children once and assigns
``self.children``; :class:`~aivvm_magic.panel.chat_panel.ChatPanel` adds what they do.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..rendering.frontend import LiveHTML, MessageBox, current_cell_id
from .view import model_label, model_options

__all__ = ["EXPORT_FORMATS", "TRANSCRIPT_HEIGHT", "PanelLayout"]

#: Export formats offered by the panel: label, value, file extension.
EXPORT_FORMATS = (("JSON", "json", ".json"), ("Markdown", "markdown", ".md"))

#: How tall the transcript is unless the panel is told otherwise: it scrolls beyond that.
TRANSCRIPT_HEIGHT = "420px"

#: What the message box says while it is empty.
MESSAGE_HINT = "Your message (Enter sends, Shift+Enter adds a line)"

# Labels as long as their text: ipywidgets' fixed width cuts "Temperature" to "Temperat…".
_LABEL = {"description_width": "initial"}


def _full_width() -> widgets.Layout:
    return widgets.Layout(width="100%")


class PanelLayout(widgets.VBox):
    """The panel's controls, transcript and status line, with nothing wired to them yet."""

    def __init__(
        self,
        *,
        chat: str,
        chats: list[str],
        model: str,
        temperature: float,
        system: str,
        height: str = TRANSCRIPT_HEIGHT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_class("aivvm-panel")
        self.chat_picker = widgets.Combobox(
            value=chat,
            options=tuple(chats),
            description="Chat",
            placeholder="an existing or new name",
            ensure_option=False,
            continuous_update=False,
            style=_LABEL,
        )
        self.model_picker = widgets.Dropdown(
            options=[(model_label(m), m) for m in model_options([], model)],
            value=model,
            description="Model",
            style=_LABEL,
            layout=widgets.Layout(width="auto", min_width="16em"),
        )
        self.temperature_slider = widgets.FloatSlider(
            value=min(max(temperature, 0.0), 2.0),
            min=0.0,
            max=2.0,
            step=0.05,
            description="Temperature",
            continuous_update=False,
            readout_format=".2f",
            style=_LABEL,
        )
        self.system_input = widgets.Textarea(
            value=system, description="System", rows=2, layout=_full_width(), style=_LABEL
        )
        self.system_input.add_class("aivvm-system-input")
        # A fixed height that scrolls, following the newest message; code blocks offer Copy
        # and Insert (below the panel's own cell).
        self.transcript = LiveHTML(
            follow=True,
            code_tools=True,
            cell_id=current_cell_id(),
            layout=widgets.Layout(width="100%", height=height),
        )
        self.transcript.add_class("aivvm-transcript-view")
        self.status = widgets.HTML()
        self.message = MessageBox(placeholder=MESSAGE_HINT, rows=2, layout=_full_width())
        self.send_button = widgets.Button(
            description="Send",
            button_style="primary",
            icon="paper-plane",
            tooltip="Send the message (Enter)",
        )
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.reset_button = widgets.Button(
            description="Reset", icon="trash", tooltip="Forget every turn of this conversation"
        )
        self.export_format = widgets.Dropdown(
            options=[(label, value) for label, value, _ in EXPORT_FORMATS],
            value="json",
            layout=widgets.Layout(width="8em"),
        )
        self.export_path = widgets.Text(value="chat.json", placeholder="file path")
        self.export_button = widgets.Button(description="Export", icon="download")
        composer = widgets.HBox([self.message, widgets.VBox([self.send_button, self.stop_button])])
        composer.add_class("aivvm-composer")
        self.children = [
            widgets.HBox([self.chat_picker, self.model_picker, self.temperature_slider]),
            self.system_input,
            self.transcript,
            self.status,
            composer,
            widgets.HBox(
                [self.reset_button, self.export_format, self.export_path, self.export_button]
            ),
        ]

    def _descendants(self) -> list[widgets.Widget]:
        found: list[widgets.Widget] = []
        stack = list(self.children)
        while stack:
            widget = stack.pop()
            found.append(widget)
            stack.extend(getattr(widget, "children", ()))
        return found

    def close_widgets(self) -> None:
        """Close every widget of the panel, with the layouts and styles it made."""
        parts = self._descendants()
        for child in parts:
            child.close()
        # Layouts and styles are widgets too, kept alive by ipywidgets' registry until
        # closed; the panel made them all, so it frees them.
        for part in (self, *parts):
            for trait in ("layout", "style"):
                owned = getattr(part, trait, None)
                if isinstance(owned, widgets.Widget):
                    owned.close()
