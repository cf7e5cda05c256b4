"""Conversations: the chat history that notebook cells and chat panels share.

A :class:`Conversation` is a plain object holding :class:`Turn` records (one prompt and the
reply to it). It builds the message list for the next request, trimmed to a character budget;
tells its views (panels, cells) what happens through :meth:`Conversation.subscribe`; lets only
one reply stream into it at a time (:meth:`Conversation.streaming`); and exports to, and loads
from, JSON and Markdown files that round-trip exactly.

This module is the *conversation* layer: it knows messages, roles and history, and nothing
about HTTP, IPython or widgets, so it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple, TextIO, get_args

from .conversation_files import (
    FORMAT,
    JSON_ENCODER,
    VERSION,
    ConversationFormatError,
    check_format_and_version,
    format_of,
    json_kind,
    markdown_parts,
    parse_json,
    parse_markdown,
    type_name,
    write_atomically,
)

__all__ = [
    "FORMAT",
    "SOURCES",
    "VERSION",
    "Conversation",
    "ConversationBusy",
    "ConversationEvent",
    "ConversationFormatError",
    "ConversationStore",
    "EVENT_KINDS",
    "FittedMessages",
    "PendingReply",
    "Turn",
    "log_listener_error",
]

logger = logging.getLogger(__name__)

#: Where a turn was asked from.
SOURCES = ("cell", "panel")

EventKind = Literal["turn_started", "chunk", "turn_finished", "turn_failed", "reset", "replaced"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
#: A chat request's messages: ``[{"role": "user", "content": "..."}, ...]``.
Messages = list[dict[str, str]]
Listener = Callable[["ConversationEvent"], object]
ErrorHandler = Callable[[BaseException, "ConversationEvent"], object]


class ConversationBusy(RuntimeError):
    """Another reply is still streaming into the conversation; the user may retry when it ends."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.conversation_name = name
        message = f"conversation {name!r} is busy with another reply"
        super().__init__(f"{message} ({detail})" if detail else message)


# --------------------------------------------------------------------------------------------
# Turns


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _require_str(name: str, value: object, *, optional: bool = False) -> None:
    if isinstance(value, str):
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 request body or
        # export can hold: refuse them here, before they poison a conversation.
        if not value.isascii() and _LONE_SURROGATE.search(value):
            raise ValueError(f"field {name!r} holds a lone surrogate, which is not valid text")
        return
    if optional and value is None:
        return
    expected = "a string or null" if optional else "a string"
    raise TypeError(f"field {name!r} must be {expected}, not {type_name(value)}")


def _require_number(name: str, value: object) -> float:
    # bool is an int subclass, but ``true`` is never a meaningful temperature or duration.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"field {name!r} must be a number, not {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"field {name!r} must be a finite number, not {value!r}")
    return number


