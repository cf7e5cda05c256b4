"""The conversation: a named history of turns, the messages of the next request built from
it, one reply at a time streaming into it, and its listeners told of every change."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from ..errors import one_line
from ..input_budget import newest_that_fit
from ..reply_buffer import ReplyBuffer
from . import files
from .events import ErrorHandler, EventKind, Listener, Listeners
from .files import FORMAT, VERSION, ConversationFormatError, json_kind, type_name
from .pending import PendingReply
from .turn import SOURCES, Turn

__all__ = ["Conversation", "ConversationBusy", "FittedMessages", "Messages"]

#: A chat request's messages: ``[{"role": "user", "content": "..."}, ...]``.
Messages = list[dict[str, str]]


class ConversationBusy(RuntimeError):
    """Another reply is still streaming into the conversation; the user may retry when it ends."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.conversation_name = name
        message = f"conversation {name!r} is busy with another reply"
        super().__init__(f"{message} ({detail})" if detail else message)


class FittedMessages(NamedTuple):
    """The messages for the next request, and how the history was trimmed to fit."""

    #: ``user``/``assistant`` pairs for the kept turns, then the new prompt as ``user``.
    messages: Messages
    #: How many of the oldest turns were left out.
    dropped: int


class Conversation:
    """A named chat history shared by notebook cells and chat panels.

    The history is a list of :class:`Turn`. :meth:`fit` turns it into the messages of the next
    request, dropping the oldest turns to stay within a character budget. A reply streams in
    through :meth:`streaming`, which lets one reply at a time into the conversation and tells
    every listener (:meth:`subscribe`) when it starts and ends; the reply's text is a buffer
    that every view of it reads, so several panels and cells showing the same conversation
    stay in step.

    **Re-running a cell.** A turn asked from a notebook cell carries that cell's id. When the
    cell runs again, its old turn and every turn after it are removed *before* the new
    request's messages are built: the new request must not see the old answer it replaces,
    and the history then reads like the notebook does, top to bottom. :meth:`streaming` does
    this for you when given ``cell_id``; :meth:`truncate_from_cell` is the step on its own, and
    :meth:`record` repeats it, which is harmless, for turns recorded without :meth:`streaming`.

    Examples
    --------
    ::

        In [1]: conv = Conversation("default")
        In [2]: with conv.streaming("Say hi", source="cell", cell_id="c1") as reply:
           ...:     messages, dropped = conv.fit("Say hi", max_chars=12_000)
           ...:     for chunk in provider_chunks(messages):
           ...:         reply.add(chunk)
           ...:     reply.record(model="gpt-3.5-turbo", temperature=0.7, system="")
        In [3]: conv.last_turn.reply
        Out[3]: 'Hi!'
        In [4]: conv.export("chat.md")
        In [5]: Conversation.load("chat.md").to_dict() == conv.to_dict()
        Out[5]: True
    """

    def __init__(self, name: str = "default", system: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a conversation name must be a non-empty string, not {name!r}")
        if system is not None and not isinstance(system, str):
            raise TypeError(f"system must be a string or None, not {type_name(system)}")
        self.name = name
        #: This conversation's own system message; None means "use the caller's default".
        self.system = system
        self._listeners = Listeners(self)
        self._turns: list[Turn] = []
        # cell id -> index of the earliest turn asked from that cell, so a re-run finds its
        # turn without scanning a long history.
        self._cells: dict[str, int] = {}
        # Guards the turns; held only briefly and never while listeners run.
        self._state = threading.RLock()
        # The thread a reply streams in from (see streaming()), and the condition that the
        # askers waiting for the conversation sleep on until it is free or they are stopped.
        self._reply_owner: int | None = None
        self._reply_free = threading.Condition(threading.Lock())
        self._pending: PendingReply | None = None

    def __repr__(self) -> str:
        return f"<Conversation {self.name!r}, {len(self)} turns>"

    def __len__(self) -> int:
        return len(self._turns)

    @property
    def turns(self) -> list[Turn]:
        """A copy of the turns, oldest first; change the history through the methods."""
        with self._state:
            return list(self._turns)

    @property
    def last_turn(self) -> Turn | None:
        """The newest turn, or None when the conversation is empty."""
        with self._state:
            return self._turns[-1] if self._turns else None

    # ---- building requests ----------------------------------------------------------------

    def fit(
        self,
        prompt: str,
        *,
        max_chars: int | None = None,
        max_turns: int | None = None,
        system: str = "",
    ) -> FittedMessages:
        """The messages for asking ``prompt`` next, with the oldest turns dropped to fit.

        Whole turns are dropped, oldest first, until ``len(system)`` plus the length of every
        message's content is at most ``max_chars`` and at most ``max_turns`` past turns remain
        (the rule of :mod:`aivvm_magic.input_budget`, which the provider applies too). The new
        prompt is always kept, even if it alone is over the budget: the provider says whether
        it takes it. ``system`` is the system message the request will carry: the Aivvm
        protocol sends it in its own field, not among the messages, but it counts.

        Partial turns are included with the text they did receive.
        """
        if max_chars is not None and max_chars < 0:
            raise ValueError(f"max_chars must not be negative, not {max_chars}")
        if max_turns is not None and max_turns < 0:
            raise ValueError(f"max_turns must not be negative, not {max_turns}")
        budget = None if max_chars is None else max_chars - len(system) - len(prompt)
        with self._state:
            turns = self._turns
            # Walk back from the newest turn: the kept turns are the longest newest run that
            # fits, found in one pass over just the turns that are kept.
            costs = (len(turn.prompt) + len(turn.reply) for turn in reversed(turns))
            kept = newest_that_fit(costs, budget, max_turns)
            dropped = len(turns) - kept
            messages: Messages = []
            for turn in turns[dropped:]:
                messages.append({"role": "user", "content": turn.prompt})
                messages.append({"role": "assistant", "content": turn.reply})
        messages.append({"role": "user", "content": prompt})
        return FittedMessages(messages, dropped)

    def messages(
        self,
        prompt: str,
        *,
        max_chars: int | None = None,
        max_turns: int | None = None,
        system: str = "",
    ) -> Messages:
        """Just the messages of :meth:`fit`, for callers that do not report trimming."""
        return self.fit(prompt, max_chars=max_chars, max_turns=max_turns, system=system).messages

    # ---- changing the history -------------------------------------------------------------

    def record(self, turn: Turn) -> None:
        """Append ``turn``, first removing an earlier turn of the same cell and all after it.

        Listeners get ``"replaced"`` if turns were removed, then ``"turn_finished"``.
        """
        if not isinstance(turn, Turn):
            raise TypeError(f"record() takes a Turn, not {type_name(turn)}")
        with self._state:
            removed = self._truncate(turn.cell_id) if turn.cell_id is not None else 0
            if turn.cell_id is not None:
                self._cells.setdefault(turn.cell_id, len(self._turns))
            self._turns.append(turn)
        if removed:
            self._emit("replaced", removed=removed, cell_id=turn.cell_id)
        self._emit("turn_finished", turn=turn)

    def truncate_from_cell(self, cell_id: str) -> int:
        """Remove the turn asked from ``cell_id`` and every turn after it; return how many.

        Call it before building the messages of a re-run (:meth:`streaming` does), so that the
        re-run does not see its own old answer. Listeners get ``"replaced"`` if any went.
        """
        with self._state:
            removed = self._truncate(cell_id)
        if removed:
            self._emit("replaced", removed=removed, cell_id=cell_id)
        return removed

    def _truncate(self, cell_id: str) -> int:
        index = self._cells.get(cell_id)
        if index is None:
            return 0
        removed = self._turns[index:]
        del self._turns[index:]
        for turn in removed:
            if turn.cell_id is not None and self._cells.get(turn.cell_id, -1) >= index:
                del self._cells[turn.cell_id]
        return len(removed)

    def _set_turns(self, turns: list[Turn]) -> None:
        self._turns = turns
        self._cells = {}
        for index, turn in enumerate(turns):
            if turn.cell_id is not None:
                self._cells.setdefault(turn.cell_id, index)

    def reset(self) -> None:
        """Forget every turn (the system message stays); listeners get ``"reset"``."""
        with self._state:
            removed = len(self._turns)
            self._set_turns([])
        self._emit("reset", removed=removed)

    def replace_with(self, other: Conversation) -> None:
        """Take ``other``'s turns and system message in one step; the name stays.

        Listeners get one ``"replaced"`` event. Use it with :meth:`load` to read a file into a
        conversation that panels already show: if loading fails, nothing has changed.
        """
        if not isinstance(other, Conversation):
            raise TypeError(f"replace_with() takes a Conversation, not {type_name(other)}")
        # Copy under other's lock, then swap under ours: never both locks at once.
        with other._state:
            turns, system = list(other._turns), other.system
        with self._state:
            removed = len(self._turns)
            self._set_turns(turns)
            self.system = system
        self._emit("replaced", removed=removed)

    # ---- listeners --------------------------------------------------------------------------

    def subscribe(
        self, listener: Listener, kinds: Iterable[EventKind] | None = None
    ) -> Callable[[], None]:
        """Call ``listener(event)`` for every :class:`ConversationEvent` (or only those of
        ``kinds``); returns unsubscribe.

        Listeners run in the thread that caused the event. One that raises does not stop the
        others or the caller; its error goes to :attr:`error_handler`. There is no event per
        chunk: a view that shows a reply as it streams reads :attr:`pending`'s buffer.
        """
        return self._listeners.subscribe(listener, kinds)

    @property
    def error_handler(self) -> ErrorHandler:
        """Called as ``error_handler(exc, event)`` when a listener raises, inside the
        ``except`` block, so ``sys.exc_info()`` holds the error (``showtraceback()`` works)."""
        return self._listeners.error_handler

    @error_handler.setter
    def error_handler(self, handler: ErrorHandler) -> None:
        self._listeners.error_handler = handler

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        self._listeners.emit(kind, **fields)

    def begin_turn(self, prompt: str, source: str, cell_id: str | None = None) -> None:
        """Tell the listeners a turn started (``"turn_started"``); :meth:`streaming` calls it."""
        self._emit("turn_started", text=prompt, source=source, cell_id=cell_id)

    def fail_turn(self, error: str, text: str = "") -> None:
        """Tell the listeners the turn ended without being recorded (``"turn_failed"``)."""
        self._emit("turn_failed", error=error, text=text)

    # ---- one reply at a time ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a reply is streaming into the conversation now."""
        return self._reply_owner is not None

    @property
    def pending(self) -> PendingReply | None:
        """The reply streaming in now, so a view opened mid-reply can show its text so far."""
        with self._state:
            return self._pending

    @contextlib.contextmanager
    def streaming(
        self,
        prompt: str,
        source: str,
        *,
        cell_id: str | None = None,
        timeout: float | None = None,
        buffer: ReplyBuffer | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[PendingReply]:
        """Hold the conversation for one reply: ``with conv.streaming(...) as reply:``.

        On entry: wait for any other reply to end, at most ``timeout`` seconds (None waits as
        long as it takes, 0 does not wait), else raise :class:`ConversationBusy`; remove the
        turns a re-run of ``cell_id`` replaces; and send ``"turn_started"``. Build the messages
        with :meth:`fit` inside the block, after that removal.

        On exit the conversation is released however the block ends. If no turn was recorded,
        listeners get ``"turn_failed"`` (an exception still propagates). To keep the text that
        arrived before an interruption or a dropped connection, catch it inside the block and
        ``reply.record(..., complete=False, error="interrupted")``.

        A thread asking again while its own reply streams gets ``ConversationBusy`` at once,
        since waiting for itself would never end. ``buffer`` is the reply's text, when the
        caller made it already (to hand the same one to the provider and the views). Setting
        ``cancel`` and calling :meth:`wake_waiters` ends a wait with :class:`ConversationBusy`.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type_name(prompt)}")
        if source not in SOURCES:
            raise ValueError(f"source must be 'cell' or 'panel', not {source!r}")
        self._acquire_reply(timeout, cancel)
        try:
            if cell_id is not None:
                self.truncate_from_cell(cell_id)
            pending = PendingReply(
                self.record,
                prompt,
                source,
                cell_id,
                buffer,
                text_started=lambda: self._emit("text_started"),
            )
            with self._state:
                self._pending = pending
            self.begin_turn(prompt, source=source, cell_id=cell_id)
            try:
                yield pending
            except BaseException as exc:
                if not pending.recorded:
                    self.fail_turn(one_line(exc), pending.text)
                raise
            if not pending.recorded:
                self.fail_turn("no reply was recorded", pending.text)
        finally:
            with self._state:
                self._pending = None
            with self._reply_free:
                self._reply_owner = None
                self._reply_free.notify_all()

    def _acquire_reply(self, timeout: float | None, cancel: threading.Event | None) -> None:
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._reply_free:
            if self._reply_owner == me:
                raise ConversationBusy(self.name, "asked again from the thread streaming it")
            while self._reply_owner is not None:
                if cancel is not None and cancel.is_set():
                    raise ConversationBusy(self.name, "stopped while waiting")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ConversationBusy(self.name, f"waited {timeout:g} s" if timeout else "")
                self._reply_free.wait(remaining)
            self._reply_owner = me

    def wake_waiters(self) -> None:
        """Wake the askers waiting for the conversation, so that a stopped one gives up now."""
        with self._reply_free:
            self._reply_free.notify_all()

    # ---- export and import ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The conversation as a JSON-ready dict (the ``.json`` export format)."""
        with self._state:
            turns = [turn.to_dict() for turn in self._turns]
            return {
                "format": FORMAT,
                "version": VERSION,
                "name": self.name,
                "system": self.system,
                "turns": turns,
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conversation:
        """A new conversation from :meth:`to_dict`'s output; ConversationFormatError if not."""
        if not isinstance(data, Mapping):
            raise ConversationFormatError(
                f"not an aivvm conversation (the top level is {json_kind(data)}, not an object)"
            )
        version = files.check_format_and_version(data)
        unknown = [key for key in data if key not in _CONVERSATION_KEYS]
        if unknown:
            raise ConversationFormatError(f"unknown key(s) {', '.join(map(repr, unknown))}")
        missing = [key for key in _CONVERSATION_KEYS if key not in data]
        if missing:
            raise ConversationFormatError(f"missing {', '.join(map(repr, missing))}")
        name, system, raw_turns = data["name"], data["system"], data["turns"]
        if not isinstance(name, str) or not name:
            raise ConversationFormatError("'name' must be a non-empty string")
        if system is not None and not isinstance(system, str):
            raise ConversationFormatError("'system' must be a string or null")
        if not isinstance(raw_turns, list):
            raise ConversationFormatError("'turns' must be a list")
        turns = []
        for number, raw in enumerate(raw_turns, 1):
            try:
                turns.append(Turn.from_dict(raw, version))
            except ConversationFormatError as exc:
                raise ConversationFormatError(f"turn {number}: {exc}") from None
        return cls.from_turns(name, turns, system)

    @classmethod
    def from_turns(
        cls, name: str, turns: Iterable[Turn], system: str | None = None
    ) -> Conversation:
        """A new conversation called ``name`` holding ``turns``, e.g. to :meth:`replace_with`."""
        held = list(turns)
        if not all(isinstance(turn, Turn) for turn in held):
            raise TypeError("from_turns() takes Turn records")
        conversation = cls(name, system)
        conversation._set_turns(held)
        return conversation

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the conversation to ``path``, as JSON (``.json``) or Markdown (``.md``)."""
        if files.format_of(path) == "json":
            self.export_json(path)
        else:
            self.export_markdown(path)

    def export_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` to ``path`` as UTF-8 JSON, replacing the file atomically."""
        files.write_json(path, self.to_dict())

    def export_markdown(self, path: str | os.PathLike[str]) -> None:
        """Write a readable Markdown transcript that :meth:`load` reads back exactly.

        Each text is preceded by an HTML comment (invisible when rendered) giving its exact
        length in characters, so any text at all, even one that contains such comments or
        headings, reads back unchanged. Edit the prose around, not the texts themselves.
        """
        files.write_markdown(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Conversation:
        """A new conversation read from a ``.json`` or ``.md`` export.

        A file that is not a valid export (corrupt, truncated, another kind of file, another
        version) raises :class:`ConversationFormatError` naming it; a missing file raises the
        usual ``OSError``. Nothing existing is changed either way: follow with
        :meth:`replace_with` to load into a conversation in use.
        """
        data = files.read(path)
        try:
            return cls.from_dict(data)
        except ConversationFormatError as exc:
            raise ConversationFormatError(f"{os.fspath(path)}: {exc}") from None


_CONVERSATION_KEYS = ("format", "version", "name", "system", "turns")
