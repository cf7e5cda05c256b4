"""The chat panel: a conversation shown, and continued, in a widget beside the cells.

A :class:`ChatPanel` is one more view of a :class:`~aivvm_magic.conversation.Conversation`
from the session's :class:`~aivvm_magic.conversation.ConversationStore`, the one the
``%%aivvm`` cells use. It listens to the conversation, so a reply streaming into a cell also
streams into every panel showing that conversation, and what is sent from a panel joins the
history the next cell sends. Turns run through the same :class:`~aivvm_magic.turns.TurnRunner`
as cells, with the same settings (``AivvmMagics``), rendering and sanitising.

Threads. Widget callbacks run on the kernel's shell thread, so a panel reply streams on a
daemon worker thread and the kernel stays free to run cells. Chunk events only mark the view
dirty; a per-panel flusher thread renders at most about 20 times a second (like
:class:`~aivvm_magic.rendering.display.StreamingDisplay`), and the end of a turn, a reset or an
import is rendered at once by whichever thread caused it, so every panel is up to date when the
turn is over.

Saved notebooks. The panel's output carries a static ``text/plain`` and sanitised ``text/html``
transcript next to the widget view; :meth:`ChatPanel.display` keeps that static part current,
so a notebook opened without a kernel (or on GitHub) still shows the conversation.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import ipywidgets as widgets

from .conversation import (
    EVENT_KINDS,
    Conversation,
    ConversationBusy,
    ConversationEvent,
    PendingReply,
    Turn,
)
from .errors import one_line
from .magics import AivvmMagics, magics_for
from .protocol import models as builtin_models
from .providers import get_provider
from .rendering.display import (
    DISPLAY_SHARE,
    MIN_INTERVAL,
    TICK,
    format_status,
    live_reply_html,
    render_reply,
    status_html,
)
from .rendering.incremental import MarkdownStream
from .rendering.markdown import render_text
from .turns import TurnOutcome, TurnRunner, TurnSettings

__all__ = ["ChatPanel"]

logger = logging.getLogger(__name__)

#: Export formats offered by the panel: label, value, file extension.
EXPORT_FORMATS = (("JSON", "json", ".json"), ("Markdown", "markdown", ".md"))
_EXTENSIONS = {value: extension for _, value, extension in EXPORT_FORMATS}

_F = TypeVar("_F", bound=Callable[..., Any])


#: The conversation events the panel listens to: all but ``"chunk"``.
_PANEL_EVENTS = tuple(kind for kind in EVENT_KINDS if kind != "chunk")


def _report_error() -> None:
    """Show the exception being handled: in the shell when there is one, else in the log."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - reporting must not raise a second error
        shell = None
    if shell is not None:
        shell.showtraceback()
    else:
        logger.exception("A chat panel callback failed")


