"""Faults and hostile servers, systematically: what the client raises, keeps, retries and frees.

Each fault is staged by :class:`~tests.faultserver.FaultServer` on 127.0.0.1 and met four ways:
by the provider core (the exception, its short message, the partial text, the retries and the
connections left behind), by ``%%aivvm`` in a real ``InteractiveShell`` (the one-line error,
the partial reply shown and kept, the conversation untouched otherwise, the next cell working),
by ``%%aivvm`` in a real kernel (the same, plus a kernel that is still alive), and by the chat
panel (the status line and the transcript).

Cases that ``test_provider.py`` and ``test_magics.py`` already prove one at a time (a single
status, a single truncation) are taken here as rows of one table, so that every fault meets
every check. ``docs/RELIABILITY.md`` maps each row to what the user sees.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic import Aivvm
from aivvm_magic.conversation import Conversation
from aivvm_magic.magics import AivvmError, magics_for
from aivvm_magic.providers import (
    APIError,
    ConnectError,
    IncompleteReply,
    RedirectRefused,
    ReplyTimeout,
    StreamingReply,
    transport,
)
from tests.conftest import CANARY, make_turn
from tests.faultserver import (
    INVALID_UTF8,
    Behaviour,
    Big,
    Exchange,
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
    json_error,
    rate_limited,
    server_error,
)
from tests.kernel import WIDGET_VIEW, Kernel

ROOT = Path(__file__).resolve().parents[1]
KEY = CANARY
FRAMINGS = ("chunked", "length", "close")
HELLO = [{"role": "user", "content": "Hello there"}]
#: Text whose UTF-8 has one-, two-, three- and four-byte characters.
TEXT = "Grüß Gott, 世界! 😀 ok"

NGINX_502_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


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


class ResetAfter(Behaviour):
    """Send the head and ``first`` as one HTTP chunk, wait, then reset the connection (RST).

    The wait lets the client read ``first`` before the RST arrives, so what it has received
    is known; :class:`Truncated` resets at once, which can discard the unread bytes.
    """

    def __init__(self, first: bytes, wait: float = 0.2) -> None:
        self.first = first
        self.wait = wait

    def respond(self, exchange: Exchange) -> bool:
        exchange.send_head(200, framing="chunked")
        exchange.send(b"%x\r\n%s\r\n" % (len(self.first), self.first))
        exchange.pause(self.wait)
        exchange.close(reset=True)
        return False


def gzip_cut() -> Truncated:
    # The first deflate block whole, then the connection closes: the first text must arrive.
    parts = Gzip([b"compressed start ", b"and a lost end"]).encoded_parts()
    return Truncated(
        chunks=parts,
        after=len(parts[0]),
        framing="chunked",
        headers={"Content-Encoding": "gzip"},
        delay=0.05,
    )


@dataclass(frozen=True)
class Fault:
    """One way a server misbehaves, and what the client must make of it.

    ``message`` is a fragment of the error's message, with ``{url}`` for the chat URL;
    ``partial`` the text the error carries (and a cell keeps) when the reply had started.
    """

    id: str
    behaviours: Callable[[FaultServer], list[Behaviour]]
    error: type[Exception]
    message: str
    partial: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    status: int | None = None


def _status(status: int, body: bytes, reason: str, headers: dict[str, str] | None = None) -> Fault:
    return Fault(
        str(status),
        lambda s: [Reply(status, body, headers=headers)],
        APIError,
        f"HTTP {status} from {{url}}: {reason}",
        status=status,
    )


CUT = TEXT.encode()
# Byte 4 is inside the two-byte "ü"; byte 22 inside the four-byte emoji.
CUT_AT = {"chunked": 22, "length": 4}

FAULTS: list[Fault] = [
    _status(400, b"Bad request: messages missing", "Bad request: messages missing"),
    Fault(
        "401-json-with-the-key",
        lambda s: [json_error(401, {"error": {"message": f"Incorrect API key: {KEY}"}})],
        APIError,
        "HTTP 401 from {url}: Incorrect API key: <redacted>",
        status=401,
    ),
    Fault(
        "403-cloudflare",
        lambda s: [cloudflare_block()],
        APIError,
        "HTTP 403 from {url}: Attention Required! | Cloudflare",
        status=403,
    ),
    _status(404, b"Not Found", "Not Found"),
    _status(408, b"Request Timeout", "Request Timeout"),
    Fault(
        "429-seconds",
        lambda s: [rate_limited(7)],
        APIError,
        "HTTP 429 from {url}: Too Many Requests",
        status=429,
    ),
    Fault(
        "429-http-date",
        lambda s: [rate_limited(30, as_date=True)],
        APIError,
        "HTTP 429 from {url}: Too Many Requests",
        status=429,
    ),
    _status(500, b"Error", "Error"),
    _status(502, NGINX_502_HTML, "502 Bad Gateway", {"Content-Type": "text/html"}),
    _status(503, b"Service Unavailable", "Service Unavailable"),
    *(
        Fault(
            f"cut-{framing}",
            lambda s, framing=framing: [
                Truncated(chunks=[CUT[:10], CUT[10:]], after=CUT_AT[framing], framing=framing)
            ],
            IncompleteReply,
            "the connection closed before the end of the reply",
            # The character the cut split is dropped, not guessed at.
            partial=CUT[: CUT_AT[framing]].decode("utf-8", "ignore"),
        )
        for framing in ("chunked", "length")
    ),
    Fault(
        "reset-mid-body",
        lambda s: [ResetAfter(b"one two ")],
        IncompleteReply,
        "the connection was reset",
        partial="one two ",
    ),
    Fault(
        "stall-mid-body",
        lambda s: [Stall(5, chunks=[b"so far "])],
        IncompleteReply,
        "no data for 0.5 s (read timeout)",
        partial="so far ",
        options={"read_timeout": 0.5},
    ),
    Fault(
        "stall-before-headers",
        lambda s: [Stall(5, before_headers=True)],
        ReplyTimeout,
        "No answer from {url} within 0.5 s",
        options={"read_timeout": 0.5},
    ),
    Fault(
        "stall-after-headers",
        lambda s: [Stall(5)],
        ReplyTimeout,
        "No reply from {url} within 0.5 s (read timeout)",
        options={"read_timeout": 0.5},
    ),
    Fault("reset-before-reply", lambda s: [Reset()], ConnectError, "{url}"),
    Fault("hangup-before-reply", lambda s: [Hangup()], ConnectError, "{url}"),
    Fault("not-http", lambda s: [Raw(b"SSH-2.0-OpenSSH_9.6\r\n")], ConnectError, "{url}"),
    Fault(
        "gzip-corrupt",
        lambda s: [Reply(200, b"this is not gzip", headers={"Content-Encoding": "gzip"})],
        IncompleteReply,
        "the compressed body could not be decoded",
    ),
    Fault(
        "gzip-cut",
        lambda s: [gzip_cut()],
        IncompleteReply,
        "the connection closed before the end of the reply",
        partial="compressed start ",
    ),
    Fault(
        "307-to-another-host",
        # The same server under another name is another origin: following would be seen.
        lambda s: [Redirect(s.url_as("localhost") + "/api/chat")],
        RedirectRefused,
        "redirected to another host (localhost); not followed",
    ),
]


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
def test_an_empty_200_is_an_empty_complete_reply(fault: FaultServer, framing: str):
    fault.enqueue(Reply(200, b"", framing=framing))
    reply = ask(fault.url)
    assert list(reply) == [] and reply.complete and reply.text() == ""
    assert_released(fault)


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
            if framing == "close":
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


@pytest.fixture
def unresponsive() -> Iterator[str]:
    """A URL whose TCP connect hangs: a listener that never accepts, its backlog filled.

    Linux queues ``backlog + 1`` connections a listener has not accepted and drops further
    SYNs, so ``connect`` waits for a SYN-ACK that never comes, as with a firewalled host.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    idle: list[socket.socket] = []
    try:
        for _ in range(16):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.2)
            try:
                probe.connect(address)
            except TimeoutError:
                probe.close()
                break
            idle.append(probe)
        else:
            pytest.fail("could not fill the listen backlog: connects never hang here")
        # The premise, checked on this machine: one more connect really hangs.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as check:
            check.settimeout(0.3)
            with pytest.raises(TimeoutError):
                check.connect(address)
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for sock in idle:
            sock.close()
        listener.close()


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


