"""Tests of aivvm_magic.conversation: history, trimming, events, locking, export and import."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aivvm_magic.conversation import (
    SOURCES,
    Conversation,
    ConversationBusy,
    ConversationEvent,
    ConversationFormatError,
    ConversationStore,
    Turn,
)
from aivvm_magic.reply_buffer import ReplyBuffer
from tests.conftest import make_turn

ROOT = Path(__file__).resolve().parents[1]
META = {"model": "gpt-3.5-turbo", "temperature": 0.7, "system": "Be brief."}


def conversation_of(*turns: Turn, name: str = "default", system: str | None = None):
    conversation = Conversation(name, system)
    for turn in turns:
        conversation.record(turn)
    return conversation


def prompts(conversation: Conversation) -> list[str]:
    return [turn.prompt for turn in conversation.turns]


# ---- turns ------------------------------------------------------------------------------------


def test_turn_round_trips_through_a_dict():
    turn = make_turn(cell_id="c1", complete=False, error="interrupted", source="panel")
    assert Turn.from_dict(turn.to_dict()) == turn
    assert json.loads(json.dumps(turn.to_dict())) == turn.to_dict()


def test_turn_optional_keys_may_be_missing_and_ints_become_floats():
    data = make_turn().to_dict()
    del data["cell_id"], data["error"]
    data["temperature"] = 1
    turn = Turn.from_dict(data)
    assert turn.cell_id is None and turn.error is None
    assert turn.temperature == 1.0 and isinstance(turn.temperature, float)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": "hot"}, "'temperature' must be a number, not str"),
        ({"temperature": True}, "'temperature' must be a number, not bool"),
        ({"temperature": float("nan")}, "'temperature' must be a finite number"),
        ({"duration": -1}, "'duration' must not be negative"),
        ({"prompt": None}, "'prompt' must be a string"),
        ({"complete": 1}, "'complete' must be true or false"),
        ({"source": "api"}, "'source' must be 'cell' or 'panel'"),
        ({"started": "yesterday"}, "'started' must be an ISO-8601 time"),
        ({"started": "2024-05-01T10:00:00"}, "'started' must be an ISO-8601 time with a timezone"),
        ({"cell_id": ""}, "'cell_id' must be a non-empty string"),
        ({"error": 3}, "'error' must be a string or null"),
        ({"extra": 1}, "unknown key(s) 'extra'"),
    ],
)
def test_turn_from_dict_rejects_bad_fields(change, message):
    data = {**make_turn().to_dict(), **change}
    with pytest.raises(ConversationFormatError) as info:
        Turn.from_dict(data)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_turn_from_dict_names_missing_keys_and_refuses_non_objects():
    data = make_turn().to_dict()
    del data["reply"], data["model"]
    with pytest.raises(ConversationFormatError, match="missing 'reply', 'model'"):
        Turn.from_dict(data)
    with pytest.raises(ConversationFormatError, match="must be an object, not list"):
        Turn.from_dict([])  # type: ignore[arg-type]


def test_turn_checks_fields_on_construction():
    with pytest.raises(TypeError, match="'reply' must be a string"):
        make_turn(reply=None)
    with pytest.raises(ValueError, match="'source'"):
        make_turn(source="terminal")
    assert make_turn(started="2024-05-01T10:00:00Z").started == "2024-05-01T10:00:00Z"


# ---- recording and re-running cells --------------------------------------------------------


def test_record_appends_and_last_turn():
    conversation = Conversation()
    assert len(conversation) == 0 and conversation.last_turn is None
    first, second = make_turn(prompt="one"), make_turn(prompt="two")
    conversation.record(first)
    conversation.record(second)
    assert conversation.turns == [first, second]
    assert conversation.last_turn is second
    assert len(conversation) == 2
    conversation.turns.clear()  # a copy: the history itself is untouched
    assert len(conversation) == 2


def test_rerunning_a_cell_replaces_its_turn_and_everything_after_it():
    conversation = conversation_of(
        *(make_turn(prompt=cell, cell_id=cell) for cell in ("a", "b", "c", "d"))
    )
    conversation.record(make_turn(prompt="b again", cell_id="b"))
    assert prompts(conversation) == ["a", "b again"]
    # The removed cells can come back, and the re-run cell can run yet again.
    conversation.record(make_turn(prompt="c again", cell_id="c"))
    conversation.record(make_turn(prompt="b third", cell_id="b"))
    assert prompts(conversation) == ["a", "b third"]


def test_turns_without_a_cell_id_always_append():
    conversation = conversation_of(make_turn(prompt="x"), make_turn(prompt="x"))
    conversation.record(make_turn(prompt="panel", source="panel"))
    assert prompts(conversation) == ["x", "x", "panel"]


def test_truncate_from_cell_counts_what_it_removed():
    conversation = conversation_of(
        make_turn(prompt="a", cell_id="a"),
        make_turn(prompt="panel", source="panel"),
        make_turn(prompt="b", cell_id="b"),
        make_turn(prompt="c", cell_id="c"),
    )
    assert conversation.truncate_from_cell("unknown") == 0
    assert conversation.truncate_from_cell("b") == 2
    assert prompts(conversation) == ["a", "panel"]
    assert conversation.truncate_from_cell("b") == 0
    assert conversation.truncate_from_cell("a") == 2
    assert len(conversation) == 0


def test_a_rerun_does_not_see_its_own_old_answer():
    conversation = conversation_of(
        make_turn(prompt="first", reply="r1", cell_id="c1"),
        make_turn(prompt="second", reply="OLD ANSWER", cell_id="c2"),
        make_turn(prompt="third", reply="r3", cell_id="c3"),
    )
    with conversation.streaming("second, again", source="cell", cell_id="c2") as reply:
        messages = conversation.messages("second, again")
        reply.add("new answer")
        reply.record(**META)
    assert messages == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "second, again"},
    ]
    assert prompts(conversation) == ["first", "second, again"]
    assert conversation.last_turn.reply == "new answer"


def test_reset_forgets_turns_but_keeps_the_system_message():
    conversation = conversation_of(make_turn(cell_id="a"), system="Be terse.")
    conversation.reset()
    assert len(conversation) == 0 and conversation.system == "Be terse."
    conversation.record(make_turn(prompt="again", cell_id="a"))
    assert prompts(conversation) == ["again"]


# ---- building requests and trimming ---------------------------------------------------------


def sized(prompt_chars: int, reply_chars: int, label: str = "p") -> Turn:
    return make_turn(prompt=label * prompt_chars, reply="r" * reply_chars)


def request_chars(messages: list[dict[str, str]], system: str = "") -> int:
    return len(system) + sum(len(message["content"]) for message in messages)


def test_messages_alternate_roles_and_end_with_the_prompt():
    conversation = conversation_of(make_turn(prompt="Hi", reply="Hello"))
    assert conversation.messages("Next") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Next"},
    ]


def test_trimming_drops_the_oldest_whole_turns_first():
    conversation = conversation_of(sized(10, 10, "a"), sized(10, 10, "b"), sized(10, 10, "c"))
    fitted = conversation.fit("x" * 5, max_chars=44)
    assert fitted.dropped == 2
    assert [m["content"] for m in fitted.messages] == ["c" * 10, "r" * 10, "xxxxx"]
    assert request_chars(fitted.messages) == 25
    # Exactly on the budget still fits.
    assert conversation.fit("x" * 5, max_chars=45).dropped == 1
    assert conversation.fit("x" * 5, max_chars=65).dropped == 0
    assert conversation.fit("x" * 5, max_chars=64).dropped == 1


def test_the_system_message_counts_against_the_budget_but_is_not_a_message():
    conversation = conversation_of(sized(10, 10, "a"), sized(10, 10, "b"))
    assert conversation.fit("x", max_chars=41).dropped == 0
    fitted = conversation.fit("x", max_chars=41, system="S" * 20)
    assert fitted.dropped == 1
    assert request_chars(fitted.messages, "S" * 20) == 20 + 20 + 1
    assert all(message["content"] != "S" * 20 for message in fitted.messages)


def test_the_prompt_is_kept_even_when_it_alone_is_over_budget():
    conversation = conversation_of(sized(1, 1))
    fitted = conversation.fit("x" * 100, max_chars=10, system="sys")
    assert fitted.messages == [{"role": "user", "content": "x" * 100}]
    assert fitted.dropped == 1
    assert request_chars(fitted.messages, "sys") == 103


def test_a_big_turn_in_the_middle_stops_trimming_rather_than_being_skipped():
    conversation = conversation_of(sized(1, 1, "a"), sized(100, 100, "b"), sized(1, 1, "c"))
    fitted = conversation.fit("x", max_chars=10)
    assert fitted.dropped == 2
    assert fitted.messages[0]["content"] == "c"


def test_max_turns_limits_the_history():
    conversation = conversation_of(*(sized(1, 1, label) for label in "abcde"))
    fitted = conversation.fit("x", max_turns=2)
    assert fitted.dropped == 3
    assert [m["content"] for m in fitted.messages[::2]] == ["d", "e", "x"]
    assert conversation.fit("x", max_turns=0).messages == [{"role": "user", "content": "x"}]
    assert conversation.fit("x", max_turns=10, max_chars=7).dropped == 2
    with pytest.raises(ValueError, match="max_turns"):
        conversation.fit("x", max_turns=-1)
    with pytest.raises(ValueError, match="max_chars"):
        conversation.fit("x", max_chars=-1)


def test_partial_turns_are_part_of_the_history():
    conversation = Conversation()
    with conversation.streaming("Tell me a story", source="panel") as reply:
        reply.add("Once upon")
        turn = reply.record(**META, complete=False, error="interrupted")
    assert not turn.complete and turn.error == "interrupted" and turn.reply == "Once upon"
    assert conversation.messages("Go on")[1] == {"role": "assistant", "content": "Once upon"}


# ---- events ---------------------------------------------------------------------------------


def kinds(events: list[ConversationEvent]) -> list[str]:
    return [event.kind for event in events]


def test_a_streamed_turn_tells_every_listener_each_step():
    conversation = Conversation()
    events: list[ConversationEvent] = []
    conversation.subscribe(events.append)
    with conversation.streaming("Hi", source="cell", cell_id="c1") as reply:
        assert conversation.pending is reply
        reply.add("Hel")
        reply.add("")  # nothing arrived: nothing to tell
        reply.add("lo")
        assert reply.text == "Hello"
        turn = reply.record(**META)
    assert conversation.pending is None
    # No event per chunk: views read the reply's buffer.
    assert kinds(events) == ["turn_started", "turn_finished"]
    assert (events[0].text, events[0].source, events[0].cell_id) == ("Hi", "cell", "c1")
    assert events[1].turn is turn and events[1].conversation is conversation
    assert turn.prompt == "Hi" and turn.reply == "Hello" and turn.cell_id == "c1"
    assert turn.started.endswith("+00:00") and turn.duration >= 0


def test_a_failed_turn_records_nothing_and_the_error_still_propagates():
    conversation = conversation_of(make_turn())
    events: list[ConversationEvent] = []
    conversation.subscribe(events.append)
    with pytest.raises(ConnectionError):
        with conversation.streaming("Hi", source="panel") as reply:
            reply.add("partial")
            raise ConnectionError("connection reset")
    assert kinds(events) == ["turn_started", "turn_failed"]
    # The same line a partial turn would carry: one_line() of the error.
    assert events[-1].error == "connection reset"
    assert events[-1].text == "partial"
    assert len(conversation) == 1 and not conversation.busy
    with conversation.streaming("Hi", source="panel"):
        pass  # left without recording
    assert events[-1].kind == "turn_failed" and events[-1].error == "no reply was recorded"


def test_reset_and_replace_events():
    conversation = conversation_of(make_turn(cell_id="a"), make_turn(cell_id="b"))
    events: list[ConversationEvent] = []
    conversation.subscribe(events.append)
    conversation.record(make_turn(prompt="b2", cell_id="b"))
    assert kinds(events) == ["replaced", "turn_finished"]
    assert events[0].removed == 1 and events[0].cell_id == "b"
    conversation.replace_with(conversation_of(make_turn(), make_turn(), make_turn()))
    assert events[-1].kind == "replaced" and events[-1].removed == 2
    conversation.reset()
    assert events[-1].kind == "reset" and events[-1].removed == 3


def test_a_raising_listener_breaks_neither_the_others_nor_the_caller():
    conversation = Conversation()
    seen: list[str] = []
    failures: list[tuple[type, str, bool]] = []

    def broken(event: ConversationEvent) -> None:
        raise ZeroDivisionError("listener bug")

    def handler(exc: BaseException, event: ConversationEvent) -> None:
        # Called inside the except block, so showtraceback() could report it.
        failures.append((type(exc), event.kind, sys.exc_info()[1] is exc))

    conversation.error_handler = handler
    conversation.subscribe(broken)
    conversation.subscribe(lambda event: seen.append(event.kind))
    with conversation.streaming("Hi", source="cell") as reply:
        reply.add("Hello")
        reply.record(**META)
    assert seen == ["turn_started", "turn_finished"]
    assert failures == [(ZeroDivisionError, kind, True) for kind in seen]


def test_listener_errors_are_logged_by_default_and_a_broken_handler_is_survived(caplog):
    conversation = Conversation("logged")
    conversation.subscribe(lambda event: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="aivvm_magic.conversation"):
        conversation.record(make_turn())
    assert "A listener of conversation 'logged' failed" in caplog.text
    assert "ZeroDivisionError" in caplog.text

    def broken_handler(exc: BaseException, event: ConversationEvent) -> None:
        raise RuntimeError("handler bug")

    conversation.error_handler = broken_handler
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="aivvm_magic.conversation"):
        conversation.record(make_turn())
    assert "error handler of conversation 'logged' failed" in caplog.text
    assert len(conversation) == 2


def test_unsubscribe_stops_events_and_may_be_called_twice():
    conversation = Conversation()
    seen: list[str] = []
    unsubscribe = conversation.subscribe(lambda event: seen.append(event.kind))
    conversation.record(make_turn())
    unsubscribe()
    unsubscribe()
    conversation.record(make_turn())
    assert seen == ["turn_finished"]


def test_a_pending_reply_is_recorded_once():
    conversation = Conversation()
    with conversation.streaming("Hi", source="cell") as reply:
        reply.record(**META)
        with pytest.raises(RuntimeError, match="already recorded"):
            reply.record(**META)
        with pytest.raises(RuntimeError, match="already recorded"):
            reply.add("late")
    assert len(conversation) == 1


# ---- one reply at a time --------------------------------------------------------------------


def test_a_second_reply_waits_for_the_first_or_is_refused():
    conversation = Conversation()
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with conversation.streaming("one", source="panel") as reply:
            entered.set()
            release.wait(10)
            reply.add("1")
            order.append("first finished")
            reply.record(**META)

    def second() -> None:
        with conversation.streaming("two", source="cell", timeout=10) as reply:
            order.append("second started")
            reply.add("2")
            reply.record(**META)

    events: list[str] = []
    conversation.subscribe(lambda event: events.append(event.kind))
    first_thread = threading.Thread(target=first)
    first_thread.start()
    assert entered.wait(10)
    assert conversation.busy

    with pytest.raises(ConversationBusy) as info:
        with conversation.streaming("three", source="cell", timeout=0):
            pass
    assert str(info.value) == "conversation 'default' is busy with another reply"
    with pytest.raises(ConversationBusy, match="waited 0.05 s"):
        with conversation.streaming("three", source="cell", timeout=0.05):
            pass
    assert events == ["turn_started"]  # the refused requests told nobody anything

    second_thread = threading.Thread(target=second)
    second_thread.start()
    time.sleep(0.2)  # long enough for the second thread to be waiting
    assert order == []
    release.set()
    first_thread.join(10)
    second_thread.join(10)
    assert order == ["first finished", "second started"]
    assert prompts(conversation) == ["one", "two"]
    assert not conversation.busy


def test_the_streaming_thread_asking_again_is_refused_at_once():
    conversation = Conversation("mine")
    with conversation.streaming("one", source="cell"):
        with pytest.raises(ConversationBusy, match="conversation 'mine' is busy"):
            with conversation.streaming("two", source="cell"):
                pass
    with conversation.streaming("three", source="cell", timeout=0) as reply:
        reply.record(**META)
    assert prompts(conversation) == ["three"]


def test_streaming_checks_its_arguments_before_taking_the_conversation():
    conversation = Conversation()
    with pytest.raises(ValueError, match="source"):
        with conversation.streaming("x", source="terminal"):
            pass
    assert not conversation.busy


# ---- export and import ----------------------------------------------------------------------

NASTY_TEXTS = [
    "",
    "plain",
    "line one\r\nline two\rline three\n",
    "\n\n\nstarts and ends with blank lines\n\n",
    "# A heading\n### You\n**Assistant**\n---\n",
    '<!-- aivvm:reply {"chars": 3} -->\nabc\n\n<!-- aivvm:turn {} -->',
    '<!-- aivvm:conversation {"format": "aivvm-conversation", "version": 1} -->',
    "<!-- an unclosed comment",
    "a comment closer --> here",
    "```python\nprint('unclosed fence')\n",
    "~~~\nfence\n~~~\n````\nlonger",
    "NUL \x00 and other controls \x01\x1b[31m\x7f",
    "unicode: héllo 世界 😀 e\u0301 \u2028 \u2029 \u0085 \ufeff",
    "\\escaped\\ & &lt; <b>html</b> {json: [1, 2]}",
    "ends with backslash \\",
    " " * 10 + "\t",
]


def rich_conversation() -> Conversation:
    conversation = Conversation("nasty <!-- aivvm: --> name\r\n", system=NASTY_TEXTS[5])
    for index, text in enumerate(NASTY_TEXTS):
        conversation.record(
            make_turn(
                prompt=text,
                reply=NASTY_TEXTS[-1 - index],
                model=f"model {text[:20]}",
                system=text,
                cell_id=f"cell <!-- aivvm: {index} -->",
                complete=index % 3 != 0,
                error=None if index % 3 else f"cut: {text}",
                source=SOURCES[index % 2],
                temperature=index / 7,
            )
        )
    return conversation


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_export_then_load_is_the_identity_for_nasty_text(tmp_path, suffix):
    conversation = rich_conversation()
    path = tmp_path / f"chat{suffix}"
    conversation.export(path)
    assert Conversation.load(path).to_dict() == conversation.to_dict()
    assert Conversation.load(str(path)).to_dict() == conversation.to_dict()


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_an_empty_conversation_round_trips(tmp_path, suffix):
    for conversation in (Conversation("empty"), Conversation("empty", system="")):
        path = tmp_path / f"chat{suffix}"
        conversation.export(path)
        assert Conversation.load(path).to_dict() == conversation.to_dict()


def test_the_markdown_transcript_is_readable(tmp_path):
    conversation = Conversation("demo", system="Be brief.")
    conversation.record(
        make_turn(prompt="Hi there", reply="Hello!\n```python\ncode", cell_id="c_1")
    )
    conversation.record(
        make_turn(prompt="More", reply="Sto", complete=False, error="interrupted", source="panel")
    )
    path = tmp_path / "chat.md"
    conversation.export_markdown(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Conversation: demo\n")
    assert "**System message**\n\n" in text
    assert "## Turn 1\n" in text and "## Turn 2\n" in text
    assert text.count("### You\n") == 2 and text.count("### Assistant\n") == 2
    assert "Model: gpt-3.5-turbo · temperature 0.7 · " in text
    assert "from cell c\\_1" in text
    assert "**partial reply**: interrupted" in text
    # The unclosed fence in turn 1's reply is closed before turn 2 begins.
    reply_one = text.index("Hello!\n```python\ncode\n")
    assert "\n```\n" in text[reply_one : text.index("## Turn 2")]


def test_the_json_export_is_the_dict(tmp_path):
    conversation = rich_conversation()
    conversation.export_json(tmp_path / "chat.json")
    data = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert data == conversation.to_dict()
    assert data["format"] == "aivvm-conversation" and data["version"] == 2


def test_export_and_load_refuse_unknown_extensions(tmp_path):
    conversation = conversation_of(make_turn())
    for name in ("chat.txt", "chat", "chat.ipynb"):
        with pytest.raises(ValueError, match=r"use \.json or \.md"):
            conversation.export(tmp_path / name)
        with pytest.raises(ValueError, match=r"use \.json or \.md"):
            Conversation.load(tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_loading_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Conversation.load(tmp_path / "absent.json")


def test_replace_with_swaps_in_turns_and_system_and_keeps_the_name(tmp_path):
    conversation = conversation_of(make_turn(prompt="old", cell_id="a"), name="mine")
    path = tmp_path / "other.json"
    conversation_of(make_turn(prompt="new", cell_id="b"), name="other", system="S").export(path)
    conversation.replace_with(Conversation.load(path))
    assert conversation.name == "mine" and conversation.system == "S"
    assert prompts(conversation) == ["new"]
    # The cell index follows the swapped-in turns.
    conversation.record(make_turn(prompt="new again", cell_id="b"))
    assert prompts(conversation) == ["new again"]


# Arbitrary turns, with the pieces of text the Markdown format itself uses mixed in.
texts = st.lists(st.one_of(st.text(), st.sampled_from(NASTY_TEXTS)), max_size=4).map("".join)
times = st.datetimes(
    timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    )
).map(lambda moment: moment.isoformat())
turns = st.builds(
    Turn,
    prompt=texts,
    reply=texts,
    model=st.text(),
    temperature=st.floats(allow_nan=False, allow_infinity=False),
    system=texts,
    started=times,
    duration=st.floats(min_value=0, allow_infinity=False),
    complete=st.booleans(),
    source=st.sampled_from(SOURCES),
    cell_id=st.none() | st.text(min_size=1),
    error=st.none() | texts,
)
conversations = st.builds(
    lambda name, system, turns: Conversation.from_dict(
        {
            "format": "aivvm-conversation",
            "version": 2,
            "name": name,
            "system": system,
            "turns": [turn.to_dict() for turn in turns],
        }
    ),
    name=st.text(min_size=1),
    system=st.none() | texts,
    turns=st.lists(turns, max_size=5),
)


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations)
def test_export_then_load_is_the_identity(conversation):
    # A fresh directory per example: pytest's tmp_path is one directory for all examples.
    with tempfile.TemporaryDirectory() as directory:
        for suffix in (".json", ".md"):
            path = os.path.join(directory, f"chat{suffix}")
            conversation.export(path)
            assert Conversation.load(path).to_dict() == conversation.to_dict()
            # Exporting what was loaded gives the same file, byte for byte.
            first = Path(path).read_bytes()
            Conversation.load(path).export(path)
            assert Path(path).read_bytes() == first


# ---- atomic writes --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, suffix):
    path = tmp_path / f"chat{suffix}"
    path.write_bytes(b"the old file\r\n")
    conversation = Conversation()
    for index in range(300):
        conversation.record(make_turn(prompt=f"{index} " + "x" * 1000))
    # A lone surrogate is a valid str that UTF-8 cannot encode: the write fails after
    # hundreds of kilobytes have already gone to the temporary file. Turn refuses such text,
    # so it is slipped past the check, as a bug elsewhere might.
    broken = make_turn(reply="broken")
    object.__setattr__(broken, "reply", "broken \ud800")
    conversation.record(broken)
    with pytest.raises(UnicodeEncodeError):
        conversation.export(path)
    assert path.read_bytes() == b"the old file\r\n"
    assert os.listdir(tmp_path) == [path.name]


def test_a_lone_surrogate_is_refused_when_a_turn_is_made():
    with pytest.raises(ValueError, match="surrogate"):
        make_turn(reply="broken \ud800")
    with pytest.raises(ValueError, match="surrogate"):
        make_turn(prompt="日本語 \udfff")
    # Text outside the BMP is stored as one code point, not as a surrogate pair.
    assert make_turn(reply="日本語 😀").reply == "日本語 😀"


def test_a_full_disk_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RLIMIT_FSIZE"):
        pytest.skip("no file size limit on this platform")
    path = tmp_path / "chat.md"
    path.write_bytes(b"the old file\n")
    # A file size limit makes the disk "full" after 64 KiB: the kernel refuses the write
    # with EFBIG, as it would refuse it with ENOSPC.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from aivvm_magic.conversation import Conversation, Turn
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        conversation = Conversation()
        for index in range(100):
            conversation.record(Turn(
                prompt="x" * 5000, reply="y" * 5000, model="m", temperature=0.0, system="",
                started="2024-05-01T10:00:00+00:00", duration=0.0, complete=True,
                source="cell"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            conversation.export({str(path)!r})
        except OSError as exc:
            print(exc.errno)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(errno.EFBIG)
    assert path.read_bytes() == b"the old file\n"
    assert os.listdir(tmp_path) == [path.name]


def test_overwriting_keeps_the_file_mode_and_writes_through_symlinks(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    conversation = conversation_of(make_turn())
    conversation.export(link)
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert Conversation.load(target).to_dict() == conversation.to_dict()
    assert sorted(os.listdir(tmp_path)) == ["link.json", "real.json"]


# ---- corrupt, foreign and truncated files ---------------------------------------------------


def good_dict() -> dict:
    return conversation_of(make_turn(), name="saved").to_dict()


def with_changes(**changes: object) -> bytes:
    return json.dumps({**good_dict(), **changes}).encode()


def markdown_export(edit=lambda text: text) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "chat.md")
        conversation_of(make_turn(prompt="Hello", reply="World"), make_turn()).export(path)
        return edit(path.read_text(encoding="utf-8")).encode()


NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("chat.json", b"", "the file is empty"),
        ("chat.json", b"  \n", "the file is empty"),
        ("chat.json", with_changes()[:-40], "not valid JSON"),
        ("chat.json", b"[" * 100_000, "not valid JSON"),
        ("chat.json", b"[1, 2]", "not an aivvm conversation (the top level is a list"),
        ("chat.json", b'"text"', "the top level is a string"),
        ("chat.json", b'{"cells": 1}', 'no "format": "aivvm-conversation"'),
        ("chat.json", NOTEBOOK.encode(), "a Jupyter notebook, not an aivvm conversation"),
        ("chat.json", bytes(range(256)) * 4, "not UTF-8 text"),
        ("chat.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text"),
        ("chat.json", with_changes(version=3), "unsupported version 3"),
        ("chat.json", with_changes(version="1"), "unsupported version '1'"),
        ("chat.json", with_changes(version=True), "unsupported version True"),
        ("chat.json", with_changes(format="other"), "not an aivvm conversation"),
        ("chat.json", with_changes(turns={}), "'turns' must be a list"),
        ("chat.json", with_changes(name=""), "'name' must be a non-empty string"),
        ("chat.json", with_changes(extra=1), "unknown key(s) 'extra'"),
        (
            "chat.json",
            with_changes(turns=[{**make_turn().to_dict(), "temperature": "hot"}]),
            "turn 1: field 'temperature' must be a number",
        ),
        ("chat.md", b"# My notes\n\nNothing to see.\n", "no aivvm:conversation marker"),
        ("chat.md", NOTEBOOK.encode(), "no aivvm:conversation marker"),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"version": 2', '"version": 3', 1)),
            "unsupported version 3",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"chars": 5}', '"chars": 4}', 1)),
            "the prompt of turn 1 does not match its recorded length",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace("\nHello\n", "\nHello, edited\n", 1)),
            "the prompt of turn 1 does not match its recorded length",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"turns": 2', '"turns": 3', 1)),
            "turn 3 is missing; the file looks truncated",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"turns": 2', '"turns": 1', 1)),
            "more turns than the 1 its header announces",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace("aivvm:reply", "aivvm:answer", 1)),
            "expected the reply of turn 1, found an aivvm:answer marker",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"model": "gpt', '"model": gpt', 1)),
            "turn 1 has a damaged marker",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('{"model"', "[" * 100_000 + '{"model"', 1)),
            "turn 1 has a damaged marker",
        ),
        (
            "chat.md",
            markdown_export(lambda t: t.replace('"source": "cell"', '"source": "web"', 1)),
            "turn 1: field 'source' must be 'cell' or 'panel'",
        ),
    ],
)
def test_bad_files_are_refused_and_change_nothing(tmp_path, name, content, message):
    conversation = rich_conversation()
    before = conversation.to_dict()
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConversationFormatError) as info:
        conversation.replace_with(Conversation.load(path))
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert len(str(info.value)) < 300
    assert conversation.to_dict() == before
    assert path.read_bytes() == content


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_truncated_file_is_refused_wherever_it_was_cut(tmp_path, suffix):
    conversation = conversation_of(
        make_turn(prompt="Hello\r\n", reply="Wor\nld", cell_id="a"),
        make_turn(prompt="Again", reply="", complete=False, error="cut"),
        system="S",
    )
    path = tmp_path / f"chat{suffix}"
    conversation.export(path)
    whole = path.read_bytes()
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])
        try:
            loaded = Conversation.load(path)
        except ConversationFormatError:
            continue
        # Only cutting decoration after the last text can leave a loadable file, and then
        # it is all there.
        assert loaded.to_dict() == conversation.to_dict(), cut


# ---- scale ----------------------------------------------------------------------------------


def test_ten_thousand_turns_export_import_and_trim(tmp_path):
    conversation = Conversation("big", system="S" * 100)
    for index in range(10_000):
        conversation.record(
            make_turn(
                prompt=f"question {index}",
                reply="a" * (index % 50),
                cell_id=f"cell-{index}" if index % 2 else None,
            )
        )
    assert len(conversation) == 10_000
    for suffix in (".json", ".md"):
        path = tmp_path / f"big{suffix}"
        conversation.export(path)
        assert Conversation.load(path).to_dict() == conversation.to_dict()

    budget = 50_000
    fitted = conversation.fit("next", max_chars=budget, system="S" * 100)
    # The same answer, the slow way.
    total, kept = 100 + len("next"), 0
    for turn in reversed(conversation.turns):
        cost = len(turn.prompt) + len(turn.reply)
        if total + cost > budget:
            break
        total, kept = total + cost, kept + 1
    assert fitted.dropped == 10_000 - kept
    assert request_chars(fitted.messages, "S" * 100) == total
    assert len(fitted.messages) == 2 * kept + 1
    assert fitted.messages[-3]["content"] == "question 9999"

    assert conversation.truncate_from_cell("cell-9001") == 999
    assert conversation.last_turn.prompt == "question 9000"


# ---- the store ------------------------------------------------------------------------------


def test_the_store_makes_conversations_on_first_use():
    store = ConversationStore()
    default = store.get()
    assert default.name == "default" and store.get("default") is default
    other = store.get("other")
    assert store.names() == ["default", "other"] and list(store) == ["default", "other"]
    assert "other" in store and len(store) == 2 and store["other"] is other
    assert store.remove("other") is other
    assert "other" not in store
    with pytest.raises(KeyError, match="no conversation named 'other'"):
        store.remove("other")
    with pytest.raises(KeyError, match="no conversation named 'other'"):
        store["other"]


def test_the_store_gives_every_thread_the_same_conversation():
    store = ConversationStore()
    found: list[Conversation] = []
    barrier = threading.Barrier(8)

    def look_up() -> None:
        barrier.wait()
        found.append(store.get("shared"))

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(found) == 8 and all(conversation is found[0] for conversation in found)
    assert store.names() == ["shared"]


def test_conversation_names_must_be_non_empty_strings():
    with pytest.raises(ValueError, match="non-empty string"):
        Conversation("")


# ---- layering -------------------------------------------------------------------------------
# The import contracts in pyproject.toml check the import statements; this checks what
# importing the module really loads, the package's __init__ and the standard library included.


@pytest.mark.parametrize("module", ["conversation", "interpolation"])
def test_the_module_alone_uses_only_the_standard_library(module):
    # The package __init__ imports nothing eagerly, so importing the module the usual way
    # shows everything it pulls in: nothing HTTP or IPython.
    code = textwrap.dedent(
        f"""
        import importlib, sys
        importlib.import_module("aivvm_magic.{module}")
        banned = ("IPython", "ipywidgets", "requests", "urllib3", "http")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in banned)
        print(bad)
        sys.exit(1 if bad else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_reply_is_one_buffer_that_every_view_reads_and_no_chunk_is_announced():
    conv = Conversation("kinds")
    seen: list[str] = []
    conv.subscribe(lambda e: seen.append(e.kind))
    buffer = ReplyBuffer()
    with conv.streaming("Hi", "cell", buffer=buffer) as reply:
        assert reply.buffer is buffer
        buffer.append("Hel")  # what a provider's reply does with each chunk
        reply.add("lo")
        assert reply.chunks == 2 and reply.text == "Hello" and reply.elapsed >= 0
        turn = reply.record(model="m", temperature=0.7, system="")
    assert seen == ["turn_started", "turn_finished"]
    # The turn holds the buffer's own text, not a copy of it.
    assert turn.reply is buffer.text() and turn.reply == "Hello"
    with pytest.raises(ValueError, match="unknown event kinds"):
        conv.subscribe(print, kinds=["chunk"])


def test_a_waiting_asker_can_be_stopped_at_once():
    conv = Conversation("waiting")
    cancel = threading.Event()
    failures: list[BaseException] = []
    with conv.streaming("first", "cell"):

        def ask() -> None:
            try:
                with conv.streaming("second", "panel", timeout=30, cancel=cancel):
                    pass
            except ConversationBusy as exc:
                failures.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(0.05)
        began = time.monotonic()
        cancel.set()
        conv.wake_waiters()
        asker.join(5)
        assert time.monotonic() - began < 1
    assert [str(exc) for exc in failures] == [
        "conversation 'waiting' is busy with another reply (stopped while waiting)"
    ]


def test_listeners_see_the_reply_recorded_when_they_hear_of_its_turn():
    conv = Conversation("order")
    states: list[bool] = []
    with conv.streaming("Hi", "cell") as reply:
        conv.subscribe(lambda e: states.append(reply.recorded), kinds=["turn_finished"])
        reply.add("Hello")
        reply.record(model="m", temperature=0.7, system="")
    assert states == [True]
