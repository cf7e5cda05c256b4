"""Tests of the reference server (aivvm_magic.server), against real servers on 127.0.0.1."""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from aivvm_magic.protocol import (
    CHAT_PATH,
    DEFAULT_SYSTEM_MESSAGE,
    DEFAULT_TEMPERATURE,
    MODELS_PATH,
    models,
)
from aivvm_magic.server import (
    ENGINES,
    ChatRequest,
    EchoEngine,
    Engine,
    ServerHandle,
    make_engine,
    register_engine,
    start_server,
)
from aivvm_magic.server.engines import split_words
from tests.serverkit import FailingEngine, decode_chunked, raw_exchange

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "aivvm_magic" / "server"
TIMEOUT = 10  # seconds, for every client call

SECRET = "sk-test-SECRET-7f3a9c"


def chat_body(content: str = "Hello there", **overrides: Any) -> dict[str, Any]:
    """A valid /api/chat body whose last user message is ``content``."""
    body: dict[str, Any] = {
        "model": dict(models["gpt-3.5-turbo"]),
        "messages": [{"role": "user", "content": content}],
        "key": "",
        "prompt": DEFAULT_SYSTEM_MESSAGE,
        "temperature": DEFAULT_TEMPERATURE,
    }
    body.update(overrides)
    return body


def post_chat(url: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url + CHAT_PATH, json=body, timeout=TIMEOUT, **kwargs)


def raw_chat_request(body: bytes, version: str = "HTTP/1.1") -> bytes:
    return (
        f"POST {CHAT_PATH} {version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with start_server() as srv:
        yield srv


# -- the echo reply -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "Hello, world!",
        "  leading and trailing spaces  ",
        "\n\tstarts with a newline and a tab",
        "Grüße aus Köln, 世界, Ελληνικά, naïve café",
        "emoji 😀🎉👩‍👩‍👧 and a flag 🇺🇦",
        "😀",
        "one\r\ntwo\n\nthree   four",
        "",
        "   ",
        "word " * 300,
    ],
)
def test_echo_reply_is_the_last_user_message(server: ServerHandle, content: str) -> None:
    response = post_chat(server.url, chat_body(content))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.content.decode("utf-8") == content


def test_echo_uses_the_last_user_message_of_a_conversation(server: ServerHandle) -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ]
    response = post_chat(server.url, chat_body(messages=messages))
    assert response.text == "second question"