# --------------------------------------------------------------------------------------------
# %%aivvm in a real InteractiveShell: each fault


# The faults a cell meets the same way as the provider; timeouts come from the traitlet.
CELL_FAULTS = [case for case in FAULTS if case.id != "429-http-date"]


def expected_cell_message(case: Fault, url: str) -> str:
    """The one line a failed cell shows (``errors.one_line`` of the provider's error)."""
    text = case.message.format(url=url)
    return f"reply cut short: {text}" if case.error is IncompleteReply else text


@pytest.mark.parametrize("case", CELL_FAULTS, ids=lambda case: case.id)
def test_each_fault_in_a_cell(ip: InteractiveShell, fault: FaultServer, case: Fault, capsys):
    magics = magics_for(ip)
    magics.api_key = KEY
    magics.read_timeout = case.options.get("read_timeout", 10.0)
    conversation = magics.chats.get("default")
    ip.run_cell("%%aivvm\nbefore the fault", cell_id="cell-1")
    ip.run_cell("%%aivvm\nstill before", cell_id="cell-2")
    before = conversation.to_dict()["turns"]
    fault.enqueue(*case.behaviours(fault))

    result = ip.run_cell(
        f"%%aivvm --base-url {fault.url} -o aivvm_test_out\nthe faulty question",
        cell_id="cell-3",
    )
    error = result.error_in_exec
    assert isinstance(error, AivvmError)
    message = str(error)
    assert expected_cell_message(case, fault.url + "/api/chat") in message
    assert "\n" not in message and len(message) < 300
    assert error._render_traceback_() == [f"AivvmError: {message}"]

    # The conversation is as it was, plus at most one partial turn, marked.
    turns = conversation.to_dict()["turns"]
    assert turns[: len(before)] == before
    added = turns[len(before) :]
    out = capsys.readouterr()
    if case.partial:
        assert len(added) == 1
        turn = added[0]
        assert (turn["prompt"], turn["reply"]) == ("the faulty question", case.partial)
        assert turn["complete"] is False and turn["error"] == message
        assert ip.user_ns["aivvm_test_out"] == case.partial
        assert case.partial in out.out and "[incomplete · " in out.out
    else:
        assert added == []
        assert "aivvm_test_out" not in ip.user_ns
        assert "[failed · " in out.out
    assert KEY not in out.out + out.err + message

    # The next cell works, and what it sends is the history with the partial turn in it.
    assert ip.run_cell(f"%%aivvm --base-url {fault.url}\nand after it", cell_id="cell-4").success
    sent = [m["content"] for m in fault.requests[-1].json["messages"]]
    kept = ["before the fault", "before the fault", "still before", "still before"]
    if case.partial:
        kept += ["the faulty question", case.partial]
    assert sent == [*kept, "and after it"]
    assert conversation.last_turn.complete and conversation.last_turn.reply == "and after it"
    assert len(conversation) == len(turns) + 1


