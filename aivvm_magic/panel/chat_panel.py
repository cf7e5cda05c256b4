"""The chat panel: a conversation shown, and continued, in a widget beside the cells.

A :class:`ChatPanel` is one more view of a :class:`~aivvm_magic.conversation.Conversation` of
its :class:`~aivvm_magic.session.Session`, the one the ``%%aivvm`` cells use. A reply streaming
into a cell streams into every panel showing that conversation, and what is sent from a panel
joins the history the next cell sends. Turns run through the same
:class:`~aivvm_magic.turns.TurnRunner` as cells, with the session's settings, rendering and
sanitising.

Threads. The panel's controls (message box, pickers, slider) belong to the shell thread, where
widget callbacks and ``%config`` run. What the panel shows (transcript, status line, the state
of Send and Stop, the model list) belongs to the session's render loop: conversation events and
finished messages only record what changed and ask the loop to draw; the end of a turn, a reset
or a switch is drawn before the call that caused it returns. Messages are sent by
:class:`~aivvm_magic.panel.sender.Sender`, on a worker thread of the panel's own.

Saved notebooks. The panel's output carries a static ``text/plain`` and sanitised ``text/html``
transcript next to the widget view; :meth:`ChatPanel.display` keeps that static part current,
so a notebook opened without a kernel (or on GitHub) still shows the conversation.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

import ipywidgets as widgets

from ..conversation import Conversation, ConversationBusy, ConversationEvent, PendingReply, Turn
from ..errors import one_line
from ..protocol import models as builtin_models
from ..providers import get_provider
from ..rendering.incremental import MarkdownStream
from ..rendering.loop import MIN_INTERVAL, TICK
from ..rendering.replies import format_status, status_html
from ..rendering.transcript import (
    live_exchange_html,
    transcript_html,
    transcript_text,
    turn_html,
)
from ..session import Session
from ..turns import TurnOutcome, TurnRunner
from .sender import STOPPED_EARLY, Job, Sender

__all__ = ["ChatPanel"]

logger = logging.getLogger(__name__)

#: Export formats offered by the panel: label, value, file extension.
EXPORT_FORMATS = (("JSON", "json", ".json"), ("Markdown", "markdown", ".md"))
_EXTENSIONS = {value: extension for _, value, extension in EXPORT_FORMATS}
#: The settings the panel's controls follow when ``%config`` changes them.
_FOLLOWED = ["model", "temperature", "system_message"]

_F = TypeVar("_F", bound=Callable[..., Any])


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


class ChatPanel(widgets.VBox):
    """A chat panel on a named conversation, shared with the ``%%aivvm`` cells.

    The panel shows the conversation's transcript (each reply rendered and sanitised exactly
    as in a cell; prompts shown as typed; partial replies marked "incomplete: <reason>"), a
    message box with Send and Stop, the model, temperature and system message for messages
    sent from the panel, a conversation selector (type a new name to start a conversation),
    Reset, and Export to JSON or Markdown. A status line says what is happening.

    Settings start from the session's (model, temperature, system message; base URL or the
    embedded server, key and timeouts are always the session's) and follow ``%config``
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
        self,
        chat: str = "default",
        *,
        session: Session | None = None,
        magics: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(chat, str) or not chat.strip():
            raise ValueError(f"a conversation name must be a non-empty string, not {chat!r}")
        if session is None:
            # ``magics``: the loaded AivvmMagics (or anything with its ``session``).
            session = magics.session if magics is not None else self._find_session()
        super().__init__(**kwargs)
        self._session = session
        self._settings = session.settings
        self._loop = session.render_loop
        self.fmt = "markdown"
        self.last_outcome: TurnOutcome | None = None
        self._target = self._settings.base_url.rstrip("/")
        self._handles: list[Any] = []
        self._closed = threading.Event()
        self._sender = Sender(self._run_job, self._finish_job, self._changed)
        # What changed since the loop last drew, written by any thread under the lock; the
        # loop alone turns it into widget values.
        self._lock = threading.Lock()
        self._conversation: Conversation | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._history_changed = True
        self._status: tuple[str, bool] = ("", False)
        # A note about the last message sent (not sent, and why), kept on the live status line
        # while another reply streams.
        self._notice = ""
        self._found_models: list[str] | None = None
        # Drawn state, the loop's alone.
        self._turn_cache: dict[int, tuple[Turn, str]] = {}
        self._history_html = ""
        self._live_markdown: tuple[PendingReply | None, MarkdownStream] = (None, MarkdownStream())
        self._live_shown: tuple[int, int] | None = None
        self._drawn_at = 0.0
        self._build(chat.strip())
        self._bind(self._session.chats.get(chat.strip()))
        self._settings.observe(self._on_settings_change, names=_FOLLOWED)
        self._loop.add(self)
        # Asking the server for its models can take seconds (or start the embedded server);
        # the built-in table serves until the answer arrives.
        self.models_loaded: Future[list[str]] = session.submit(self._load_models)

    @staticmethod
    def _find_session() -> Session:
        """The session of the running IPython's aivvm magics, loading them if need be."""
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise RuntimeError(
                "ChatPanel needs a running IPython (a notebook kernel or the IPython shell)"
            )
        registry = shell.magics_manager.registry
        if "AivvmMagics" not in registry:
            shell.run_line_magic("load_ext", "aivvm_magic")
        magics = registry.get("AivvmMagics")
        if magics is None:
            raise RuntimeError("could not load the aivvm_magic extension")
        return magics.session

    # -- building -------------------------------------------------------------------------

    def _build(self, chat: str) -> None:
        settings = self._settings
        model = settings.model

        def full() -> widgets.Layout:
            return widgets.Layout(width="100%")

        self.chat_picker = widgets.Combobox(
            value=chat,
            options=tuple(self._session.chats.names()),
            description="Chat",
            placeholder="an existing or new name",
            ensure_option=False,
            continuous_update=False,
        )
        self.model_picker = widgets.Dropdown(
            options=self._model_options([], model), value=model, description="Model"
        )
        self.temperature_slider = widgets.FloatSlider(
            value=min(max(settings.temperature, 0.0), 2.0),
            min=0.0,
            max=2.0,
            step=0.05,
            description="Temperature",
            continuous_update=False,
            readout_format=".2f",
        )
        self.system_input = widgets.Textarea(
            value=settings.system_message, description="System", rows=2, layout=full()
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

    def _load_models(self) -> list[str]:
        try:
            return self.refresh_models()
        except Exception:  # noqa: BLE001 - a background lookup: shown, not lost
            if self._closed.is_set():
                # Nobody is looking at this panel any more; the answer no longer matters.
                logger.debug("Listing models for a closed chat panel failed", exc_info=True)
            else:
                _report_error()
            return []

    def refresh_models(self) -> list[str]:
        """Fill the model list from the server's model listing; return the model ids.

        Falls back to the built-in table when the server cannot say. The panel calls this
        once, in the background, when it is built.
        """
        settings = self._settings
        base_url, self._target = self._session.target()
        provider = settings.provider
        found = get_provider(provider).list_models(base_url, key=str(settings.key_for(provider)))
        ids = [m["id"] for m in found if isinstance(m.get("id"), str)]
        with self._lock:
            self._found_models = ids
        self._loop.draw_now(self)
        return ids

    # -- the conversation ------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session whose conversations and settings the panel uses."""
        return self._session

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
            self._bind(self._session.chats.get(name))
            self._loop.draw_now(self)
        if self.chat_picker.value != name:
            self.chat_picker.value = name

    def _bind(self, conversation: Conversation) -> None:
        with self._lock:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._conversation = conversation
            self._unsubscribe = conversation.subscribe(self._on_event)
            self._history_changed = True
            self._status = ("", False)
            self._notice = ""

    def _on_event(self, event: ConversationEvent) -> None:
        # Runs in whichever thread changed the conversation: record, then let the loop draw.
        if event.conversation is not self._conversation or self._closed.is_set():
            return
        kind = event.kind
        with self._lock:
            # A note left by an earlier message (refused, failed) is out of date now.
            self._notice = ""
            self._history_changed = kind != "turn_started"
            if kind == "turn_finished" and event.turn is not None:
                self._status = (self._turn_line(event.turn), not event.turn.complete)
            elif kind == "turn_failed":
                self._status = (self._state_line("failed", event.error or "no reply"), True)
            elif kind == "reset":
                removed = _count(event.removed, "turn")
                self._status = (self._idle_line(f"reset, {removed} removed"), False)
            elif kind == "replaced":
                self._status = (self._idle_line("history replaced"), False)
        if kind == "turn_started":
            self._loop.wake()
        else:
            # When the cell, the message or the reset that caused it returns, every panel on
            # the conversation shows it.
            self._loop.draw_now(self)

    # -- drawing (the render loop calls these) -------------------------------------------

    def _live(self) -> PendingReply | None:
        pending = self.conversation.pending
        return pending if pending is not None and not pending.recorded else None

    def wants_draw(self, now: float) -> bool:
        """Something changed, the live reply grew, or the live status line's tick is due."""
        live = self._live()
        if self._history_changed or self._found_models is not None:
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
        """Write the transcript, the status line, Send and Stop, and the model list."""
        with self._lock:
            history_changed, self._history_changed = self._history_changed, False
            status, notice = self._status, self._notice
            found, self._found_models = self._found_models, None
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
        line, warn = status
        if live is not None:
            job = self._sender.running(conversation)
            line = format_status(
                model=job.settings.model if job is not None else "",
                target=self._target,
                elapsed=live.elapsed,
                chars=chars,
                state="streaming…" if chars else "waiting…",
                note=notice or ("from a cell" if live.source == "cell" else ""),
            )
            warn = False
        elif any(job.waiting for job in jobs):
            line, warn = self._state_line("waiting for another reply to finish…"), False
        self.status.value = status_html(line or self._idle_line(), warn=warn)
        self.stop_button.disabled = not jobs
        if found is not None:
            self._show_models(found)
        names = tuple(self._session.chats.names())
        if self.chat_picker.options != names:
            self.chat_picker.options = names
        if history_changed:
            self.update_display()
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

    def _show_models(self, found: list[str]) -> None:
        picker = self.model_picker
        current = picker.value
        with picker.hold_sync():
            # Setting options selects the first one; put the user's choice back.
            picker.options = self._model_options(found, current)
            picker.value = current

    def _changed(self) -> None:
        # The set of messages queued or running changed: Send, Stop and the status follow.
        self._loop.wake()

    def _set_status(self, line: str, warn: bool = False) -> None:
        """Show ``line`` in the status line now (from any thread but the loop's)."""
        with self._lock:
            self._status = (line, warn)
        self._loop.draw_now(self)

    def _turn_line(self, turn: Turn, note: str = "") -> str:
        return format_status(
            model=turn.model,
            target=self._target,
            elapsed=turn.duration,
            chars=len(turn.reply),
            state="" if turn.complete else "incomplete",
            note=note or turn.error or "",
        )

    def _state_line(self, state: str, note: str = "") -> str:
        # For states without a reply to measure: no elapsed time or character count.
        parts = [state, self.model_picker.value or "", self._target, note]
        return " · ".join(part for part in parts if part)

    def _idle_line(self, note: str = "") -> str:
        conversation = self._conversation
        turns = _count(len(conversation), "turn") if conversation is not None else ""
        parts = ["ready", self.model_picker.value or "", self._target]
        parts += [f"{conversation.name!r}, {turns}" if conversation is not None else "", note]
        return " · ".join(part for part in parts if part)

    # -- the static transcript -------------------------------------------------------------

    def transcript_text(self) -> str:
        """The recorded turns as plain text (as ``%aivvm history`` prints them)."""
        return transcript_text(self.chat, self.conversation.turns)

    def transcript_html(self) -> str:
        """The recorded turns as sanitised HTML, as the panel shows them."""
        body = "".join(turn_html(turn, self.fmt) for turn in self.conversation.turns)
        return transcript_html(body, title=f"Conversation {self.chat!r}")

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

        The reply streams on the panel's worker thread into the panel and the conversation
        (source ``"panel"``). With ``wait=True`` this returns the reply once it is complete,
        or the text that arrived when it was stopped or failed, which is ``""`` when nothing
        did or when another reply kept the conversation busy too long (the status line says
        why); with ``wait=False`` it returns None at once. Nothing is sent, and None is
        returned, for an empty message or a closed panel. Interrupting the wait stops the
        reply.
        """
        job = self._start(text)
        if job is None or not wait:
            return None
        assert job.future is not None
        try:
            job.future.exception()  # waits; the job reports its own errors
        except KeyboardInterrupt:
            job.stop()
            futures.wait([job.future], timeout=5)
            raise
        except futures.CancelledError:  # stopped while queued: nothing arrived
            return ""
        return job.text

    def stop(self) -> None:
        """Stop the messages this panel sent: queued ones are never sent, and a streaming
        reply ends now, its partial text kept."""
        self._sender.stop()

    def _start(self, text: str) -> Job | None:
        # The one path for the Send button and send(): check, capture settings, queue.
        if self._closed.is_set():
            return None
        prompt = text.strip() if isinstance(text, str) else ""
        if not prompt:
            self._set_status(self._idle_line("type a message first"), warn=True)
            return None
        settings = self._session.request_settings(
            model=self.model_picker.value,
            temperature=self.temperature_slider.value,
            system=self.system_input.value,
        )
        return self._sender.send(Job(self.conversation, prompt, settings))

    def _run_job(self, job: Job) -> None:
        """One message, on the sender's worker: the turn, then what the panel says of it."""
        try:
            base_url, self._target = self._session.target()
            runner = TurnRunner(
                job.conversation,
                job.prompt,
                replace(job.settings, base_url=base_url),
                source="panel",
                busy_timeout=self._settings.busy_timeout,
            )
            if not job.attach(runner):
                job.note = STOPPED_EARLY
                return
            self._loop.wake()  # "waiting for another reply", if the conversation is busy
            try:
                job.outcome = runner.run()
            except ConversationBusy as exc:
                job.note = one_line(exc)
                return
            self.last_outcome = job.outcome
            job.note = job.outcome.note
        except Exception as exc:  # noqa: BLE001 - shown below and in the shell
            job.note = one_line(exc)
            _report_error()

    def _finish_job(self, job: Job) -> None:
        outcome = job.outcome
        if outcome is not None and outcome.turn is not None:
            # Recorded, complete or partial: the turn_finished event set the status line. A
            # reply cut at the model's token limit says so too.
            if outcome.complete and outcome.status_note:
                line = self._turn_line(outcome.turn)
                with self._lock:
                    if self._status == (line, False):
                        self._status = (self._turn_line(outcome.turn, outcome.status_note), False)
        elif job.conversation is self._conversation:
            note = job.note or "not sent"
            with self._lock:
                # Kept as a note while another reply streams, so its live status shows it.
                self._notice = f"not sent: {note}"
                self._status = (self._state_line("failed", note), True)
        self._loop.draw_now(self)

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
            self._set_status(self._idle_line(f"export to {path} failed: {one_line(exc)}"), True)
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
    def _on_settings_change(self, change: dict[str, Any]) -> None:
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

        Replies this panel sent carry on and are recorded in the conversation; messages still
        queued are not sent.
        """
        closed = getattr(self, "_closed", None)
        if closed is not None and not closed.is_set():
            closed.set()
            self._loop.remove(self)
            self._sender.close()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            try:
                self._settings.unobserve(self._on_settings_change, names=_FOLLOWED)
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
