"""The Aivvm provider against real servers on 127.0.0.1: the reference server and FaultServer."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import requests

from aivvm_magic import Aivvm
from aivvm_magic.protocol import DEFAULT_SYSTEM_MESSAGE, models
from aivvm_magic.providers import (
    APIError,
    ConnectError,
    IncompleteReply,
    RedirectRefused,
    ReplyTimeout,
    RequestOptions,
    StreamingReply,
)
from aivvm_magic.reply_buffer import ReplyBuffer
from aivvm_magic.server import start_server
from tests.faultserver import (
    CLOUDFLARE_403_HTML,
    INVALID_UTF8,
    Big,
    Echo,
    FaultServer,
    Gzip,
    Redirect,
    Reply,
    Stall,
    Truncated,
    closed_port,
    cloudflare_block,
    json_error,
    rate_limited,
    server_error,
)

HELLO = [{"role": "user", "content": "Hello there"}]
SECRET = "sk-canary-7f3a9c1e"
FRAMINGS = ("chunked", "length", "close")


@pytest.fixture
def fault():
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def reference():
    with start_server(engine="echo") as server:
        yield server


def ask(url: str, messages=HELLO, **kwargs) -> StreamingReply:
    kwargs.setdefault("retries", 0)
    return Aivvm.create_completion("", messages, True, base_url=url, **kwargs)


# -- the request ------------------------------------------------------------------------------


def test_request_body_has_exactly_the_five_fields_with_defaults(fault):
    assert ask(fault.url).text() == "Hello there"
    (request,) = fault.requests
    assert request.method == "POST" and request.path == "/api/chat"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "model": {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
        "messages": HELLO,
        "key": "",
        "prompt": DEFAULT_SYSTEM_MESSAGE,
        "temperature": 0.7,
    }


def test_request_fields_from_arguments_as_the_reference_server_saw_them(reference):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b", "id": "dropped"},
        {"role": "user", "content": "ça"},
    ]
    reply = Aivvm.create_completion(
        "gpt-4-32k",
        messages,
        False,
        base_url=reference.url,
        system_message="Be brief.",
        temperature=0,
        key=SECRET,
    )
    assert reply == "ça"
    seen = reference.requests[-1]
    assert seen["model"] == {"id": "gpt-4-32k", "name": "GPT-4-32K"}
    assert seen["messages"] == [{k: m[k] for k in ("role", "content")} for m in messages]
    assert seen["prompt"] == "Be brief." and seen["temperature"] == 0.0
    assert seen["key"] == "<redacted>"  # sent, and the server never keeps it


def test_unknown_model_is_a_value_error_naming_the_ids_and_sends_no_chat_request(fault):
    with pytest.raises(ValueError) as info:
        Aivvm.create_completion("gpt-9", HELLO, True, base_url=fault.url)
    for model_id in models:
        assert model_id in str(info.value)
    # Only the server's model list was asked for: it might have served "gpt-9".
    assert [request.path for request in fault.requests] == ["/api/models"]


def test_base_url_and_key_come_from_the_environment(fault, monkeypatch):
    monkeypatch.setenv("AIVVM_BASE_URL", fault.url)
    monkeypatch.setenv("AIVVM_API_KEY", SECRET)
    assert Aivvm.create_completion("gpt-4", HELLO, False, retries=0) == "Hello there"
    assert fault.requests[0].json["key"] == SECRET
    assert Aivvm.base_url() == fault.url
    monkeypatch.delenv("AIVVM_BASE_URL")
    assert Aivvm.base_url() == "https://chat.aivvm.com"


def test_stream_false_returns_one_string(reference):
    result = Aivvm.create_completion("", HELLO, False, base_url=reference.url)
    assert isinstance(result, str) and result == "Hello there"


# -- streaming, framing and decoding ----------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
def test_first_chunk_arrives_before_the_server_writes_the_second(fault, framing):
    reply_behaviour = Reply(chunks=[b"first ", b"second ", b"third"], framing=framing, delay=0.4)
    fault.enqueue(reply_behaviour)
    reply = ask(fault.url)
    first = next(reply)
    got_first = time.perf_counter()
    assert first == "first "
    assert len(reply_behaviour.write_times) == 1  # the second write has not happened yet
    assert "".join(reply) == "second third"
    assert got_first < reply_behaviour.write_times[1]
    assert reply.complete


@pytest.mark.parametrize("framing", FRAMINGS)
def test_utf8_split_at_every_byte_boundary_comes_out_whole(fault, framing):
    text = "aé€😀z ∑ ü"
    data = text.encode()
    for cut in range(1, len(data)):
        fault.enqueue(Reply(chunks=[data[:cut], data[cut:]], framing=framing, delay=0.01))
        chunks = list(ask(fault.url))
        assert "".join(chunks) == text, cut
        assert all("\ufffd" not in c for c in chunks)
    # And one byte per read.
    fault.enqueue(Reply(chunks=[data[i : i + 1] for i in range(len(data))], framing=framing))
    assert ask(fault.url).text() == text


def test_invalid_utf8_falls_back_to_unicode_escape(fault):
    fault.enqueue(Reply(chunks=[INVALID_UTF8[:4], INVALID_UTF8[4:]], framing="chunked"))
    assert ask(fault.url).text() == INVALID_UTF8.decode("unicode-escape")


def test_gzip_encoded_body_is_decoded_as_it_streams(fault):
    fault.enqueue(Gzip([b"compressed ", "and streamed ✓".encode()], delay=0.05))
    assert ask(fault.url).text() == "compressed and streamed ✓"


def test_big_reply_arrives_whole(fault):
    big = Big(2 * 1024 * 1024, framing="length")
    fault.enqueue(big)
    assert ask(fault.url).text().encode() == big.expected_body()


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"),
    [
        (server_error(), 500, "Error"),
        (cloudflare_block(), 403, "Attention Required! | Cloudflare"),
        (Reply(400, b"Bad request: messages missing"), 400, "Bad request: messages missing"),
        (json_error(401, {"error": {"message": "Invalid key"}}), 401, "Invalid key"),
        (Reply(404, b"Not found"), 404, "Not found"),
    ],
)
def test_http_errors_raise_http_error_with_the_short_reason(fault, behaviour, status, reason):
    fault.enqueue(behaviour)
    with pytest.raises(requests.exceptions.HTTPError) as info:
        ask(fault.url).text()
    assert isinstance(info.value, APIError)
    assert info.value.status_code == status
    assert info.value.reason == reason
    assert str(info.value) == f"HTTP {status} from {fault.url}/api/chat: {reason}"
    assert len(str(info.value)) < 200


def test_cloudflare_page_is_not_dumped_into_the_message(fault):
    fault.enqueue(cloudflare_block())
    with pytest.raises(APIError) as info:
        ask(fault.url).text()
    assert "<" not in str(info.value) and len(CLOUDFLARE_403_HTML) > 500


def test_server_echoing_the_key_in_an_error_has_it_blanked(fault):
    fault.enqueue(Reply(401, f"invalid api key {SECRET}".encode()))
    with pytest.raises(APIError) as info:
        ask(fault.url, key=SECRET).text()
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert "<redacted>" in str(info.value)


def test_connection_refused_is_a_short_connect_error():
    url = closed_port()
    with pytest.raises(ConnectError) as info:
        ask(url).text()
    assert str(info.value) == f"Could not connect to {url}/api/chat: connection refused"
    assert isinstance(info.value, requests.exceptions.ConnectionError)


# -- retries ----------------------------------------------------------------------------------


def test_retries_5xx_then_succeeds_with_backoff(fault):
    fault.enqueue(server_error(status=503), server_error(status=502))
    retries = []
    reply = ask(
        fault.url, retries=2, backoff=0.05, on_retry=lambda n, wait, why: retries.append((n, why))
    )
    assert reply.text() == "Hello there"
    assert retries == [(1, "HTTP 503"), (2, "HTTP 502")]
    assert len(fault.requests) == 3


def test_retries_stop_at_the_bound(fault):
    fault.enqueue(*(server_error() for _ in range(5)))
    with pytest.raises(APIError):
        ask(fault.url, retries=2, backoff=0.01).text()
    assert len(fault.requests) == 3


def test_options_hold_the_retries_and_a_keyword_overrides_them(fault):
    patient = RequestOptions(retries=2, backoff=0.01)
    fault.enqueue(server_error(), server_error())
    assert Aivvm.create_completion("", HELLO, False, base_url=fault.url, options=patient) == (
        "Hello there"
    )
    assert len(fault.requests) == 3
    fault.enqueue(server_error())
    with pytest.raises(APIError):
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, options=patient, retries=0)
    assert len(fault.requests) == 4


@pytest.mark.parametrize("how", ["seconds", "date"])
def test_429_honours_retry_after(fault, how):
    fault.enqueue(rate_limited(1, as_date=(how == "date")))
    waits = []
    started = time.monotonic()
    reply = ask(fault.url, retries=1, on_retry=lambda n, wait, why: waits.append(wait))
    assert reply.text() == "Hello there"
    assert 0.0 <= waits[0] <= 2.0
    if how == "seconds":
        assert waits == [1.0] and time.monotonic() - started >= 0.95


def test_retry_after_beyond_the_cap_is_reported_not_waited_for(fault):
    fault.enqueue(rate_limited(3600))
    started = time.monotonic()
    with pytest.raises(APIError) as info:
        ask(fault.url, retries=3, max_retry_wait=5).text()
    assert info.value.status_code == 429 and info.value.retry_after == 3600
    assert time.monotonic() - started < 2 and len(fault.requests) == 1


def test_client_errors_are_not_retried(fault):
    fault.enqueue(Reply(400, b"Bad request"), Reply(400, b"Bad request"))
    with pytest.raises(APIError):
        ask(fault.url, retries=3, backoff=0.01).text()
    assert len(fault.requests) == 1


def test_no_retry_once_the_reply_has_started(fault):
    fault.enqueue(Truncated(chunks=[b"partial ", b"rest"], after=8, framing="chunked"))
    with pytest.raises(IncompleteReply) as info:
        ask(fault.url, retries=3, backoff=0.01).text()
    assert info.value.partial == "partial "
    assert len(fault.requests) == 1


# -- truncation and timeouts ------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_truncated_body_raises_with_the_partial_text(fault, framing):
    fault.enqueue(Truncated(chunks=["Grüß ".encode(), b"Gott"], after=5, framing=framing))
    reply = ask(fault.url)
    with pytest.raises(IncompleteReply) as info:
        for _ in reply:
            pass
    assert info.value.partial == "Grü"  # the split "ß" (bytes 4-5) is not invented
    assert reply.partial == "Grü" and not reply.complete
    assert "cut short after 3 characters" in str(info.value)
    assert isinstance(info.value, requests.exceptions.RequestException)


def test_reset_connection_raises_with_the_partial_text(fault):
    fault.enqueue(
        Truncated(chunks=[b"one ", b"two"], after=4, framing="close", reset=True, delay=0.1)
    )
    with pytest.raises(IncompleteReply) as info:
        ask(fault.url).text()
    assert info.value.partial in ("one ", "")


def test_close_delimited_truncation_is_indistinguishable_by_design(fault):
    fault.enqueue(Truncated(chunks=[b"one ", b"two"], after=4, framing="close"))
    assert ask(fault.url).text() == "one "


def test_stall_before_headers_is_a_read_timeout_near_its_value(fault):
    fault.enqueue(Stall(3, before_headers=True))
    started = time.monotonic()
    with pytest.raises(ReplyTimeout) as info:
        ask(fault.url, read_timeout=0.5).text()
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5
    assert isinstance(info.value, requests.exceptions.ReadTimeout)


def test_stall_mid_body_keeps_the_partial_text(fault):
    fault.enqueue(Stall(3, chunks=[b"so far "], framing="chunked"))
    started = time.monotonic()
    with pytest.raises(IncompleteReply) as info:
        ask(fault.url, read_timeout=0.5).text()
    assert info.value.partial == "so far "
    assert "read timeout" in info.value.reason
    assert time.monotonic() - started < 1.5


# -- connections ------------------------------------------------------------------------------


def test_one_session_is_reused_across_calls(fault):
    for _ in range(3):
        assert ask(fault.url).text() == "Hello there"
    assert fault.connections_opened == 1


def test_break_closes_the_connection_at_once(fault):
    fault.enqueue(Reply(chunks=[b"a "] * 50, framing="chunked", delay=0.1))
    reply = ask(fault.url)
    for _chunk in reply:
        break
    reply.close()
    assert fault.wait_for(lambda: fault.open_connections == 0, timeout=3)
    assert fault.wait_for(lambda: fault.disconnects == 1, timeout=6)


def test_stop_from_another_thread_ends_a_blocked_read(fault):
    fault.enqueue(Stall(5, chunks=[b"start "]))
    reply = ask(fault.url)
    assert next(reply) == "start "
    timer = threading.Timer(0.2, reply.stop)
    timer.start()
    started = time.monotonic()
    with pytest.raises(IncompleteReply) as info:
        next(reply)
    assert time.monotonic() - started < 1.0
    assert info.value.reason == "stopped" and info.value.partial == "start "
    assert fault.wait_for(lambda: fault.open_connections == 0, timeout=3)


def test_no_connection_left_open_after_errors(fault):
    fault.enqueue(
        server_error(),
        Truncated(b"abcdef", after=3, framing="length"),
        Stall(2, before_headers=True),
    )
    for kwargs in ({}, {}, {"read_timeout": 0.3}):
        with pytest.raises(requests.exceptions.RequestException):
            ask(fault.url, **kwargs).text()
    assert fault.wait_for(lambda: fault.open_connections <= 1, timeout=3)
    # What stays open is at most the pooled keep-alive connection of the clean 500.
    assert ask(fault.url).text() == "Hello there"


def test_redirect_to_another_host_is_not_followed_with_the_key(fault):
    with FaultServer() as other:
        fault.enqueue(Redirect(other.url_as("localhost") + "/api/chat"))
        with pytest.raises(RedirectRefused) as info:
            ask(fault.url, key=SECRET).text()
        assert other.requests == []
        assert SECRET not in str(info.value)


def test_same_origin_redirect_is_followed(fault):
    fault.enqueue(Redirect(fault.url + "/v2/api/chat"))
    assert ask(fault.url).text() == "Hello there"
    assert [r.path for r in fault.requests] == ["/api/chat", "/v2/api/chat"]


def test_key_never_appears_in_exceptions_or_reprs(fault):
    raised = []
    fault.enqueue(server_error(), Truncated(b"abcdef", after=3), Stall(2, before_headers=True))
    for kwargs in ({}, {}, {"read_timeout": 0.3}):
        try:
            ask(fault.url, key=SECRET, **kwargs).text()
        except requests.exceptions.RequestException as exc:
            raised.append(exc)
    try:
        ask(closed_port(), key=SECRET).text()
    except requests.exceptions.RequestException as exc:
        raised.append(exc)
    assert len(raised) == 4
    for exc in raised:
        assert SECRET not in str(exc) and SECRET not in repr(exc)
        assert getattr(exc, "request", None) is None
    reply = ask(fault.url, key=SECRET)
    assert SECRET not in repr(reply)


# -- models and health ------------------------------------------------------------------------


def test_list_models_from_the_server(reference):
    found = Aivvm.list_models(reference.url)
    assert [m["id"] for m in found] == list(models)
    assert all("echo" in m["served_by"] for m in found)


def test_list_models_falls_back_to_the_table(fault):
    fault.enqueue(Reply(404, b"Not found"), Reply(405, b"no"))
    assert Aivvm.list_models(fault.url) == [dict(m) for m in models.values()]
    assert Aivvm.list_models(closed_port(), timeout=1) == [dict(m) for m in models.values()]


def test_list_models_posts_the_key(fault):
    payload = json.dumps([{"id": "gpt-4", "name": "GPT-4"}]).encode()
    fault.enqueue(Reply(200, payload, headers={"Content-Type": "application/json"}))
    assert Aivvm.list_models(fault.url, key=SECRET) == [{"id": "gpt-4", "name": "GPT-4"}]
    assert fault.requests[0].method == "POST" and fault.requests[0].json == {"key": SECRET}


def test_check_probes_and_sets_working(reference):
    try:
        assert Aivvm.check(reference.url) is True and Aivvm.working is True
        assert Aivvm.check(closed_port(), timeout=1) is False and Aivvm.working is False
    finally:
        Aivvm.working = False


# -- load and layering ------------------------------------------------------------------------


def test_fifty_concurrent_streams_through_the_reference_server():
    with start_server(engine="echo", delay=0.005) as server:
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def one(i: int) -> None:
            text = f"stream {i}: " + " ".join(f"w{i}-{j}" for j in range(30))
            try:
                got = ask(server.url, [{"role": "user", "content": text}]).text()
                results[i] = got if got == text else f"MISMATCH {got!r}"
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(results) == 50
        assert all(not v.startswith("MISMATCH") for v in results.values())


def test_provider_core_and_server_import_no_ipython():
    # What importing really loads, which the import contracts (pyproject.toml) cannot see: the
    # package's __init__, and what requests and urllib3 import in turn.
    code = (
        "import sys, aivvm_magic, aivvm_magic.providers, aivvm_magic.server, aivvm_magic.protocol\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_abstract_provider_shape():
    from aivvm_magic.providers import AbstractProvider

    assert issubclass(Aivvm, AbstractProvider)
    assert Aivvm.url == "https://chat.aivvm.com"
    assert Aivvm.supports_stream and Aivvm.supports_gpt_35_turbo and Aivvm.supports_gpt_4
    with pytest.raises(TypeError):
        AbstractProvider()  # type: ignore[abstract]
    assert isinstance(Echo(), Reply)


def test_a_reply_keeps_its_text_in_the_buffer_it_is_handed(reference):
    """The buffer the views of a reply read is the reply's own: its text is held once."""
    buffer = ReplyBuffer()
    reply = Aivvm.create_completion(
        "",
        [{"role": "user", "content": "one two three"}],
        True,
        base_url=reference.url,
        buffer=buffer,
    )
    assert reply.buffer is buffer and buffer.chunks == 0  # nothing is sent before next()
    assert next(reply) == "one " and buffer.text() == "one "
    assert reply.text() == "one two three" and buffer.chunks == 3
    assert reply.partial is buffer.text()