def test_a_retry_in_a_cell_is_shown_and_the_reply_completes(ip, fault, capsys):
    magics_for(ip).retries = 2
    fault.enqueue(Reply(503, b"Service Unavailable"), rate_limited(0))
    ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "patience")
    out = capsys.readouterr().out
    assert "[HTTP 503; retry 1 in " in out and "[HTTP 429; retry 2 in 0.0 s]" in out
    assert out.rstrip().endswith("patience")
    assert len(fault.requests) == 3
    assert magics_for(ip).chats.get("default").last_turn.complete


def test_a_refused_connection_in_a_cell_changes_nothing(ip, capsys):
    ip.run_cell_magic("aivvm", "", "kept")
    url = closed_port()
    with pytest.raises(AivvmError, match="connection refused"):
        ip.run_cell_magic("aivvm", f"--base-url {url}", "lost")
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["kept"]
    assert "[failed · " in capsys.readouterr().out
    ip.run_cell_magic("aivvm", "", "works again")
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["kept", "works again"]


def test_a_connect_timeout_in_a_cell(ip, unresponsive):
    magics_for(ip).connect_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(AivvmError, match="timed out while connecting"):
        ip.run_cell_magic("aivvm", f"--base-url {unresponsive}", "anyone?")
    assert 0.45 <= time.monotonic() - started <= 1.5
    assert len(magics_for(ip).chats.get("default")) == 0


# --------------------------------------------------------------------------------------------
# %%aivvm in a real kernel: the widget path, and a kernel that survives every fault


KERNEL_FAULTS = [
    case
    for case in FAULTS
    if case.id
    in (
        "403-cloudflare",
        "500",
        "cut-chunked",
        "reset-mid-body",
        "stall-mid-body",
        "stall-before-headers",
        "gzip-corrupt",
        "307-to-another-host",
    )
]


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


