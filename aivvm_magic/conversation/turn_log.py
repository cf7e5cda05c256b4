"""Logging conversations to the history database as they happen: :class:`TurnLog`.

A :class:`TurnLog` listens to each conversation it follows (the session's store hands it every
conversation it makes) and keeps the database in step: each recorded turn is written when it
is recorded, whether a cell or a panel asked; a re-run cell's cut marks the cut turns replaced;
a reset, ``--new`` or an import starts a new logged conversation with the next turn.

The database never fails a turn. When it cannot be written (corrupt, locked by another
process, read-only, on a full disk), one warning line says so, the conversation goes on in
memory, and the log leaves the database alone for ``retry_after`` seconds; the next turn
written after that writes the turns it missed too. Standard library only.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .database import HistoryDatabase, HistoryUnavailable
from .events import ConversationEvent
from .history import Conversation

__all__ = ["TurnLog", "print_warning"]

#: The events that change what the database should hold.
_KINDS = ("turn_finished", "replaced", "reset")


def print_warning(line: str) -> None:
    """Print ``line`` to the current ``sys.stderr`` (a kernel shows it in the running cell)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class _Logged:
    """Where a conversation stands in the database: its id there (None until its first turn
    is logged), the database that id belongs to, how many of its turns, from the first, the
    database has, and how many are never to be written (made while the history was off)."""

    id: int | None = None
    synced: int = 0
    database: HistoryDatabase | None = None
    floor: int = 0


class TurnLog:
    """Writes the turns of the conversations it follows to a history database.

    ``database()`` gives the database to write to, None when the history is off (then nothing
    is written, and turns made meanwhile are never written), or raises
    :class:`~aivvm_magic.conversation.database.HistoryUnavailable`. ``warn(line)`` shows the one
    warning line of a failure; it is said again only after a write has worked since.

    Examples
    --------
    ::

        In [1]: log = TurnLog(lambda: HistoryDatabase("history.db"))
        In [2]: store = ConversationStore(made=log.follow)
        In [3]: # every turn recorded in store.get(...) is now logged
    """

    def __init__(
        self,
        database: Callable[[], HistoryDatabase | None],
        *,
        warn: Callable[[str], object] = print_warning,
        retry_after: float = 30.0,
    ) -> None:
        self._database = database
        self._warn = warn
        self.retry_after = retry_after
        # One event at a time, so that a cut and the turn after it reach the file in order.
        self._lock = threading.Lock()
        self._logged: weakref.WeakKeyDictionary[Conversation, _Logged] = weakref.WeakKeyDictionary()
        self._paused_until = 0.0
        self._warned = False

    def follow(self, conversation: Conversation) -> None:
        """Log ``conversation`` from now on."""
        with self._lock:
            self._logged.setdefault(conversation, _Logged())
        conversation.subscribe(self._on_event, _KINDS)

    def logged_id(self, conversation: Conversation) -> int | None:
        """The id of ``conversation`` in the database, once a turn of it was logged."""
        with self._lock:
            logged = self._logged.get(conversation)
            return logged.id if logged is not None else None

    def bind(
        self, conversation: Conversation, conversation_id: int, database: HistoryDatabase
    ) -> None:
        """Continue logged conversation ``conversation_id`` of ``database`` with
        ``conversation``'s next turns (after resuming it: ``conversation`` holds its live
        turns)."""
        with self._lock:
            self._logged[conversation] = _Logged(conversation_id, len(conversation), database)

    # -- events ------------------------------------------------------------------------------

    def _on_event(self, event: ConversationEvent) -> None:
        conversation = event.conversation
        with self._lock:
            logged = self._logged.setdefault(conversation, _Logged())
            if event.kind == "turn_finished" and event.turn is not None:
                self._log_turn(conversation, logged, event.turn)
            elif event.kind == "replaced" and event.cell_id is not None:
                # A re-run cut the conversation: what follows the cut is replaced.
                kept = len(conversation)
                logged.synced = min(logged.synced, kept)
                logged.floor = min(logged.floor, kept)
                if logged.id is not None:
                    conversation_id, where = logged.id, logged.database
                    self._write(lambda db: db.cut(conversation_id, kept) if db is where else None)
            else:
                # Reset, or turns swapped in wholesale (an import): the next turn begins a new
                # logged conversation, with the turns it then follows.
                self._logged[conversation] = _Logged()

    def _log_turn(self, conversation: Conversation, logged: _Logged, turn: object) -> None:
        turns = conversation.turns
        position = next((n for n in range(len(turns) - 1, -1, -1) if turns[n] is turn), None)
        if position is None:  # gone already (a reset from another thread)
            return

        def write(db: HistoryDatabase) -> None:
            if logged.id is None or logged.database is not db:
                # Its first turn, or another file (the path changed): a new conversation there,
                # with the turns before this one.
                logged.id = db.start_conversation(conversation.name, conversation.system)
                logged.database, logged.synced = db, logged.floor
            start = min(logged.synced, position)
            db.write(logged.id, start, turns[start : position + 1], system=conversation.system)

        written = self._write(write)
        if written is None:  # the history is off: this turn is never to be written
            logged.floor = position + 1
        if written is not False:
            logged.synced = position + 1

    def _write(self, action: Callable[[HistoryDatabase], None]) -> bool | None:
        """Run ``action`` on the database: True if it did, None if the history is off, False
        if the database failed (warned about) or is left alone after a failure."""
        if time.monotonic() < self._paused_until:
            return False
        try:
            database = self._database()
            if database is None:
                return None
            action(database)
        except HistoryUnavailable as exc:
            self._paused_until = time.monotonic() + self.retry_after
            if not self._warned:
                self._warned = True
                self._warn(
                    f"aivvm: the history database could not be written ({exc}); this "
                    "conversation goes on in memory."
                )
            return False
        self._warned = False
        return True
