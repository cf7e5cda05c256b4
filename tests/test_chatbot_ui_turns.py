"""What a turn sends to a chatbot-ui deployment and what it makes of the answer.

The input is kept within the model's ``maxLength``, since the server trims nothing; an empty
reply (the deployment's own bug) is said to be one and never recorded or sent back; a reply
that stops at the server's 1,000-token cap, and one that stops arriving, say so. Against the
reference server in chatbot-ui mode and the fault server, on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aivvm_magic.conversation import Conversation
from aivvm_magic.errors import AivvmError
from aivvm_magic.input_budget import fit_input
from aivvm_magic.magics import magics_for
from aivvm_magic.protocol import DEFAULT_SYSTEM_MESSAGE
from aivvm_magic.providers import Aivvm
from aivvm_magic.server import ServerHandle
from tests.chatbotkit import serve_deployment
from tests.conftest import make_turn

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
