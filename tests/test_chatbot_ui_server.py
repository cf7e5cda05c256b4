"""The reference server in chatbot-ui mode answers as a deployed chatbot-ui server does.

Each test states one fact of ``CHATBOT-UI.md`` (what the real server does) and checks it over
HTTP on 127.0.0.1, status line and headers included.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aivvm_magic.protocol import DEFAULT_SYSTEM_MESSAGE, REPLY_TOKEN_CAP
from aivvm_magic.server import MODES, ServerHandle, start_server
from aivvm_magic.server.__main__ import build_parser
from aivvm_magic.server.chatbot_ui_api import reason_phrase
from tests.chatbotkit import KEY, serve_deployment
from tests.serverkit import FailingEngine, decode_chunked, raw_exchange, split_response

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
TEXT = "text/plain;charset=UTF-8"


@pytest.fixture(scope="module")
def deployment() -> Iterator[ServerHandle]:
    yield from serve_deployment()


class Answer:
    """One answer as the client saw it: status line, headers and body."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.reason = response.reason
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    server: ServerHandle, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> Answer:
    """``method path`` with ``body`` as JSON (or ``raw`` bytes), on a fresh connection."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=data)
        return Answer(connection.getresponse())
    finally:
        connection.close()


def chat(content: str = "Hello there", **fields: Any) -> dict[str, Any]:
    """A body as chatbot-ui's browser UI sends it."""
    body: dict[str, Any] = {
        "model": {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
        "messages": [{"role": "user", "content": content}],
        "key": "",
        "prompt": "Be brief.",
        "temperature": 0.5,
    }
    body.update(fields)
    return body


def without(*names: str) -> dict[str, Any]:
    body = chat()
    for name in names:
        del body[name]
    return body


def assert_error(answer: Answer, reason: str = "Internal Server Error") -> None:
    """chatbot-ui's failure: 500, ``reason`` in the status line, body ``Error`` as text."""
    assert (answer.status, answer.reason, answer.body) == (500, reason, b"Error")
    assert answer.headers["content-type"] == TEXT
    assert answer.headers["transfer-encoding"] == "chunked"


# -- /api/chat: a reply -------------------------------------------------------------------------


def test_a_reply_is_bare_text_with_no_content_type(deployment):
    answer = call(deployment, "POST", "/api/chat", chat("Hello there"))
    assert (answer.status, answer.text) == (200, "Hello there")
    assert "content-type" not in answer.headers
    assert answer.headers["transfer-encoding"] == "chunked"


def test_missing_key_prompt_and_temperature_take_the_servers_defaults(deployment):
    answer = call(deployment, "POST", "/api/chat", without("key", "prompt", "temperature"))
    assert (answer.status, answer.text) == (200, "Hello there")
    request = deployment.requests[-1]["chat_request"]
    assert request["prompt"] == DEFAULT_SYSTEM_MESSAGE
    assert request["temperature"] == 1.0  # chatbot-ui's default, not the protocol's 0.7
    assert request["max_tokens"] == REPLY_TOKEN_CAP


def test_an_empty_prompt_is_the_default_and_an_empty_key_the_servers_own(deployment):
    answer = call(deployment, "POST", "/api/chat", chat(prompt="", key=""))
    assert answer.status == 200
    assert deployment.requests[-1]["chat_request"]["prompt"] == DEFAULT_SYSTEM_MESSAGE


@pytest.mark.parametrize("model_id", ["gpt-35-turbo", "my-azure-deployment", "gpt-9"])
def test_any_model_id_is_served(deployment, model_id):
    answer = call(deployment, "POST", "/api/chat", chat(model={"id": model_id, "name": "X"}))
    assert (answer.status, answer.text) == (200, "Hello there")
    assert deployment.requests[-1]["chat_request"]["model_id"] == model_id


def test_extra_fields_are_ignored(deployment):
    answer = call(deployment, "POST", "/api/chat", chat(stream=True, conversationId="c1"))
    assert (answer.status, answer.text) == (200, "Hello there")


def test_every_reply_is_capped_at_a_thousand_tokens(deployment):
    words = [f"w{i} " for i in range(1500)]
    answer = call(deployment, "POST", "/api/chat", chat("".join(words)))
    assert answer.status == 200
    assert answer.text == "".join(words[:REPLY_TOKEN_CAP])


def test_a_token_limit_in_the_model_trims_the_oldest_messages():
    # Only a client that sends the model's tokenLimit is trimmed: the reply's 1,000 tokens
    # are kept free, and messages go oldest first.
    old, recent = "old " * 300, "recent " * 300
    messages = [
        {"role": "user", "content": old},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": recent},
    ]
    model = {"id": "gpt-3.5-turbo", "name": "GPT-3.5", "tokenLimit": 1400}
    with start_server(mode="chatbot-ui") as server:
        assert call(server, "POST", "/api/chat", chat(messages=messages, model=model)).status == 200
        sent = server.requests[-1]["chat_request"]["messages"]
        assert sent == messages[1:]
        call(server, "POST", "/api/chat", chat(messages=messages))
        assert server.requests[-1]["chat_request"]["messages"] == messages


# -- /api/chat: failures ------------------------------------------------------------------------


def test_a_wrong_key_is_the_upstreams_message_in_the_status_line(deployment):
    assert_error(
        call(deployment, "POST", "/api/chat", chat(key="sk-wrong")), "Incorrect API key provided."
    )
    assert call(deployment, "POST", "/api/chat", chat(key=KEY)).status == 200


@pytest.mark.parametrize("temperature", [3, -1, "hot", False])
def test_a_bad_temperature_is_the_upstreams_message(deployment, temperature):
    answer = call(deployment, "POST", "/api/chat", chat(temperature=temperature))
    assert_error(answer, "'temperature' must be a number between 0 and 2")


def test_a_model_given_as_a_string_fails_upstream(deployment):
    answer = call(deployment, "POST", "/api/chat", chat(model="gpt-4"))
    assert_error(answer, "you must provide a model parameter")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b"[1, 2]",
        json.dumps(without("model")).encode(),
        json.dumps(without("messages")).encode(),
        json.dumps(chat(messages=[{"role": "user", "content": 5}])).encode(),
    ],
    ids=["not-json", "empty", "list", "no-model", "no-messages", "content-not-a-string"],
)
def test_a_body_the_server_trips_over_is_a_plain_500(deployment, raw):
    assert_error(call(deployment, "POST", "/api/chat", raw=raw))


