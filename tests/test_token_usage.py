"""Token usage: asked for, reported by the reference server's ``/v1``, read by the provider.

The provider asks every OpenAI-compatible server to count (``stream_options``) and reads the
last chunk's ``usage`` (from the fault server, with the chunks other servers send); the
reference server reports the echo engine's word count and the local engine's real tokens,
and estimates only for an engine that counts nothing.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator

import pytest
import requests

from aivvm_magic.providers import Aivvm, OpenAICompatible
from aivvm_magic.server import ChatRequest, Engine, start_server
from aivvm_magic.server.engines import split_words
from aivvm_magic.token_usage import TokenUsage
from tests.faultserver import Reply, openai_event, openai_sse

pytestmark = pytest.mark.timeout(120)

HELLO = [{"role": "user", "content": "Hello"}]
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def ask(url: str, messages=HELLO, **kwargs):
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("key", "")
    return OpenAICompatible.create_completion("m", messages, True, base_url=url, **kwargs)


def sse_data(text: str) -> list[dict]:
    events = [e[len("data: ") :] for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# -- TokenUsage ---------------------------------------------------------------------------------


def test_a_summary_says_only_what_is_known():
    assert TokenUsage(12, 5).summary() == "tokens: 12 in, 5 out"
    assert TokenUsage(None, 1_234).summary() == "tokens: 1,234 out"
    assert TokenUsage(7, None).summary() == "tokens: 7 in"
    assert TokenUsage().summary() == "" and not TokenUsage().known
    assert TokenUsage(12, 5).to_dict() == USAGE
    assert TokenUsage(None, 5).to_dict()["total_tokens"] is None


@pytest.mark.parametrize(
    "data",
    [None, "12", [], {}, {"prompt_tokens": "12"}, {"prompt_tokens": True}, {"prompt_tokens": -1}],
)
def test_what_is_no_usage_object_counts_nothing(data):
    assert TokenUsage.from_openai(data) is None


# -- the provider ---------------------------------------------------------------------------


def test_the_provider_asks_for_usage_and_reads_the_last_chunk(fault):
    fault.enqueue(Reply(chunks=[openai_sse("Hi", " there", finish_reason="stop", usage=USAGE)]))
    reply = ask(fault.url)
    assert reply.usage is None  # nothing read yet
    assert reply.text() == "Hi there"
    assert reply.usage == TokenUsage(12, 5) and reply.finish_reason == "stop"
    assert fault.requests[0].json["stream_options"] == {"include_usage": True}


def test_usage_null_in_every_chunk_does_not_hide_the_last_count(fault):
    # vLLM and others put "usage": null in each chunk; only a count is taken.
    nulls = json.dumps({"choices": [{"delta": {"content": "a"}}], "usage": None})
    body = f"data: {nulls}\n\n".encode() + openai_sse("b", usage=USAGE, done=False)
    body += f"data: {nulls}\n\ndata: [DONE]\n\n".encode()
    fault.enqueue(Reply(chunks=[body]))
    reply = ask(fault.url)
    assert reply.text() == "aba" and reply.usage == TokenUsage(12, 5)


def test_a_server_that_does_not_count_leaves_usage_unknown(fault):
    fault.enqueue(Reply(chunks=[openai_sse("plain", finish_reason="stop")]))
    reply = ask(fault.url)
    assert reply.text() == "plain" and reply.usage is None


def test_a_whole_answer_carries_its_usage(fault):
    whole = {"choices": [{"message": {"content": "all"}, "finish_reason": "stop"}], "usage": USAGE}
    fault.enqueue(Reply(chunks=[json.dumps(whole).encode()]))
    reply = ask(fault.url)
    assert reply.text() == "all" and reply.usage == TokenUsage(12, 5)


def test_a_malformed_usage_chunk_is_no_count_and_no_failure(fault):
    odd = json.dumps({"choices": [], "usage": {"prompt_tokens": "many"}})
    body = (openai_event("fine") + f"data: {odd}\n\ndata: [DONE]\n\n").encode()
    fault.enqueue(Reply(chunks=[body]))
    reply = ask(fault.url)
    assert reply.text() == "fine" and reply.complete and reply.usage is None


def test_the_aivvm_protocol_has_no_usage(reference):
    reply = Aivvm.create_completion("gpt-4", HELLO, True, base_url=reference.url, key="")
    assert reply.text() == "Hello" and reply.usage is None


# -- the reference server -----------------------------------------------------------------


def echo_counts(system: str, messages: list[dict[str, str]]) -> int:
    return sum(len(split_words(t)) for t in (system, *(m["content"] for m in messages)))


def test_the_echo_engine_counts_words_in_the_request_and_the_reply(reference):
    messages = [
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "one two"},
        {"role": "user", "content": "three four five"},
    ]
    reply = ask(reference.url + "/v1", messages, system_message="Be very brief.")
    assert reply.text() == "three four five"
    assert reply.usage == TokenUsage(echo_counts("Be very brief.", messages), 3)


def test_the_usage_chunk_is_openais_shape_and_only_when_asked(reference):
    body = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "a b c d"}],
        "stream": True,
        "max_tokens": 2,
    }
    url = reference.url + "/v1/chat/completions"
    plain = sse_data(requests.post(url, json=body, timeout=10).text)
    assert all("usage" not in event for event in plain)
    counted = sse_data(
        requests.post(
            url, json={**body, "stream_options": {"include_usage": True}}, timeout=10
        ).text
    )
    last = counted[-1]
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk"
    # Cut at max_tokens: the reply's count is what was sent, not the whole echo.
    assert last["usage"]["completion_tokens"] == 2
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 2
    assert counted[-2]["choices"][0]["finish_reason"] == "length"
    whole = requests.post(url, json={**body, "stream": False}, timeout=10).json()
    assert whole["usage"] == last["usage"]


class Uncounting(Engine):
    """An engine that returns a bare finish reason: the route estimates its tokens."""

    name = "uncounting"

    def generate(self, request: ChatRequest) -> Iterator[str]:
        yield "x" * 10
        yield "y"
        return "stop"


def test_an_engine_that_counts_nothing_gets_estimates():
    with start_server(engine=Uncounting()) as server:
        messages = [{"role": "user", "content": "z" * 40}]
        reply = ask(server.url + "/v1", messages, system_message="s" * 4)
        assert reply.text() == "x" * 10 + "y"
        # Two pieces; 44 characters of input at four to a token.
        assert reply.usage == TokenUsage(11, 2)


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="the local engine needs llama-cpp"
)
def test_the_local_engine_reports_its_real_tokens(monkeypatch):
    monkeypatch.delenv("AIVVM_LOCAL_MODEL", raising=False)
    with start_server(engine="local", max_tokens=8) as server:
        # Accented words: llama-cpp holds back tokens that end inside a character, so its
        # pieces are fewer than the tokens, and only the tokenizer's count is right.
        messages = [{"role": "user", "content": "Repeat: Äpfel naïve café crème brûlée"}]
        reply = ask(server.url + "/v1", messages, system_message="Be brief.", temperature=0.0)
        text = reply.text()
        run = server.engine.runs[-1]
        engine = server.engine
        prompt = [{"role": "system", "content": "Be brief."}, *messages]
        assert reply.finish_reason == "length"
        assert reply.usage == TokenUsage(engine.count_tokens(prompt), 8)
        assert run.completion_tokens == 8 and run.prompt_tokens == reply.usage.prompt_tokens
        assert engine._text_tokens(text) == 8
