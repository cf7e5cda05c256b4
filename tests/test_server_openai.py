"""Tests of the reference server's OpenAI chat API (``/v1``), against real servers on 127.0.0.1.

The same engines answer ``/api/chat`` and ``/v1/chat/completions``; these tests drive the
OpenAI side with ``requests``, raw sockets and the official ``openai`` client.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from aivvm_magic.protocol import CHAT_PATH, DEFAULT_SYSTEM_MESSAGE, DEFAULT_TEMPERATURE, models
from aivvm_magic.server import ChatRequest, EchoEngine, ServerHandle, start_server
from aivvm_magic.server.engines import split_words
from aivvm_magic.server.openai_api import (
    COMPLETIONS_PATH,
    MODELS_PATH,
    OpenAIError,
    bearer_token,
    parse_completion_request,
)
from tests.serverkit import FailingEngine, decode_chunked, raw_exchange, split_response

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10  # seconds, for every client call
SECRET = "sk-test-OPENAI-SECRET-4e8b21"
ERROR_FIELDS = {"message", "type", "param", "code"}


def completion_body(content: str = "Hello there", **overrides: Any) -> dict[str, Any]:
    """A valid /v1/chat/completions body whose last user message is ``content``."""
    body: dict[str, Any] = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": content}],
    }
    body.update(overrides)
    return body


def post_completion(url: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url + COMPLETIONS_PATH, json=body, timeout=TIMEOUT, **kwargs)


def sse_data(text: str) -> list[str]:
    """The ``data`` of each event in an event stream, checking the framing on the way."""
    assert text.endswith("\n\n"), text[-80:]
    events = text[:-2].split("\n\n")
    data = []
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
        data.append(event[len("data: ") :])
    return data


def stream_text(data: list[str], finish: str = "stop") -> str:
    """The reply carried by a complete event stream, checking every chunk's shape."""
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        assert [choice["index"] for choice in chunk["choices"]] == [0]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] == finish
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


def raw_request(
    path: str, body: bytes, headers: dict[str, str] | None = None, version: str = "HTTP/1.1"
) -> bytes:
    head = f"POST {path} {version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def assert_openai_error(response: requests.Response, status: int, param: str | None = None):
    """Check the status and OpenAI's error shape; return the error object."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    document = response.json()
    assert set(document) == {"error"}
    error = document["error"]
    assert set(error) == ERROR_FIELDS
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with start_server() as srv:
        yield srv


class RecordingEcho(EchoEngine):
    """An echo engine that records its requests, its pieces and whether it was closed."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.seen: list[ChatRequest] = []
        self.produced = 0
        self.closed = threading.Event()
        self.finished = threading.Event()

    def generate(self, request: ChatRequest) -> Iterator[str]:
        self.seen.append(request)
        try:
            for piece in super().generate(request):
                self.produced += 1
                yield piece
            self.finished.set()
        except GeneratorExit:
            self.closed.set()
            raise


# -- streaming --------------------------------------------------------------------------------

STREAMED_CONTENTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "Grüße aus Köln, 世界, Ελληνικά, naïve café",
    "emoji 😀🎉👩‍👩‍👧 and a flag 🇺🇦",
    'quotes " and \\ backslashes, newlines\n\nand "data: [DONE]" inside',
    "",
    "word " * 200,
]