def test_an_engine_failure_before_the_reply_is_the_upstreams_500():
    with start_server(FailingEngine(after=0), mode="chatbot-ui") as server:
        answer = call(server, "POST", "/api/chat", chat())
    assert_error(answer, "The engine failed to generate a reply")


def test_an_engine_failure_mid_reply_ends_the_reply_as_if_complete():
    with start_server(FailingEngine(after=2), mode="chatbot-ui") as server:
        raw = raw_exchange(server, _raw_post("/api/chat", json.dumps(chat()).encode()))
    status, headers, payload = split_response(raw)
    chunks, terminated = decode_chunked(payload)
    assert status == "HTTP/1.1 200 OK" and "content-type" not in headers
    assert b"".join(chunks) == b"piece0 piece1 " and terminated


def _raw_post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


# -- methods and paths --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_get_and_options_on_chat_are_a_500(deployment, method):
    assert_error(call(deployment, method, "/api/chat"))


def test_head_on_chat_is_a_500_without_a_body(deployment):
    answer = call(deployment, "HEAD", "/api/chat")
    assert (answer.status, answer.body) == (500, b"")


def test_put_is_served_like_post(deployment):
    answer = call(deployment, "PUT", "/api/chat", chat("put here"))
    assert (answer.status, answer.text) == (200, "put here")


@pytest.mark.parametrize("path", ["/api/health", "/v1/models", "/v1/chat/completions", "/x"])
def test_other_paths_are_nexts_html_404(deployment, path):
    answer = call(deployment, "GET", path)
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "<title>404: This page could not be found</title>" in answer.text


# -- /api/models --------------------------------------------------------------------------------


def test_models_answer_a_post_with_the_known_ids_labelled_as_text(deployment):
    answer = call(deployment, "POST", "/api/models", {"key": ""})
    assert answer.status == 200
    assert answer.headers["content-type"] == TEXT
    assert answer.headers["transfer-encoding"] == "chunked"
    assert json.loads(answer.body) == [
        {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
        {"id": "gpt-35-turbo", "name": "GPT-3.5"},
        {"id": "gpt-4", "name": "GPT-4"},
        {"id": "gpt-4-32k", "name": "GPT-4-32K"},
    ]
    assert call(deployment, "POST", "/api/models", {"key": KEY}).status == 200
    assert call(deployment, "POST", "/api/models", {}).status == 200


@pytest.mark.parametrize(
    ("method", "raw"), [("GET", None), ("POST", b""), ("POST", b"{not json"), ("POST", b"null")]
)
def test_models_without_a_json_body_are_a_500(deployment, method, raw):
    assert_error(call(deployment, method, "/api/models", raw=raw))


def test_models_for_a_wrong_key_pass_the_upstreams_401_on_as_a_500(deployment):
    answer = call(deployment, "POST", "/api/models", {"key": "sk-wrong"})
    assert (answer.status, answer.reason) == (500, "Internal Server Error")
    assert answer.headers["content-type"].startswith("application/json")
    error = json.loads(answer.body)["error"]
    assert error["message"] == "Incorrect API key provided." and "sk-wrong" not in answer.text


# -- the mode itself ----------------------------------------------------------------------------


def test_the_reason_phrase_is_one_line_of_latin_1():
    assert reason_phrase("bad\r\nthing\x00 ✓ é") == "bad thing? ? é"
    assert reason_phrase("") == "Internal Server Error"
    assert len(reason_phrase("x" * 1000)) == 300


def test_modes_and_their_default():
    assert MODES == ("strict", "chatbot-ui")
    with start_server() as server:
        assert server.mode == "strict"
        assert call(server, "GET", "/api/health").status == 200
    with pytest.raises(ValueError, match="unknown mode 'lax'"):
        start_server(mode="lax")
    assert build_parser().parse_args([]).mode == "strict"


def test_the_command_line_serves_the_chatbot_ui_mode():
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aivvm_magic.server", "--port", "0", "--mode", "chatbot-ui"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            line = pool.submit(process.stdout.readline).result(timeout=20)
        match = re.fullmatch(r"Serving the Aivvm API on http://127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        port = int(match.group(1))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/models")
        assert connection.getresponse().status == 500
        connection.close()
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "mode: chatbot-ui" in stderr and "GET /api/models 500" in stderr


def test_the_echo_engine_repeats_a_message_for_a_long_reply():
    # A client keeps its input within the model's limit; a benchmark's long reply comes from
    # a short message repeated.
    with start_server(repeat=3) as server:
        answer = call(server, "POST", "/api/chat", chat("one two "))
        assert answer.text == "one two one two one two "
        assert server.engine.describe() == {"engine": "echo", "delay": 0.0, "repeat": 3}
    with pytest.raises(ValueError, match="repeat must be a whole number of 1 or more"):
        start_server(repeat="many")
