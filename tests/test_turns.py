"""One turn (``turns.TurnRunner``) against the reference server on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from aivvm_magic.conversation import Conversation, ConversationBusy
from aivvm_magic.turns import TurnRunner, TurnSettings


def test_the_reply_the_turn_and_its_views_share_one_text(reference):
    conversation = Conversation("shared")
    runner = TurnRunner(conversation, "one two three", TurnSettings(base_url=reference.url))
    seen: list[object] = []
    conversation.subscribe(
        lambda event: seen.append(conversation.pending.buffer), kinds=["turn_started"]
    )
    outcome = runner.run()
    assert outcome.complete and outcome.text == "one two three"
    assert seen == [runner.buffer]  # the pending turn's buffer is the runner's
    # Held once: the outcome's text, the turn's reply and the buffer's text are one object.
    assert outcome.text is outcome.turn.reply is runner.buffer.text()


def test_a_turn_waiting_for_its_conversation_gives_up_when_stopped(reference):
    conversation = Conversation("busy")
    runner = TurnRunner(
        conversation, "second", TurnSettings(base_url=reference.url), busy_timeout=30
    )
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
def test_a_failed_turn_keeps_nothing_but_says_why(record):
    conversation = Conversation("failed")
    settings = TurnSettings(base_url="http://127.0.0.1:9", retries=0, connect_timeout=2)
    outcome = TurnRunner(conversation, "hello", settings, record=record).run()
    assert not outcome.complete and outcome.text == "" and outcome.turn is None
    assert outcome.note and "\n" not in outcome.note
    assert len(conversation) == 0


def test_the_first_text_is_announced_once(reference):
    conversation = Conversation("first-text")
    kinds: list[str] = []
    conversation.subscribe(lambda event: kinds.append(event.kind))
    calls: list[int] = []
    runner = TurnRunner(conversation, "one two three four", TurnSettings(base_url=reference.url))
    outcome = runner.run(on_text=lambda: calls.append(runner.buffer.chunks))
    assert outcome.complete and outcome.text == "one two three four"
    assert kinds == ["turn_started", "text_started", "turn_finished"]
    assert calls == [1]  # once, with the first chunk in the buffer already
