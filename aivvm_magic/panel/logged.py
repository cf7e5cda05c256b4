"""The chat panel's row for logged conversations: :class:`LoggedRow`.

A list of the conversations in the history database and an Open button, which continues the
chosen one in the panel, as ``%aivvm resume`` does in cells. Like the panel's other controls,
the shell thread owns it: the list is read when the panel is built and after each Open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..conversation.database import HistoryUnavailable
from ..errors import AivvmError, one_line
from ..session import Session
from .view import count

__all__ = ["LoggedRow"]


class LoggedRow(widgets.HBox):
    """The logged conversations, latest first, and Open.

    ``switch(name)`` shows a conversation in the panel; ``say(note, warn)`` puts a note on its
    status line; ``report()`` is called inside the ``except`` block of an unexpected error in
    a callback, to show it (ipywidgets would drop it).
    """

    def __init__(
        self,
        session: Session,
        *,
        switch: Callable[[str], None],
        say: Callable[..., None],
        report: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._session = session
        self._switch = switch
        self._say = say
        self._report = report
        self.picker = widgets.Dropdown(
            description="Logged", options=[], layout=widgets.Layout(width="32em")
        )
        self.open_button = widgets.Button(
            description="Open", icon="folder-open", tooltip="Continue it in this panel"
        )
        self.open_button.on_click(self._on_open_click)
        self.children = [self.picker, self.open_button]
        self.refresh()

    def refresh(self) -> list[int]:
        """Read the list (the latest 50 logged conversations); return their numbers."""
        found = []
        history = self._session.history
        if history.exists():
            try:
                found = history.database().conversations(limit=50)
            except (AivvmError, HistoryUnavailable) as exc:
                self._say(f"the history cannot be read: {one_line(exc)}", True)
        self.picker.options = [
            (
                f"#{c.id} {c.name} · {count(c.turns, 'turn')} · {c.updated[:16]} · "
                f"{' '.join(c.first_prompt.split())[:40]}",
                c.id,
            )
            for c in found
        ]
        return [c.id for c in found]

    def open_conversation(self, conversation_id: int) -> bool:
        """Continue logged conversation ``conversation_id`` in the panel: its turns go into the
        session's conversation of its name, which the panel then shows. False, with the
        reason on the status line, if it could not be."""
        try:
            conversation = self._session.resume(conversation_id)
        except AivvmError as exc:
            self._say(str(exc), True)
            return False
        self._switch(conversation.name)
        self.refresh()
        self._say(f"opened #{conversation_id}, {count(len(conversation), 'turn')}")
        return True

    def _on_open_click(self, _button: widgets.Button) -> None:
        try:
            if self.picker.value is None:
                self._say("choose a logged conversation first", True)
                return
            self.open_conversation(self.picker.value)
        except Exception:  # noqa: BLE001 - shown by report, never swallowed
            self._report()
