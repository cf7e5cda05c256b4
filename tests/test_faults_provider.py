"""The provider core meets each fault of :data:`tests.faults.FAULTS`, hostile but valid
replies, retries and timeouts: the exception, its short message, the partial text, the retries
and the connections left behind."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import requests

from aivvm_magic import Aivvm
from aivvm_magic.providers import (
    APIError,
    ConnectError,
    EmptyReply,
    IncompleteReply,
    RedirectRefused,
    StreamingReply,
    transport,
)
from tests.faults import FAULTS, KEY, TEXT, Fault
from tests.faultserver import (
    INVALID_UTF8,
    Behaviour,
    Big,
    FaultServer,
    Gzip,
    Hangup,
    Raw,
    Redirect,
    Reply,
    Reset,
    Stall,
    Trickle,
    Truncated,
    closed_port,
    cloudflare_block,
    rate_limited,
    server_error,
)

FRAMINGS = ("chunked", "length", "close")
HELLO = [{"role": "user", "content": "Hello there"}]


# --------------------------------------------------------------------------------------------
# Helpers


def ask(url: str, messages: list[dict[str, str]] = HELLO, **kwargs: Any) -> StreamingReply:
    """Start a streamed completion with the canary key and, unless asked, no retries."""
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("key", KEY)
    reply = Aivvm.create_completion("", messages, True, base_url=url, **kwargs)
    assert isinstance(reply, StreamingReply)
    return reply


def assert_released(server: FaultServer) -> None:
    """Prove the client holds no connection to ``server`` but one idle, pooled for reuse.

    Right after a fault at most one connection may be open. A clean request then either reuses
    that idle connection or opens one in place of a closed one; if the fault had left a
    connection checked out (a response never closed), the clean request would need a second
    one, and two would be open afterwards.
    """
    assert server.wait_for(lambda: server.open_connections <= 1, timeout=3), (
        f"{server.open_connections} connections open after the fault"
    )
    assert server.pending == 0, "the test queued more than the client asked for"
    assert ask(server.url).text() == "Hello there"
    assert server.wait_for(lambda: server.open_connections <= 1, timeout=3), (
        f"{server.open_connections} connections open after a clean request"
    )


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable from it through ``__cause__``/``__context__``."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


def assert_no_key_in(exc: BaseException) -> None:
    """The key is nowhere in what an error shows: message, repr, args or formatted chain."""
    shown = [str(exc), repr(exc), *map(str, exc.args)]
    shown += traceback.format_exception(type(exc), exc, exc.__traceback__)
    assert not [text for text in shown if KEY in text]
    assert getattr(exc, "request", None) is None


# --------------------------------------------------------------------------------------------
# The provider: each fault


@pytest.mark.parametrize("case", FAULTS, ids=lambda case: case.id)
def test_each_fault_raises_its_error_with_a_short_message(fault: FaultServer, case: Fault):
    fault.enqueue(*case.behaviours(fault))
    url = fault.url + "/api/chat"
    reply = ask(fault.url, **case.options)
    started = time.monotonic()
    with pytest.raises(case.error) as info:
        for _chunk in reply:
            pass
    elapsed = time.monotonic() - started
    exc = info.value
    message = str(exc)
    assert case.message.format(url=url) in message
    assert "\n" not in message and len(message) < 300, message
    assert isinstance(exc, requests.exceptions.RequestException)
    assert_no_key_in(exc)
    if case.status is not None:
        assert isinstance(exc, APIError) and exc.status_code == case.status
    if isinstance(exc, IncompleteReply):
        assert exc.partial == case.partial
    assert reply.partial == case.partial and not reply.complete
    # retries=0: one request, and the failure is reported as soon as it is known.
    assert len(fault.requests) == 1
    assert elapsed < 0.5 + float(case.options.get("read_timeout", 0)) * 2
    assert_released(fault)


def test_retry_after_is_read_as_seconds_and_as_an_http_date(fault: FaultServer):
    fault.enqueue(rate_limited(7), rate_limited(30, as_date=True), rate_limited("soon"))
    waits = []
    for _ in range(3):
        with pytest.raises(APIError) as info:
            ask(fault.url).text()
        waits.append(info.value.retry_after)
    assert waits[0] == 7.0
    # An HTTP date has whole seconds, so "30 s from now" may read as up to a second less.
    assert waits[1] is not None and 28.0 <= waits[1] <= 30.0
    assert waits[2] is None  # not a number or a date: no Retry-After at all
    assert_released(fault)


def test_connection_refused(fault: FaultServer):
    url = closed_port()
    with pytest.raises(ConnectError) as info:
        ask(url).text()
    assert str(info.value) == f"Could not connect to {url}/api/chat: connection refused"
    assert_no_key_in(info.value)


@pytest.mark.parametrize("case", FAULTS, ids=lambda case: case.id)
def test_no_error_keeps_hold_of_the_request_that_carried_the_key(fault, case):
    """Not even hidden: a suppressed ``__context__`` is still reachable, and pickled or logged
    by tools that walk the chain, so no exception in it may hold the request body."""
    fault.enqueue(*case.behaviours(fault))
    with pytest.raises(case.error) as info:
        ask(fault.url, **case.options).text()
    for exc in error_chain(info.value):
        request = getattr(exc, "request", None)
        body = getattr(request, "body", None) or b""
        assert KEY.encode() not in (body if isinstance(body, bytes) else body.encode()), (
            f"{type(exc).__name__} in the chain of {type(info.value).__name__} holds the key"
        )


# --------------------------------------------------------------------------------------------
# The provider: hostile but valid replies


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_reply_trickling_one_byte_at_a_time_streams_whole(fault: FaultServer, framing: str):
    trickle = Trickle(TEXT.encode(), framing=framing, delay=0.005)
    fault.enqueue(trickle)
    reply = ask(fault.url)
    chunks = []
    first_at = None
    for chunk in reply:
        first_at = first_at or time.perf_counter()
        chunks.append(chunk)
    assert "".join(chunks) == TEXT and reply.complete
    # Shown as it came, not gathered: the first text arrived long before the last byte left.
    assert first_at is not None and first_at < trickle.write_times[-1]
    assert len(chunks) > len(TEXT) // 2
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert_released(fault)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_invalid_utf8_falls_back_to_unicode_escape_in_every_framing(fault, framing):
    fault.enqueue(Reply(chunks=[INVALID_UTF8[:4], INVALID_UTF8[4:]], framing=framing))
    assert ask(fault.url).text() == INVALID_UTF8.decode("unicode-escape")
    assert_released(fault)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_10_mb_reply_arrives_whole_and_fast(fault: FaultServer, framing: str):
    big = Big(10 * 1024 * 1024, framing=framing)
    fault.enqueue(big)
    started = time.monotonic()
    text = ask(fault.url).text()
    elapsed = time.monotonic() - started
    assert len(text) == big.size and text.encode() == big.expected_body()
    assert elapsed < 10, f"{elapsed:.1f} s for 10 MB"
    assert_released(fault)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_gzip_in_every_framing(fault: FaultServer, framing: str):
    fault.enqueue(Gzip([b"zipped ", "and streamed ✓".encode()], framing=framing, delay=0.02))
    assert ask(fault.url).text() == "zipped and streamed ✓"
    assert_released(fault)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_never_followed(fault: FaultServer, status: int):
    with FaultServer() as other:
        # Another port on the same host is another origin too.
        fault.enqueue(Redirect(other.url + "/api/chat", status=status))
        with pytest.raises(RedirectRefused) as info:
            ask(fault.url).text()
        assert other.requests == [] and other.connections_opened == 0
        assert_no_key_in(info.value)
    assert_released(fault)


def test_a_redirect_loop_on_one_origin_stops(fault: FaultServer):
    # One more redirect than allowed; a request after that would get a good reply.
    hops = transport.MAX_REDIRECTS + 1
    fault.enqueue(*(Redirect(fault.url + f"/hop{i}", status=307) for i in range(hops)))
    with pytest.raises(RedirectRefused, match="Too many redirects"):
        ask(fault.url).text()
    assert len(fault.requests) == transport.MAX_REDIRECTS + 1
    assert_released(fault)


def test_every_cut_in_every_framing_keeps_exactly_the_text_received(fault: FaultServer):
    """Stop after N bytes, for every N, with each framing.

    Chunked and Content-Length bodies show the cut: ``IncompleteReply`` carries every whole
    character received. A close-delimited body cannot show it, so the text received is the
    reply, as the protocol's framing defines.
    """
    data = TEXT.encode()
    for framing in FRAMINGS:
        last = len(data) if framing != "length" else len(data) - 1
        for after in range(0, last + 1):
            if framing == "close" and after == len(data):
                continue
            fault.enqueue(Truncated(chunks=[data[:7], data[7:]], after=after, framing=framing))
            received = data[:after].decode("utf-8", "ignore")
            reply = ask(fault.url)
            if framing == "close" and not after:
                # Nothing at all: an empty reply, which the Aivvm protocol never means.
                with pytest.raises(EmptyReply):
                    reply.text()
            elif framing == "close":
                text = reply.text()
                assert reply.complete
                # Whole characters come out exactly; only a split last character, which
                # nothing marks as cut, goes through the protocol's escape fallback.
                assert text.startswith(received), (framing, after, text)
                assert text == data[:after].decode("utf-8", "aivvm-unicode-escape")
            else:
                with pytest.raises(IncompleteReply) as info:
                    reply.text()
                assert info.value.partial == received == reply.partial, (framing, after)
    # chunked: cuts 0..28; length: 0..27 (28 would be whole); close: 0..27.
    assert len(fault.requests) == 3 * len(data) + 1
    assert_released(fault)


# --------------------------------------------------------------------------------------------
# Retries


RETRIED: dict[str, Callable[[], Behaviour]] = {
    "408": lambda: Reply(408, b"Request Timeout"),
    "429": lambda: rate_limited(0),
    "500": server_error,
    "502": lambda: Reply(502, b"Bad Gateway"),
    "503": lambda: Reply(503, b"Service Unavailable"),
    "504": lambda: Reply(504, b"Gateway Timeout"),
    "reset-before-reply": Reset,
    "hangup-before-reply": Hangup,
    "not-http": lambda: Raw(b"SSH-2.0-OpenSSH_9.6\r\n"),
}

NOT_RETRIED: dict[str, Callable[[], Behaviour]] = {
    "400": lambda: Reply(400, b"Bad request"),
    "401": lambda: Reply(401, b"Unauthorized"),
    "403-cloudflare": cloudflare_block,
    "404": lambda: Reply(404, b"Not Found"),
    "413": lambda: Reply(413, b"Payload Too Large"),
    # The server has the request and may be working on it: a retry could run it twice.
    "stall-before-headers": lambda: Stall(3, before_headers=True),
    # The reply has started: a retry would show the start twice.
    "cut-mid-body": lambda: Truncated(b"started, then", after=8, framing="chunked"),
    "stall-mid-body": lambda: Stall(3, chunks=[b"started "]),
    "redirect-to-another-host": lambda: Redirect("http://localhost:9/api/chat"),
}


@pytest.mark.parametrize("kind", RETRIED)
def test_retried_faults_stop_at_the_configured_bound(fault: FaultServer, kind: str):
    # Exactly as many as allowed: a fourth request would get the default (a good) reply.
    fault.enqueue(*(RETRIED[kind]() for _ in range(3)))
    retries: list[tuple[int, float, str]] = []
    with pytest.raises((APIError, ConnectError)):
        ask(fault.url, retries=2, backoff=0.02, on_retry=lambda *a: retries.append(a)).text()
    assert len(fault.requests) == 3
    assert [n for n, _wait, _why in retries] == [1, 2]
    assert all(0 <= wait <= 0.04 for _n, wait, _why in retries)
    assert_released(fault)


@pytest.mark.parametrize("kind", RETRIED)
def test_retried_faults_then_a_reply(fault: FaultServer, kind: str):
    fault.enqueue(RETRIED[kind](), RETRIED[kind]())
    assert ask(fault.url, retries=2, backoff=0.01).text() == "Hello there"
    assert len(fault.requests) == 3
    assert_released(fault)


@pytest.mark.parametrize("kind", NOT_RETRIED)
def test_faults_that_must_not_be_retried_are_not(fault: FaultServer, kind: str):
    # One fault only: a retry would get the default (a good) reply, and raise nothing.
    fault.enqueue(NOT_RETRIED[kind]())
    with pytest.raises(requests.exceptions.RequestException):
        ask(fault.url, retries=3, backoff=0.01, read_timeout=0.3).text()
    assert len(fault.requests) == 1
    assert_released(fault)


def test_a_refused_connection_is_retried_within_the_bound():
    url = closed_port()
    retries: list[tuple[int, float, str]] = []
    with pytest.raises(ConnectError, match="connection refused"):
        ask(url, retries=2, backoff=0.02, on_retry=lambda *a: retries.append(a)).text()
    assert [(n, why) for n, _wait, why in retries] == [
        (1, "connection refused"),
        (2, "connection refused"),
    ]


def test_backoff_waits_grow_within_their_bounds_and_are_really_slept(fault: FaultServer):
    fault.enqueue(*(server_error(status=503) for _ in range(3)))
    waits: list[float] = []
    started = time.monotonic()
    assert (
        ask(
            fault.url, retries=3, backoff=0.1, on_retry=lambda n, wait, why: waits.append(wait)
        ).text()
        == "Hello there"
    )
    elapsed = time.monotonic() - started
    # Full jitter: retry n waits between half and all of backoff * 2 ** (n - 1).
    for n, wait in enumerate(waits, 1):
        step = 0.1 * 2 ** (n - 1)
        assert step / 2 <= wait <= step, (n, wait)
    assert sum(waits) <= elapsed < sum(waits) + 1.0
    assert_released(fault)


def test_max_retry_wait_caps_the_backoff(fault: FaultServer):
    fault.enqueue(*(server_error() for _ in range(4)))
    waits: list[float] = []
    with pytest.raises(APIError):
        ask(
            fault.url,
            retries=3,
            backoff=10.0,
            max_retry_wait=0.05,
            on_retry=lambda n, wait, why: waits.append(wait),
        ).text()
    assert len(waits) == 3 and all(wait <= 0.05 for wait in waits)


# --------------------------------------------------------------------------------------------
# Timeouts


@pytest.mark.parametrize("connect_timeout", [0.5, 1.0])
def test_the_connect_timeout_fires_near_its_configured_value(unresponsive, connect_timeout):
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        ask(unresponsive, connect_timeout=connect_timeout, read_timeout=30).text()
    elapsed = time.monotonic() - started
    assert 0.9 * connect_timeout <= elapsed <= 2 * connect_timeout, elapsed
    assert str(info.value) == (
        f"Could not connect to {unresponsive}/api/chat: timed out while connecting"
    )
    assert_no_key_in(info.value)


def test_connect_timeouts_are_retried_within_the_bound(unresponsive):
    waits: list[float] = []
    started = time.monotonic()
    with pytest.raises(ConnectError):
        ask(
            unresponsive,
            connect_timeout=0.3,
            retries=2,
            backoff=0.05,
            on_retry=lambda n, wait, why: waits.append(wait),
        ).text()
    elapsed = time.monotonic() - started
    assert len(waits) == 2
    assert 3 * 0.9 * 0.3 + sum(waits) <= elapsed <= 3 * 2 * 0.3 + 2 * 0.05


@pytest.mark.parametrize("read_timeout", [0.5, 1.0])
def test_the_read_timeout_fires_near_its_value_counted_from_the_last_chunk(fault, read_timeout):
    fault.enqueue(Stall(10, chunks=[b"some text "]))
    reply = ask(fault.url, read_timeout=read_timeout)
    assert next(reply) == "some text "
    started = time.monotonic()
    with pytest.raises(IncompleteReply) as info:
        next(reply)
    elapsed = time.monotonic() - started
    assert 0.9 * read_timeout <= elapsed <= 2 * read_timeout, elapsed
    assert info.value.partial == "some text "
    assert_released(fault)


def test_gaps_shorter_than_the_read_timeout_never_trip_it(fault: FaultServer):
    # Six gaps of 0.25 s: 1.5 s in all, three times the read timeout, and no gap reaches it.
    fault.enqueue(Reply(chunks=[b"slow " * 1] * 7, framing="chunked", delay=0.25))
    started = time.monotonic()
    assert ask(fault.url, read_timeout=0.5).text() == "slow " * 7
    assert time.monotonic() - started >= 1.4
    assert_released(fault)
