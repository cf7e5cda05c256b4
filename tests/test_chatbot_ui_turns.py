"""What a turn sends to a chatbot-ui deployment and what it makes of the answer.

The input is kept within the model's ``maxLength``, since the server trims nothing; an empty
reply (the deployment's own bug) is said to be one and never recorded or sent back; a reply
that stops at the server's 1,000-token cap, and one that stops arriving, say so. Against the
reference server in chatbot-ui mode and the fault server, on 127.0.0.1.
"""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aivvm_magic.conversation import Conversation
from aivvm_magic.errors import AivvmError
from aivvm_magic.input_budget import fit_input
from aivvm_magic.magics import magics_for
from aivvm_magic.protocol import DEFAULT_SYSTEM_MESSAGE
from aivvm_magic.providers import Aivvm, EmptyReply, IncompleteReply, StreamingReply
from aivvm_magic.server import ServerHandle
from aivvm_magic.session import brief_url
from aivvm_magic.turns import TurnRunner, TurnSettings
from tests.chatbotkit import open_panel, serve_deployment
from tests.conftest import make_turn
from tests.faultserver import FRAMINGS, FaultServer, Reply, Stall, openai_sse

pytestmark = pytest.mark.timeout(60)

SYSTEM = DEFAULT_SYSTEM_MESSAGE


@pytest.fixture(scope="module")
def deployment() -> Iterator[ServerHandle]:
    yield from serve_deployment()


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


# -- 6. the input within the model's maxLength ----------------------------------------------------


def test_a_message_over_the_limit_is_a_value_error_before_any_request(deployment):
    before = len(deployment.requests)
    with pytest.raises(ValueError) as info:
        Aivvm.create_completion(
            "gpt-3.5-turbo", [user("x" * 80_000)], True, base_url=deployment.url
        )
    assert str(info.value) == (
        "The message is 80,000 characters, and gpt-3.5-turbo takes at most 12,000 characters "
        f"of input (the system message's {len(SYSTEM)} included); shorten it by "
        f"{80_000 + len(SYSTEM) - 12_000:,} characters or more"
    )
    assert len(deployment.requests) == before


def test_history_is_trimmed_oldest_first_and_the_system_message_kept(deployment):
    messages = [
        user("a" * 5_000),
        assistant("b" * 5_000),
        user("c" * 3_000),
        assistant("d" * 10),
        user("Hello there"),
    ]
    reply = Aivvm.create_completion("gpt-3.5-turbo", messages, False, base_url=deployment.url)
    assert reply == "Hello there"
    sent = deployment.requests[-1]
    # The first question went, and its answer with it; what is left fits 12,000 characters.
    assert sent["messages"] == messages[2:]
    assert sent["prompt"] == SYSTEM
    assert len(SYSTEM) + sum(len(m["content"]) for m in sent["messages"]) <= 12_000
    # GPT-4 takes 24,000: nothing goes.
    Aivvm.create_completion("gpt-4", messages, False, base_url=deployment.url)
    assert deployment.requests[-1]["messages"] == messages


def test_a_long_system_message_leaves_less_room(deployment):
    messages = [user("a" * 4_000), assistant("b"), user("Hi")]
    Aivvm.create_completion(
        "", messages, False, base_url=deployment.url, system_message="s" * 8_000
    )
    assert deployment.requests[-1]["messages"] == [user("Hi")]
    assert deployment.requests[-1]["prompt"] == "s" * 8_000