@pytest.mark.parametrize("content", STREAMED_CONTENTS)
def test_stream_carries_the_echo_reply_as_events(server: ServerHandle, content: str) -> None:
    body = completion_body(content, model="any-model-id", stream=True)
    response = post_completion(server.url, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    data = sse_data(response.content.decode("utf-8"))
    assert stream_text(data) == content
    # The requested id comes back as is: one engine serves every id.
    assert {json.loads(item)["model"] for item in data[:-1]} == {"any-model-id"}
    assert server.wait_for(lambda: server.stats.completed == 1, timeout=2)


def test_each_engine_piece_is_one_event_in_one_chunk(server: ServerHandle) -> None:
    content = " Hello,  wide 世界 😀 "
    body = json.dumps(completion_body(content, stream=True)).encode()
    status, headers, payload = split_response(
        raw_exchange(server, raw_request(COMPLETIONS_PATH, body))
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["cache-control"] == "no-cache"
    chunks, terminated = decode_chunked(payload)
    assert terminated
    events = [chunk.decode("utf-8") for chunk in chunks]
    # The role event, one event per piece, then the stop chunk with [DONE].
    assert len(events) == len(split_words(content)) + 2
    pieces = [json.loads(sse_data(event)[0])["choices"][0]["delta"] for event in events[1:-1]]
    assert [delta["content"] for delta in pieces] == split_words(content)
    assert sse_data(events[-1])[-1] == "[DONE]"


def finish_reasons(data: list[str]) -> list[str | None]:
    return [json.loads(item)["choices"][0]["finish_reason"] for item in data[:-1]]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_reply_cut_at_the_token_budget_says_length(server: ServerHandle, field: str) -> None:
    content = "one two three four five"
    whole = post_completion(server.url, completion_body(content, **{field: 3})).json()
    (choice,) = whole["choices"]
    assert choice["message"]["content"] == "one two three "
    assert choice["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 3
    streamed = post_completion(server.url, completion_body(content, stream=True, **{field: 3}))
    data = sse_data(streamed.text)
    assert stream_text(data, finish="length") == "one two three "


def test_a_reply_within_its_token_budget_says_stop(server: ServerHandle) -> None:
    content = "one two three"
    choice = post_completion(server.url, completion_body(content, max_tokens=3)).json()
    assert choice["choices"][0]["finish_reason"] == "stop"
    data = sse_data(post_completion(server.url, completion_body(content, stream=True)).text)
    assert finish_reasons(data) == [None] * (len(data) - 2) + ["stop"]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("three", "one two "),
        (["five", "tw"], "one "),
        (["", "absent"], "one two three four"),
        ("one", ""),
    ],
)
def test_stop_sequences_end_the_reply_before_them(
    server: ServerHandle, stop: str | list[str], expected: str
) -> None:
    content = "one two three four"
    whole = post_completion(server.url, completion_body(content, stop=stop)).json()
    assert whole["choices"][0]["message"]["content"] == expected
    assert whole["choices"][0]["finish_reason"] == "stop"
    body = completion_body(content, stop=stop, stream=True)
    assert stream_text(sse_data(post_completion(server.url, body).text)) == expected


def test_more_than_four_stop_sequences_are_refused(server: ServerHandle) -> None:
    response = post_completion(server.url, completion_body(stop=list("abcde")))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"


def test_events_arrive_while_the_reply_is_generated() -> None:
    words, delay = 8, 0.1
    content = " ".join(f"w{i}" for i in range(words))
    with start_server(delay=delay) as srv:
        started = time.monotonic()
        with post_completion(srv.url, completion_body(content, stream=True), stream=True) as r:
            lines = r.iter_lines(decode_unicode=True)
            first_content = None
            for line in lines:
                if line.startswith("data: {") and '"w0 "' in line:
                    first_content = time.monotonic() - started
                    break
            rest = [line for line in lines if line]
        total = time.monotonic() - started
    assert first_content is not None
    assert rest[-1] == "data: [DONE]"
    assert total >= (words - 1) * delay * 0.9
    assert first_content < (words - 1) * delay / 2


def test_stream_usage_chunk_when_asked(server: ServerHandle) -> None:
    body = completion_body("one two three", stream=True, stream_options={"include_usage": True})
    data = sse_data(post_completion(server.url, body).text)
    assert data[-1] == "[DONE]"
    usage_chunk = json.loads(data[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert stream_text(data[:-2] + ["[DONE]"]) == "one two three"


def test_http_1_0_client_gets_events_framed_by_closing(server: ServerHandle) -> None:
    body = json.dumps(completion_body("old client", stream=True)).encode()
    raw = raw_exchange(server, raw_request(COMPLETIONS_PATH, body, version="HTTP/1.0"))
    status, headers, payload = split_response(raw)
    assert " 200 " in status
    assert "transfer-encoding" not in headers
    assert stream_text(sse_data(payload.decode("utf-8"))) == "old client"


def test_lone_surrogates_come_back_as_replacement_characters(server: ServerHandle) -> None:
    data = json.dumps(completion_body("a\ud800b \udfff", stream=True)).encode()
    response = requests.post(
        server.url + COMPLETIONS_PATH,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert stream_text(sse_data(response.content.decode("utf-8"))) == "a\ufffdb \ufffd"


# -- mapping onto the engine's request --------------------------------------------------------


def test_system_message_becomes_the_prompt(server: ServerHandle) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "second"},
    ]
    response = post_completion(server.url, completion_body(messages=messages, stream=True))
    assert stream_text(sse_data(response.text)) == "second"
    (recorded,) = server.requests
    assert recorded["route"] == "openai"
    assert recorded["messages"] == messages  # the body as received
    assert recorded["chat_request"] == {
        "model_id": "gpt-4",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ],
        "prompt": "You are terse.\n\nAnswer in French.",
        "temperature": DEFAULT_TEMPERATURE,
        "max_tokens": None,
        "stop": (),
    }


def test_the_engine_gets_the_mapped_request() -> None:
    engine = RecordingEcho()
    with start_server(engine) as srv:
        body = completion_body(
            "hi",
            model="my-local-model",
            temperature=0.2,
            max_tokens=64,
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "part one"}]},
            ],
        )
        assert post_completion(srv.url, body).json()["choices"][0]["message"]["content"] == (
            "part one"
        )
        post_completion(srv.url, completion_body("no system message"))
    first, second = engine.seen
    assert first == ChatRequest(
        model_id="my-local-model",
        messages=[{"role": "user", "content": "part one"}],
        prompt="Be brief.",
        temperature=0.2,
        max_tokens=64,
    )
    assert second.prompt == DEFAULT_SYSTEM_MESSAGE
    assert second.temperature == DEFAULT_TEMPERATURE
    assert second.max_tokens is None