def test_every_fault_in_a_kernel_leaves_it_alive_and_the_next_cell_working(kernel: Kernel):
    with FaultServer() as server:
        setup = kernel.execute(
            "%load_ext aivvm_magic\n"
            f"%config AivvmMagics.base_url = {server.url!r}\n"
            "%config AivvmMagics.retries = 0\n"
            "%config AivvmMagics.read_timeout = 0.5\n"
            f"%config AivvmMagics.api_key = {KEY!r}\n"
            "import json\n"
            "from aivvm_magic.magics import magics_for\n"
            "aivvm = magics_for(get_ipython())\n"
        )
        assert setup.status == "ok", setup.reply
        first = kernel.execute("%%aivvm -c k\nbefore any fault", cell_id="k0")
        assert first.status == "ok", first.reply
        expected_turns = 1
        for number, case in enumerate(KERNEL_FAULTS, 1):
            server.enqueue(*case.behaviours(server))
            run = kernel.execute(f"%%aivvm -c k\nfault {case.id}", cell_id=f"k{number}")
            assert run.status == "error", (case.id, run.reply)
            assert run.reply["content"]["ename"] == "AivvmError"
            (error,) = run.of_type("error")
            (line,) = error["content"]["traceback"]
            assert expected_cell_message(case, server.url + "/api/chat") in line, line
            # The static bundle last (a fault quicker than the live widget's first showing has
            # no widget before it); the widget is cleared for reuse.
            bundle = run.final_bundle()
            assert WIDGET_VIEW not in bundle and run.widget_released()
            plain = bundle["text/plain"]
            if case.partial:
                assert plain.startswith(case.partial) and "[incomplete · " in plain
                assert "⚠" in bundle["text/html"]
                expected_turns += 1
            else:
                assert plain.startswith("\n[failed · ")
            assert KEY not in json.dumps(run.messages, default=str)
            alive = kernel.execute("print(6 * 7)", timeout=10)
            assert alive.stdout() == "42\n"
        check = kernel.execute(
            "c = aivvm.chats.get('k')\n"
            "print(json.dumps([[t.prompt, t.complete, t.error] for t in c.turns]))"
        )
        turns = json.loads(check.stdout())
        assert len(turns) == expected_turns
        assert turns[0] == ["before any fault", True, None]
        assert all(not complete and error for _prompt, complete, error in turns[1:])
        after = kernel.execute("%%aivvm -c k\nand the next cell works", cell_id="k-last")
        assert after.status == "ok", after.reply
        assert after.final_bundle()["text/plain"] == "and the next cell works"
        # No connection left open but the one the kernel's session keeps for reuse.
        assert server.wait_for(lambda: server.open_connections <= 1, timeout=3)


# --------------------------------------------------------------------------------------------
# Files: atomic export, corrupt and foreign imports