def _guarded(method: _F) -> _F:
    """Route exceptions of a widget callback to the shell: ipywidgets would drop them."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:  # noqa: BLE001 - shown by _report_error, never swallowed
            _report_error()
            return None

    return wrapper  # type: ignore[return-value]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class _Job:
    """One message sent from the panel: its worker thread, its runner and how it ended."""

    def __init__(self, conversation: Conversation, prompt: str, settings: TurnSettings) -> None:
        self.conversation = conversation
        self.prompt = prompt
        self.settings = settings
        self.runner: TurnRunner | None = None
        self.outcome: TurnOutcome | None = None
        self.note = ""
        self.waiting = False
        self.stopped = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def attach(self, runner: TurnRunner) -> bool:
        """Make ``runner`` the one :meth:`stop` stops; False if the job was already stopped."""
        with self._lock:
            self.runner = runner
            return not self.stopped.is_set()

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            runner = self.runner
        if runner is not None:
            runner.stop()

    @property
    def text(self) -> str:
        return self.outcome.text if self.outcome is not None else ""


class ChatPanel(widgets.VBox):
    """A chat panel on a named conversation, shared with the ``%%aivvm`` cells.

    The panel shows the conversation's transcript (each reply rendered and sanitised exactly
    as in a cell; prompts shown as typed; partial replies marked "incomplete: <reason>"), a
    message box with Send and Stop, the model, temperature and system message for messages
    sent from the panel, a conversation selector (type a new name to start a conversation),
    Reset, and Export to JSON or Markdown. A status line says what is happening.

    Settings start from ``AivvmMagics`` (model, temperature, system message; base URL or the
    embedded server, key and timeouts are always taken from it) and follow ``%config``
    changes; changing them in the panel affects only the panel's messages. Replies from cells
    stream into the panel too, and two panels on one conversation show the same transcript.
    Only one reply streams into a conversation at a time: a message sent meanwhile waits
    (``AivvmMagics.busy_timeout``), then is refused with a note in the status line.

    Keyboard shortcuts such as Ctrl+Enter are not available: ipywidgets has no key events.

    Examples
    --------
    ::

        In [1]: %load_ext aivvm_magic
        In [2]: %aivvm panel -c research
        In [3]: from aivvm_magic import ChatPanel
        In [4]: panel = ChatPanel("research")
        In [5]: panel.display()
        In [6]: panel.send("Summarise the last answer in one line.")
        Out[6]: 'The answer, in one line.'
        In [7]: panel.send("And now in French.", wait=False)
        In [8]: panel.stop()
    """

    def __init__(
        self, chat: str = "default", *, magics: AivvmMagics | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(chat, str) or not chat.strip():
            raise ValueError(f"a conversation name must be a non-empty string, not {chat!r}")
        if magics is None:
            magics = self._find_magics()
        super().__init__(**kwargs)
        self._magics = magics
        self.fmt = "markdown"
        self.last_outcome: TurnOutcome | None = None
        self._target = self._magics.base_url.rstrip("/")
        self._conversation: Conversation | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._handles: list[Any] = []
        self._jobs: list[_Job] = []
        self._jobs_lock = threading.Lock()
        # Serialises everything that renders or changes what is shown, across the shell
        # thread, workers and the flusher; never held while waiting for a reply.
        self._render_lock = threading.RLock()
        self._live_markdown: tuple[PendingReply | None, MarkdownStream] = (None, MarkdownStream())
        self._turn_cache: dict[int, tuple[Turn, str]] = {}
        self._history_html = ""
        self._live: PendingReply | None = None
        #: (id, chunks) of the live reply as last shown, and its characters then.
        self._live_shown: tuple[int, int] | None = None
        self._live_chars = 0
        self._notice = ""
        self._status_plain = True
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._min_interval = MIN_INTERVAL
        self._build(chat.strip())
        self._bind(self._magics.chats.get(chat.strip()))
        self._magics.observe(
            self._on_magics_change, names=["model", "temperature", "system_message"]
        )
        self._flusher_thread = threading.Thread(
            target=self._flusher, name="aivvm-panel", daemon=True
        )
        self._flusher_thread.start()
        # Asking the server for its models can take seconds (or start the embedded server);
        # the built-in table serves until the answer arrives.
        self._models_thread = threading.Thread(
            target=self._load_models, name="aivvm-panel-models", daemon=True
        )
        self._models_thread.start()

    @staticmethod
    def _find_magics() -> AivvmMagics:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise RuntimeError(
                "ChatPanel needs a running IPython (a notebook kernel or the IPython shell)"
            )
        magics = magics_for(shell)
        if magics is None:
            shell.run_line_magic("load_ext", "aivvm_magic")
            magics = magics_for(shell)
        if magics is None:
            raise RuntimeError("could not load the aivvm_magic extension")
        return magics

    # -- building -------------------------------------------------------------------------

    def _build(self, chat: str) -> None:
        magics = self._magics
        model = magics.model

        def full() -> widgets.Layout:
            return widgets.Layout(width="100%")

        self.chat_picker = widgets.Combobox(
            value=chat,
            options=tuple(magics.chats.names()),
            description="Chat",
            placeholder="an existing or new name",
            ensure_option=False,
            continuous_update=False,
        )
        self.model_picker = widgets.Dropdown(
            options=self._model_options([], model), value=model, description="Model"
        )
        self.temperature_slider = widgets.FloatSlider(
            value=min(max(magics.temperature, 0.0), 2.0),
            min=0.0,
            max=2.0,
            step=0.05,
            description="Temperature",
            continuous_update=False,
            readout_format=".2f",
        )
        self.system_input = widgets.Textarea(
            value=magics.system_message, description="System", rows=2, layout=full()
        )
        self.transcript = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.transcript.add_class("aivvm-transcript")
        self.status = widgets.HTML()
        self.message = widgets.Textarea(
            placeholder="Your message; press Send", rows=3, layout=full()
        )
        self.send_button = widgets.Button(
            description="Send", button_style="primary", icon="paper-plane"
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

        self.chat_picker.observe(self._on_chat_picked, names="value")
        self.export_format.observe(self._on_format_picked, names="value")
        self.send_button.on_click(self._on_send_click)
        self.stop_button.on_click(self._on_stop_click)
        self.reset_button.on_click(self._on_reset_click)
        self.export_button.on_click(self._on_export_click)

        self.children = [
            widgets.HBox([self.chat_picker, self.model_picker, self.temperature_slider]),
            self.system_input,
            self.transcript,
            self.status,
            self.message,
            widgets.HBox([self.send_button, self.stop_button, self.reset_button]),
            widgets.HBox([self.export_format, self.export_path, self.export_button]),
        ]

    @staticmethod
    def _model_options(found: list[str], current: str) -> list[str]:
        options = list(dict.fromkeys(found or builtin_models))
        if current and current not in options:
            options.append(current)
        return options

    def _load_models(self) -> None:
        try:
            self.refresh_models()
        except Exception:  # noqa: BLE001 - a background thread: shown, not lost
            if self._closed.is_set():
                # Nobody is looking at this panel any more; the answer no longer matters.
                logger.debug("Listing models for a closed chat panel failed", exc_info=True)
                return
            _report_error()

    def refresh_models(self) -> list[str]:
        """Fill the model list from the server's ``/api/models``; return the model ids.

        Falls back to the built-in table when the server cannot say. The panel calls this
        once, in the background, when it is built.
        """
        magics = self._magics
        base_url, target = magics.target()
        self._target = target
        provider = magics.provider
        found = get_provider(provider).list_models(base_url, key=str(magics.key_for(provider)))
        ids = [m["id"] for m in found if isinstance(m.get("id"), str)]
        if self._closed.is_set():
            return ids
        picker = self.model_picker
        current = picker.value
        with picker.hold_sync():
            # Setting options selects the first one; put the user's choice back.
            picker.options = self._model_options(ids, current)
            picker.value = current
        self._refresh_status_if_idle()
        return ids

    # -- the conversation ------------------------------------------------------------------

    @property
    def conversation(self) -> Conversation:
        """The conversation the panel shows now."""
        assert self._conversation is not None
        return self._conversation

    @property
    def chat(self) -> str:
        """The name of the conversation the panel shows now."""
        return self.conversation.name

    def switch(self, chat: str) -> None:
        """Show conversation ``chat`` (made empty if it does not exist yet) instead.

        Replies already streaming from this panel carry on into their own conversation.
        """
        name = chat.strip() if isinstance(chat, str) else ""
        if not name:
            raise ValueError(f"a conversation name must be a non-empty string, not {chat!r}")
        if name != self.chat:
            self._bind(self._magics.chats.get(name))
        self._refresh_chat_names()
        if self.chat_picker.value != name:
            self.chat_picker.value = name

    def _bind(self, conversation: Conversation) -> None:
        with self._render_lock:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._conversation = conversation
            self._turn_cache.clear()
            # Subscribing and looking at the reply in progress under the render lock: an
            # event that arrives meanwhile waits, and then finds a consistent view.
            # Not "chunk": the flusher looks at the live reply itself, so that a panel being
            # open costs a streaming reply nothing per chunk.
            self._unsubscribe = conversation.subscribe(self._on_event, kinds=_PANEL_EVENTS)
            pending = conversation.pending
            self._live = pending if pending is not None and not pending.recorded else None
            self._live_shown = None
            self._rebuild_history()
            self._show_transcript()
            self._set_status(self._idle_line(), plain=True)
        self._dirty.set()

    def _on_event(self, event: ConversationEvent) -> None:
        if event.conversation is not self._conversation or self._closed.is_set():
            return
        try:
            self._handle_event(event)
        except Exception:  # noqa: BLE001 - a listener must not break the reply streaming
            _report_error()

    def _handle_event(self, event: ConversationEvent) -> None:
        kind = event.kind
        with self._render_lock:
            # A note left by an earlier message (refused, failed) is out of date now.
            self._notice = ""
            if kind == "turn_started":
                self._live = self.conversation.pending
                self._live_shown = None
                self._dirty.set()
                return
            if kind in ("turn_finished", "turn_failed"):
                self._live = None
            if kind != "turn_failed":
                self._rebuild_history()
            self._show_transcript()
            if kind == "turn_finished" and event.turn is not None:
                self._set_status(self._turn_line(event.turn), warn=not event.turn.complete)
            elif kind == "turn_failed":
                note = event.error or "no reply"
                self._set_status(self._state_line("failed", note=note), warn=True)
            elif kind == "reset":
                removed = _count(event.removed, "turn")
                self._set_status(self._idle_line(f"reset, {removed} removed"))
            else:
                self._set_status(self._idle_line("history replaced"))
        self._refresh_chat_names()
        if kind != "turn_failed":
            self.update_display()

    # -- rendering ---------------------------------------------------------------------------

    def _turn_html(self, turn: Turn) -> str:
        cached = self._turn_cache.get(id(turn))
        if cached is not None and cached[0] is turn:
            return cached[1]
        mark = "" if turn.complete else f"⚠ incomplete: {turn.error or 'cut short'}"
        reply_html = render_reply(turn.reply, self.fmt)
        text = self._exchange_html(turn.prompt, turn.source, reply_html, mark=mark)
        self._turn_cache[id(turn)] = (turn, text)
        return text

    @staticmethod
    def _exchange_html(
        prompt: str, source: str, reply_html: str, *, mark: str = "", live: bool = False
    ) -> str:
        """One prompt and its reply; ``mark`` is a short line under the reply."""
        who = "You" if source == "panel" else "You, in a cell"
        live_class = " aivvm-live" if live else ""
        mark_html = status_html(mark) if mark else ""
        return (
            f'<div class="aivvm-turn"><div class="aivvm-prompt"><strong>{who}</strong>'
            f"{render_text(prompt)}</div><strong>Assistant</strong>"
            f'<div class="aivvm-reply{live_class}">{reply_html}</div>{mark_html}</div>'
        )

    def _rebuild_history(self) -> None:
        turns = self.conversation.turns
        parts = [self._turn_html(turn) for turn in turns]
        keep = {id(turn) for turn in turns}
        for key in [key for key in self._turn_cache if key not in keep]:
            del self._turn_cache[key]
        self._history_html = "".join(parts)

    def _live_html(self) -> tuple[str, int]:
        pending = self._live
        if pending is None or pending.recorded:
            return "", 0
        text = pending.text
        # Called under the render lock; one renderer per reply, reused as it grows.
        if self._live_markdown[0] is not pending:
            self._live_markdown = (pending, MarkdownStream())
        body = live_reply_html(text, self.fmt, self._live_markdown[1])
        state = "streaming…" if text else "waiting for the reply…"
        html_text = self._exchange_html(pending.prompt, pending.source, body, mark=state, live=True)
        return html_text, len(text)

    @staticmethod
    def _wrap(body: str, title: str = "") -> str:
        # Plain tags and classes only, like the cells' output: no <style> or style attributes,
        # which GitHub, nbviewer and untrusted notebooks strip, so it looks alike everywhere.
        body = body or '<div class="aivvm-empty"><small>No messages yet.</small></div>'
        heading = status_html(title)
        return f'<div class="aivvm-transcript">{heading if title else ""}{body}</div>'

    def _show_transcript(self) -> None:
        live = self._live
        # Counted before the text is read: a chunk arriving meanwhile shows at the next look.
        chunks = live.chunks if live is not None else 0
        live_html, self._live_chars = self._live_html()
        self._live_shown = (id(live), chunks) if live_html else None
        self.transcript.value = self._wrap(self._history_html + live_html)

    def _live_grew(self) -> bool:
        live = self._live
        return live is not None and self._live_shown != (id(live), live.chunks)

    def _flusher(self) -> None:
        ticked = 0.0
        while not self._closed.is_set():
            streaming = self._live is not None or self._has_waiting_job()
            # While a reply streams, look for new text up to 20 times a second (chunks are
            # not announced one by one), and tick the status line's elapsed time.
            woken = self._dirty.wait(self._min_interval if streaming else None)
            if self._closed.is_set():
                break
            if not (woken or self._live_grew() or time.monotonic() - ticked >= TICK):
                continue
            ticked = time.monotonic()
            self._dirty.clear()
            began = time.monotonic()
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - keep flushing; show what went wrong
                _report_error()
            cost = time.monotonic() - began
            # Rendering takes a bounded share of the time, however long the reply grows.
            self._closed.wait(max(self._min_interval, cost / DISPLAY_SHARE))

    def _flush(self) -> None:
        with self._render_lock:
            pending = self._live
            if pending is not None and not pending.recorded:
                if self._live_grew():
                    self._show_transcript()
                chars = self._live_chars if self._live_shown else 0
                job = self._running_job()
                model = job.settings.model if job is not None else ""
                state = "streaming…" if chars else "waiting…"
                note = self._notice or ("from a cell" if pending.source == "cell" else "")
                self._set_status(
                    format_status(
                        model=model,
                        target=self._target,
                        elapsed=pending.elapsed,
                        chars=chars,
                        state=state,
                        note=note,
                    )
                )
            elif self._has_waiting_job():
                self._set_status(self._state_line("waiting for another reply to finish…"))

    def _set_status(self, line: str, warn: bool = False, *, plain: bool = False) -> None:
        """Show ``line``; ``plain`` marks a bare "ready" line that may be redrawn later."""
        with self._render_lock:
            self._status_plain = plain
            self.status.value = status_html(line, warn=warn)

    def _state_line(self, state: str, note: str = "") -> str:
        # For states without a reply to measure: no elapsed time or character count.
        parts = [state, self.model_picker.value or "", self._target, note]
        return " · ".join(part for part in parts if part)

    def _idle_line(self, note: str = "") -> str:
        parts = [
            "ready",
            self.model_picker.value or "",
            self._target,
            f"{self.chat!r}, {_count(len(self.conversation), 'turn')}",
            note,
        ]
        return " · ".join(part for part in parts if part)

    def _turn_line(self, turn: Turn, note: str = "") -> str:
        return format_status(
            model=turn.model,
            target=self._target,
            elapsed=turn.duration,
            chars=len(turn.reply),
            state="" if turn.complete else "incomplete",
            note=note or turn.error or "",
        )

    def _refresh_status_if_idle(self) -> None:
        # Only a bare "ready" line is redrawn (with the target now known): never a note.
        with self._render_lock:
            if self._status_plain and self._live is None and not self._jobs:
                self._set_status(self._idle_line(), plain=True)

    def _refresh_chat_names(self) -> None:
        names = tuple(self._magics.chats.names())
        if self.chat_picker.options != names:
            self.chat_picker.options = names

    # -- the static transcript -------------------------------------------------------------

    def transcript_text(self) -> str:
        """The recorded turns as plain text (what ``%aivvm history`` prints)."""
        turns = self.conversation.turns
        lines = [f"Conversation {self.chat!r}, {_count(len(turns), 'turn')}"]
        for number, turn in enumerate(turns, 1):
            mark = "" if turn.complete else f" [incomplete: {turn.error or 'cut short'}]"
            lines.append(f"\n[{number}] You:\n{turn.prompt}")
            lines.append(f"\n[{number}] Assistant{mark}:\n{turn.reply}")
        return "\n".join(lines)

    def transcript_html(self) -> str:
        """The recorded turns as sanitised HTML, as the panel shows them."""
        with self._render_lock:
            history = self._history_html
        return self._wrap(history, title=f"Conversation {self.chat!r}")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # The widget view, plus a static transcript for wherever widgets cannot render: a
        # notebook reopened without a kernel, nbconvert, GitHub.
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self.transcript_text()
        bundle["text/html"] = self.transcript_html()
        return bundle

    def display(self) -> None:
        """Show the panel in the output, with a static transcript that stays current.

        After each finished turn, reset or import, the output is updated with a fresh
        bundle, so a notebook saved at any point shows the conversation as it then was.
        """
        from IPython.display import display

        handle = display(self, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def update_display(self) -> None:
        """Refresh the static transcript of every output :meth:`display` made."""
        if self._closed.is_set() or not self._handles:
            return
        bundle = self._repr_mimebundle_()
        for handle in list(self._handles):
            handle.update(bundle, raw=True)

    # -- sending -----------------------------------------------------------------------------

    def send(self, text: str, wait: bool = True) -> str | None:
        """Send ``text`` as from the message box; with ``wait``, return the reply text.

        The reply streams on a worker thread into the panel and the conversation (source
        ``"panel"``). With ``wait=True`` this returns the reply once it is complete, or the
        text that arrived when it was stopped or failed, which is ``""`` when nothing did or
        when another reply kept the conversation busy too long (the status line says why);
        with ``wait=False`` it returns None at once. Nothing is sent, and None is returned,
        for an empty message or a closed panel. Interrupting the wait stops the reply.
        """
        job = self._start(text)
        if job is None or not wait:
            return None
        try:
            job.done.wait()
        except KeyboardInterrupt:
            job.stop()
            job.done.wait(5)
            raise
        return job.text

    def stop(self) -> None:
        """Stop the replies this panel sent; what arrived is kept as a partial turn."""
        with self._jobs_lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.stop()

    def _start(self, text: str) -> _Job | None:
        # The one path for the Send button and send(): check, capture settings, start a worker.
        if self._closed.is_set():
            return None
        prompt = text.strip() if isinstance(text, str) else ""
        if not prompt:
            self._set_status(self._idle_line("type a message first"), warn=True)
            return None
        settings = self._magics.settings(
            model=self.model_picker.value,
            temperature=self.temperature_slider.value,
            system=self.system_input.value,
        )
        job = _Job(self.conversation, prompt, settings)
        with self._jobs_lock:
            self._jobs.append(job)
            self.stop_button.disabled = False
        worker = threading.Thread(
            target=self._run_job, args=(job,), name="aivvm-panel-reply", daemon=True
        )
        worker.start()
        return job

    def _run_job(self, job: _Job) -> None:
        try:
            self._stream(job)
        except Exception as exc:  # noqa: BLE001 - shown below and in the shell
            job.note = one_line(exc)
            _report_error()
        finally:
            with self._jobs_lock:
                if job in self._jobs:
                    self._jobs.remove(job)
                # Under the lock, so a message sent just now cannot find Stop disabled.
                if not self._jobs:
                    self.stop_button.disabled = True
            self._finish_job(job)
            job.done.set()

    def _stream(self, job: _Job) -> None:
        base_url, target = self._magics.target()
        self._target = target
        settings = replace(job.settings, base_url=base_url)
        conversation = job.conversation
        timeout = self._magics.busy_timeout
        deadline = time.monotonic() + timeout
        # Wait here rather than inside the runner so that Stop can cancel a waiting message
        # before any request is made; the runner's own wait settles any race for the lock.
        while conversation.busy and not job.stopped.is_set():
            if time.monotonic() >= deadline:
                job.waiting = False
                job.note = str(ConversationBusy(conversation.name, f"waited {timeout:g} s"))
                return
            if not job.waiting:
                job.waiting = True
                self._dirty.set()
            job.stopped.wait(0.02)
        job.waiting = False
        if job.stopped.is_set():
            job.note = "stopped before the reply started"
            return
        runner = TurnRunner(
            conversation,
            job.prompt,
            settings,
            source="panel",
            busy_timeout=max(deadline - time.monotonic(), 0.1),
        )
        if not job.attach(runner):
            job.note = "stopped before the reply started"
            return
        try:
            job.outcome = runner.run()
        except ConversationBusy as exc:
            job.note = one_line(exc)
            return
        self.last_outcome = job.outcome
        job.note = job.outcome.note

    def _finish_job(self, job: _Job) -> None:
        outcome = job.outcome
        if outcome is not None and outcome.complete:
            # The turn_finished event already showed it; a reply cut at the token limit says
            # so too, unless something else is on the status line by now.
            if outcome.turn is not None and outcome.status_note:
                line = self._turn_line(outcome.turn)
                with self._render_lock:
                    if self.status.value == status_html(line):
                        self._set_status(self._turn_line(outcome.turn, outcome.status_note))
            return
        if job.conversation is not self._conversation:
            return
        if outcome is not None and outcome.turn is not None:
            # Recorded as partial: the status already reads "incomplete · <reason>".
            return
        with self._render_lock:
            # Kept as a note while another reply streams, so the live status does not hide it.
            self._notice = f"not sent: {job.note}" if job.note else "not sent"
            self._set_status(self._state_line("failed", note=job.note or "not sent"), warn=True)

    def _running_job(self) -> _Job | None:
        with self._jobs_lock:
            for job in self._jobs:
                if job.runner is not None and job.conversation is self._conversation:
                    return job
        return None

    def _has_waiting_job(self) -> bool:
        with self._jobs_lock:
            return any(job.waiting for job in self._jobs)

    # -- reset and export --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every turn of the conversation; refused while a reply streams into it."""
        conversation = self.conversation
        if conversation.busy:
            self._set_status(
                self._idle_line("a reply is streaming; Stop it or wait, then reset"), warn=True
            )
            return
        conversation.reset()

    def export(self, path: str | None = None, fmt: str | None = None) -> str | None:
        """Write the conversation to ``path`` as ``"json"`` or ``"markdown"``.

        Defaults are the Export row's path and format; a path without an extension gets the
        format's. Returns the path written, or None when it failed (the status line says why,
        in a few words).
        """
        fmt = fmt or self.export_format.value
        path = (self.export_path.value if path is None else path).strip()
        if fmt not in _EXTENSIONS:
            raise ValueError(f"fmt must be 'json' or 'markdown', not {fmt!r}")
        if not path:
            self._set_status(self._idle_line("export: type a file path first"), warn=True)
            return None
        expected = _EXTENSIONS[fmt]
        extension = os.path.splitext(path)[1]
        if not extension:
            path += expected
        elif extension.lower() != expected:
            self._set_status(
                self._idle_line(f"export: a {fmt} file must end in {expected}, not {extension}"),
                warn=True,
            )
            return None
        conversation = self.conversation
        try:
            if fmt == "json":
                conversation.export_json(path)
            else:
                conversation.export_markdown(path)
        except (OSError, ValueError) as exc:
            note = f"export to {path} failed: {one_line(exc)}"
            self._set_status(self._idle_line(note), warn=True)
            return None
        count = _count(len(conversation), "turn")
        self._set_status(self._idle_line(f"exported {count} to {path}"))
        return path

    # -- callbacks ---------------------------------------------------------------------------

    @_guarded
    def _on_send_click(self, _button: widgets.Button) -> None:
        if self._start(self.message.value) is not None:
            self.message.value = ""

    @_guarded
    def _on_stop_click(self, _button: widgets.Button) -> None:
        self.stop()

    @_guarded
    def _on_reset_click(self, _button: widgets.Button) -> None:
        self.reset()

    @_guarded
    def _on_export_click(self, _button: widgets.Button) -> None:
        self.export()

    @_guarded
    def _on_chat_picked(self, change: dict[str, Any]) -> None:
        name = (change["new"] or "").strip()
        if not name:
            # An emptied box means nothing; show the current conversation's name again.
            self.chat_picker.value = self.chat
            return
        self.switch(name)

    @_guarded
    def _on_format_picked(self, change: dict[str, Any]) -> None:
        # Keep the path's extension in step with the format, so the file can be imported.
        stem, extension = os.path.splitext(self.export_path.value)
        if extension.lower() in _EXTENSIONS.values():
            self.export_path.value = stem + _EXTENSIONS[change["new"]]

    @_guarded
    def _on_magics_change(self, change: dict[str, Any]) -> None:
        name, value = change["name"], change["new"]
        if name == "model":
            picker = self.model_picker
            if value not in picker.options:
                with picker.hold_sync():
                    current = picker.value
                    picker.options = (*picker.options, value)
                    picker.value = current
            picker.value = value
        elif name == "temperature":
            self.temperature_slider.value = min(max(value, 0.0), 2.0)
        else:
            self.system_input.value = value

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening to the conversation and close the widgets.

        Replies this panel sent carry on and are recorded in the conversation.
        """
        closed = getattr(self, "_closed", None)
        if closed is not None and not closed.is_set():
            closed.set()
            self._dirty.set()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            try:
                self._magics.unobserve(
                    self._on_magics_change, names=["model", "temperature", "system_message"]
                )
            except ValueError:
                pass
            self._handles.clear()
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
        super().close()

    def _descendants(self) -> list[widgets.Widget]:
        found: list[widgets.Widget] = []
        stack = list(self.children)
        while stack:
            widget = stack.pop()
            found.append(widget)
            stack.extend(getattr(widget, "children", ()))
        return found

    def __repr__(self) -> str:
        name = self._conversation.name if getattr(self, "_conversation", None) else "?"
        return f"<ChatPanel {name!r}>"