def test_lone_surrogates_come_back_as_replacement_characters(server: ServerHandle) -> None:
    # Valid JSON, but "\ud800" has no UTF-8 form; the reply must still be whole and UTF-8.
    data = json.dumps(chat_body("a\ud800b \udfff")).encode()
    assert b"\\ud800" in data
    response = requests.post(
        server.url + CHAT_PATH,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.content.decode("utf-8") == "a\ufffdb \ufffd"
    # Counted just after the terminator is written, so possibly after the client has it.
    assert server.wait_for(lambda: server.stats.completed == 1, timeout=2)


def test_echo_with_no_user_message_is_an_empty_reply(server: ServerHandle) -> None:
    response = post_chat(server.url, chat_body(messages=[{"role": "assistant", "content": "x"}]))
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("model_id", list(models))
def test_every_model_id_is_served(server: ServerHandle, model_id: str) -> None:
    response = post_chat(server.url, chat_body("hi", model=dict(models[model_id])))
    assert response.status_code == 200
    assert response.text == "hi"


def test_chunked_framing_on_the_wire(server: ServerHandle) -> None:
    content = " Hello,  wide 世界 😀 "
    raw = raw_exchange(server, raw_chat_request(json.dumps(chat_body(content)).encode()))
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    chunks, terminated = decode_chunked(payload)
    assert terminated
    # One chunk per engine piece: the stream really is written piece by piece.
    assert [c.decode("utf-8") for c in chunks] == split_words(content)
    assert b"".join(chunks).decode("utf-8") == content


def test_short_replies_on_a_reused_connection_do_not_wait_for_delayed_acks(
    server: ServerHandle,
) -> None:
    """Each reply is several small writes. With Nagle's algorithm on, the second one waited
    for the client's delayed ACK of the first: 40 ms on Linux, for every reply after the first
    on a kept-alive connection. Best of five, so a loaded machine cannot fail it; the bug took
    40 ms every time."""
    session = requests.Session()
    url = server.url + CHAT_PATH
    body = chat_body("two words")
    session.post(url, json=body).raise_for_status()  # the connection is open and kept
    took = []
    for _ in range(5):
        began = time.perf_counter()
        response = session.post(url, json=body)
        assert response.text == "two words"
        took.append(time.perf_counter() - began)
    assert min(took) < 0.02, took
    assert server.stats.snapshot()["connections"] == 1


def test_a_fast_engine_keeps_one_chunk_frame_per_piece() -> None:
    """Pieces that queue up while a write is under way leave together in the next write, but
    each keeps its own chunk frame, so the client still sees every piece."""
    words = [f"w{i} " for i in range(5000)]
    with start_server() as srv:
        raw = raw_exchange(srv, raw_chat_request(json.dumps(chat_body("".join(words))).encode()))
    chunks, terminated = decode_chunked(raw.partition(b"\r\n\r\n")[2])
    assert terminated
    assert b"".join(chunks).decode() == "".join(words)
    assert len(chunks) == len(split_words("".join(words)))


def test_http_1_0_client_gets_the_body_framed_by_closing() -> None:
    with start_server() as srv:
        raw = raw_exchange(
            srv, raw_chat_request(json.dumps(chat_body("old client")).encode(), "HTTP/1.0")
        )
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert b"chunked" not in head.lower()
    assert payload == b"old client"


def test_chunked_request_body_is_accepted(server: ServerHandle) -> None:
    data = json.dumps(chat_body("sent in pieces")).encode()
    pieces = (data[i : i + 7] for i in range(0, len(data), 7))
    response = requests.post(
        server.url + CHAT_PATH,
        data=pieces,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.text == "sent in pieces"


# -- streaming ------------------------------------------------------------------------------


def test_chunks_arrive_while_the_reply_is_generated() -> None:
    words = 8
    delay = 0.1
    content = " ".join(f"w{i}" for i in range(words))
    with start_server(delay=delay) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=TIMEOUT)
        try:
            started = time.monotonic()
            conn.request(
                "POST",
                CHAT_PATH,
                body=json.dumps(chat_body(content)),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            first = response.read1()
            first_at = time.monotonic() - started
            rest = response.read()
            total_at = time.monotonic() - started
        finally:
            conn.close()
    assert first == b"w0 "
    assert (first + rest).decode() == content
    # The whole reply takes (words - 1) * delay to generate; the first piece must not wait.
    assert total_at >= (words - 1) * delay * 0.9
    assert first_at < (words - 1) * delay / 2


def test_requests_iter_content_sees_pieces_one_by_one() -> None:
    with start_server(delay=0.05) as srv:
        with post_chat(srv.url, chat_body("alpha beta gamma delta"), stream=True) as response:
            pieces = [piece for piece in response.iter_content(None) if piece]
    assert b"".join(pieces) == b"alpha beta gamma delta"
    assert len(pieces) == 4


def test_a_hundred_concurrent_streaming_clients() -> None:
    clients = 100

    def one_client(index: int) -> tuple[str, str]:
        content = f"client {index} says: " + " ".join(f"{index}-{n}" for n in range(5))
        response = post_chat(srv.url, chat_body(content), stream=True)
        with response:
            assert response.status_code == 200
            text = b"".join(response.iter_content(None)).decode("utf-8")
        return content, text

    with start_server(delay=0.01) as srv:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            results = list(pool.map(one_client, range(clients), timeout=30))
        assert srv.wait_for(lambda: srv.stats.completed == clients, timeout=5)
        assert srv.stats.started == clients
        assert srv.stats.disconnected == 0
    assert len(results) == clients
    for content, text in results:
        assert text == content


class RecordingEcho(EchoEngine):
    """An echo engine that records how many pieces it produced and whether it was closed."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.produced = 0
        self.closed = threading.Event()
        self.finished = threading.Event()

    def generate(self, request: ChatRequest) -> Iterator[str]:
        try:
            for piece in super().generate(request):
                self.produced += 1
                yield piece
            self.finished.set()
        except GeneratorExit:
            self.closed.set()
            raise


def test_client_disconnect_mid_stream_stops_the_engine() -> None:
    engine = RecordingEcho(delay=0.02)
    words = 500  # 10 s of streaming if nobody stopped it
    content = " ".join(f"word{i}" for i in range(words))
    with start_server(engine) as srv:
        sock = socket.create_connection((srv.host, srv.port), timeout=TIMEOUT)
        try:
            sock.sendall(raw_chat_request(json.dumps(chat_body(content)).encode()))
            received = b""
            while b"word0" not in received:
                data = sock.recv(4096)
                assert data, "server closed before the first chunk"
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
        assert post_chat(srv.url, chat_body("still here")).text == "still here"


def test_close_ends_an_open_stream_promptly() -> None:
    engine = RecordingEcho(delay=0.02)
    content = " ".join(f"word{i}" for i in range(1000))
    srv = start_server(engine)
    response = post_chat(srv.url, chat_body(content), stream=True)
    pieces = response.iter_content(None)
    assert next(pieces)
    started = time.monotonic()
    srv.close()
    assert time.monotonic() - started < 2
    # The reply was cut short, and chunked framing makes that visible to the client.
    with pytest.raises(requests.exceptions.RequestException):
        for _ in pieces:
            pass
    response.close()
    assert engine.closed.wait(2)
    assert srv.wait_for(lambda: srv.stats.aborted == 1, timeout=2)
    assert srv.stats.completed == 0
    srv.close()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(srv.url + "/api/health", timeout=TIMEOUT)


class FloodEngine(Engine):
    """Yields ``pieces`` pieces of 100 bytes as fast as it is asked, counting them; its
    clean-up can be made to fail."""

    name = "flood"

    def __init__(self, pieces: int, fail_on_close: bool = False) -> None:
        self.pieces = pieces
        self.made = 0
        self.fail_on_close = fail_on_close

    def generate(self, request: ChatRequest) -> Iterator[str]:
        try:
            for _ in range(self.pieces):
                self.made += 1
                yield "x" * 99 + " "
        finally:
            if self.fail_on_close:
                raise RuntimeError("clean-up failed")


def writer_threads() -> int:
    return sum(t.name == "aivvm-reply-writer" for t in threading.enumerate())


def test_a_reader_that_stops_reading_holds_the_engine_back() -> None:
    """What a client has not read waits in the socket buffers and at most a megabyte of
    queue, not in the server's memory: the engine waits for the reader."""
    engine = FloodEngine(pieces=300_000)  # 30 MB
    with start_server(engine) as srv:
        with socket.create_connection((srv.host, srv.port), timeout=TIMEOUT) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            sock.sendall(raw_chat_request(json.dumps(chat_body("go")).encode()))
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            # The engine runs until the queue and the socket buffers are full, then waits.
            previous = -1
            while engine.made != previous:
                previous = engine.made
                time.sleep(0.3)
            assert engine.made * 100 < 15_000_000, engine.made
            received = 0
            while data := sock.recv(1 << 20):
                received += len(data)
                if data.endswith(b"0\r\n\r\n"):
                    break
        assert engine.made == 300_000 and received > 30_000_000


def test_an_engine_whose_clean_up_fails_leaves_no_writer_behind() -> None:
    engine = FloodEngine(pieces=100_000, fail_on_close=True)
    with start_server(engine, log=lambda line: None) as srv:
        before = writer_threads()
        with socket.create_connection((srv.host, srv.port), timeout=TIMEOUT) as sock:
            sock.sendall(raw_chat_request(json.dumps(chat_body("go")).encode()))
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        # The client left mid-reply: the engine is closed, fails, and the writer still ends.
        assert srv.wait_for(lambda: srv.stats.disconnected == 1, timeout=5)
        assert srv.wait_for(lambda: writer_threads() == before, timeout=5), writer_threads()


def test_engine_failing_before_the_first_piece_is_a_500() -> None:
    lines: list[str] = []
    with start_server(FailingEngine(after=0), log=lines.append) as srv:
        response = post_chat(srv.url, chat_body())
        assert response.status_code == 500
        assert response.text == "Error"
        # The handler counts the failure after it has answered: wait for it.
        assert srv.wait_for(lambda: srv.stats.failed == 1, timeout=2)
        assert srv.stats.started == 0
    assert any("engine error: RuntimeError" in line for line in lines)


def test_engine_failing_mid_stream_cuts_the_reply_visibly() -> None:
    with start_server(FailingEngine(after=2)) as srv:
        raw = raw_exchange(srv, raw_chat_request(json.dumps(chat_body()).encode()))
        _, _, payload = raw.partition(b"\r\n\r\n")
        chunks, terminated = decode_chunked(payload)
        assert chunks == [b"piece0 ", b"piece1 "]
        assert not terminated
        assert srv.wait_for(lambda: srv.stats.failed == 1, timeout=2)


# -- validation -----------------------------------------------------------------------------


def _without(field: str) -> dict[str, Any]:
    body = chat_body()
    del body[field]
    return body


INVALID_BODIES = {
    "not an object": ([chat_body()], "body must be a JSON object"),
    "a string": ("hello", "body must be a JSON object"),
    "missing model": (_without("model"), "missing field 'model'"),
    "missing messages": (_without("messages"), "missing field 'messages'"),
    "missing key": (_without("key"), "missing field 'key'"),
    "missing prompt": (_without("prompt"), "missing field 'prompt'"),
    "missing temperature": (_without("temperature"), "missing field 'temperature'"),
    "extra field": (chat_body(stream=True), "unexpected field 'stream'"),
    "model as a string": (chat_body(model="gpt-4"), "'model' must be an object"),
    "model without name": (chat_body(model={"id": "gpt-4"}), "'model' must be an object"),
    "unknown model": (chat_body(model={"id": "gpt-9", "name": "GPT-9"}), "unknown model 'gpt-9'"),
    "empty model id": (chat_body(model={"id": "", "name": ""}), "unknown model ''"),
    "messages not a list": (chat_body(messages="hi"), "'messages' must be a list"),
    "messages empty": (chat_body(messages=[]), "'messages' must not be empty"),
    "message not an object": (chat_body(messages=["hi"]), "messages[0] must be an object"),
    "system role": (
        chat_body(messages=[{"role": "system", "content": "x"}]),
        "messages[0].role must be 'user' or 'assistant'",
    ),
    "missing role": (
        chat_body(messages=[{"role": "user", "content": "a"}, {"content": "b"}]),
        "messages[1].role must be 'user' or 'assistant'",
    ),
    "content not a string": (
        chat_body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content must be a string",
    ),
    "content null": (
        chat_body(messages=[{"role": "user", "content": None}]),
        "messages[0].content must be a string",
    ),
    "key not a string": (chat_body(key=12345), "'key' must be a string"),
    "prompt not a string": (chat_body(prompt=None), "'prompt' must be a string"),
    "temperature a string": (chat_body(temperature="0.7"), "'temperature' must be a number"),
    "temperature a bool": (chat_body(temperature=True), "'temperature' must be a number"),
    "temperature below 0": (chat_body(temperature=-0.1), "'temperature' must be between 0 and 2"),
    "temperature above 2": (chat_body(temperature=2.5), "'temperature' must be between 0 and 2"),
    "temperature NaN": (chat_body(temperature=float("nan")), "'temperature' must be between"),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_body_is_a_400_with_a_short_reason(server: ServerHandle, case: str) -> None:
    body, reason = INVALID_BODIES[case]
    # json.dumps, unlike requests' json=, lets NaN through, as a careless client might.
    response = requests.post(
        server.url + CHAT_PATH,
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text.startswith(f"Bad request: {reason}")
    assert "\n" not in response.text and len(response.text) < 120
    assert server.stats.rejected == 1
    assert server.stats.started == 0


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe{}", b"[1, 2"])
def test_malformed_json_is_a_400(server: ServerHandle, data: bytes) -> None:
    response = requests.post(
        server.url + CHAT_PATH,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.text == "Bad request: body is not valid JSON"


def test_valid_temperature_bounds_are_accepted(server: ServerHandle) -> None:
    for temperature in (0, 0.0, 1, 2, 2.0):
        assert post_chat(server.url, chat_body("ok", temperature=temperature)).text == "ok"


def test_oversized_body_is_a_413(server: ServerHandle) -> None:
    request = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    raw = raw_exchange(server, request)
    assert raw.startswith(b"HTTP/1.1 413 ")


# -- routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api", "/api/chat/x", "/api/chats", "/index.html"])
def test_unknown_path_is_a_404(server: ServerHandle, path: str) -> None:
    for method in ("GET", "POST"):
        response = requests.request(method, server.url + path, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.text == "Not found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", CHAT_PATH),
        ("PUT", CHAT_PATH),
        ("DELETE", MODELS_PATH),
        ("POST", "/api/health"),
        ("PATCH", "/api/health"),
    ],
)
def test_wrong_method_is_a_405(server: ServerHandle, method: str, path: str) -> None:
    response = requests.request(method, server.url + path, timeout=TIMEOUT)
    assert response.status_code == 405
    assert "Allow" in response.headers


def test_query_string_is_ignored_for_routing(server: ServerHandle) -> None:
    response = requests.get(server.url + "/api/health?probe=1", timeout=TIMEOUT)
    assert response.status_code == 200


def _check_models_listing(response: requests.Response, engine: Engine) -> None:
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    listing = response.json()
    assert [(m["id"], m["name"]) for m in listing] == [
        (m["id"], m["name"]) for m in models.values()
    ]
    assert {m["served_by"] for m in listing} == {engine.served_by()}
    assert {m["answered_by"] for m in listing} == {engine.model_name}
    assert all(set(m) == {"id", "name", "served_by", "answered_by"} for m in listing)


def test_models_get(server: ServerHandle) -> None:
    _check_models_listing(requests.get(server.url + MODELS_PATH, timeout=TIMEOUT), server.engine)


def test_models_post_with_and_without_body(server: ServerHandle) -> None:
    url = server.url + MODELS_PATH
    _check_models_listing(requests.post(url, json={"key": ""}, timeout=TIMEOUT), server.engine)
    _check_models_listing(requests.post(url, timeout=TIMEOUT), server.engine)


def test_served_by_is_honest() -> None:
    assert "echo" in EchoEngine().served_by()


def test_health() -> None:
    with start_server(delay=0.01) as srv:
        response = requests.get(srv.url + "/api/health", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "engine": "echo",
        "engine_info": {"engine": "echo", "delay": 0.01},
    }


# -- the API key ----------------------------------------------------------------------------


def test_api_key_is_enforced_and_never_shown() -> None:
    wrong = "sk-wrong-KEY-0c1d2e"
    seen: list[str] = []
    log: list[str] = []
    with start_server(api_key=SECRET, log=log.append) as srv:
        for key in (wrong, "", SECRET.upper()):
            response = post_chat(srv.url, chat_body("hi", key=key))
            assert response.status_code == 401
            assert response.text == "Unauthorized"
            seen.append(response.text + str(response.headers))
        # Not a string at all: still unauthorised, not a hint about the type.
        assert post_chat(srv.url, chat_body(key=None)).status_code == 401

        response = post_chat(srv.url, chat_body("welcome", key=SECRET))
        assert response.status_code == 200
        assert response.text == "welcome"
        seen.append(response.text + str(response.headers))

        # A body with the right key but another fault: the reason names the fault only.
        response = post_chat(srv.url, chat_body(key=SECRET, model={"id": "x", "name": "x"}))
        assert response.status_code == 400
        seen.append(response.text)

        for path in ("/api/health", MODELS_PATH):
            seen.append(requests.get(srv.url + path, timeout=TIMEOUT).text)
        recorded = list(srv.requests)
        seen.extend([repr(srv), str(srv.stats), repr(srv.engine), json.dumps(recorded)])
        assert srv.stats.rejected == 5
    seen.extend(log)

    assert [body["key"] for body in recorded] == [
        "<redacted>",
        "",
        "<redacted>",
        "<redacted>",
        "<redacted>",
        "<redacted>",
    ]
    everything = "\n".join(seen)
    for secret in (SECRET, SECRET.upper(), wrong):
        assert secret not in everything


def test_without_api_key_any_key_is_accepted(server: ServerHandle) -> None:
    for key in ("", "anything", SECRET):
        assert post_chat(server.url, chat_body("ok", key=key)).text == "ok"
    assert [body["key"] for body in server.requests] == ["", "<redacted>", "<redacted>"]
    assert list(server.requests)[0]["messages"] == [{"role": "user", "content": "ok"}]


def test_chat_request_has_no_key() -> None:
    request = ChatRequest("gpt-4", [{"role": "user", "content": "hi"}], "system", 0.5)
    assert not hasattr(request, "key")
    with pytest.raises(AttributeError):
        request.model_id = "gpt-3.5-turbo"  # type: ignore[misc]


# -- connections ----------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(server: ServerHandle) -> None:
    with requests.Session() as session:
        for content in ("one", "two", "three"):
            response = session.post(
                server.url + CHAT_PATH, json=chat_body(content), timeout=TIMEOUT
            )
            assert response.text == content
        assert session.get(server.url + MODELS_PATH, timeout=TIMEOUT).status_code == 200
        assert session.get(server.url + "/api/health", timeout=TIMEOUT).status_code == 200
        bad = session.post(server.url + CHAT_PATH, json=chat_body(temperature=9), timeout=TIMEOUT)
        assert bad.status_code == 400
        assert session.get(server.url + "/nowhere", timeout=TIMEOUT).status_code == 404
        streamed = session.post(
            server.url + CHAT_PATH, json=chat_body("four"), timeout=TIMEOUT, stream=True
        )
        assert streamed.text == "four"
    assert server.stats.connections == 1
    assert server.wait_for(lambda: server.stats.completed == 4, timeout=2)


def test_binds_loopback_by_default(server: ServerHandle) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0
    assert repr(server) == f"<ServerHandle url={server.url!r} engine='echo'>"


def test_access_log_has_method_path_and_status_only() -> None:
    lines: list[str] = []
    with start_server(log=lines.append) as srv:
        post_chat(srv.url, chat_body("private words"))
        requests.get(srv.url + "/api/health?x=1", timeout=TIMEOUT)
        requests.get(srv.url + "/missing", timeout=TIMEOUT)
    assert lines == ["POST /api/chat 200", "GET /api/health 200", "GET /missing 404"]


# -- engines --------------------------------------------------------------------------------


@given(st.text())
def test_split_words_round_trips(text: str) -> None:
    pieces = split_words(text)
    assert "".join(pieces) == text
    assert all(pieces)


def test_split_words_is_word_sized() -> None:
    assert split_words("  a bb\tccc\n") == ["  ", "a ", "bb\t", "ccc\n"]
    assert split_words("") == []


def test_make_engine_and_registry() -> None:
    assert isinstance(make_engine("echo"), EchoEngine)
    assert make_engine("echo", delay=0.5).delay == 0.5
    with pytest.raises(ValueError, match="echo"):
        make_engine("no-such-engine")


def test_registered_engine_serves_requests() -> None:
    class Shouting(Engine):
        name = "shout"

        def __init__(self, suffix: str = "!") -> None:
            self.suffix = suffix

        def generate(self, request: ChatRequest) -> Iterator[str]:
            yield (request.last_user_message() or "").upper()
            yield self.suffix

    register_engine("shout", Shouting)
    try:
        with start_server("shout", suffix="!!") as srv:
            assert post_chat(srv.url, chat_body("hey")).text == "HEY!!"
            health = requests.get(srv.url + "/api/health", timeout=TIMEOUT).json()
            assert health["engine"] == "shout"
            assert health["engine_info"] == {"engine": "shout"}
        # An engine that takes no delay is built without one.
        with start_server("shout", delay=1) as srv:
            assert post_chat(srv.url, chat_body("hey")).text == "HEY!"
    finally:
        ENGINES.pop("shout", None)


def test_start_server_options() -> None:
    with start_server(delay=0.25) as srv:
        assert isinstance(srv.engine, EchoEngine)
        assert srv.engine.delay == 0.25
    with pytest.raises(ValueError, match="delay"):
        start_server(EchoEngine(), delay=0.1)
    with pytest.raises(ValueError, match="unknown engine"):
        start_server("no-such-engine")


# -- the command line -----------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aivvm_magic.server", "--port", "0", "--delay", "0.001"],
        cwd=ROOT,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first_line = pool.submit(process.stdout.readline).result(timeout=20)
        match = re.fullmatch(r"Serving the Aivvm API on (http://127\.0\.0\.1:(\d+))\n", first_line)
        assert match, first_line
        url = match.group(1)
        assert int(match.group(2)) > 0
        response = post_chat(url, chat_body("from the command line", key=SECRET))
        assert response.text == "from the command line"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "POST /api/chat 200" in stderr
    assert "from the command line" not in stderr + stdout
    assert SECRET not in stderr + stdout


def test_cli_rejects_an_unknown_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aivvm_magic.server", "--port", "0", "--engine", "nope"],
        cwd=ROOT,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "unknown engine 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


# -- layering -------------------------------------------------------------------------------


def test_server_sources_import_only_the_protocol_from_the_package() -> None:
    # An allow-list, so stricter than the import contracts: a module new to the package is
    # out of the server's reach too.
    forbidden = ("IPython", "ipywidgets", "aivvm_magic.providers")
    for source in SERVER_DIR.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # Relative imports may reach the shared protocol module and siblings only.
                    assert node.level == 1 or node.module == "protocol", (source, node.module)
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), (source.name, name)
