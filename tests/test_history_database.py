"""The history database on its own: real SQLite files in ``tmp_path``, no IPython.

Its schema and migrations, what it keeps of a turn, replaced turns, search, and the one-line
error of every file it cannot use.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from aivvm_magic.conversation.database import (
    MIGRATIONS,
    HistoryDatabase,
    HistoryUnavailable,
    fts_query,
)
from tests.conftest import make_turn


@pytest.fixture
def db(tmp_path: Path):
    database = HistoryDatabase(tmp_path / "history.db")
    yield database
    database.close()


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection of our own, to look at the file without the code under test."""
    return sqlite3.connect(path)


# -- the file and its schema ------------------------------------------------------------------


def test_a_new_file_is_private_in_wal_mode_and_at_the_current_version(tmp_path: Path):
    path = tmp_path / "new" / "dir" / "history.db"
    HistoryDatabase(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"conversations", "turns", "turns_text", "turns_live"} <= names


def test_migrations_run_once_each_in_order_and_keep_the_data(tmp_path: Path):
    path = tmp_path / "history.db"
    first = HistoryDatabase(path)
    number = first.start_conversation("kept")
    first.write(number, 0, [make_turn(prompt="from version 1")])
    first.close()
    # A later release adds a column; running its ALTER twice would fail, so opening the file
    # again proves it ran once.
    later = (*MIGRATIONS, ("ALTER TABLE conversations ADD COLUMN notes TEXT",))
    for _ in range(2):
        upgraded = HistoryDatabase(path, migrations=later)
        assert upgraded.version == len(MIGRATIONS) + 1
        assert upgraded.conversation(number)[1][0].prompt == "from version 1"
        upgraded.close()
    with raw(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(conversations)")]
    assert "notes" in columns


def test_a_version_1_file_gains_the_provenance_columns_and_keeps_its_turns(tmp_path: Path):
    path = tmp_path / "history.db"
    old = HistoryDatabase(path, migrations=MIGRATIONS[:1])
    number = old.start_conversation("from the first release")
    old.close()
    # A version 1 file has no provenance columns: its turn is written as that release wrote it.
    with raw(path) as connection:
        connection.execute(
            "INSERT INTO turns (conversation_id, position, prompt, reply, model, temperature, "
            "system, started, duration, complete, source) "
            "VALUES (?, 0, 'old', 'reply', 'gpt-3.5-turbo', 0.7, '', "
            "'2024-05-01T10:00:00.000+00:00', 1.0, 1, 'cell')",
            (number,),
        )
    made = make_turn(
        prompt="new",
        provider="openai",
        finish_reason="length",
        prompt_tokens=12,
        completion_tokens=34,
    )
    upgraded = HistoryDatabase(path)
    assert upgraded.version == 2
    upgraded.write(number, 1, [made])
    first, second = upgraded.conversation(number)[1]
    upgraded.close()
    assert first.prompt == "old"
    assert (first.provider, first.finish_reason, first.prompt_tokens) == (None, None, None)
    assert second == made


def writing_elsewhere(path: Path) -> sqlite3.Connection:
    """Another connection to ``path``, in rollback mode (as a file is before its first open),
    in the middle of a write: what a second kernel opening the same new file meets."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO elsewhere VALUES (1)")
    return other


def test_opening_waits_for_another_connection_that_writes_to_the_new_file(tmp_path: Path):
    path = tmp_path / "history.db"
    other = writing_elsewhere(path)
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    database = HistoryDatabase(path, timeout=5.0)
    waited = time.monotonic() - started
    other.close()
    assert database.version == len(MIGRATIONS)
    database.close()
    assert 0.25 <= waited < 5.0
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_opening_gives_up_after_its_timeout_in_one_line(tmp_path: Path):
    path = tmp_path / "history.db"
    other = writing_elsewhere(path)
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable, match="database is locked") as caught:
        HistoryDatabase(path, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3.0
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    other.close()


def test_a_migration_that_fails_leaves_the_file_at_its_old_version(tmp_path: Path):
    path = tmp_path / "history.db"
    HistoryDatabase(path).close()
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x)", "THIS IS NOT SQL"))
    with pytest.raises(HistoryUnavailable, match="syntax error"):
        HistoryDatabase(path, migrations=broken)
    with raw(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'extra'").fetchall()


def test_a_file_from_a_newer_version_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "history.db"
    HistoryDatabase(path).close()
    with raw(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    before = path.read_bytes()
    with pytest.raises(HistoryUnavailable) as caught:
        HistoryDatabase(path)
    message = str(caught.value)
    assert str(path) in message and "version 7" in message and "newer" in message
    assert "\n" not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b"this is not a database, just some text\n" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["text", "damaged-header"],
)
def test_a_corrupt_file_is_one_line_naming_it(tmp_path: Path, content: bytes):
    path = tmp_path / "history.db"
    path.write_bytes(content)
    with pytest.raises(HistoryUnavailable) as caught:
        HistoryDatabase(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "not a database" in message or "malformed" in message
    assert path.read_bytes() == content


def test_a_directory_in_place_of_the_file_is_one_line(tmp_path: Path):
    (tmp_path / "history.db").mkdir()
    with pytest.raises(HistoryUnavailable, match="unable to open"):
        HistoryDatabase(tmp_path / "history.db")


# -- what it keeps ----------------------------------------------------------------------------


def test_every_field_of_a_turn_comes_back_exactly(db: HistoryDatabase):
    turns = [
        make_turn(),
        make_turn(
            prompt="Ünïcode ✓ and\nlines\r\n",
            reply="partial …",
            complete=False,
            error="stopped",
            source="panel",
            cell_id="cell-7",
            temperature=0,
            duration=0.0,
            system="",
        ),
    ]
    number = db.start_conversation("all fields", system="Be terse.")
    db.write(number, 0, turns, system="Be terse.")
    logged, back = db.conversation(number)
    assert back == turns
    assert (logged.name, logged.system, logged.turns, logged.first_prompt) == (
        "all fields",
        "Be terse.",
        2,
        turns[0].prompt,
    )


def test_a_cut_marks_turns_replaced_and_the_live_turns_are_the_conversation(db: HistoryDatabase):
    number = db.start_conversation("default")
    db.write(number, 0, [make_turn(prompt=f"turn {n}") for n in range(4)])
    db.cut(number, 2)
    db.write(number, 2, [make_turn(prompt="turn 2, again")])
    _, live = db.conversation(number)
    assert [t.prompt for t in live] == ["turn 0", "turn 1", "turn 2, again"]
    # The log keeps what was said, marked.
    recent = db.recent(limit=10, conversation_id=number)
    assert [(r.turn.prompt, r.position, r.replaced) for r in recent] == [
        ("turn 0", 0, False),
        ("turn 1", 1, False),
        ("turn 2", 2, True),
        ("turn 3", 3, True),
        ("turn 2, again", 2, False),
    ]
    assert db.count_turns() == 5


def test_a_write_at_a_position_replaces_the_live_turns_from_there(db: HistoryDatabase):
    number = db.start_conversation("default")
    db.write(number, 0, [make_turn(prompt="a"), make_turn(prompt="b")])
    db.write(number, 1, [make_turn(prompt="b2"), make_turn(prompt="c2")])
    assert [t.prompt for t in db.conversation(number)[1]] == ["a", "b2", "c2"]


def test_recent_turns_are_the_last_logged_across_conversations_oldest_first(db: HistoryDatabase):
    one, two = db.start_conversation("one"), db.start_conversation("two")
    db.write(one, 0, [make_turn(prompt="1a")])
    db.write(two, 0, [make_turn(prompt="2a")])
    db.write(one, 1, [make_turn(prompt="1b")])
    assert [(r.name, r.turn.prompt) for r in db.recent(limit=2)] == [("two", "2a"), ("one", "1b")]
    assert [c.name for c in db.conversations()] == ["one", "two"]  # written to last, first


def test_an_unknown_conversation_is_a_key_error(db: HistoryDatabase):
    with pytest.raises(KeyError):
        db.conversation(12345)


# -- search -----------------------------------------------------------------------------------


def test_search_needs_every_word_stems_them_and_marks_them(db: HistoryDatabase):
    number = db.start_conversation("default")
    db.write(
        number,
        0,
        [
            make_turn(prompt="What is a Python generator?", reply="A function that yields."),
            make_turn(prompt="And a coroutine?", reply="Generators that receive values."),
            make_turn(prompt="Tell me about rivers", reply="Rivers flow."),
        ],
    )
    hits = db.search("generators yield")
    assert [h.logged.turn.prompt for h in hits] == ["What is a Python generator?"]
    assert "[generator]" in hits[0].prompt and "[yields]" in hits[0].reply
    assert len(db.search("generator")) == 2
    assert db.search("generator rivers") == []
    assert [h.logged.position for h in db.search("RIVER")] == [2]


@pytest.mark.parametrize(
    "words",
    ['"', "AND", "OR NOT", "a*", "(", "col:umn", "NEAR(a b)", "^x", "'; DROP TABLE turns; --"],
)
def test_any_words_are_searched_as_words_never_as_query_syntax(db: HistoryDatabase, words: str):
    number = db.start_conversation("default")
    db.write(number, 0, [make_turn(prompt=f"text with {words} inside")])
    db.search(words)  # no syntax error, whatever it finds
    assert db.count_turns() == 1


def test_search_without_words_is_refused():
    with pytest.raises(ValueError):
        fts_query("   ")


def test_a_closed_database_says_so(tmp_path: Path):
    database = HistoryDatabase(tmp_path / "history.db")
    database.close()
    with pytest.raises(HistoryUnavailable, match="closed"):
        database.recent()
