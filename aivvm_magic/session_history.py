"""A session's history database: :class:`SessionHistory`.

The database is the one the settings name (``AivvmMagics.history_path``, else
:func:`~aivvm_magic.conversation.database.default_path`), opened on first use and opened
again when the path changes; ``AivvmMagics.history = False`` turns logging off. Its
:class:`~aivvm_magic.conversation.turn_log.TurnLog` writes every turn of the session's
conversations; ``%aivvm log`` and ``resume`` read it through :meth:`SessionHistory.database`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .conversation import Conversation
from .conversation.database import HistoryDatabase, HistoryUnavailable, default_path
from .conversation.turn_log import TurnLog
from .errors import AivvmError
from .settings import Settings

__all__ = ["SessionHistory"]


class SessionHistory:
    """The history database of one session and the log that writes its turns."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Guards the open database: the shell thread and panel senders ask for it.
        self._lock = threading.Lock()
        self._database: HistoryDatabase | None = None
        self._closed = False
        #: Writes each turn of the conversations it follows.
        self.log = TurnLog(self._for_logging)

    def path(self) -> Path:
        """The database file the settings name now (``~`` expanded, made absolute)."""
        configured = self._settings.history_path
        if not configured:
            return default_path()
        return Path(os.path.abspath(os.path.expanduser(configured)))

    def follow(self, conversation: Conversation) -> None:
        """Log ``conversation``'s turns (the store calls this for each one it makes)."""
        self.log.follow(conversation)

    def _for_logging(self) -> HistoryDatabase | None:
        # After close (the extension unloaded), a reply still streaming is not logged.
        if not self._settings.history or self._closed:
            return None
        return self._open()

    def _open(self) -> HistoryDatabase:
        path = self.path()
        with self._lock:
            if self._closed:
                raise HistoryUnavailable("the session is closed")
            database = self._database
            if database is not None and database.path == path:
                return database
            if database is not None:
                database.close()
                self._database = None
            self._database = HistoryDatabase(path)
            return self._database

    def database(self) -> HistoryDatabase:
        """The database, for reading it; :class:`AivvmError` (one line) if it cannot be
        opened. It is read even when logging is off."""
        try:
            return self._open()
        except HistoryUnavailable as exc:
            raise AivvmError(f"The history database cannot be used: {exc}") from None

    def exists(self) -> bool:
        """Whether the database file exists: reading a history that does not, creates none."""
        return self.path().exists()

    def close(self) -> None:
        """Close the database (the session is closing)."""
        with self._lock:
            self._closed = True
            database, self._database = self._database, None
        if database is not None:
            database.close()
