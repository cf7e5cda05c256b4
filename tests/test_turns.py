"""One turn (``turns.TurnRunner``): what it records, keeps and sends. The replies come from the
fake provider (``tests/fakeprovider.py``): HTTP is the subject of the provider's tests."""

from __future__ import annotations

import threading
import time

import pytest

from aivvm_magic.conversation import Conversation, ConversationBusy
from aivvm_magic.providers import ConnectError, IncompleteReply
from aivvm_magic.turns import TurnRunner, TurnSettings

FAKE = TurnSettings(provider="fake")


def test_the_reply_the_turn_and_its_views_share_one_text(fake):
    conversation = Conversation("shared")
    runner = TurnRunner(conversation, "one two three", FAKE)
    seen: list[object] = []
    conversation.subscribe(
        lambda event: seen.append(conversation.pending.buffer), kinds=["turn_started"]
    )
    outcome = runner.run()
    assert outcome.complete and outcome.text == "one two three"
    assert seen == [runner.buffer]  # the pending turn's buffer is the runner's
    # Held once: the outcome's text, the turn's reply and the buffer's text are one object.
    assert outcome.text is outcome.turn.reply is runner.buffer.text()


def test_a_turn_waiting_for_its_conversation_gives_up_when_stopped(fake):
    conversation = Conversation("busy")
    runner = TurnRunner(conversation, "second", FAKE, busy_timeout=30)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except ConversationBusy as exc:
            failures.append(exc)

    with conversation.streaming("first", "cell"):
        waiting = threading.Thread(target=run)
        waiting.start()
        time.sleep(0.05)
        began = time.monotonic()
        runner.stop()
        waiting.join(5)
        assert time.monotonic() - began < 1
    assert len(failures) == 1 and "stopped while waiting" in str(failures[0])
    assert len(conversation) == 0


@pytest.mark.parametrize("record", [True, False])
def test_a_failed_turn_keeps_nothing_but_says_why(fake, record):
    conversation = Conversation("failed")
    fake.script(error=ConnectError("Could not connect to fake://: connection refused"))
    outcome = TurnRunner(conversation, "hello", FAKE, record=record).run()
    assert not outcome.complete and outcome.text == "" and outcome.turn is None
    assert outcome.note and "\n" not in outcome.note
    assert len(conversation) == 0


def test_the_first_text_is_announced_once(fake):
    conversation = Conversation("first-text")
    kinds: list[str] = []
    conversation.subscribe(lambda event: kinds.append(event.kind))
    calls: list[int] = []
    runner = TurnRunner(conversation, "one two three four", FAKE)
    outcome = runner.run(on_text=lambda: calls.append(runner.buffer.chunks))
    assert outcome.complete and outcome.text == "one two three four"
    assert kinds == ["turn_started", "text_started", "turn_finished"]
    assert calls == [1]  # once, with the first chunk in the buffer already


def test_each_turn_is_recorded_once_and_sent_as_history(fake):
    conversation = Conversation("history")
    first = TurnRunner(conversation, "first question", FAKE, cell_id="cell-1").run()
    second = TurnRunner(conversation, "second question", FAKE, cell_id="cell-2").run()
    assert [t.prompt for t in conversation.turns] == ["first question", "second question"]
    assert [first.turn, second.turn] == conversation.turns
    assert all(t.complete and t.error is None and t.source == "cell" for t in conversation.turns)
    assert fake.requests[-1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first question"},
        {"role": "user", "content": "second question"},
    ]


def test_a_rerun_replaces_its_turn_and_what_followed_and_does_not_see_them(fake):
    conversation = Conversation("rerun")
    for prompt, cell in [("one", "cell-1"), ("two", "cell-2"), ("three", "cell-3")]:
        TurnRunner(conversation, prompt, FAKE, cell_id=cell).run()
    TurnRunner(conversation, "two, edited", FAKE, cell_id="cell-2").run()
    assert [t.prompt for t in conversation.turns] == ["one", "two, edited"]
    assert [m["content"] for m in fake.requests[-1]["messages"]] == ["one", "one", "two, edited"]


def test_a_reply_cut_short_is_kept_as_a_marked_partial_turn_and_sent_as_history(fake):
    conversation = Conversation("partial")
    fake.script("so ", "far ", error=IncompleteReply("the connection was reset", ""))
    outcome = TurnRunner(conversation, "go", FAKE).run()
    assert not outcome.complete and outcome.text == "so far "
    assert outcome.note == "reply cut short: the connection was reset"
    (turn,) = conversation.turns
    assert turn is outcome.turn
    assert (turn.reply, turn.complete, turn.error) == ("so far ", False, outcome.note)
    assert TurnRunner(conversation, "next", FAKE).run().complete
    assert [m["content"] for m in fake.requests[-1]["messages"]] == ["go", "so far ", "next"]


def test_a_reply_stopped_midway_keeps_what_arrived(fake):
    conversation = Conversation("stopped")
    fake.script("the start ", hold=True)
    runner = TurnRunner(conversation, "go on", FAKE)
    outcomes = []
    streaming = threading.Thread(target=lambda: outcomes.append(runner.run()))
    streaming.start()
    assert fake.holding.wait(5)
    runner.stop()
    streaming.join(5)
    (outcome,) = outcomes
    assert not outcome.complete and outcome.text == "the start " and outcome.note == "stopped"
    (turn,) = conversation.turns
    assert (turn.reply, turn.complete, turn.error) == ("the start ", False, "stopped")


def test_a_one_off_question_sends_no_history_and_records_nothing(fake):
    conversation = Conversation("one-off")
    TurnRunner(conversation, "kept", FAKE).run()
    outcome = TurnRunner(conversation, "one-off", FAKE, record=False).run()
    assert outcome.complete and outcome.text == "one-off" and outcome.turn is None
    assert fake.requests[-1]["messages"] == [{"role": "user", "content": "one-off"}]
    assert [t.prompt for t in conversation.turns] == ["kept"]
