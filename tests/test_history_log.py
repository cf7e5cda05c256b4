"""Every turn logged to the history database, and ``%aivvm log`` and ``resume`` on it, through
a real ``InteractiveShell`` and the reference server; the database is a real file in
``tmp_path``, read back with a plain ``sqlite3`` connection of the test's own."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from aivvm_magic import ChatPanel
from aivvm_magic.conversation.database import default_path
from aivvm_magic.magics import AivvmError, magics_for


@pytest.fixture
def history(ip, tmp_path: Path) -> Path:
    """The database of this test; ``%config`` so that a reloaded extension keeps it."""
    path = tmp_path / "history.db"
    ip.run_line_magic("config", f"AivvmMagics.history_path = {str(path)!r}")
    return path


def rows(path: Path, where: str = "") -> list[tuple]:
    """(conversation name, position, prompt, reply, source, replaced?) of every logged turn."""
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT c.name, t.position, t.prompt, t.reply, t.source, t.replaced IS NOT NULL "
            "FROM turns t JOIN conversations c ON c.id = t.conversation_id "
            f"{where} ORDER BY t.id"
        ).fetchall()


def conversation_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM conversations ORDER BY id")]


def restart(ip) -> None:
    """What a kernel restart does to the extension: a new instance, a new session (set up as
    the ``ip`` fixture sets it up)."""
    base_url = magics_for(ip).base_url
    ip.run_line_magic("unload_ext", "aivvm_magic")
    ip.run_line_magic("load_ext", "aivvm_magic")
    magics = magics_for(ip)
    magics.base_url = base_url
    magics.display_mode = "text"
    magics.retries = 0


# -- where it lives -----------------------------------------------------------------------------


def test_the_tests_never_log_into_the_users_data_directory(ip, history_in_a_temporary_directory):
    path = magics_for(ip).session.history.path()
    assert path == history_in_a_temporary_directory
    assert os.environ["AIVVM_HISTORY_PATH"] == str(path)  # kernels started by tests inherit it
    assert path != default_path()
    assert not path.is_relative_to(Path.home())


def test_the_default_is_in_jupyters_data_directory(ip, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    assert default_path() == tmp_path / "jupyter-data" / "aivvm" / "history.db"
    magics = magics_for(ip)
    magics.history_path = ""
    assert magics.session.history.path() == default_path()
    magics.history_path = "~/notes/chats.db"
    assert magics.session.history.path() == Path.home() / "notes" / "chats.db"


# -- what is logged ---------------------------------------------------------------------------


def test_every_cell_turn_is_logged_when_it_is_recorded(ip, history, capsys):
    ip.run_cell_magic("aivvm", "", "first question")
    assert rows(history) == [("default", 0, "first question", "first question", "cell", 0)]
    ip.run_cell_magic("aivvm", "", "second question")
    ip.run_cell_magic("aivvm", "-c other", "elsewhere")
    ip.run_cell_magic("aivvm", "--no-history", "a one-off, never recorded")
    assert [r[:3] for r in rows(history)] == [
        ("default", 0, "first question"),
        ("default", 1, "second question"),
        ("other", 0, "elsewhere"),
    ]
    assert "history" not in capsys.readouterr().err


def test_a_rerun_cell_marks_its_old_turns_replaced(ip, history):
    ip.run_cell("%%aivvm\none", cell_id="cell-1")
    ip.run_cell("%%aivvm\ntwo", cell_id="cell-2")
    ip.run_cell("%%aivvm\nthree", cell_id="cell-3")
    ip.run_cell("%%aivvm\ntwo, edited", cell_id="cell-2")
    assert [(r[1], r[2], r[5]) for r in rows(history)] == [
        (0, "one", 0),
        (1, "two", 1),
        (2, "three", 1),
        (1, "two, edited", 0),
    ]
    # One conversation in the log, and its live turns are the conversation in memory.
    (number,) = conversation_ids(history)
    live = magics_for(ip).session.history.database().conversation(number)[1]
    assert live == magics_for(ip).chats.get("default").turns


def test_a_partial_turn_is_logged_as_partial(ip, history, fault):
    from tests.faultserver import Truncated

    fault.enqueue(Truncated(chunks=[b"half a ", b"reply"], after=10, framing="chunked"))
    with pytest.raises(AivvmError):
        ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "cut me short")
    with sqlite3.connect(history) as connection:
        ((reply, complete, error),) = connection.execute(
            "SELECT reply, complete, error FROM turns"
        ).fetchall()
    assert (reply, complete) == ("half a reply"[: len(reply)], 0) and reply and error


def test_panel_turns_are_logged_beside_the_cells(ip, history):
    ip.run_cell_magic("aivvm", "", "from a cell")
    panel = ChatPanel("default", magics=magics_for(ip))
    try:
        assert panel.send("from the panel") == "from the panel"
    finally:
        panel.close()
    assert [(r[1], r[2], r[4]) for r in rows(history)] == [
        (0, "from a cell", "cell"),
        (1, "from the panel", "panel"),
    ]


def test_reset_and_new_begin_a_new_logged_conversation(ip, history):
    ip.run_cell_magic("aivvm", "", "before the reset")
    ip.run_line_magic("aivvm", "reset")
    ip.run_cell_magic("aivvm", "", "after the reset")
    ip.run_cell_magic("aivvm", "--new", "afresh")
    first, second, third = conversation_ids(history)
    database = magics_for(ip).session.history.database()
    assert [t.prompt for t in database.conversation(first)[1]] == ["before the reset"]
    assert [t.prompt for t in database.conversation(second)[1]] == ["after the reset"]
    assert [t.prompt for t in database.conversation(third)[1]] == ["afresh"]


def test_an_imported_conversation_is_logged_whole_with_its_next_turn(ip, history, tmp_path):
    ip.run_cell_magic("aivvm", "-c source", "one")
    ip.run_cell_magic("aivvm", "-c source", "two")
    ip.run_line_magic("aivvm", f"export {tmp_path / 'source.json'} -c source")
    ip.run_line_magic("aivvm", f"import {tmp_path / 'source.json'} -c copy")
    ip.run_cell_magic("aivvm", "-c copy", "three")
    assert [r[:3] for r in rows(history, "WHERE c.name = 'copy'")] == [
        ("copy", 0, "one"),
        ("copy", 1, "two"),
        ("copy", 2, "three"),
    ]


def test_history_off_writes_nothing_and_makes_no_file(ip, history, capsys):
    magics_for(ip).history = False
    ip.run_cell_magic("aivvm", "", "not logged")
    # Nor does reading a history that is not there.
    ip.run_line_magic("aivvm", "log --search anything")
    assert capsys.readouterr().out.endswith(f"The history is empty ({history}).\n")
    for line in ("log 1", "resume 1"):
        with pytest.raises(AivvmError, match="No conversation 1 in the history \\(none yet\\)"):
            ip.run_line_magic("aivvm", line)
    assert not history.exists()
    magics_for(ip).history = True
    ip.run_cell_magic("aivvm", "", "logged")
    # The turn made while it was off is never written, not even as history of the next.
    assert [(r[1], r[2]) for r in rows(history)] == [(1, "logged")]


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_aivvm_history_in_the_environment_turns_it_off(shell, reference, monkeypatch, value):
    monkeypatch.setenv("AIVVM_HISTORY", value)
    shell.run_line_magic("load_ext", "aivvm_magic")
    try:
        assert magics_for(shell).history is False
    finally:
        shell.run_line_magic("unload_ext", "aivvm_magic")


def test_a_new_path_takes_the_next_turns(ip, history, tmp_path):
    ip.run_cell_magic("aivvm", "", "into the first file")
    other = tmp_path / "other.db"
    magics_for(ip).history_path = str(other)
    ip.run_cell_magic("aivvm", "", "into the second file")
    assert [r[2] for r in rows(history)] == ["into the first file"]
    # The second file holds the conversation as it stands, its earlier turn included.
    assert [r[2] for r in rows(other)] == ["into the first file", "into the second file"]


# -- %aivvm log -------------------------------------------------------------------------------


def test_log_shows_the_last_turns_with_their_conversation(ip, history, capsys):
    ip.run_line_magic("aivvm", "log")
    assert capsys.readouterr().out == f"The history is empty ({history}).\n"
    for n in range(3):
        ip.run_cell_magic("aivvm", "", f"question {n} " + "long " * 60)
    ip.run_cell_magic("aivvm", "-c other", "elsewhere")
    capsys.readouterr()
    ip.run_line_magic("aivvm", "log -n 2")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    assert out[0].startswith("#1 'default', turn 3 · ") and out[0].endswith(
        " · gpt-3.5-turbo · cell"
    )
    assert out[1].startswith("  You: question 2 long") and out[1].endswith("…")
    assert len(out[1]) == len("  You: ") + 160
    assert out[3:] == [
        out[3],
        "  You: elsewhere",
        "  Assistant: elsewhere",
    ] and out[3].startswith("#2 'other', turn 1 · ")


def test_log_of_one_conversation_prints_every_turn_in_full(ip, history, capsys):
    ip.run_cell_magic("aivvm", "", "line one\nline two")
    capsys.readouterr()
    ip.run_line_magic("aivvm", "log 1")
    out = capsys.readouterr().out
    assert out.startswith("#1 'default', 1 turns, ")
    assert "%aivvm resume 1 continues it." in out
    assert "[1] You (gpt-3.5-turbo, " in out and "line one\nline two\n" in out
    with pytest.raises(AivvmError, match=f"No conversation 7 in the history \\({history}\\)"):
        ip.run_line_magic("aivvm", "log 7")


def test_log_list_and_search(ip, history, capsys):
    ip.run_cell_magic("aivvm", "-c travel", "Plan a weekend in Lisbon")
    ip.run_cell_magic("aivvm", "-c cooking", "How long to boil eggs?")
    ip.run_cell_magic("aivvm", "-c travel", "What if it rains in Lisbon?")
    capsys.readouterr()
    ip.run_line_magic("aivvm", "log --list")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Conversations in {history}, the latest first:"
    assert out[1].startswith("  #1     'travel', 2 turns, 20")
    assert out[1].endswith(": Plan a weekend in Lisbon")
    assert out[2].startswith("  #2     'cooking', 1 turn, 20")
    assert out[2].endswith(": How long to boil eggs?")
    ip.run_line_magic("aivvm", "log --search lisbon")
    out = capsys.readouterr().out
    assert out.count("#1 'travel'") == 2 and "[Lisbon]" in out and "cooking" not in out
    ip.run_line_magic("aivvm", "log --search boiled egg")
    assert "You: How long to [boil] [eggs]?" in capsys.readouterr().out
    ip.run_line_magic("aivvm", "log --search nowhere")
    assert capsys.readouterr().out == "No logged turn holds 'nowhere'.\n"


def test_log_options_are_checked(ip, history):
    from IPython.core.error import UsageError

    with pytest.raises(AivvmError, match="at least 1"):
        ip.run_line_magic("aivvm", "log -n 0")
    with pytest.raises(UsageError):
        ip.run_line_magic("aivvm", "log not-a-number")
    with pytest.raises(UsageError):
        ip.run_line_magic("aivvm", "resume")


# -- %aivvm resume ----------------------------------------------------------------------------


def test_resume_after_a_restart_continues_the_same_conversation(ip, history, reference, capsys):
    ip.run_cell_magic("aivvm", "-c research", "What is a generator?")
    ip.run_cell_magic("aivvm", "-c research", "And a coroutine?")
    restart(ip)
    assert len(magics_for(ip).chats.get("research")) == 0
    capsys.readouterr()
    ip.run_line_magic("aivvm", "resume 1")
    assert capsys.readouterr().out == (
        "Resumed #1 into 'research' (2 turns); %%aivvm -c research continues it.\n"
    )
    ip.run_cell_magic("aivvm", "-c research", "Compare them.")
    # The request carried the resumed history...
    assert [m["content"] for m in reference.requests[-1]["messages"]] == [
        "What is a generator?",
        "What is a generator?",
        "And a coroutine?",
        "And a coroutine?",
        "Compare them.",
    ]
    # ...and the turn joined the same logged conversation.
    assert conversation_ids(history) == [1]
    assert [r[1:3] for r in rows(history)][-1] == (2, "Compare them.")


def test_resume_into_another_name_and_refusals(ip, history):
    ip.run_cell_magic("aivvm", "", "hello")
    conversation = magics_for(ip).session.resume(1, "copy")
    assert conversation.name == "copy" and [t.prompt for t in conversation.turns] == ["hello"]
    with pytest.raises(AivvmError, match="No conversation 99 in the history"):
        ip.run_line_magic("aivvm", "resume 99")
    busy = magics_for(ip).chats.get("busy")
    with busy.streaming("holding it", "cell"):
        with pytest.raises(AivvmError, match="'busy' is busy with a reply"):
            magics_for(ip).session.resume(1, "busy")


def test_a_rerun_cell_after_resume_replaces_its_turn_from_before_the_restart(ip, history):
    """Cell ids are kept in the notebook file, so a resumed notebook's re-run cell still finds
    its turn."""
    ip.run_cell("%%aivvm\nfirst", cell_id="cell-a")
    ip.run_cell("%%aivvm\nsecond", cell_id="cell-b")
    restart(ip)
    ip.run_line_magic("aivvm", "resume 1")
    ip.run_cell("%%aivvm\nsecond, again", cell_id="cell-b")
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == [
        "first",
        "second, again",
    ]
    live = magics_for(ip).session.history.database().conversation(1)[1]
    assert [t.prompt for t in live] == ["first", "second, again"]


# -- the panel --------------------------------------------------------------------------------


def test_the_panel_opens_a_logged_conversation(ip, history):
    ip.run_cell_magic("aivvm", "-c notes", "remember the milk")
    restart(ip)
    panel = ChatPanel("default", magics=magics_for(ip))
    try:
        picker = panel.logged.picker
        assert [value for _, value in picker.options] == [1]
        assert picker.options[0][0].startswith("#1 notes · 1 turn · ")
        picker.value = 1
        panel.logged.open_button.click()
        assert panel.chat == "notes" and panel.chat_picker.value == "notes"
        assert [t.prompt for t in panel.conversation.turns] == ["remember the milk"]
        assert "remember the milk" in panel.transcript.value
        assert "opened #1, 1 turn" in panel.status.value
        assert panel.send("and the bread") == "and the bread"
        assert [r[1:3] for r in rows(history)] == [(0, "remember the milk"), (1, "and the bread")]
        assert panel.logged.open_conversation(42) is False
        assert "No conversation 42" in panel.status.value
    finally:
        panel.close()


def test_a_panel_does_not_create_a_history_file(ip, history):
    panel = ChatPanel("default", magics=magics_for(ip))
    try:
        assert panel.logged.picker.options == ()
        assert not history.exists()
    finally:
        panel.close()
