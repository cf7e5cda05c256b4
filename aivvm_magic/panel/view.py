"""What a chat panel shows: :class:`PanelView`, drawn by the session's render loop.

The view owns the widgets that show state (the transcript, the status line, whether Stop can
be pressed, the model and conversation lists); only the render loop writes them. Any thread
may tell the view what changed (a conversation event, a status note, the server's model list)
under its lock; the loop then draws, at once for the end of a turn, a reset or a switch, and
paced while a reply streams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..conversation import Conversation, ConversationEvent, PendingReply, Turn
from ..protocol import models as builtin_models
from ..rendering.incremental import MarkdownStream
from ..rendering.loop import MIN_INTERVAL, TICK
from ..rendering.replies import format_status, status_html
from ..rendering.transcript import live_exchange_html, transcript_html, turn_html
from .sender import Sender

__all__ = ["PanelView", "count", "model_label", "model_options"]


def count(number: int, noun: str) -> str:
    """``1 turn``, ``2 turns``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def model_options(found: list[str], current: str) -> list[str]:
    """The model list: what the server offers (else the built-in table), and ``current``."""
    options = list(dict.fromkeys(found or builtin_models))
    if current and current not in options:
        options.append(current)
    return options


def model_label(model_id: str, answered_by: str = "") -> str:
    """How the model list names ``model_id``: with what really answers it, when the server
    says that is something else (``SmolLM2-135M-Instruct.Q4_1 (as gpt-3.5-turbo)``)."""
    if answered_by and answered_by != model_id:
        return f"{answered_by} (as {model_id})"
    return model_id