def _big_conversation_script(path: Path, marker: str) -> str:
    return textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from aivvm_magic.conversation import Conversation, Turn
        conversation = Conversation("crash")
        for index in range(4000):
            conversation.record(Turn(
                prompt={marker!r} + str(index), reply="y" * 2000, model="m", temperature=0.0,
                system="", started="2024-05-01T10:00:00+00:00", duration=0.0, complete=True,
                source="cell"))
        print("writing", flush=True)
        while True:
            conversation.export({str(path)!r})
        """
    )


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_crash_mid_export_leaves_the_old_file(tmp_path: Path, suffix: str):
    """SIGKILL a process while it writes an 8 MB export, again and again.

    Whenever it dies, the file is the old export or a whole new one, never a mixture; a
    temporary file may be left behind (nothing can clean up after SIGKILL), and the test
    insists that at least one kill did land mid-write.
    """
    path = tmp_path / f"chat{suffix}"
    old = Conversation("old")
    old.record(make_turn(prompt="the old file", reply="kept"))
    old.export(path)
    old_bytes = path.read_bytes()
    killed_mid_write = 0
    for attempt in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", _big_conversation_script(path, f"new {attempt} ")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "writing\n"
            # Kill at a different point of the (repeated) write each time.
            time.sleep(0.05 + 0.07 * attempt)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(10)
        assert process.returncode == -signal.SIGKILL
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        killed_mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        loaded = Conversation.load(path)
        content = path.read_bytes()
        if content != old_bytes:
            # A whole new export, from this process (it was replaced in one step).
            assert loaded.name == "crash" and len(loaded) == 4000
            assert loaded.turns[0].prompt == f"new {attempt} 0"
        old_bytes = content
    assert killed_mid_write >= 1, "no kill landed while a temporary file was being written"


NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("chat.json", b"", "the file is empty"),
        ("chat.json", b'{"format": "aivvm-conversation", "version": 1, "na', "not valid JSON"),
        ("chat.json", NOTEBOOK.encode(), "a Jupyter notebook"),
        ("chat.json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "not UTF-8 text"),
        ("chat.json", b'{"format": "aivvm-conversation", "version": 9}', "unsupported version"),
        ("chat.md", b"# Just some notes\n\nNo markers here.\n", "no aivvm:conversation marker"),
        ("chat.txt", b"{}", "use .json or .md"),
        ("missing.json", None, "No such file"),
        ("a-directory.json", "dir", "Is a directory"),
    ],
)
def test_importing_a_corrupt_or_foreign_file_in_a_cell_changes_nothing(
    ip: InteractiveShell, tmp_path: Path, name: str, content: Any, reason: str
):
    ip.run_cell("%%aivvm\nprecious", cell_id="keep-me")
    conversation = magics_for(ip).chats.get("default")
    before = conversation.to_dict()
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(AivvmError) as info:
        ip.run_line_magic("aivvm", f"import {path}")
    message = str(info.value)
    assert reason in message and "\n" not in message and len(message) < 300
    assert conversation.to_dict() == before
    # Still the same conversation, in use: a re-run of its cell replaces its turn.
    ip.run_cell("%%aivvm\nprecious, again", cell_id="keep-me")
    assert [t.prompt for t in conversation.turns] == ["precious, again"]


def test_an_export_that_fails_midway_in_a_cell_keeps_the_old_file(tmp_path: Path):
    """The disk fills up mid-export (a file size limit makes the kernel refuse with EFBIG).

    Run in a child IPython, as the limit applies to every file the process writes.
    """
    big, target = tmp_path / "big.json", tmp_path / "chat.md"
    conversation = Conversation("big")
    for index in range(50):
        conversation.record(make_turn(prompt=f"question {index}", reply="y" * 5000))
    conversation.export(big)
    target.write_bytes(b"the old file\n")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "aivvm_magic")
        ip.run_line_magic("aivvm", "import {big}")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            ip.run_line_magic("aivvm", "export {target}")
        except Exception as exc:
            print(type(exc).__name__ + ": " + str(exc))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"AivvmError: Could not export to {target}: ")
    assert "File too large" in line and len(line) < 300
    assert target.read_bytes() == b"the old file\n"
    assert sorted(os.listdir(tmp_path)) == ["big.json", "chat.md"]


def _turn_json(**changes: Any) -> str:
    turn = {
        "prompt": "hi",
        "reply": "hello",
        "model": "gpt-3.5-turbo",
        "temperature": 0.7,
        "system": "",
        "started": "2024-05-01T10:00:00+00:00",
        "duration": 0.1,
        "complete": True,
        "source": "cell",
    }
    turn.update(changes)
    return json.dumps(turn)


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_file_with_lone_surrogates_is_refused_on_import(ip, tmp_path: Path, suffix: str):
    """Valid JSON, invalid text: a ``\\ud800`` escape decodes to a lone surrogate, which no
    UTF-8 request body or export can hold. It must be refused at the door, not poison the
    conversation."""
    ip.run_cell_magic("aivvm", "", "precious")
    conversation = magics_for(ip).chats.get("default")
    before = conversation.to_dict()
    path = tmp_path / f"poisoned{suffix}"
    if suffix == ".json":
        poisoned = _turn_json(reply="bad \\ud800 text").replace("\\\\ud800", "\\ud800")
        path.write_text(
            '{"format": "aivvm-conversation", "version": 1, "name": "p", "system": null, '
            f'"turns": [{poisoned}]}}'
        )
    else:
        # Markdown texts are plain UTF-8; the metadata in the markers is JSON, with escapes.
        Conversation.from_dict(
            {
                "format": "aivvm-conversation",
                "version": 1,
                "name": "p",
                "system": None,
                "turns": [json.loads(_turn_json(model="MODEL"))],
            }
        ).export(path)
        path.write_text(path.read_text().replace('"MODEL"', '"gpt \\ud800"'))
    assert "\\ud800" in path.read_text()
    with pytest.raises(AivvmError) as info:
        ip.run_line_magic("aivvm", f"import {path}")
    assert "surrogate" in str(info.value) and "\n" not in str(info.value)
    assert conversation.to_dict() == before


# --------------------------------------------------------------------------------------------
# The chat panel: each fault


def wait_for_background_threads(name: str, timeout: float = 10) -> None:
    """Wait for the panel's threads called ``name`` (its model-list fetch) to finish."""
    for thread in [t for t in threading.enumerate() if t.name == name]:
        thread.join(timeout)
        assert not thread.is_alive(), f"{name} still running"


