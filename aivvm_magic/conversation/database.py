"""The history database: every turn of every conversation, kept in SQLite across kernels.

A :class:`HistoryDatabase` is one SQLite file (standard library ``sqlite3``) that any number of
kernels write at once: it runs in WAL mode, so readers never wait for writers, and each write
is one short ``BEGIN IMMEDIATE`` transaction that waits its turn (``timeout``) rather than
failing. Its schema is versioned (``PRAGMA user_version``) and brought up to date by
:data:`MIGRATIONS` when the file is opened, inside one transaction, so two kernels opening a
new file at once migrate it once.

A logged conversation has an id (given when its first turn is logged) and its turns at their
positions, 0 first. When a re-run cell cuts a conversation, the cut turns stay in the log,
marked replaced; the live turns (not replaced) are the conversation as it stands, which is
what :meth:`HistoryDatabase.conversation` gives back to resume it. Prompts and replies are
indexed for full-text search (FTS5).

Every failure (a corrupt, locked, read-only or missing file, a schema from a newer version)
raises :class:`HistoryUnavailable` with one line naming the file. Standard library only.

Examples
--------
::

    In [1]: db = HistoryDatabase("history.db")
    In [2]: number = db.start_conversation("default")
    In [3]: db.write(number, 0, [turn])
    In [4]: [hit.logged.turn.prompt for hit in db.search("capital")]
    Out[4]: ['What is the capital of France?']
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .turn import Turn, utc_now

__all__ = [
    "DEFAULT_TIMEOUT",
    "MIGRATIONS",
    "HistoryDatabase",
    "HistoryUnavailable",
    "LoggedConversation",
    "LoggedTurn",
    "SearchHit",
    "default_path",
    "fts_query",
]

#: Seconds a write waits for another kernel's write to end before giving up.
DEFAULT_TIMEOUT = 2.0

#: The schema, one migration per version: ``MIGRATIONS[n]`` takes a database from version ``n``
#: to ``n + 1``. Append new migrations; never change one that was released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            system TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )""",
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            reply TEXT NOT NULL,
            model TEXT NOT NULL,
            temperature REAL NOT NULL,
            system TEXT NOT NULL,
            started TEXT NOT NULL,
            duration REAL NOT NULL,
            complete INTEGER NOT NULL,
            source TEXT NOT NULL,
            cell_id TEXT,
            error TEXT,
            replaced TEXT
        )""",
        # The live turns of a conversation, in order: what resuming and cutting look up.
        """CREATE INDEX turns_live ON turns (conversation_id, position)
            WHERE replaced IS NULL""",
        """CREATE VIRTUAL TABLE turns_text USING fts5 (
            prompt, reply, content = 'turns', content_rowid = 'id',
            tokenize = 'porter unicode61 remove_diacritics 2'
        )""",
        """CREATE TRIGGER turns_text_insert AFTER INSERT ON turns BEGIN
            INSERT INTO turns_text (rowid, prompt, reply)
            VALUES (new.id, new.prompt, new.reply);
        END""",
        """CREATE TRIGGER turns_text_delete AFTER DELETE ON turns BEGIN
            INSERT INTO turns_text (turns_text, rowid, prompt, reply)
            VALUES ('delete', old.id, old.prompt, old.reply);
        END""",
        """CREATE TRIGGER turns_text_update AFTER UPDATE OF prompt, reply ON turns BEGIN
            INSERT INTO turns_text (turns_text, rowid, prompt, reply)
            VALUES ('delete', old.id, old.prompt, old.reply);
            INSERT INTO turns_text (rowid, prompt, reply)
            VALUES (new.id, new.prompt, new.reply);
        END""",
    ),
    # Version 2: what a turn says of how it was made (export format version 2). Turns logged
    # before have NULL here, as turns loaded from a version 1 export do.
    (
        "ALTER TABLE turns ADD COLUMN provider TEXT",
        "ALTER TABLE turns ADD COLUMN finish_reason TEXT",
        "ALTER TABLE turns ADD COLUMN prompt_tokens INTEGER",
        "ALTER TABLE turns ADD COLUMN completion_tokens INTEGER",
    ),
)

#: The turn fields, as columns of ``turns`` (named as the :class:`Turn` fields).
_TURN_FIELDS = (
    "prompt",
    "reply",
    "model",
    "temperature",
    "system",
    "started",
    "duration",
    "complete",
    "source",
    "cell_id",
    "error",
    "provider",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
)
_TURN_COLUMNS = ", ".join(_TURN_FIELDS)
_SELECT_TURN = "SELECT t.conversation_id, c.name, t.position, t.replaced IS NOT NULL, " + ", ".join(
    f"t.{field}" for field in _TURN_FIELDS
)


class HistoryUnavailable(Exception):
    """The history database cannot be used: a cell shows it as one warning line and goes on;
    ``%aivvm log`` and ``resume`` fail with it."""


def default_path() -> Path:
    """Where the history is kept unless configured: ``aivvm/history.db`` in Jupyter's data
    directory (``jupyter --data-dir``; ``$JUPYTER_DATA_DIR`` moves it)."""
    try:
        from jupyter_core.paths import jupyter_data_dir
    except ImportError:
        # A plain IPython without Jupyter: where jupyter_core would put it on Linux.
        base = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(
            os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter"
        )
        return Path(base) / "aivvm" / "history.db"
    return Path(jupyter_data_dir()) / "aivvm" / "history.db"


@dataclass(frozen=True)
class LoggedTurn:
    """A turn as the database holds it: which conversation, where in it, and whether a re-run
    replaced it since."""

    conversation_id: int
    name: str
    #: The turn's place in its conversation, 0 first.
    position: int
    replaced: bool
    turn: Turn


@dataclass(frozen=True)
class LoggedConversation:
    """A logged conversation: its id, name, when it began and was last written, its live turns
    and the first prompt (to recognise it by)."""

    id: int
    name: str
    system: str | None
    created: str
    updated: str
    turns: int
    first_prompt: str


@dataclass(frozen=True)
class SearchHit:
    """A turn that matched a search, with the matching part of its prompt and its reply
    (matched words in ``[brackets]``)."""

    logged: LoggedTurn
    prompt: str
    reply: str


def fts_query(words: str) -> str:
    """An FTS5 query that finds turns holding every one of ``words``, whatever characters
    they contain (each word is quoted, so none is read as FTS5 syntax)."""
    terms = ['"' + word.replace('"', '""') + '"' for word in words.split()]
    if not terms:
        raise ValueError("nothing to search for")
    return " ".join(terms)


def _turn_of(row: Sequence[Any]) -> LoggedTurn:
    conversation_id, name, position, replaced, *fields = row
    values = dict(zip(_TURN_FIELDS, fields, strict=True))
    values["complete"] = bool(values["complete"])
    return LoggedTurn(conversation_id, name, position, bool(replaced), Turn(**values))


def _turn_row(conversation_id: int, position: int, turn: Turn) -> tuple[Any, ...]:
    # A bool is stored as the integer it is (complete: 0 or 1).
    return (conversation_id, position, *(getattr(turn, field) for field in _TURN_FIELDS))


def migrate(connection: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> int:
    """Bring the schema of ``connection`` (in autocommit mode) up to ``len(migrations)``, in
    one transaction; return the version. A newer schema raises :class:`HistoryUnavailable`."""
    target = len(migrations)

    def version() -> int:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])

    def refuse_newer(found: int) -> None:
        if found > target:
            raise HistoryUnavailable(
                f"its schema is version {found}, written by a newer aivvm_magic (this one "
                f"reads up to {target})"
            )

    found = version()
    refuse_newer(found)
    if found == target:
        return found
    # IMMEDIATE takes the write lock first: another kernel migrating now finishes, then this
    # one sees the new version and has nothing left to do.
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = version()
        refuse_newer(found)
        for steps in migrations[found:]:
            for statement in steps:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {target:d}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return target


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, waiting up to ``timeout`` seconds for another connection.

    A file still in rollback mode (a new one) changes mode only while no other connection
    writes to it, and SQLite answers "database is locked" at once rather than wait its busy
    timeout: so two kernels opening the same new file together would see one of them fail.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _create_private(path: Path) -> None:
    # Conversations are private: a new file is readable by its owner only (SQLite gives its
    # -wal and -shm files the same permissions).
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class HistoryDatabase:
    """One history file, open for this process; thread-safe.

    Opening creates the file (and its directory) if need be, switches it to WAL and migrates
    its schema. Every method raises :class:`HistoryUnavailable` when SQLite or the file system
    fails, with the file's path and SQLite's reason in one line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        with self._guard():
            _create_private(self.path)
            # Autocommit (isolation_level=None): the transactions are the ones written here.
            connection = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                _switch_to_wal(connection, timeout)
                # In WAL mode, NORMAL never corrupts; a power cut may lose the last commits.
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute("PRAGMA foreign_keys = ON")
                self.version = migrate(connection, migrations)
            except BaseException:
                connection.close()
                raise
            self._connection = connection

    def __repr__(self) -> str:
        return f"<HistoryDatabase {str(self.path)!r}>"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise HistoryUnavailable(f"{self.path}: {exc}") from None
        except HistoryUnavailable as exc:
            raise HistoryUnavailable(f"{self.path}: {exc}") from None

    @contextlib.contextmanager
    def _using(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, for one read or one write transaction."""
        with self._lock, self._guard():
            connection = self._connection
            if connection is None:
                raise HistoryUnavailable("closed")
            if not write:
                yield connection
                return
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def close(self) -> None:
        """Close the file; later calls raise :class:`HistoryUnavailable`."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    # -- writing ----------------------------------------------------------------------------

    def start_conversation(self, name: str, system: str | None = None) -> int:
        """Log a new conversation called ``name``; its id."""
        now = utc_now()
        with self._using(write=True) as db:
            cursor = db.execute(
                "INSERT INTO conversations (name, system, created, updated) VALUES (?, ?, ?, ?)",
                (name, system, now, now),
            )
            return int(cursor.lastrowid or 0)

    def write(
        self,
        conversation_id: int,
        position: int,
        turns: Sequence[Turn],
        *,
        system: str | None = None,
    ) -> None:
        """Log ``turns`` at ``position`` and after in conversation ``conversation_id``, in one
        transaction; the live turns they take the place of are marked replaced."""
        now = utc_now()
        rows = [_turn_row(conversation_id, position + n, turn) for n, turn in enumerate(turns)]
        with self._using(write=True) as db:
            self._replace_from(db, conversation_id, position, now)
            db.executemany(
                f"INSERT INTO turns (conversation_id, position, {_TURN_COLUMNS}) "
                f"VALUES ({', '.join('?' * (len(_TURN_FIELDS) + 2))})",
                rows,
            )
            db.execute(
                "UPDATE conversations SET updated = ?, system = ? WHERE id = ?",
                (now, system, conversation_id),
            )

    def cut(self, conversation_id: int, position: int) -> None:
        """Mark the live turns at ``position`` and after replaced (a re-run cell cut them)."""
        with self._using(write=True) as db:
            self._replace_from(db, conversation_id, position, utc_now())

    @staticmethod
    def _replace_from(
        db: sqlite3.Connection, conversation_id: int, position: int, now: str
    ) -> None:
        db.execute(
            "UPDATE turns SET replaced = ? "
            "WHERE conversation_id = ? AND position >= ? AND replaced IS NULL",
            (now, conversation_id, position),
        )

    # -- reading ----------------------------------------------------------------------------

    def conversations(self, limit: int = 20) -> list[LoggedConversation]:
        """The ``limit`` conversations written to last, the latest first."""
        with self._using() as db:
            rows = db.execute(
                "SELECT c.id, c.name, c.system, c.created, c.updated, "
                "  (SELECT count(*) FROM turns t "
                "   WHERE t.conversation_id = c.id AND t.replaced IS NULL), "
                "  coalesce((SELECT t.prompt FROM turns t "
                "   WHERE t.conversation_id = c.id AND t.replaced IS NULL "
                "   ORDER BY t.position LIMIT 1), '') "
                # The latest turn's id, not the time: ids keep the order of the writes even
                # within a millisecond, across kernels.
                "FROM conversations c ORDER BY coalesce((SELECT max(t.id) FROM turns t "
                "  WHERE t.conversation_id = c.id AND t.replaced IS NULL), 0) DESC, c.id DESC "
                "LIMIT ?",
                (limit,),
            ).fetchall()
        return [LoggedConversation(*row) for row in rows]

    def conversation(self, conversation_id: int) -> tuple[LoggedConversation, list[Turn]]:
        """Conversation ``conversation_id`` and its live turns, in order; KeyError if none."""
        with self._using() as db:
            row = db.execute(
                "SELECT id, name, system, created, updated FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise KeyError(conversation_id)
            rows = db.execute(
                f"{_SELECT_TURN} FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                "WHERE t.conversation_id = ? AND t.replaced IS NULL ORDER BY t.position",
                (conversation_id,),
            ).fetchall()
        turns = [_turn_of(r).turn for r in rows]
        first = turns[0].prompt if turns else ""
        return LoggedConversation(*row, len(turns), first), turns

    def recent(self, limit: int = 10, conversation_id: int | None = None) -> list[LoggedTurn]:
        """The last ``limit`` turns logged (of one conversation, if given), oldest first;
        replaced turns included and marked."""
        where = "" if conversation_id is None else "WHERE t.conversation_id = ? "
        values = () if conversation_id is None else (conversation_id,)
        with self._using() as db:
            rows = db.execute(
                f"{_SELECT_TURN} FROM turns t JOIN conversations c ON c.id = t.conversation_id "
                f"{where}ORDER BY t.id DESC LIMIT ?",
                (*values, limit),
            ).fetchall()
        return [_turn_of(row) for row in reversed(rows)]

    def search(self, words: str, limit: int = 10) -> list[SearchHit]:
        """The turns whose prompt or reply holds every one of ``words`` (stemmed: ``replies``
        finds ``reply``), the best matches first; a ValueError if there are no words."""
        query = fts_query(words)
        with self._using() as db:
            # The best matches are found in the index alone (FTS5 ranks them without reading
            # the turns), then joined to their turns.
            rows = db.execute(
                f"{_SELECT_TURN}, best.prompt, best.reply FROM ("
                "  SELECT rowid, rank, "
                "  snippet(turns_text, 0, '[', ']', '…', 12) AS prompt, "
                "  snippet(turns_text, 1, '[', ']', '…', 12) AS reply "
                "  FROM turns_text WHERE turns_text MATCH ? ORDER BY rank LIMIT ?"
                ") AS best JOIN turns t ON t.id = best.rowid "
                "JOIN conversations c ON c.id = t.conversation_id ORDER BY best.rank",
                (query, limit),
            ).fetchall()
        return [SearchHit(_turn_of(row[:-2]), row[-2], row[-1]) for row in rows]

    def count_turns(self) -> int:
        """How many turns are logged, replaced ones included."""
        with self._using() as db:
            return int(db.execute("SELECT count(*) FROM turns").fetchone()[0])