def test_a_cell_over_the_limit_fails_with_the_reason_and_records_nothing(ip, deployment):
    magics_for(ip).base_url = deployment.url
    before = len(deployment.requests)
    with pytest.raises(AivvmError, match=r"The message is 13,000 characters, and gpt-3\.5"):
        ip.run_cell_magic("aivvm", "-c big", "x" * 13_000)
    assert len(deployment.requests) == before
    assert len(magics_for(ip).chats.get("big")) == 0
    ip.run_cell_magic("aivvm", "-c big -m gpt-4", "x" * 13_000)  # within GPT-4's 24,000
    assert len(magics_for(ip).chats.get("big")) == 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(0, 6_000), st.integers(1, 6_000)), max_size=8),
    prompt=st.integers(1, 11_000),
    system=st.integers(0, 800),
)
def test_a_turns_messages_are_what_the_provider_would_send_them_as(sizes, prompt, system):
    # The turn trims by whole turns, the provider by messages, with one rule: what the turn
    # hands the provider fits already, so the provider sends it as it is.
    conversation = Conversation("fit")
    for asked, answered in sizes:
        conversation.record(make_turn(prompt="q" * asked, reply="r" * answered))
    limit = Aivvm.max_input_chars("gpt-3.5-turbo")
    fitted = conversation.fit("p" * prompt, max_chars=limit, system="s" * system).messages
    if system + prompt > limit:
        with pytest.raises(ValueError):
            Aivvm.input_messages("gpt-3.5-turbo", fitted, "s" * system)
    else:
        assert Aivvm.input_messages("gpt-3.5-turbo", fitted, "s" * system) == fitted


def test_fit_input_drops_a_reply_whose_question_went():
    messages = [user("q" * 10), assistant("a" * 10), user("now")]
    assert fit_input(messages, "", 15) == [user("now")]
    assert fit_input(messages, "", 23) == messages
    with pytest.raises(ValueError, match="shorten it by 1 character or more"):
        fit_input(messages, "", 2)


def test_fit_input_leaves_out_empty_replies():
    messages = [user("q"), assistant(""), user("again"), assistant("a"), user("now")]
    assert fit_input(messages, "", 100) == [user("q"), user("again"), assistant("a"), user("now")]


# -- 4. an empty reply is said to be one, and never becomes a turn --------------------------------

EMPTY = (
    "empty reply: the server answered 200 with no text (a chatbot-ui server does when its "
    "upstream answers fast)"
)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_an_empty_200_is_an_empty_reply_error(fault: FaultServer, framing: str):
    fault.enqueue(Reply(200, b"", framing=framing))
    reply = Aivvm.create_completion("", [user("Hi")], True, base_url=fault.url)
    assert isinstance(reply, StreamingReply)
    with pytest.raises(EmptyReply) as info:
        list(reply)
    assert info.value.short == EMPTY and info.value.partial == ""
    assert str(info.value) == "The reply was empty: " + EMPTY.removeprefix("empty reply: ")
    assert not reply.complete and isinstance(info.value, IncompleteReply)


def test_an_empty_reply_in_a_cell_fails_it_and_records_nothing(ip, fault, capsys):
    magics_for(ip).base_url = fault.url
    ip.run_cell_magic("aivvm", "-c empty", "First")
    fault.enqueue(Reply(200, b"", framing="chunked"))
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", "-c empty", "Say one word")
    assert str(info.value) == EMPTY
    out = capsys.readouterr().out
    # The status line says that it failed; the error line says why, once.
    assert f"[failed · gpt-3.5-turbo · {brief_url(fault.url)} · " in out
    assert out.rstrip().endswith(" 0 chars]") and EMPTY not in out
    conversation = magics_for(ip).chats.get("empty")
    assert [(t.prompt, t.reply) for t in conversation.turns] == [("First", "First")]
    # Nothing of it goes back: the next request carries the one real turn.
    ip.run_cell_magic("aivvm", "-c empty", "Again")
    assert fault.requests[-1].json["messages"] == [user("First"), assistant("First"), user("Again")]


def test_an_empty_reply_from_an_older_conversation_is_not_sent_back(ip, deployment):
    magics = magics_for(ip)
    magics.base_url = deployment.url
    conversation = magics.chats.get("older")
    conversation.record(make_turn(prompt="Asked", reply=""))
    conversation.record(make_turn(prompt="Then", reply="Answered"))
    ip.run_cell_magic("aivvm", "-c older", "Now")
    assert deployment.requests[-1]["messages"] == [
        user("Asked"),
        user("Then"),
        assistant("Answered"),
        user("Now"),
    ]


def test_an_empty_reply_in_the_panel_says_so_and_records_nothing(ip, fault):
    with open_panel(ip, "panelempty", fault.url) as panel:
        fault.enqueue(Reply(200, b"", framing="chunked"))
        assert panel.send("Say one word") == ""
        status = html.unescape(panel.status.value)
        assert "⚠ failed · " in status and EMPTY in status
        assert panel.last_outcome is not None and panel.last_outcome.turn is None
        assert len(panel.conversation) == 0