class PanelView:
    """The shown state of one chat panel, and the widgets that show it.

    ``names()`` gives the session's conversation names; ``history_changed()`` is called (on
    the loop) after the transcript's recorded turns changed, so the panel can refresh the
    static copy it keeps for saved notebooks.
    """

    def __init__(
        self,
        *,
        transcript: Any,
        status: Any,
        stop_button: Any,
        send_button: Any,
        model_picker: Any,
        chat_picker: Any,
        sender: Sender,
        names: Callable[[], list[str]],
        history_changed: Callable[[], None],
        target: str = "",
        fmt: str = "markdown",
    ) -> None:
        self.transcript = transcript
        self.status = status
        self.stop_button = stop_button
        self.send_button = send_button
        self.model_picker = model_picker
        self.chat_picker = chat_picker
        self.fmt = fmt
        #: Where requests go, as the status line says it.
        self.target = target
        self._sender = sender
        self._names = names
        self._history_changed_callback = history_changed
        # What changed since the last draw: written by any thread under the lock.
        self._lock = threading.Lock()
        self._conversation: Conversation | None = None
        self._history_changed = True
        self._status: tuple[str, bool] = ("", False)
        # A note about the last message sent (not sent, and why), kept on the live status line
        # while another reply streams.
        self._notice = ""
        # The model list: what the server offers (None until it said), and ids that %config
        # chose since, to be drawn when _models_changed.
        self._server_models: list[str] = []
        self._offered: list[str] = []
        self._models_changed = False
        #: What the server says answers each model id (the model list's labels).
        self._answered_by: dict[str, str] = {}
        # What the server said answers the reply streaming now, for its status line once done.
        self._answering = ""
        # Drawn state: the render loop's alone.
        self._turn_cache: dict[int, tuple[Turn, str]] = {}
        self._history_html = ""
        self._live_markdown: tuple[PendingReply | None, MarkdownStream] = (None, MarkdownStream())
        self._live_shown: tuple[int, int] | None = None
        self._drawn_at = 0.0

    # -- what changed (any thread) --------------------------------------------------------

    @property
    def conversation(self) -> Conversation:
        """The conversation shown."""
        assert self._conversation is not None
        return self._conversation

    def show(self, conversation: Conversation) -> None:
        """Show ``conversation`` from now on (its whole history at the next draw)."""
        with self._lock:
            self._conversation = conversation
            self._history_changed = True
            self._status = ("", False)
            self._notice = ""

    def heard(self, event: ConversationEvent) -> None:
        """Take in an event of the conversation shown."""
        kind = event.kind
        with self._lock:
            # A note left by an earlier message (refused, failed) is out of date now.
            self._notice = ""
            self._history_changed = kind not in ("turn_started", "text_started")
            if kind == "text_started":
                # The reply's headers are in by now: what answers it, if the server says.
                pending = self.conversation.pending
                self._answering = pending.buffer.answered_by if pending is not None else ""
            if kind == "turn_finished" and event.turn is not None:
                # An incomplete turn is marked in the transcript: not again in the status.
                self._status = (self.turn_line(event.turn), False)
            elif kind == "turn_failed":
                self._status = (self.state_line("failed", event.error or "no reply"), True)
            elif kind == "reset":
                removed = count(event.removed, "turn")
                self._status = (self.idle_line(f"reset, {removed} removed"), False)
            elif kind == "replaced":
                self._status = (self.idle_line("history replaced"), False)

    def set_status(self, line: str, warn: bool = False, *, notice: str | None = None) -> None:
        """Show ``line`` on the status line; ``notice`` also stays on a live status line."""
        with self._lock:
            self._status = (line, warn)
            if notice is not None:
                self._notice = notice

    def note_on_turn(self, turn: Turn, note: str) -> None:
        """Add ``note`` to the status line of ``turn``, unless something else replaced it."""
        with self._lock:
            if self._status == (self.turn_line(turn), False):
                self._status = (self.turn_line(turn, note), False)

    def models_found(self, ids: list[str], answered_by: dict[str, str] | None = None) -> None:
        """The server's model list (and what answers each id, where it says), shown at the
        next draw."""
        with self._lock:
            self._server_models = list(ids)
            self._answered_by = dict(answered_by or {})
            self._models_changed = True

    def model_ids(self) -> list[str]:
        """The ids the model list offers now."""
        return [value for _, value in self.model_picker.options]

    def offer_model(self, model: str) -> None:
        """Add ``model`` to the list (``%config`` chose it), shown at the next draw."""
        with self._lock:
            if model not in self._offered:
                self._offered.append(model)
                self._models_changed = True

    # -- as a live view (the render loop calls these) ---------------------------------------

    def _live(self) -> PendingReply | None:
        pending = self.conversation.pending
        return pending if pending is not None and not pending.recorded else None

    def wants_draw(self, now: float) -> bool:
        """Something changed, the live reply grew, or the live status line's tick is due."""
        live = self._live()
        if self._history_changed or self._models_changed:
            return True
        if live is not None and self._live_shown != (id(live), live.chunks):
            return True
        streaming = live is not None or any(job.waiting for job in self._sender.jobs)
        return streaming and now - self._drawn_at >= TICK

    def poll_interval(self) -> float | None:
        """At the live pace while a reply streams or a message waits; else only when woken."""
        if self._live() is not None or self._sender.jobs:
            return MIN_INTERVAL
        return None

    def draw(self, now: float) -> None:
        """Write the transcript, the status line, Stop, and the model and chat lists."""
        with self._lock:
            history_changed, self._history_changed = self._history_changed, False
            (line, warn), notice = self._status, self._notice
            models_changed, self._models_changed = self._models_changed, False
            models = [*self._server_models, *self._offered]
        conversation = self.conversation
        if history_changed:
            self._history_html = self._rebuild_history(conversation.turns)
        live = self._live()
        live_html, chars = "", 0
        if live is not None:
            if self._live_markdown[0] is not live:
                self._live_markdown = (live, MarkdownStream())
            live_html, chars = live_exchange_html(live, self.fmt, self._live_markdown[1])
            self._live_shown = (id(live), live.chunks)
        else:
            self._live_shown = None
        value = transcript_html(self._history_html + live_html)
        if self.transcript.value != value:
            self.transcript.value = value
        jobs = self._sender.jobs
        if live is not None:
            job = self._sender.running(conversation)
            line, warn = self._live_line(live, chars, job.settings.model if job else "", notice)
        elif any(job.waiting for job in jobs):
            line, warn = self.state_line("waiting for another reply to finish…"), False
        self.status.value = status_html(line or self.idle_line(), warn=warn)
        self.stop_button.disabled = not jobs
        # While a reply streams, a message sent now waits for it: Send says so.
        busy = live is not None or bool(jobs)
        label = "Queue" if busy else "Send"
        if self.send_button.description != label:
            self.send_button.description = label
            self.send_button.tooltip = (
                "Sent once the reply streaming now has ended (Enter)"
                if busy
                else "Send the message (Enter)"
            )
        if models_changed:
            self._show_models(models)
        names = tuple(self._names())
        if self.chat_picker.options != names:
            self.chat_picker.options = names
        if history_changed:
            self._history_changed_callback()
        self._drawn_at = now

    def _rebuild_history(self, turns: list[Turn]) -> str:
        parts = []
        for turn in turns:
            cached = self._turn_cache.get(id(turn))
            if cached is None or cached[0] is not turn:
                cached = self._turn_cache[id(turn)] = (turn, turn_html(turn, self.fmt))
            parts.append(cached[1])
        keep = {id(turn) for turn in turns}
        for key in [key for key in self._turn_cache if key not in keep]:
            del self._turn_cache[key]
        return "".join(parts)

    def _show_models(self, models: list[str]) -> None:
        picker = self.model_picker
        current = picker.value
        labels = self._answered_by
        options = tuple(
            (model_label(model, labels.get(model, "")), model)
            for model in model_options(models, current)
        )
        if tuple(picker.options) == options:
            return
        with picker.hold_sync():
            # Setting options selects the first one; put the user's choice back.
            picker.options = options
            picker.value = current

    # -- status lines ------------------------------------------------------------------------

    def _live_line(
        self, live: PendingReply, chars: int, model: str, notice: str
    ) -> tuple[str, bool]:
        line = format_status(
            model=live.buffer.answered_by or model,
            target=self.target,
            elapsed=live.elapsed,
            chars=chars,
            state="streaming…" if chars else "waiting…",
            note=notice or ("from a cell" if live.source == "cell" else ""),
        )
        return line, False

    def turn_line(self, turn: Turn, note: str = "") -> str:
        """The status line of a finished turn."""
        # Whether it is complete, and why not, the turn says in the transcript.
        return format_status(
            model=self._answering or turn.model,
            target=self.target,
            elapsed=turn.duration,
            chars=len(turn.reply),
            state="",
            note=note,
        )

    def _model_name(self) -> str:
        model = self.model_picker.value or ""
        return self._answered_by.get(model) or model

    def state_line(self, state: str, note: str = "") -> str:
        """A status line without a reply to measure: no elapsed time or character count."""
        parts = [state, self._model_name(), self.target, note]
        return " · ".join(part for part in parts if part)

    def idle_line(self, note: str = "") -> str:
        """``ready``, with the model, the target and the conversation's size."""
        conversation = self._conversation
        where = ""
        if conversation is not None:
            where = f"{conversation.name!r}, {count(len(conversation), 'turn')}"
        parts = ["ready", self._model_name(), self.target, where, note]
        return " · ".join(part for part in parts if part)
