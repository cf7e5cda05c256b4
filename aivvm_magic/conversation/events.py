"""What happens to a conversation, as the views that follow it are told.

:class:`Listeners` is the registry a conversation keeps: each listener chooses the event kinds
it wants, runs in the thread that caused the event, and cannot break the caller or the other
listeners (its error goes to an error handler, inside the ``except`` block, so
``sys.exc_info()`` holds it and ``showtraceback()`` works).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .files import type_name
from .turn import Turn

__all__ = [
    "EVENT_KINDS",
    "ConversationEvent",
    "ErrorHandler",
    "EventKind",
    "Listener",
    "Listeners",
    "log_listener_error",
]

logger = logging.getLogger(__name__)

EventKind = Literal[
    "turn_started", "text_started", "turn_finished", "turn_failed", "reset", "replaced"
]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
Listener = Callable[["ConversationEvent"], object]
ErrorHandler = Callable[[BaseException, "ConversationEvent"], object]


@dataclass(frozen=True)
class ConversationEvent:
    """What happened to a conversation, as its listeners are told.

    ======================  ==================================================================
    ``kind``                set fields
    ======================  ==================================================================
    ``"turn_started"``      ``text`` (the prompt), ``source``, ``cell_id``
    ``"text_started"``      nothing: the reply's first text arrived (once per turn)
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
    #: The :class:`~aivvm_magic.conversation.Conversation` it happened to, for a listener that
    #: follows several (typed loosely: the conversation module imports this one).
    conversation: Any = field(default=None, repr=False, compare=False)


def log_listener_error(exc: BaseException, event: ConversationEvent) -> None:
    """The default ``error_handler``: log the failing listener's traceback and carry on."""
    name = event.conversation.name if event.conversation is not None else None
    logger.error(
        "A listener of conversation %r failed on a %r event", name, event.kind, exc_info=exc
    )


class Listeners:
    """The listeners of one conversation, each with the event kinds it wants.

    The lock guards the registry only and is never held while a listener runs, so a listener
    may subscribe, unsubscribe or change the conversation without a deadlock.
    """

    def __init__(self, conversation: Any) -> None:
        self.conversation = conversation
        #: Called as ``error_handler(exc, event)`` when a listener raises, inside the
        #: ``except`` block, so ``sys.exc_info()`` holds the error (``showtraceback()`` works).
        self.error_handler: ErrorHandler = log_listener_error
        self._lock = threading.Lock()
        self._listeners: dict[int, tuple[Listener, frozenset[str]]] = {}
        self._tokens = itertools.count()

    def subscribe(
        self, listener: Listener, kinds: Iterable[EventKind] | None = None
    ) -> Callable[[], None]:
        """Call ``listener(event)`` for every event (or only those of ``kinds``); returns
        unsubscribe."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {type_name(listener)}")
        wanted = frozenset(EVENT_KINDS if kinds is None else kinds)
        if not wanted <= frozenset(EVENT_KINDS):
            raise ValueError(f"unknown event kinds: {sorted(wanted - frozenset(EVENT_KINDS))}")
        with self._lock:
            token = next(self._tokens)
            self._listeners[token] = (listener, wanted)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return unsubscribe

    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Tell every listener that wants ``kind``; a failing one goes to the error handler."""
        if not self._listeners:
            return
        with self._lock:
            listeners = [listener for listener, kinds in self._listeners.values() if kind in kinds]
        if not listeners:
            return
        event = ConversationEvent(kind, conversation=self.conversation, **fields)
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:
                try:
                    self.error_handler(exc, event)
                except Exception:
                    logger.exception(
                        "The error handler of conversation %r failed", self.conversation.name
                    )