def test_parse_maps_content_parts_and_options() -> None:
    request = parse_completion_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": "c", "name": "bot"},
                {"role": "user", "content": []},
            ],
            "stream": None,
            "temperature": None,
            "n": 1,
            "top_p": 0.5,
            "stop": ["\n"],
            "user": "someone",
            "seed": 7,
            "tools": [],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stream_options": {"include_usage": True},
        }
    )
    assert request.chat.messages == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": ""},
    ]
    assert request.chat.temperature == DEFAULT_TEMPERATURE
    # The newer name wins; usage chunks exist only in streams.
    assert request.chat.max_tokens == 20
    assert request.chat.stop == ("\n",)
    assert request.stream is False and request.include_usage is False


def test_only_system_messages_is_an_empty_reply(server: ServerHandle) -> None:
    body = completion_body(messages=[{"role": "system", "content": "x"}])
    assert post_completion(server.url, body).json()["choices"][0]["message"]["content"] == ""


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


# -- the whole reply at once ------------------------------------------------------------------


@pytest.mark.parametrize("content", ["Hello, world!", "emoji 😀🎉 and 世界", ""])
def test_non_streaming_reply_shape(server: ServerHandle, content: str) -> None:
    response = post_completion(server.url, completion_body(content, model="gpt-3.5-turbo"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(response.content)
    document = response.json()
    assert set(document) == {"id", "object", "created", "model", "choices", "usage"}
    assert document["id"].startswith("chatcmpl-")
    assert document["object"] == "chat.completion"
    assert isinstance(document["created"], int)
    assert document["model"] == "gpt-3.5-turbo"
    (choice,) = document["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": content}
    assert choice["finish_reason"] == "stop"
    usage = document["usage"]
    assert usage["completion_tokens"] == len(split_words(content))
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Counted just after the answer is written, so possibly after the client has it.
    assert server.wait_for(lambda: server.stats.completed == 1, timeout=2)
    assert server.stats.started == 1


def test_keep_alive_across_both_apis(server: ServerHandle) -> None:
    aivvm_body = {
        "model": dict(models["gpt-4"]),
        "messages": [{"role": "user", "content": "aivvm"}],
        "key": "",
        "prompt": DEFAULT_SYSTEM_MESSAGE,
        "temperature": DEFAULT_TEMPERATURE,
    }
    with requests.Session() as session:
        url = server.url + COMPLETIONS_PATH
        for content in ("one", "two"):
            reply = session.post(url, json=completion_body(content), timeout=TIMEOUT).json()
            assert reply["choices"][0]["message"]["content"] == content
        streamed = session.post(url, json=completion_body("three", stream=True), timeout=TIMEOUT)
        assert stream_text(sse_data(streamed.text)) == "three"
        assert session.post(url, json={"model": "m"}, timeout=TIMEOUT).status_code == 400
        assert session.get(server.url + "/v1/nope", timeout=TIMEOUT).status_code == 404
        assert session.get(server.url + MODELS_PATH, timeout=TIMEOUT).status_code == 200
        assert session.post(server.url + CHAT_PATH, json=aivvm_body, timeout=TIMEOUT).text == (
            "aivvm"
        )
    assert server.stats.connections == 1
    assert server.wait_for(lambda: server.stats.completed == 4, timeout=2)
    assert server.stats.rejected == 2
    # Both APIs' bodies are recorded; the OpenAI ones say so.
    routes = [body.get("route") for body in server.requests]
    assert routes == ["openai", "openai", "openai", "openai", None]


# -- errors -----------------------------------------------------------------------------------


def _without(name: str) -> dict[str, Any]:
    body = completion_body()
    del body[name]
    return body


INVALID_BODIES: dict[str, tuple[Any, str | None]] = {
    "not an object": ([completion_body()], None),
    "missing model": (_without("model"), "model"),
    "empty model": (completion_body(model=""), "model"),
    "model not a string": (completion_body(model={"id": "gpt-4"}), "model"),
    "missing messages": (_without("messages"), "messages"),
    "messages not a list": (completion_body(messages="hi"), "messages"),
    "messages empty": (completion_body(messages=[]), "messages"),
    "message not an object": (completion_body(messages=["hi"]), "messages[0]"),
    "tool role": (
        completion_body(messages=[{"role": "tool", "content": "x"}]),
        "messages[0].role",
    ),
    "missing role": (completion_body(messages=[{"content": "x"}]), "messages[0].role"),
    "content a number": (
        completion_body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
    ),
    "content null": (
        completion_body(messages=[{"role": "user", "content": None}]),
        "messages[0].content",
    ),
    "image part": (
        completion_body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                    ],
                }
            ]
        ),
        "messages[0].content[1].type",
    ),
    "text part without text": (
        completion_body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
    ),
    "temperature above 2": (completion_body(temperature=2.5), "temperature"),
    "temperature below 0": (completion_body(temperature=-0.1), "temperature"),
    "temperature a string": (completion_body(temperature="0.7"), "temperature"),
    "temperature a bool": (completion_body(temperature=True), "temperature"),
    "temperature NaN": (completion_body(temperature=float("nan")), "temperature"),
    "n of 2": (completion_body(n=2), "n"),
    "n of 0": (completion_body(n=0), "n"),
    "stream a string": (completion_body(stream="yes"), "stream"),
    "stream_options not an object": (completion_body(stream_options=True), "stream_options"),
    "top_p above 1": (completion_body(top_p=1.5), "top_p"),
    "max_tokens of 0": (completion_body(max_tokens=0), "max_tokens"),
    "max_tokens a float": (completion_body(max_tokens=1.5), "max_tokens"),
    "stop a number": (completion_body(stop=5), "stop"),
    "user a number": (completion_body(user=5), "user"),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_body_is_an_openai_400(server: ServerHandle, case: str) -> None:
    body, param = INVALID_BODIES[case]
    for stream in (False, True):
        sent = {**body, "stream": body.get("stream", stream)} if isinstance(body, dict) else body
        # json.dumps, unlike requests' json=, lets NaN through, as a careless client might.
        response = requests.post(
            server.url + COMPLETIONS_PATH,
            data=json.dumps(sent),
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT,
        )
        error = assert_openai_error(response, 400)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert "\n" not in error["message"] and len(error["message"]) < 120
    assert server.stats.rejected == 2
    assert server.stats.started == 0


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe{}", b"[1, 2"])
def test_malformed_json_is_an_openai_400(server: ServerHandle, data: bytes) -> None:
    response = requests.post(
        server.url + COMPLETIONS_PATH,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    error = assert_openai_error(response, 400)
    assert "JSON" in error["message"]
    assert len(server.requests) == 0


@pytest.mark.parametrize(
    "path", ["/v1", "/v1/", "/v1/completions", "/v1/chat", "/v1/models/gpt-4", "/v1/embeddings"]
)
def test_unknown_path_under_v1_is_an_openai_404(server: ServerHandle, path: str) -> None:
    for method in ("GET", "POST"):
        response = requests.request(method, server.url + path, json={}, timeout=TIMEOUT)
        error = assert_openai_error(response, 404)
        assert error["message"] == f"Invalid URL ({method} {path})"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", COMPLETIONS_PATH, "POST"),
        ("PUT", COMPLETIONS_PATH, "POST"),
        ("POST", MODELS_PATH, "GET"),
        ("DELETE", MODELS_PATH, "GET"),
    ],
)
def test_wrong_method_under_v1_is_an_openai_405(
    server: ServerHandle, method: str, path: str, allow: str
) -> None:
    response = requests.request(method, server.url + path, timeout=TIMEOUT)
    assert_openai_error(response, 405)
    assert response.headers["Allow"] == allow


