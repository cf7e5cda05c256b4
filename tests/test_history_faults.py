"""A history database that cannot be written never fails a cell: one warning line, and the
conversation goes on in memory. Real files in ``tmp_path``, a real second process holding a
lock, an immutable file, a real kernel."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aivvm_magic.conversation.database import DEFAULT_TIMEOUT, HistoryDatabase
from aivvm_magic.magics import AivvmError, magics_for


def use(ip, path: Path | str) -> None:
    magics_for(ip).history_path = str(path)


def ask_twice(ip, reference) -> None:
    """Two cells on one conversation; the second's request must carry the first turn."""
    ip.run_cell_magic("aivvm", "", "first")
    ip.run_cell_magic("aivvm", "", "second")
    assert [m["content"] for m in reference.requests[-1]["messages"]] == [
        "first",
        "first",
        "second",
    ]
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["first", "second"]


def the_one_warning(err: str, *parts: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("aivvm: the history database could not be written (")
    assert line.endswith("); this conversation goes on in memory.")
    for part in parts:
        assert part in line
    return line


def logged_prompts(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT prompt FROM turns ORDER BY id")]


@pytest.mark.parametrize(
    "content",
    [b"not a database at all\n" * 200, b"SQLite format 3\x00" + bytes(range(256)) * 16],
    ids=["text", "damaged"],
)
def test_a_corrupt_file_warns_once_and_the_cells_go_on(ip, reference, tmp_path, capsys, content):
    path = tmp_path / "history.db"
    path.write_bytes(content)
    use(ip, path)
    ask_twice(ip, reference)
    the_one_warning(capsys.readouterr().err, str(path))
    assert path.read_bytes() == content  # nothing "repaired" away
    with pytest.raises(AivvmError) as caught:
        ip.run_line_magic("aivvm", "log")
    assert str(caught.value).startswith("The history database cannot be used: ")
    assert "\n" not in str(caught.value)


def test_a_schema_from_a_newer_version_warns_and_is_left_alone(ip, reference, tmp_path, capsys):
    path = tmp_path / "history.db"
    HistoryDatabase(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 9")
    use(ip, path)
    ask_twice(ip, reference)
    the_one_warning(capsys.readouterr().err, "version 9", "newer")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM turns").fetchone()[0] == 0


def test_a_place_that_cannot_be_created_warns_once(ip, reference, capsys):
    use(ip, "/proc/aivvm-cannot-be-here/history.db")
    ask_twice(ip, reference)
    the_one_warning(capsys.readouterr().err, "/proc/aivvm-cannot-be-here")


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process holds the database's write lock until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            'c.execute("INSERT INTO conversations (name, created, updated) '
            "VALUES ('the other process', 'x', 'x')\")\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
            "c.execute('ROLLBACK')\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate("", timeout=30)


def test_a_database_locked_by_another_process_warns_then_catches_up(
    ip, reference, tmp_path, capsys
):
    path = tmp_path / "history.db"
    use(ip, path)
    ip.run_cell_magic("aivvm", "", "zero")  # the file exists, and this session has it open
    magics_for(ip).session.history.log.retry_after = 0.0
    with write_lock(path):
        # The first cell waits out the lock, warns and goes on; the second leaves the file
        # alone for retry_after (0 here) and meets the lock again, without a second warning.
        started = time.monotonic()
        ip.run_cell_magic("aivvm", "", "first")
        waited = time.monotonic() - started
        ip.run_cell_magic("aivvm", "", "second")
    assert DEFAULT_TIMEOUT <= waited < DEFAULT_TIMEOUT + 5
    the_one_warning(capsys.readouterr().err, str(path), "database is locked")
    assert logged_prompts(path) == ["zero"]
    # The lock is gone: the next turn writes the turns it missed too, in their places.
    ip.run_cell_magic("aivvm", "", "third")
    assert logged_prompts(path) == ["zero", "first", "second", "third"]
    live = magics_for(ip).session.history.database().conversation(1)[1]
    assert live == magics_for(ip).chats.get("default").turns
    assert capsys.readouterr().err == ""


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (which ignores permission bits)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if made.returncode:
            pytest.skip(f"chattr +i is not available here: {made.stderr.decode().strip()}")
        undo = ["chattr", "-i", str(path)]
    else:
        path.chmod(0o400)
        undo = None
    try:
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            path.chmod(0o600)


def test_a_read_only_database_warns_once_and_the_cells_go_on(ip, reference, tmp_path, capsys):
    path = tmp_path / "history.db"
    database = HistoryDatabase(path)
    database.start_conversation("from before")
    database.close()
    before = path.read_bytes()
    use(ip, path)
    with read_only(path):
        ask_twice(ip, reference)
        magics_for(ip).session.close()
    the_one_warning(capsys.readouterr().err, str(path), "readonly")
    assert path.read_bytes() == before


def test_the_warning_reaches_the_cell_in_a_kernel(tmp_path, reference, monkeypatch):
    path = tmp_path / "history.db"
    path.write_bytes(b"garbage" * 100)
    monkeypatch.setenv("AIVVM_HISTORY_PATH", str(path))
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {reference.url!r}"
            ),
            nbformat.v4.new_code_cell("%%aivvm\nhello"),
            nbformat.v4.new_code_cell("%%aivvm\nagain"),
        ]
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    first, second = nb.cells[1].outputs, nb.cells[2].outputs
    warnings = [o.text for o in first if o.output_type == "stream" and o.name == "stderr"]
    assert len(warnings) == 1
    the_one_warning(warnings[0], str(path), "file is not a database")
    assert not [o for o in first + second if o.output_type == "error"]
    assert not [o for o in second if o.output_type == "stream" and o.name == "stderr"]
    assert any("again" in str(o.get("data", {})) for o in second)