def _parse_utc_offset_time(text: str) -> datetime:
    # Python 3.10's fromisoformat does not know the "Z" suffix other tools write.
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError("no timezone")
    return parsed


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One exchange: the prompt as sent, the reply as received, and how it was made.

    ``complete`` is False for a *partial* turn, whose reply was cut short (interrupted, timed
    out, or the connection dropped mid-stream); ``error`` then says why in a few words. A
    partial turn still goes into the history, because the model did say that text.

    Fields are checked on construction (a ``TypeError`` or ``ValueError`` names the field), so
    every turn that exists can be exported and loaded back. Turns are immutable.

    Examples
    --------
    ::

        In [1]: turn = Turn(prompt="Hi", reply="Hello!", model="gpt-3.5-turbo",
           ...:             temperature=0.7, system="", started="2024-05-01T10:00:00+00:00",
           ...:             duration=1.2, complete=True, source="cell", cell_id="c1")
        In [2]: Turn.from_dict(turn.to_dict()) == turn
        Out[2]: True
    """

    prompt: str
    reply: str
    model: str
    temperature: float
    system: str
    #: ISO-8601 time with a timezone, e.g. ``2024-05-01T10:00:00.123+00:00``.
    started: str
    #: Seconds from sending the request to the end of the reply.
    duration: float
    complete: bool
    #: ``"cell"`` or ``"panel"``.
    source: str
    #: The notebook cell that asked, so re-running it replaces its turn.
    cell_id: str | None = None
    #: Why the reply is incomplete, in a few words; None for a complete turn.
    error: str | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "reply", "model", "system", "started", "source"):
            _require_str(name, getattr(self, name))
        _require_str("cell_id", self.cell_id, optional=True)
        _require_str("error", self.error, optional=True)
        for name in ("temperature", "duration"):
            value = getattr(self, name)
            if type(value) is not float or not math.isfinite(value):
                # Frozen: normalise through object.__setattr__, so 1 is stored as 1.0.
                object.__setattr__(self, name, _require_number(name, value))
        if self.duration < 0:
            raise ValueError(f"field 'duration' must not be negative, not {self.duration!r}")
        if not isinstance(self.complete, bool):
            raise TypeError(
                f"field 'complete' must be true or false, not {type_name(self.complete)}"
            )
        if self.source not in SOURCES:
            raise ValueError(f"field 'source' must be 'cell' or 'panel', not {self.source!r}")
        if self.cell_id == "":
            raise ValueError("field 'cell_id' must be a non-empty string or null")
        try:
            _parse_utc_offset_time(self.started)
        except ValueError:
            raise ValueError(
                f"field 'started' must be an ISO-8601 time with a timezone, not {self.started!r}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The turn as a JSON-ready dict, one key per field."""
        return {
            "prompt": self.prompt,
            "reply": self.reply,
            "model": self.model,
            "temperature": self.temperature,
            "system": self.system,
            "started": self.started,
            "duration": self.duration,
            "complete": self.complete,
            "source": self.source,
            "cell_id": self.cell_id,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        """The turn ``data`` describes; :class:`ConversationFormatError` if it is not valid.

        ``cell_id`` and ``error`` may be missing (they default to None); every other field is
        required and unknown keys are refused, so a typo cannot silently lose information.
        """
        if not isinstance(data, Mapping):
            raise ConversationFormatError(f"a turn must be an object, not {type_name(data)}")
        missing = [name for name in _REQUIRED_TURN_FIELDS if name not in data]
        if missing:
            raise ConversationFormatError(f"turn is missing {', '.join(map(repr, missing))}")
        unknown = [key for key in data if key not in _TURN_FIELD_NAMES]
        if unknown:
            raise ConversationFormatError(
                f"turn has unknown key(s) {', '.join(map(repr, unknown))}"
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ConversationFormatError(str(exc)) from None


_TURN_FIELDS = dataclasses.fields(Turn)
_TURN_FIELD_NAMES = frozenset(field.name for field in _TURN_FIELDS)
_REQUIRED_TURN_FIELDS = tuple(
    field.name for field in _TURN_FIELDS if field.default is dataclasses.MISSING
)


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class ConversationEvent:
    """What happened to a conversation, as its listeners are told.

    ======================  ==================================================================
    ``kind``                set fields
    ======================  ==================================================================
    ``"turn_started"``      ``text`` (the prompt), ``source``, ``cell_id``
    ``"chunk"``             ``text`` (the next piece of the streaming reply)
    ``"turn_finished"``     ``turn`` (the recorded turn, complete or partial)
    ``"turn_failed"``       ``error``, ``text`` (what had streamed); nothing was recorded
    ``"reset"``             ``removed`` (how many turns were cleared)
    ``"replaced"``          ``removed``; turns were cut (``cell_id``) or swapped in wholesale
    ======================  ==================================================================
    """

    kind: EventKind
    turn: Turn | None = None
    text: str | None = None
    source: str | None = None
    cell_id: str | None = None
    error: str | None = None
    removed: int = 0
    #: The conversation it happened to, for a listener that follows several.
    conversation: Conversation | None = field(default=None, repr=False, compare=False)


def log_listener_error(exc: BaseException, event: ConversationEvent) -> None:
    """The default ``error_handler``: log the failing listener's traceback and carry on."""
    name = event.conversation.name if event.conversation is not None else None
    logger.error(
        "A listener of conversation %r failed on a %r event", name, event.kind, exc_info=exc
    )


# --------------------------------------------------------------------------------------------
# The conversation


class FittedMessages(NamedTuple):
    """The messages for the next request, and how the history was trimmed to fit."""

    #: ``user``/``assistant`` pairs for the kept turns, then the new prompt as ``user``.
    messages: Messages
    #: How many of the oldest turns were left out.
    dropped: int


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class PendingReply:
    """A reply streaming into a conversation; :meth:`Conversation.streaming` hands one out.

    :meth:`add` each chunk as it arrives (listeners see it at once), then :meth:`record` the
    turn, as complete or as partial. Leaving the ``with`` block without recording tells the
    listeners the turn failed and records nothing.
    """

    def __init__(
        self, conversation: Conversation, prompt: str, source: str, cell_id: str | None
    ) -> None:
        self.conversation = conversation
        self.prompt = prompt
        self.source = source
        self.cell_id = cell_id
        #: When the turn began, as an ISO-8601 UTC time.
        self.started = _utc_now()
        self._clock = time.monotonic()
        self._parts: list[str] = []
        #: The recorded turn, once :meth:`record` was called.
        self.turn: Turn | None = None

    @property
    def text(self) -> str:
        """The reply text received so far (safe to read from another thread)."""
        # Never rewrites the list: another thread may be appending to it right now.
        return "".join(self._parts[:])

    @property
    def chunks(self) -> int:
        """How many chunks have arrived: a cheap way to see whether the reply grew."""
        return len(self._parts)

    @property
    def elapsed(self) -> float:
        """Seconds since the turn began."""
        return time.monotonic() - self._clock

    @property
    def recorded(self) -> bool:
        """Whether :meth:`record` was called."""
        return self.turn is not None

    def add(self, chunk: str) -> None:
        """Append ``chunk`` to the reply and tell the listeners."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        if not isinstance(chunk, str):
            raise TypeError(f"a reply chunk must be a str, not {type_name(chunk)}")
        if chunk:
            self._parts.append(chunk)
            # Every chunk passes here: with nobody listening for chunks, not even a call.
            if self.conversation._chunk_listeners:
                self.conversation.emit_chunk(chunk)

    @property
    def sink(self) -> Callable[[str], None]:
        """The cheapest callable that adds a chunk already known to be a ``str``.

        While anyone listens for chunks it is :meth:`add`, which tells them of each one;
        otherwise the bare ``append`` of the reply's parts, since a fast reply brings tens of
        thousands.
        """
        if self.conversation._chunk_listeners:
            return self.add
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        return self._parts.append

    def record(
        self,
        *,
        model: str,
        temperature: float,
        system: str,
        complete: bool = True,
        error: str | None = None,
    ) -> Turn:
        """Record the reply received so far as a turn (partial unless ``complete``)."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        turn = Turn(
            prompt=self.prompt,
            reply=self.text,
            model=model,
            temperature=temperature,
            system=system,
            started=self.started,
            duration=round(time.monotonic() - self._clock, 3),
            complete=complete,
            source=self.source,
            cell_id=self.cell_id,
            error=error,
        )
        # Recorded before the listeners hear of it, so that they see ``recorded`` is true.
        self.turn = turn
        self.conversation.record(turn)
        return turn

    def __repr__(self) -> str:
        state = "recorded" if self.recorded else "streaming"
        return f"<PendingReply {state}, {len(self.text):,} characters>"


class Conversation:
    """A named chat history shared by notebook cells and chat panels.

    The history is a list of :class:`Turn`. :meth:`fit` turns it into the messages of the next
    request, dropping the oldest turns to stay within a character budget. A reply streams in
    through :meth:`streaming`, which lets one reply at a time into the conversation and tells
    every listener (:meth:`subscribe`) about each chunk, so several panels and cells showing
    the same conversation stay in step.

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
        #: Called as ``error_handler(exc, event)`` when a listener raises, inside the
        #: ``except`` block, so ``sys.exc_info()`` holds the error (``showtraceback()`` works).
        self.error_handler: ErrorHandler = log_listener_error
        self._turns: list[Turn] = []
        # cell id -> index of the earliest turn asked from that cell, so a re-run finds its
        # turn without scanning a long history.
        self._cells: dict[str, int] = {}
        # Guards the turns and listeners; held only briefly and never while listeners run.
        self._state = threading.RLock()
        # Held for as long as a reply streams in; see streaming().
        self._reply_lock = threading.Lock()
        self._reply_owner: int | None = None
        self._pending: PendingReply | None = None
        self._listeners: dict[int, tuple[Listener, frozenset[str]]] = {}
        #: How many listeners want ``"chunk"`` events (read on every chunk, without the lock).
        self._chunk_listeners = 0
        self._tokens = itertools.count()

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
        message's content is at most ``max_chars`` and at most ``max_turns`` past turns remain.
        The new prompt is always kept, even if it alone is over the budget: the server says
        whether it accepts it. ``system`` is the system message the request will carry: the
        Aivvm protocol sends it in its own field, not among the messages, but it counts.

        Partial turns are included with the text they did receive.
        """
        if max_chars is not None and max_chars < 0:
            raise ValueError(f"max_chars must not be negative, not {max_chars}")
        if max_turns is not None and max_turns < 0:
            raise ValueError(f"max_turns must not be negative, not {max_turns}")
        base = len(system) + len(prompt)
        with self._state:
            turns = self._turns
            limit = len(turns) if max_turns is None else min(len(turns), max_turns)
            # Walk back from the newest turn: the kept turns are the longest newest run that
            # fits, found in one pass over just the turns that are kept.
            kept = used = 0
            while kept < limit:
                turn = turns[-1 - kept]
                cost = len(turn.prompt) + len(turn.reply)
                if max_chars is not None and base + used + cost > max_chars:
                    break
                used += cost
                kept += 1
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
        others or the caller; its error goes to :attr:`error_handler`. A listener that leaves
        out ``"chunk"`` keeps the per-chunk path of every reply free of events.
        """
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {type_name(listener)}")
        wanted = frozenset(EVENT_KINDS if kinds is None else kinds)
        if not wanted <= frozenset(EVENT_KINDS):
            raise ValueError(f"unknown event kinds: {sorted(wanted - frozenset(EVENT_KINDS))}")
        with self._state:
            token = next(self._tokens)
            self._listeners[token] = (listener, wanted)
            self._chunk_listeners += "chunk" in wanted

        def unsubscribe() -> None:
            with self._state:
                entry = self._listeners.pop(token, None)
                if entry is not None:
                    self._chunk_listeners -= "chunk" in entry[1]

        return unsubscribe

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        if not self._listeners:
            return
        with self._state:
            listeners = [listener for listener, kinds in self._listeners.values() if kind in kinds]
        if not listeners:
            return
        event = ConversationEvent(kind, conversation=self, **fields)
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:
                try:
                    self.error_handler(exc, event)
                except Exception:
                    logger.exception("The error handler of conversation %r failed", self.name)

    def begin_turn(self, prompt: str, source: str, cell_id: str | None = None) -> None:
        """Tell the listeners a turn started (``"turn_started"``); :meth:`streaming` calls it."""
        self._emit("turn_started", text=prompt, source=source, cell_id=cell_id)

    def emit_chunk(self, text: str) -> None:
        """Tell the listeners a piece of the reply arrived (``"chunk"``)."""
        self._emit("chunk", text=text)

    def fail_turn(self, error: str, text: str = "") -> None:
        """Tell the listeners the turn ended without being recorded (``"turn_failed"``)."""
        self._emit("turn_failed", error=error, text=text)

    # ---- one reply at a time ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a reply is streaming into the conversation now."""
        return self._reply_lock.locked()

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
        since waiting for itself would never end.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type_name(prompt)}")
        if source not in SOURCES:
            raise ValueError(f"source must be 'cell' or 'panel', not {source!r}")
        self._acquire_reply(timeout)
        try:
            if cell_id is not None:
                self.truncate_from_cell(cell_id)
            pending = PendingReply(self, prompt, source, cell_id)
            with self._state:
                self._pending = pending
            self.begin_turn(prompt, source=source, cell_id=cell_id)
            try:
                yield pending
            except BaseException as exc:
                if not pending.recorded:
                    self.fail_turn(_describe_failure(exc), pending.text)
                raise
            if not pending.recorded:
                self.fail_turn("no reply was recorded", pending.text)
        finally:
            with self._state:
                self._pending = None
            self._reply_owner = None
            self._reply_lock.release()

    def _acquire_reply(self, timeout: float | None) -> None:
        if self._reply_owner == threading.get_ident():
            raise ConversationBusy(self.name, "asked again from the thread streaming it")
        if timeout is None:
            acquired = self._reply_lock.acquire()
        elif timeout <= 0:
            acquired = self._reply_lock.acquire(blocking=False)
        else:
            acquired = self._reply_lock.acquire(timeout=timeout)
        if not acquired:
            raise ConversationBusy(self.name, f"waited {timeout:g} s" if timeout else "")
        self._reply_owner = threading.get_ident()

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
        check_format_and_version(data)
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
                turns.append(Turn.from_dict(raw))
            except ConversationFormatError as exc:
                raise ConversationFormatError(f"turn {number}: {exc}") from None
        conversation = cls(name, system)
        conversation._set_turns(turns)
        return conversation

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the conversation to ``path``, as JSON (``.json``) or Markdown (``.md``)."""
        if format_of(path) == "json":
            self.export_json(path)
        else:
            self.export_markdown(path)

    def export_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` to ``path`` as UTF-8 JSON, replacing the file atomically."""
        data = self.to_dict()
        encode = JSON_ENCODER.encode

        def write(file: TextIO) -> None:
            # One turn to a line: readable, diffable, and each line comes from the fast
            # one-shot encoder (json.dump with an indent runs the slow pure-Python one).
            file.write("{\n")
            for key in ("format", "version", "name", "system"):
                file.write(f" {encode(key)}: {encode(data[key])},\n")
            file.write(' "turns": [')
            for index, turn in enumerate(data["turns"]):
                file.write(("\n  " if index == 0 else ",\n  ") + encode(turn))
            file.write("\n ]\n}\n" if data["turns"] else "]\n}\n")

        write_atomically(path, write)

    def export_markdown(self, path: str | os.PathLike[str]) -> None:
        """Write a readable Markdown transcript that :meth:`load` reads back exactly.

        Each text is preceded by an HTML comment (invisible when rendered) giving its exact
        length in characters, so any text at all, even one that contains such comments or
        headings, reads back unchanged. Edit the prose around, not the texts themselves.
        """
        data = self.to_dict()

        def write(file: TextIO) -> None:
            for part in markdown_parts(data):
                file.write(part)

        write_atomically(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Conversation:
        """A new conversation read from a ``.json`` or ``.md`` export.

        A file that is not a valid export (corrupt, truncated, another kind of file, another
        version) raises :class:`ConversationFormatError` naming it; a missing file raises the
        usual ``OSError``. Nothing existing is changed either way: follow with
        :meth:`replace_with` to load into a conversation in use.
        """
        kind = format_of(path)
        where = os.fspath(path)
        with open(path, "rb") as file:
            raw = file.read()
        try:
            try:
                # utf-8-sig: some editors put a byte-order mark in front when saving.
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ConversationFormatError("not UTF-8 text (a binary file?)") from None
            if not text.strip():
                raise ConversationFormatError("the file is empty")
            data = parse_json(text) if kind == "json" else parse_markdown(text)
            return cls.from_dict(data)
        except ConversationFormatError as exc:
            raise ConversationFormatError(f"{where}: {exc}") from None


_CONVERSATION_KEYS = ("format", "version", "name", "system", "turns")


# --------------------------------------------------------------------------------------------
# The registry


class ConversationStore:
    """Named conversations, made on first use; one store serves a whole IPython session.

    The magic and every chat panel of a session look conversations up here by name, so a
    panel and a cell that name the same conversation share its history. Thread-safe.

    Examples
    --------
    ::

        In [1]: store = ConversationStore()
        In [2]: store.get("default") is store.get("default")
        Out[2]: True
        In [3]: store.names()
        Out[3]: ['default']
    """

    def __init__(self, conversations: Iterable[Conversation] = ()) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[str, Conversation] = {c.name: c for c in conversations}

    def get(self, name: str = "default") -> Conversation:
        """The conversation called ``name``, made empty if there is none yet."""
        with self._lock:
            conversation = self._conversations.get(name)
            if conversation is None:
                conversation = self._conversations[name] = Conversation(name)
            return conversation

    def __getitem__(self, name: str) -> Conversation:
        with self._lock:
            try:
                return self._conversations[name]
            except KeyError:
                raise KeyError(f"no conversation named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._conversations

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        with self._lock:
            return len(self._conversations)

    def names(self) -> list[str]:
        """The names of the conversations, oldest first."""
        with self._lock:
            return list(self._conversations)

    def remove(self, name: str) -> Conversation:
        """Forget the conversation called ``name`` and return it; KeyError if there is none."""
        with self._lock:
            try:
                return self._conversations.pop(name)
            except KeyError:
                raise KeyError(f"no conversation named {name!r}") from None

    def __repr__(self) -> str:
        return f"<ConversationStore {self.names()!r}>"