def test_other_paths_keep_their_plain_text_errors(server: ServerHandle) -> None:
    for path in ("/v2/chat/completions", "/v10", "/api/v1"):
        response = requests.get(server.url + path, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.text == "Not found"


def test_oversized_body_is_an_openai_413(server: ServerHandle) -> None:
    request = (
        f"POST {COMPLETIONS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, headers, payload = split_response(raw_exchange(server, request))
    assert status.startswith("HTTP/1.1 413 ")
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert set(json.loads(payload)["error"]) == ERROR_FIELDS


@pytest.mark.parametrize("stream", [False, True])
def test_engine_failing_before_the_first_piece_is_an_openai_500(stream: bool) -> None:
    lines: list[str] = []
    with start_server(FailingEngine(after=0), log=lines.append) as srv:
        response = post_completion(srv.url, completion_body(stream=stream))
        error = assert_openai_error(response, 500)
        assert error["type"] == "server_error"
        assert "fell over" not in response.text  # engine internals stay in the server's log
        assert srv.wait_for(lambda: srv.stats.failed == 1, timeout=2)
        assert srv.stats.started == 0
    assert any("engine error: RuntimeError" in line for line in lines)


def test_engine_failing_mid_stream_ends_with_an_error_event_and_no_done() -> None:
    with start_server(FailingEngine(after=2)) as srv:
        body = json.dumps(completion_body(stream=True)).encode()
        _, _, payload = split_response(raw_exchange(srv, raw_request(COMPLETIONS_PATH, body)))
        chunks, terminated = decode_chunked(payload)
        data = sse_data(b"".join(chunks).decode("utf-8"))
        assert "[DONE]" not in data
        contents = [json.loads(item)["choices"][0]["delta"].get("content") for item in data[1:-1]]
        assert contents == ["piece0 ", "piece1 "]
        error = json.loads(data[-1])
        assert set(error) == {"error"} and set(error["error"]) == ERROR_FIELDS
        assert error["error"]["type"] == "server_error"
        # The body is well framed; only the missing [DONE] and the error event tell.
        assert terminated
        assert srv.wait_for(lambda: srv.stats.failed == 1, timeout=2)


def test_engine_failing_mid_reply_without_streaming_is_a_500() -> None:
    with start_server(FailingEngine(after=2)) as srv:
        response = post_completion(srv.url, completion_body())
        assert assert_openai_error(response, 500)["type"] == "server_error"
        assert "piece0" not in response.text
        # The handler counts the failure after it has answered: wait for it.
        assert srv.wait_for(lambda: srv.stats.failed == 1, timeout=2)


# -- the API key ------------------------------------------------------------------------------


def test_bearer_key_is_enforced_and_never_shown() -> None:
    wrong = "sk-wrong-KEY-91ab77"
    seen: list[str] = []
    log: list[str] = []
    with start_server(api_key=SECRET, log=log.append) as srv:
        attempts = [
            {},
            {"Authorization": f"Bearer {wrong}"},
            {"Authorization": f"Bearer {SECRET.upper()}"},
            {"Authorization": f"Basic {SECRET}"},
            {"Authorization": SECRET},
            {"Authorization": "Bearer "},
        ]
        for headers in attempts:
            for path, method in ((COMPLETIONS_PATH, "POST"), (MODELS_PATH, "GET")):
                response = requests.request(
                    method,
                    srv.url + path,
                    json=completion_body("hi"),
                    headers=headers,
                    timeout=TIMEOUT,
                )
                error = assert_openai_error(response, 401)
                assert error["type"] == "invalid_request_error"
                assert error["code"] == "invalid_api_key"
                assert response.headers["WWW-Authenticate"] == "Bearer"
                seen.append(response.text + str(response.headers))
        # Unauthorised and malformed: the answer is the 401, not a hint about the body.
        response = post_completion(srv.url, {"model": ""}, headers={"Authorization": wrong})
        assert response.status_code == 401
        seen.append(response.text)

        good = {"Authorization": f"Bearer {SECRET}"}
        response = post_completion(srv.url, completion_body("welcome"), headers=good)
        assert response.json()["choices"][0]["message"]["content"] == "welcome"
        seen.append(response.text + str(response.headers))
        # The scheme is case-insensitive.
        response = post_completion(
            srv.url,
            completion_body("again", stream=True),
            headers={"Authorization": f"bearer {SECRET}"},
        )
        assert stream_text(sse_data(response.text)) == "again"
        seen.append(response.text)
        response = requests.get(srv.url + MODELS_PATH, headers=good, timeout=TIMEOUT)
        assert response.status_code == 200
        seen.append(response.text)
        # A valid key with another fault: the reason names the fault only.
        response = post_completion(srv.url, completion_body(n=3), headers=good)
        assert response.status_code == 400
        seen.append(response.text)

        recorded = list(srv.requests)
        seen.extend([repr(srv), str(srv.stats), repr(srv.engine), json.dumps(recorded)])
        assert srv.stats.rejected == len(attempts) * 2 + 2
    seen.extend(log)

    assert [body["authorization"] for body in recorded] == [""] + ["<redacted>"] * 9
    assert all(body["route"] == "openai" for body in recorded)
    everything = "\n".join(seen)
    for secret in (SECRET, SECRET.upper(), wrong):
        assert secret not in everything


def test_a_key_in_the_body_is_redacted_too(server: ServerHandle) -> None:
    post_completion(server.url, completion_body(key=SECRET))
    (recorded,) = server.requests
    assert recorded["key"] == "<redacted>"
    assert SECRET not in json.dumps(recorded)


def test_without_api_key_any_bearer_is_accepted(server: ServerHandle) -> None:
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = post_completion(server.url, completion_body("ok"), headers=headers)
        assert response.json()["choices"][0]["message"]["content"] == "ok"


# -- models -----------------------------------------------------------------------------------


def test_models_listing() -> None:
    with start_server() as srv:
        response = requests.get(srv.url + MODELS_PATH, timeout=TIMEOUT)
        served_by = srv.engine.served_by()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    document = response.json()
    assert set(document) == {"object", "data"}
    assert document["object"] == "list"
    assert [m["id"] for m in document["data"]] == list(models)
    created = document["data"][0]["created"]
    assert isinstance(created, int) and abs(created - time.time()) < 60
    for model in document["data"]:
        assert model == {
            "id": model["id"],
            "object": "model",
            "created": created,
            "owned_by": "aivvm-magic",
            "served_by": served_by,
        }


# -- disconnects ------------------------------------------------------------------------------


def test_client_disconnect_mid_stream_stops_the_engine() -> None:
    engine = RecordingEcho(delay=0.02)
    words = 500  # 10 s of streaming if nobody stopped it
    content = " ".join(f"word{i}" for i in range(words))
    with start_server(engine) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        try:
            body = json.dumps(completion_body(content, stream=True)).encode()
            sock.sendall(raw_request(COMPLETIONS_PATH, body))
            received = b""
            while b'"word0 "' not in received:
                data = sock.recv(4096)
                assert data, "server closed before the first piece"
                received += data
        finally:
            sock.close()
        assert srv.wait_for(lambda: srv.stats.disconnected == 1, timeout=2)
        assert engine.closed.wait(2)
        assert srv.stats.completed == 0
        assert srv.stats.started == 1
        assert not engine.finished.is_set()
        assert engine.produced < words / 2
        # The server is unharmed and still answers.
        reply = post_completion(srv.url, completion_body("still here")).json()
        assert reply["choices"][0]["message"]["content"] == "still here"


def test_client_leaving_a_non_streamed_reply_stops_the_engine() -> None:
    engine = RecordingEcho(delay=0.02)
    words = 500
    content = " ".join(f"word{i}" for i in range(words))
    with start_server(engine) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        try:
            sock.sendall(
                raw_request(COMPLETIONS_PATH, json.dumps(completion_body(content)).encode())
            )
            assert srv.wait_for(lambda: engine.produced >= 3, timeout=2)
        finally:
            sock.close()
        assert srv.wait_for(lambda: srv.stats.disconnected == 1, timeout=2)
        assert engine.closed.wait(2)
        assert engine.produced < words / 2
        assert srv.stats.completed == 0


def test_close_ends_an_open_event_stream_promptly() -> None:
    engine = RecordingEcho(delay=0.02)
    content = " ".join(f"word{i}" for i in range(1000))
    srv = start_server(engine)
    response = post_completion(srv.url, completion_body(content, stream=True), stream=True)
    lines = response.iter_lines()
    assert next(lines)
    started = time.monotonic()
    srv.close()
    assert time.monotonic() - started < 2
    received = []
    with pytest.raises(requests.exceptions.RequestException):
        for line in lines:
            received.append(line)
    response.close()
    assert b"data: [DONE]" not in received
    assert engine.closed.wait(2)
    assert srv.wait_for(lambda: srv.stats.aborted == 1, timeout=2)


def test_concurrent_clients_on_both_apis() -> None:
    clients = 40

    def one_client(index: int) -> tuple[str, str]:
        content = f"client {index}: " + " ".join(f"{index}-{n}" for n in range(5))
        if index % 2:
            response = post_completion(srv.url, completion_body(content, stream=True))
            return content, stream_text(sse_data(response.text))
        aivvm = {
            "model": dict(models["gpt-3.5-turbo"]),
            "messages": [{"role": "user", "content": content}],
            "key": "",
            "prompt": "",
            "temperature": 0.7,
        }
        response = requests.post(srv.url + CHAT_PATH, json=aivvm, timeout=TIMEOUT)
        return content, response.text

    with start_server(delay=0.01) as srv:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            results = list(pool.map(one_client, range(clients), timeout=30))
        assert srv.wait_for(lambda: srv.stats.completed == clients, timeout=5)
        assert srv.stats.disconnected == 0
    for content, text in results:
        assert text == content


def test_access_log_names_the_v1_routes() -> None:
    lines: list[str] = []
    with start_server(log=lines.append) as srv:
        post_completion(srv.url, completion_body("private words", stream=True))
        requests.get(srv.url + MODELS_PATH, timeout=TIMEOUT)
        requests.get(srv.url + "/v1/missing", timeout=TIMEOUT)
    assert lines == ["POST /v1/chat/completions 200", "GET /v1/models 200", "GET /v1/missing 404"]


# -- the official openai client ---------------------------------------------------------------


@pytest.fixture
def openai_module() -> Any:
    return pytest.importorskip("openai")


def test_openai_client_streams_the_echo_reply(server: ServerHandle, openai_module: Any) -> None:
    content = "Grüße 😀 from the official client 🇺🇦"
    with openai_module.OpenAI(
        base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT
    ) as client:
        stream = client.chat.completions.create(
            model="gpt-4",
            messages=[
                {"role": "system", "content": "Echo, please."},
                {"role": "user", "content": content},
            ],
            stream=True,
        )
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        whole = client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": content}]
        )
        listed = [model.id for model in client.models.list()]
    assert "".join(pieces) == content
    assert len([p for p in pieces if p]) == len(split_words(content))
    assert whole.choices[0].message.content == content
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(split_words(content))
    assert listed == list(models)
    assert server.requests[0]["chat_request"]["prompt"] == "Echo, please."


def test_openai_client_sees_errors(openai_module: Any) -> None:
    with start_server(api_key=SECRET) as srv:
        url = srv.url + "/v1"
        messages = [{"role": "user", "content": "hi"}]
        with openai_module.OpenAI(base_url=url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai_module.AuthenticationError):
                client.chat.completions.create(model="gpt-4", messages=messages)
        with openai_module.OpenAI(base_url=url, api_key=SECRET, max_retries=0) as client:
            with pytest.raises(openai_module.BadRequestError) as caught:
                client.chat.completions.create(model="gpt-4", messages=messages, n=2)
            assert caught.value.param == "n"
    with start_server(FailingEngine(after=1)) as srv:
        with openai_module.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(model="gpt-4", messages=messages, stream=True)
            got = []
            with pytest.raises(openai_module.APIError):
                for chunk in stream:
                    got.append(chunk.choices[0].delta.content or "")
            assert "".join(got) == "piece0 "


# -- the Aivvm route is unchanged -------------------------------------------------------------


def test_aivvm_route_records_and_answers_as_before(server: ServerHandle) -> None:
    body = {
        "model": dict(models["gpt-4"]),
        "messages": [{"role": "user", "content": "plain"}],
        "key": "",
        "prompt": "p",
        "temperature": 0.7,
    }
    response = requests.post(server.url + CHAT_PATH, json=body, timeout=TIMEOUT)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == "plain"
    assert list(server.requests) == [body]
    # The Aivvm route still refuses ids outside its table; /v1 takes any.
    bad = requests.post(
        server.url + CHAT_PATH, json={**body, "model": {"id": "x", "name": "x"}}, timeout=TIMEOUT
    )
    assert bad.status_code == 400 and bad.text.startswith("Bad request: unknown model")


def test_parse_errors_are_openai_errors() -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_completion_request({"model": "m", "messages": [], "n": 2})
    assert caught.value.status == 400
    assert caught.value.document()["error"]["param"] == "messages"