@pytest.fixture
def panel(ip: InteractiveShell, fault: FaultServer) -> Iterator[Any]:
    """A chat panel on the default conversation, sending to the fault server."""
    from aivvm_magic.panel import ChatPanel

    magics = magics_for(ip)
    magics.api_key = KEY
    made = ChatPanel("default", magics=magics)
    # The panel asks the (reference) server for its models in the background; that request
    # must not take a fault queued for the chat request.
    wait_for_background_threads("aivvm-panel-models")
    magics.base_url = fault.url
    try:
        yield made
    finally:
        made.stop()
        made.close()


def status_line(panel: Any) -> str:
    """The panel's status line as the user reads it."""
    text = re.sub(r"<[^>]+>", "", panel.status.value)
    return html.unescape(text)


@pytest.mark.parametrize("case", CELL_FAULTS, ids=lambda case: case.id)
def test_each_fault_in_the_panel(ip, fault: FaultServer, panel: Any, case: Fault):
    magics_for(ip).read_timeout = case.options.get("read_timeout", 10.0)
    conversation = panel.conversation
    assert panel.send("before the fault") == "before the fault"
    before = conversation.to_dict()["turns"]
    fault.enqueue(*case.behaviours(fault))

    assert panel.send("the faulty question") == case.partial
    message = expected_cell_message(case, fault.url + "/api/chat")
    status = status_line(panel)
    assert status.startswith("⚠ ") and message in status, status
    assert "\n" not in status and KEY not in status + panel.transcript.value
    turns = conversation.to_dict()["turns"]
    assert turns[: len(before)] == before
    added = turns[len(before) :]
    if case.partial:
        assert status.startswith("⚠ incomplete · ")
        assert [(t["prompt"], t["reply"], t["complete"]) for t in added] == [
            ("the faulty question", case.partial, False)
        ]
        assert added[0]["source"] == "panel" and added[0]["error"] == message
        transcript = html.unescape(panel.transcript.value)
        assert f"incomplete: {message}" in transcript
        assert case.partial.strip().split()[0] in transcript
    else:
        assert status.startswith("⚠ failed · ")
        assert added == []
    assert panel.stop_button.disabled

    # The next message works, and carries the partial turn in its history.
    assert panel.send("and after it") == "and after it"
    sent = [m["content"] for m in fault.requests[-1].json["messages"]]
    kept = ["before the fault", "before the fault"]
    if case.partial:
        kept += ["the faulty question", case.partial]
    assert sent == [*kept, "and after it"]
    assert "⚠" not in status_line(panel)
    assert len(conversation) == len(turns) + 1


def test_a_connect_timeout_in_the_panel(ip, panel: Any, unresponsive: str):
    magics = magics_for(ip)
    magics.base_url = unresponsive
    magics.connect_timeout = 0.5
    started = time.monotonic()
    assert panel.send("anyone?") == ""
    assert 0.45 <= time.monotonic() - started <= 1.5
    assert "timed out while connecting" in status_line(panel)
    assert len(panel.conversation) == 0


def test_several_questions_from_one_cell_are_all_kept(ip: InteractiveShell):
    loop = (
        "for q in ['first', 'second', 'third']:\n    get_ipython().run_cell_magic('aivvm', '', q)"
    )
    conversation = magics_for(ip).chats.get("default")
    assert ip.run_cell("%%aivvm\nbefore", cell_id="cell-0").success
    assert ip.run_cell(loop, cell_id="loop-cell").success
    assert [t.prompt for t in conversation.turns] == ["before", "first", "second", "third"]
    # Running the cell again replaces all it asked, and keeps what came before it.
    assert ip.run_cell(loop.replace("'third'", "'fourth'"), cell_id="loop-cell").success
    assert [t.prompt for t in conversation.turns] == ["before", "first", "second", "fourth"]
