"""What answers, and how a reply ended, on the Aivvm path: the reference server's extension.

The Aivvm protocol streams bare text, so the server names its model in a header
(``X-Aivvm-Model``) and keeps each reply's ending at ``/api/replies?id=`` (named by the
``X-Aivvm-Reply-End`` header); the client reads both when they are there. A chatbot-ui
server sends neither, and its replies read as before. Real HTTP on 127.0.0.1 throughout.
"""

from __future__ import annotations

from collections.abc import Generator

import requests

from aivvm_magic import protocol
from aivvm_magic.conversation import Conversation
from aivvm_magic.providers import Aivvm
from aivvm_magic.server import ChatRequest, EchoEngine, start_server
from aivvm_magic.server.local import own_system_message
from aivvm_magic.turns import TOKEN_LIMIT_NOTE, TurnRunner, TurnSettings

HELLO = [{"role": "user", "content": "one two three four"}]


class ShortEcho(EchoEngine):
    """The echo engine with a token limit of two pieces, as the local engine has 512."""

    def generate(self, request: ChatRequest) -> Generator[str, None, str]:
        pieces = super().generate(request)
        for _ in range(2):
            yield next(pieces)
        pieces.close()
        return "length"

    @property
    def model_name(self) -> str:
        return "Short-Echo-2"


def test_a_reply_says_what_answered_and_that_it_ended_whole() -> None:
    with start_server(engine="echo") as server:
        reply = Aivvm.create_completion("gpt-4", HELLO, True, base_url=server.url, key="")
        assert reply.text() == "one two three four"
        assert reply.answered_by == "echo engine"
        assert reply.finish_reason == "stop"


def test_a_reply_cut_at_the_token_limit_says_so_on_the_aivvm_path() -> None:
    with start_server(engine=ShortEcho()) as server:
        settings = TurnSettings(model="gpt-3.5-turbo", base_url=server.url)
        outcome = TurnRunner(Conversation("c"), "one two three four", settings).run()
    assert outcome.complete and outcome.text == "one two "
    assert outcome.finish_reason == "length"
    assert outcome.status_note == TOKEN_LIMIT_NOTE
    assert outcome.answered_by == "Short-Echo-2"


def test_the_ending_is_kept_only_once_the_reply_ended() -> None:
    with start_server(engine="echo") as server:
        answer = requests.post(
            server.url + protocol.CHAT_PATH,
            json={
                "model": {"id": "gpt-4", "name": "GPT-4"},
                "messages": HELLO,
                "key": "",
                "prompt": "",
                "temperature": 0,
            },
            timeout=5,
        )
        where = answer.headers["X-Aivvm-Reply-End"]
        assert where.startswith("/api/replies?id=")
        assert answer.headers["X-Aivvm-Model"] == "echo engine"
        ending = requests.get(server.url + where, timeout=5)
        assert ending.json() == {"finish_reason": "stop", "model": "echo engine"}
        unknown = requests.get(server.url + "/api/replies?id=nothing", timeout=5)
        assert unknown.status_code == 404


def test_a_chatbot_ui_server_sends_neither_and_the_reply_reads_as_before() -> None:
    with start_server(engine="echo", mode="chatbot-ui") as server:
        reply = Aivvm.create_completion("gpt-4", HELLO, True, base_url=server.url, key="")
        assert reply.text() == "one two three four"
        assert reply.answered_by is None and reply.finish_reason is None


def test_the_local_engine_leaves_the_default_prompt_to_the_chat_template() -> None:
    assert not own_system_message(protocol.DEFAULT_SYSTEM_MESSAGE)
    assert not own_system_message(f"  {protocol.DEFAULT_SYSTEM_MESSAGE}\n")
    assert not own_system_message("   ")
    assert own_system_message("You are a terse assistant.")
