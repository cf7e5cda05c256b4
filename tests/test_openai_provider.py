"""The OpenAI-compatible provider against FaultServer on 127.0.0.1: SSE framing and faults."""

from __future__ import annotations

import json

import pytest
import requests

from aivvm_magic.providers import (
    APIError,
    IncompleteReply,
    OpenAICompatible,
    StreamError,
    get_provider,
)
from aivvm_magic.providers.sse import SSEParser
from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.faultserver import (
    Reply,
    Truncated,
    json_error,
    openai_event,
    openai_sse,
)

HELLO = [{"role": "user", "content": "Hello"}]


def ask(url: str, **kwargs):
    kwargs.setdefault("retries", 0)
    return OpenAICompatible.create_completion("llama3.2", HELLO, True, base_url=url, **kwargs)


def test_request_shape_and_bearer_key(fault):
    fault.enqueue(Reply(chunks=[openai_sse("Hi", " there")], framing="chunked"))
    assert ask(fault.url, key=CANARY, system_message="Be brief.", temperature=0.2).text() == (
        "Hi there"
    )
    (request,) = fault.requests
    assert request.path == "/chat/completions"
    assert request.headers["authorization"] == f"Bearer {CANARY}"
    assert request.json == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, *HELLO],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
    }


def test_no_key_means_no_authorization_header(fault, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fault.enqueue(Reply(chunks=[openai_sse("ok")]))
    assert ask(fault.url).text() == "ok"
    assert "authorization" not in fault.requests[0].headers


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_sse_split_at_every_byte_boundary(fault, framing):
    body = openai_sse("Grüße ", "😀 ", "end")
    for cut in range(1, len(body)):
        fault.enqueue(Reply(chunks=[body[:cut], body[cut:]], framing=framing))
        assert ask(fault.url).text() == "Grüße 😀 end", cut


def test_chunks_are_yielded_as_events_arrive(fault):
    behaviour = Reply(
        chunks=[openai_sse("one ", done=False), openai_event("two").encode(), b"data: [DONE]\n\n"],
        framing="chunked",
        delay=0.3,
    )
    fault.enqueue(behaviour)
    reply = ask(fault.url)
    assert next(reply) == "one "
    assert len(behaviour.write_times) == 1
    assert list(reply) == ["two"]


def test_crlf_and_comments_and_multiline_data():
    parser = SSEParser()
    text = ": keep-alive\r\ndata: a\r\ndata: b\r\n\r\nevent: x\rdata: c\r\r"
    events = []
    for ch in text:  # one character at a time, \r and \n split apart
        events += parser.feed(ch)
    events += parser.close()
    assert events == ["a\nb", "c"]


def test_missing_done_is_incomplete(fault):
    fault.enqueue(Reply(chunks=[openai_sse("partial ", "text", done=False)]))
    reply = ask(fault.url)
    with pytest.raises(IncompleteReply) as info:
        reply.text()
    assert info.value.partial == "partial text"
    assert "[DONE]" in info.value.reason


def test_truncated_event_stream_is_incomplete(fault):
    body = openai_sse("abc", "def")
    fault.enqueue(Truncated(body, after=len(body) - 20, framing="length"))
    with pytest.raises(IncompleteReply) as info:
        ask(fault.url).text()
    assert info.value.partial == "abc"


def test_error_event_mid_stream(fault):
    error = b'data: {"error": {"message": "model overloaded"}}\n\n'
    body = openai_sse("so far", done=False) + error
    fault.enqueue(Reply(chunks=[body]))
    with pytest.raises(StreamError) as info:
        ask(fault.url).text()
    assert info.value.partial == "so far"
    assert "model overloaded" in str(info.value)
    assert isinstance(info.value, requests.exceptions.RequestException)


def test_401_json_error_body_becomes_a_short_message(fault):
    fault.enqueue(
        json_error(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {CANARY}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    with pytest.raises(APIError) as info:
        ask(fault.url, key=CANARY).text()
    assert info.value.status_code == 401
    assert CANARY not in str(info.value)
    assert str(info.value).endswith("Incorrect API key provided: <redacted>")


def test_non_streaming_server_answer_is_accepted(fault):
    whole = {"choices": [{"message": {"role": "assistant", "content": "all at once"}}]}
    fault.enqueue(
        Reply(200, json.dumps(whole).encode(), headers={"Content-Type": "application/json"})
    )
    assert ask(fault.url).text() == "all at once"


def test_list_models_and_check(fault):
    models = {
        "object": "list",
        "data": [{"id": "llama3.2", "object": "model"}, {"id": "qwen2.5", "object": "model"}],
    }
    payload = json.dumps(models).encode()
    fault.enqueue(
        Reply(200, payload, headers={"Content-Type": "application/json"}),
        Reply(200, payload, headers={"Content-Type": "application/json"}),
    )
    assert [m["id"] for m in OpenAICompatible.list_models(fault.url)] == ["llama3.2", "qwen2.5"]
    assert fault.requests[0].path == "/models"
    try:
        assert OpenAICompatible.check(fault.url) is True
    finally:
        OpenAICompatible.working = False


def test_model_is_required_and_registry_knows_the_provider():
    with pytest.raises(ValueError, match="model id"):
        OpenAICompatible.create_completion("", HELLO, True, base_url="http://127.0.0.1:9")
    assert get_provider("openai") is OpenAICompatible
    with pytest.raises(ValueError, match="aivvm, openai"):
        get_provider("bard")


def test_done_ended_by_lone_carriage_returns(fault):
    fault.enqueue(
        Reply(
            chunks=[b'data: {"choices": [{"delta": {"content": "cr"}}]}\r\r', b"data: [DONE]\r\r"]
        )
    )
    assert ask(fault.url).text() == "cr"


# -- both providers against the one reference server, and switching within a conversation ----


def test_both_providers_against_the_reference_server(reference):
    text = "same engine, two protocols ✓"
    messages = [{"role": "user", "content": text}]
    via_openai = OpenAICompatible.create_completion(
        "gpt-4", messages, True, base_url=reference.url + "/v1", system_message="Sys"
    )
    assert via_openai.text() == text and via_openai.complete
    seen = reference.requests[-1]
    assert seen["route"] == "openai" and seen["chat_request"]["prompt"] == "Sys"
    assert (
        get_provider("aivvm").create_completion("gpt-4", messages, False, base_url=reference.url)
        == text
    )
    assert [m["id"] for m in OpenAICompatible.list_models(reference.url + "/v1")][:1] == [
        "gpt-3.5-turbo"
    ]


# Each provider: its key's environment variable, a model it takes, a body it streams, and the
# key a request carried (Aivvm's in the JSON body, OpenAI's as a Bearer token).
KEY_RULE_CASES = {
    "aivvm": ("AIVVM_API_KEY", "", b"ok", lambda r: r.json["key"]),
    "openai": (
        "OPENAI_API_KEY",
        "llama3.2",
        openai_sse("ok"),
        lambda r: r.headers.get("authorization", "").removeprefix("Bearer "),
    ),
}


@pytest.mark.parametrize("name", KEY_RULE_CASES)
def test_one_key_rule_for_both_providers(fault, monkeypatch, name):
    """A key given is sent as it is, even ``""`` (no key); only ``None`` (the default) falls
    back to the provider's environment variable."""
    env, model, body, sent_key = KEY_RULE_CASES[name]
    provider = get_provider(name)
    monkeypatch.setenv(env, CANARY)
    given = {"omitted": {}, "None": {"key": None}, "empty": {"key": ""}, "own": {"key": "sk-own"}}
    for kwargs in given.values():
        fault.enqueue(Reply(chunks=[body]))
        reply = provider.create_completion(
            model, HELLO, False, base_url=fault.url, retries=0, **kwargs
        )
        assert reply == "ok"
    assert {case: sent_key(r) for case, r in zip(given, fault.requests, strict=True)} == {
        "omitted": CANARY,
        "None": CANARY,
        "empty": "",
        "own": "sk-own",
    }


def test_check_asks_with_the_key_from_the_environment(fault, monkeypatch):
    monkeypatch.setenv("AIVVM_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    json_reply = {"headers": {"Content-Type": "application/json"}}
    fault.enqueue(
        Reply(200, b"[]", **json_reply),  # Aivvm's POST carries the key
        Reply(200, b'{"data": []}', **json_reply),
    )
    try:
        assert get_provider("aivvm").check(fault.url) is True
        assert OpenAICompatible.check(fault.url) is True
    finally:
        get_provider("aivvm").working = OpenAICompatible.working = False
    assert fault.requests[0].json == {"key": CANARY}
    assert fault.requests[1].headers["authorization"] == f"Bearer {CANARY}"


def test_the_magic_switches_providers_within_one_conversation(ip, reference):
    from aivvm_magic.magics import magics_for

    v1 = f"--base-url {reference.url}/v1"
    ip.run_cell_magic("aivvm", f"-c mixed -p openai -m llama3.2 {v1}", "first, over /v1")
    assert reference.requests[-1]["route"] == "openai"
    ip.run_cell_magic("aivvm", "-c mixed", "second, over /api/chat")
    seen = reference.requests[-1]
    assert seen.get("route") != "openai"
    assert [m["content"] for m in seen["messages"]] == [
        "first, over /v1",
        "first, over /v1",
        "second, over /api/chat",
    ]
    turns = magics_for(ip).chats.get("mixed").turns
    assert [t.model for t in turns] == ["llama3.2", "gpt-3.5-turbo"]


def test_provider_traitlet_and_unknown_provider(ip, reference):
    from IPython.core.error import UsageError

    ip.run_line_magic("config", 'AivvmMagics.provider = "openai"')
    ip.run_line_magic("config", f"AivvmMagics.base_url = {reference.url + '/v1'!r}")
    ip.run_cell_magic("aivvm", "-c trait -m gpt-4", "via the traitlet")
    assert reference.requests[-1]["route"] == "openai"
    with pytest.raises(UsageError, match="aivvm, openai"):
        ip.run_cell_magic("aivvm", "-p bard", "hello")


def test_the_panel_follows_the_provider_setting(ip, reference):
    from aivvm_magic.magics import magics_for
    from aivvm_magic.panel import ChatPanel

    panel = ChatPanel("panel-providers", magics=magics_for(ip))
    try:
        assert panel.send("over aivvm") == "over aivvm"
        assert reference.requests[-1].get("route") != "openai"
        ip.run_line_magic("config", 'AivvmMagics.provider = "openai"')
        ip.run_line_magic("config", f"AivvmMagics.base_url = {reference.url + '/v1'!r}")
        assert panel.send("over openai") == "over openai"
        assert reference.requests[-1]["route"] == "openai"
        sent = reference.requests[-1]["messages"]
        assert [m["content"] for m in sent if m["role"] != "system"] == [
            "over aivvm",
            "over aivvm",
            "over openai",
        ]
    finally:
        panel.close()


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_the_finish_reason_is_kept_on_the_reply(fault, reason):
    body = openai_sse("cut ", "short", finish_reason=reason)
    fault.enqueue(Reply(chunks=[body]))
    reply = ask(fault.url)
    assert reply.finish_reason is None  # nothing said yet
    assert reply.text() == "cut short"
    assert reply.finish_reason == reason


def test_the_finish_reason_of_a_whole_answer(fault):
    whole = {"choices": [{"message": {"content": "all"}, "finish_reason": "length"}]}
    fault.enqueue(Reply(200, json.dumps(whole).encode()))
    reply = ask(fault.url)
    assert reply.text() == "all" and reply.finish_reason == "length"


def test_the_aivvm_protocol_gives_its_finish_reason_only_through_our_extension(reference):
    from aivvm_magic import Aivvm

    # The reference server says how a reply ended (tests/test_reply_endings.py); a
    # chatbot-ui server cannot.
    reply = Aivvm.create_completion("", HELLO, True, base_url=reference.url)
    assert reply.text() == "Hello" and reply.finish_reason == "stop"
    with start_server(engine="echo", mode="chatbot-ui") as deployment:
        reply = Aivvm.create_completion("", HELLO, True, base_url=deployment.url, key="")
        assert reply.text() == "Hello" and reply.finish_reason is None


def test_a_reply_cut_at_the_token_limit_says_so_in_the_cell(ip, fault, capsys):
    body = openai_sse("the start of", finish_reason="length")
    fault.enqueue(Reply(chunks=[body]))
    ip.run_cell_magic("aivvm", f"-c limit -p openai -m llama3.2 --base-url {fault.url}", "Go")
    out = capsys.readouterr().out
    assert out.startswith("the start of")
    assert "the reply reached the model's token limit" in out
    fault.enqueue(Reply(chunks=[openai_sse("a whole reply")]))
    ip.run_cell_magic("aivvm", f"-c limit -p openai -m llama3.2 --base-url {fault.url}", "Go")
    assert "token limit" not in capsys.readouterr().out


def test_each_provider_gets_its_own_key(ip, fault, monkeypatch):
    """The Aivvm key (``$AIVVM_API_KEY``) never goes to an OpenAI endpoint, nor the other way."""
    from aivvm_magic.magics import magics_for

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    magics = magics_for(ip)
    magics.api_key = CANARY
    target = f"-p openai -m llama3.2 --base-url {fault.url}"
    fault.enqueue(Reply(chunks=[openai_sse("ok")]))
    ip.run_cell_magic("aivvm", target, "Hi")
    assert "authorization" not in fault.requests[-1].headers
    magics.openai_api_key = "sk-openai-key"
    fault.enqueue(Reply(chunks=[openai_sse("ok")]))
    ip.run_cell_magic("aivvm", target, "Hi")
    assert fault.requests[-1].headers["authorization"] == "Bearer sk-openai-key"
    fault.enqueue(Reply(chunks=[b"ok"]))
    ip.run_cell_magic("aivvm", f"-p aivvm --base-url {fault.url}", "Hi")
    assert fault.requests[-1].json["key"] == CANARY
    assert "sk-openai-key" not in json.dumps(fault.requests[-1].json)