def test_an_empty_openai_reply_is_no_turn_either(ip, fault):
    fault.enqueue(Reply(200, openai_sse(finish_reason="stop"), framing="chunked"))
    with pytest.raises(AivvmError, match="^empty reply: the server sent no text$"):
        ip.run_cell_magic("aivvm", f"-p openai -m m -c oa --base-url {fault.url}", "Hi")
    assert len(magics_for(ip).chats.get("oa")) == 0


# -- 7. silent caps: a reply at about 1,000 tokens, and one that stops arriving --------------------

CAPPED = "about 1,000 tokens: the reply may have stopped at the server's 1,000-token cap"


def words(count: int) -> str:
    return "".join(f"w{i} " for i in range(count))


def test_a_reply_stopped_at_the_cap_says_it_may_have_been(ip, deployment, capsys):
    magics_for(ip).base_url = deployment.url
    ip.run_cell_magic("aivvm", "-c cap", words(1_500))
    out = capsys.readouterr().out
    assert out.startswith(words(1_000))
    status = out.splitlines()[-1]
    assert status.startswith(f"[gpt-3.5-turbo · {brief_url(deployment.url)} · ")
    assert status.endswith(f"{len(words(1_000)):,} chars · {CAPPED}]")
    turn = magics_for(ip).chats.get("cap").last_turn
    assert turn is not None and turn.complete and turn.reply == words(1_000)


@pytest.mark.parametrize(
    ("reply", "noted"),
    [(words(946), True), (words(1_000), True), (words(100), False), (words(3_000), False)],
    ids=["the-deployments-946-words", "1000-words", "100-words", "3000-words"],
)
def test_the_cap_note_needs_a_reply_about_that_long(fault, reply, noted):
    fault.enqueue(Reply(200, chunks=[f"{w} ".encode() for w in reply.split()], framing="chunked"))
    runner = TurnRunner(
        Conversation("capped"), "Write a lot", TurnSettings(base_url=fault.url, retries=0)
    )
    outcome = runner.run()
    assert outcome.complete and outcome.turn is not None
    assert (outcome.status_note == CAPPED) is noted
    assert outcome.status_note in ("", CAPPED)


def test_the_panel_notes_the_cap_on_the_turn(ip, deployment):
    with open_panel(ip, "panelcap", deployment.url) as panel:
        assert panel.send(words(1_200)) == words(1_000)
        assert html.unescape(panel.status.value).endswith(f"{CAPPED}</small></div>")


def test_a_reply_that_stops_arriving_says_so_and_keeps_its_text(ip, fault, capsys):
    magics = magics_for(ip)
    magics.base_url = fault.url
    magics.read_timeout = 0.5
    fault.enqueue(Stall(5, chunks=[b"so ", b"far "]))
    with pytest.raises(AivvmError, match=r"^reply cut short: no data for 0\.5 s \(read timeout\)$"):
        ip.run_cell_magic("aivvm", "-c stalled", "Tell me")
    status = capsys.readouterr().out.splitlines()[-1]
    assert status.startswith(f"[incomplete · gpt-3.5-turbo · {brief_url(fault.url)} · ")
    assert status.endswith(" 7 chars]")  # the reason is the error's line
    turn = magics.chats.get("stalled").last_turn
    assert turn is not None and turn.reply == "so far " and not turn.complete
    fault.enqueue(Stall(5))
    with pytest.raises(AivvmError, match=r"^No reply from .* within 0\.5 s \(read timeout\)$"):
        ip.run_cell_magic("aivvm", "-c stalled", "Tell me again")
    assert "[failed · gpt-3.5-turbo · " in capsys.readouterr().out


def test_the_provider_tells_a_reply_near_the_cap(deployment):
    reply = Aivvm.create_completion("", [user(words(1_500))], True, base_url=deployment.url)
    assert isinstance(reply, StreamingReply)
    assert reply.text() == words(1_000) and reply.complete
    assert reply.near_cap and reply.token_cap == 1_000
    short = Aivvm.create_completion("", [user("Hi")], True, base_url=deployment.url)
    assert isinstance(short, StreamingReply) and short.text() == "Hi" and not short.near_cap
