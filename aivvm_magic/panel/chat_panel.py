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

Saved notebooks. The panel is shown as two outputs: the widget, then a static ``text/plain``
and sanitised ``text/html`` transcript that :meth:`ChatPanel.display` keeps current, so a
notebook opened without a kernel, after a reload, or on GitHub still shows the conversation
(the static copy's stylesheet shows exactly one of the two in JupyterLab).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from typing import Any

import ipywidgets as widgets

from ..conversation import Conversation, ConversationEvent
from ..errors import one_line
from ..providers import get_provider
from ..rendering.display import WIDGET_VIEW
from ..rendering.transcript import transcript_html, transcript_text, turn_html
from ..session import Session, brief_url
from ..turns import TurnOutcome
from .callbacks import guarded, report_error
from .layout import EXPORT_FORMATS, PanelLayout
from .logged import LoggedRow
from .sender import Job, Sender
from .view import PanelView, count

__all__ = ["ChatPanel"]

logger = logging.getLogger(__name__)

_EXTENSIONS = {value: extension for _, value, extension in EXPORT_FORMATS}
#: The settings the panel's controls follow when ``%config`` changes them.
_FOLLOWED = ["model", "temperature", "system_message"]


class ChatPanel(PanelLayout):
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

    In the message box, Enter sends and Shift+Enter adds a line. While a reply streams,
    Send reads "Queue": a message sent then waits for it. The transcript keeps a fixed height
    (``height``, 420 px) and scrolls, following the newest message.

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
        settings = session.settings
        super().__init__(
            chat=chat.strip(),
            chats=session.chats.names(),
            model=settings.model,
            temperature=settings.temperature,
            system=settings.system_message,
            **kwargs,
        )
        self._session = session
        self._settings = settings
        self._loop = session.render_loop
        self.last_outcome: TurnOutcome | None = None
        self._handles: list[Any] = []
        self._closed = threading.Event()
        self._sender = Sender(
            session, finished=self._finish_job, changed=self._loop.wake, report=report_error
        )
        self._conversation: Conversation | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._view = PanelView(
            transcript=self.transcript,
            status=self.status,
            stop_button=self.stop_button,
            send_button=self.send_button,
            model_picker=self.model_picker,
            chat_picker=self.chat_picker,
            sender=self._sender,
            names=session.chats.names,
            history_changed=self.update_display,
            target=brief_url(settings.base_url.rstrip("/")),
        )
        self._bind(session.chats.get(chat.strip()))
        self._wire()
        #: Logged conversations (from the history database) to continue in the panel.
        self.logged = LoggedRow(session, switch=self.switch, say=self._say, report=report_error)
        self.children = [*self.children, self.logged]
        settings.observe(self._on_settings_change, names=_FOLLOWED)
        self._loop.add(self._view)
        # Asking the server for its models can take seconds (or start the embedded server);
        # the built-in table serves until the answer arrives.
        self.models_loaded: Future[list[str]] = session.submit(self._load_models)

    @property
    def fmt(self) -> str:
        """How replies are rendered: ``markdown``."""
        return self._view.fmt

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

    def _wire(self) -> None:
        self.chat_picker.observe(self._on_chat_picked, names="value")
        self.export_format.observe(self._on_format_picked, names="value")
        self.send_button.on_click(self._on_send_click)
        self.message.on_send(self._on_enter)
        self.stop_button.on_click(self._on_stop_click)
        self.reset_button.on_click(self._on_reset_click)
        self.export_button.on_click(self._on_export_click)

    def _load_models(self) -> list[str]:
        try:
            return self.refresh_models()
        except Exception:  # noqa: BLE001 - a background lookup: shown, not lost
            if self._closed.is_set():
                # Nobody is looking at this panel any more; the answer no longer matters.
                logger.debug("Listing models for a closed chat panel failed", exc_info=True)
            else:
                report_error()
            return []

    def refresh_models(self) -> list[str]:
        """Fill the model list with the aliases and the server's model listing; return them.

        Falls back to the built-in table when the server cannot say, and the status line says
        so, and why. The panel calls this once, in the background, when it is built.
        """
        settings = self._settings
        base_url, _, self._view.target = self._session.target()
        provider = settings.provider
        if not base_url:  # replies come from a record: no server to ask
            self._view.models_found([])
            self._loop.draw_now(self._view)
            return []
        found = get_provider(provider).list_models(base_url, key=str(settings.key_for(provider)))
        ids = [m["id"] for m in found if isinstance(m.get("id"), str)]
        answered_by = {
            m["id"]: m["answered_by"]
            for m in found
            if isinstance(m.get("id"), str) and isinstance(m.get("answered_by"), str)
        }
        # The aliases first: each names a model (and where it is) as well as an id does.
        ids = list(dict.fromkeys([*self._session.aliases(), *ids]))
        self._view.models_found(ids, answered_by)
        if found.builtin:
            self._say(f"built-in model list: {found.reason}", warn=True)
        self._loop.draw_now(self._view)
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
            self._loop.draw_now(self._view)
        if self.chat_picker.value != name:
            self.chat_picker.value = name

    def _bind(self, conversation: Conversation) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._conversation = conversation
        self._view.show(conversation)
        self._unsubscribe = conversation.subscribe(self._on_event)

    def _on_event(self, event: ConversationEvent) -> None:
        # Runs in whichever thread changed the conversation: tell the view, let the loop draw.
        if event.conversation is not self._conversation or self._closed.is_set():
            return
        self._view.heard(event)
        if event.kind == "turn_started":
            self._loop.wake()
        elif event.kind == "text_started":
            self._loop.draw_soon(self._view)
        else:
            # When the cell, the message or the reset that caused it returns, every panel on
            # the conversation shows it.
            self._loop.draw_now(self._view)

    def _say(self, note: str, warn: bool = False) -> None:
        """Show ``note`` on the status line now (from any thread but the loop's)."""
        self._view.set_status(self._view.idle_line(note), warn)
        self._loop.draw_now(self._view)

    # -- the static transcript -------------------------------------------------------------

    def transcript_text(self) -> str:
        """The recorded turns as plain text (as ``%aivvm history`` prints them)."""
        return transcript_text(self.chat, self.conversation.turns)

    def transcript_html(self, *, saved: bool = False) -> str:
        """The recorded turns as sanitised HTML, as the panel shows them; ``saved``: as the
        static copy a notebook keeps (see :meth:`display`)."""
        body = "".join(turn_html(turn, self.fmt) for turn in self.conversation.turns)
        return transcript_html(body, title=f"Conversation {self.chat!r}", saved=saved)

    def static_bundle(self) -> dict[str, str]:
        """The transcript as a saved notebook keeps it: plain text and sanitised HTML."""
        return {"text/plain": self.transcript_text(), "text/html": self.transcript_html(saved=True)}

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # For front ends that ask for one bundle: the widget view, and the transcript for
        # wherever widgets cannot render. IPython's display() uses _ipython_display_.
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle.update(self.static_bundle())
        return bundle

    def _ipython_display_(self) -> None:
        self.display()

    def display(self) -> None:
        """Show the panel in the output, with a static transcript that stays current.

        Two outputs: the live panel (with an empty text for wherever widgets cannot be
        drawn), then the transcript as static HTML and text, updated after each finished
        turn, reset or import, so a notebook saved at any point shows the conversation as it
        then was. A trusted notebook reopened without the panel's kernel, or after a reload,
        would show "Error displaying widget: model not found" for the first; the second's
        stylesheet hides it there, and hides the second while the panel is live.
        """
        from IPython.display import display

        view = {"version_major": 2, "version_minor": 0, "model_id": self.model_id}
        display({"text/plain": "", WIDGET_VIEW: view}, raw=True)
        handle = display(self.static_bundle(), raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def update_display(self) -> None:
        """Refresh the static transcript of every output :meth:`display` made."""
        if self._closed.is_set() or not self._handles:
            return
        bundle = self.static_bundle()
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
            self._say("type a message first", warn=True)
            return None
        settings = self._session.request_settings(
            model=self.model_picker.value,
            temperature=self.temperature_slider.value,
            system=self.system_input.value,
        )
        return self._sender.send(Job(self.conversation, prompt, settings))

    def _finish_job(self, job: Job) -> None:
        # On the sender's worker, before send() returns: what the status line says of it.
        if job.target:
            self._view.target = job.target
        outcome = job.outcome
        if outcome is not None:
            self.last_outcome = outcome
        if outcome is not None and outcome.turn is not None:
            # Recorded, complete or partial: the turn_finished event set the status line. A
            # reply cut at the model's token limit says so too.
            if outcome.complete and outcome.status_note:
                self._view.note_on_turn(outcome.turn, outcome.status_note)
        elif job.conversation is self._conversation:
            note = job.note or "not sent"
            # Kept as a note while another reply streams, so its live status shows it.
            self._view.set_status(
                self._view.state_line("failed", note), True, notice=f"not sent: {note}"
            )
        self._loop.draw_now(self._view)

    # -- reset and export --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every turn of the conversation; refused while a reply streams into it."""
        conversation = self.conversation
        if conversation.busy:
            self._say("a reply is streaming; Stop it or wait, then reset", warn=True)
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
            self._say("export: type a file path first", warn=True)
            return None
        expected = _EXTENSIONS[fmt]
        extension = os.path.splitext(path)[1]
        if not extension:
            path += expected
        elif extension.lower() != expected:
            self._say(f"export: a {fmt} file must end in {expected}, not {extension}", warn=True)
            return None
        conversation = self.conversation
        try:
            if fmt == "json":
                conversation.export_json(path)
            else:
                conversation.export_markdown(path)
        except (OSError, ValueError) as exc:
            self._say(f"export to {path} failed: {one_line(exc)}", warn=True)
            return None
        turns = count(len(conversation), "turn")
        self._say(f"exported {turns} to {path}")
        return path

    # -- callbacks ---------------------------------------------------------------------------

    @guarded
    def _on_send_click(self, _button: widgets.Button) -> None:
        if self._start(self.message.value) is not None:
            self.message.value = ""

    @guarded
    def _on_enter(self, text: str) -> None:
        # Enter in the message box, which emptied itself: a message not sent goes back.
        if self._start(text) is None:
            self.message.value = text

    @guarded
    def _on_stop_click(self, _button: widgets.Button) -> None:
        self.stop()

    @guarded
    def _on_reset_click(self, _button: widgets.Button) -> None:
        self.reset()

    @guarded
    def _on_export_click(self, _button: widgets.Button) -> None:
        self.export()

    @guarded
    def _on_chat_picked(self, change: dict[str, Any]) -> None:
        name = (change["new"] or "").strip()
        if not name:
            # An emptied box means nothing; show the current conversation's name again.
            self.chat_picker.value = self.chat
            return
        self.switch(name)

    @guarded
    def _on_format_picked(self, change: dict[str, Any]) -> None:
        # Keep the path's extension in step with the format, so the file can be imported.
        stem, extension = os.path.splitext(self.export_path.value)
        if extension.lower() in _EXTENSIONS.values():
            self.export_path.value = stem + _EXTENSIONS[change["new"]]

    @guarded
    def _on_settings_change(self, change: dict[str, Any]) -> None:
        name, value = change["name"], change["new"]
        if name == "model":
            if value not in self._view.model_ids():
                # The list is the render loop's to draw; the choice is this thread's.
                self._view.offer_model(value)
                self._loop.draw_now(self._view)
            self.model_picker.value = value
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
            self._loop.remove(self._view)
            self._sender.close()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            try:
                self._settings.unobserve(self._on_settings_change, names=_FOLLOWED)
            except ValueError:
                pass
            self._handles.clear()
            self.close_widgets()
        super().close()

    def __repr__(self) -> str:
        name = self._conversation.name if getattr(self, "_conversation", None) else "?"
        return f"<ChatPanel {name!r}>"
