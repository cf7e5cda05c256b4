"""A misbehaving HTTP/1.1 server on 127.0.0.1, for testing how a client copes with bad replies.

The server is built on raw sockets (``socketserver``, not ``http.server``) because its purpose
is to control framing byte by byte: it can cut a chunked body before the terminating chunk,
promise more bytes in ``Content-Length`` than it sends, stall, trickle, reset the connection,
or redirect to another origin. Each incoming request takes the next queued :class:`Behaviour`;
when the queue is empty, :attr:`FaultServer.default` answers (an echo of the last user
message, chunked), so a test only queues what it wants to go wrong.

It also keeps the evidence a test needs: every request as a :class:`RecordedRequest`, counters
of connections opened and closed (so a test can prove the client leaves no connection open),
the number of replies the client walked away from (:attr:`FaultServer.disconnects`), and, on
each response behaviour, the ``time.perf_counter()`` of every body write.

Examples
--------
In [1]: with FaultServer() as server:
   ...:     server.enqueue(rate_limited(2), Reply(chunks=[b"Hel", b"lo"], framing="chunked"))
   ...:     first = requests.post(server.url + "/api/chat", json=body, timeout=5)
   ...:     second = requests.post(server.url + "/api/chat", json=body, timeout=5)
In [2]: first.status_code, first.headers["Retry-After"], second.text
Out[2]: (429, '2', 'Hello')
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import http
import itertools
import json
import re
import select
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

__all__ = [
    "CLOUDFLARE_403_HTML",
    "INVALID_UTF8",
    "Behaviour",
    "Big",
    "Echo",
    "Exchange",
    "FaultServer",
    "Gzip",
    "Hangup",
    "Raw",
    "RecordedRequest",
    "Redirect",
    "Reply",
    "Reset",
    "Stall",
    "Trickle",
    "Truncated",
    "closed_port",
    "cloudflare_block",
    "json_error",
    "openai_event",
    "openai_sse",
    "rate_limited",
    "server_error",
    "split_utf8",
]

Framing = Literal["chunked", "length", "close"]
FRAMINGS: tuple[str, ...] = ("chunked", "length", "close")

#: Bytes that are not valid UTF-8 in their own right (not a character cut in two).
INVALID_UTF8 = b"ok \xff\xfe end"

#: The kind of page Cloudflare served to blocked clients of chat.aivvm.com (status 403).
CLOUDFLARE_403_HTML = (
    b"<!DOCTYPE html>\n"
    b'<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->\n'
    b'<html class="no-js" lang="en-US">\n'
    b"<head>\n"
    b"<title>Attention Required! | Cloudflare</title>\n"
    b'<meta charset="UTF-8" />\n'
    b'<meta name="robots" content="noindex, nofollow" />\n'
    b'<link rel="stylesheet" id="cf_styles-css" href="/cdn-cgi/styles/cf.errors.css" />\n'
    b"</head>\n"
    b"<body>\n"
    b'<div id="cf-wrapper"><div id="cf-error-details" class="cf-error-details-wrapper">\n'
    b'<h1 data-translate="block_headline">Sorry, you have been blocked</h1>\n'
    b"<h2>You are unable to access aivvm.com</h2>\n"
    b"<p>This website is using a security service to protect itself from online attacks.</p>\n"
    b'<span class="cf-footer-item">Cloudflare Ray ID: <strong>80a1b2c3d4e5f607</strong></span>\n'
    b"<script>(function(){window._cf_chl_opt={cType: 'managed'};})();</script>\n"
    b"</div></div>\n"
    b"</body>\n"
    b"</html>\n"
)

_MAX_LINE = 65536
_MAX_HEADERS = 200
_SERVER_NAME = "FaultServer"


class _ClientGone(Exception):
    """Internal: a write failed, or the server is closing; abandon this connection."""


class _BadRequest(Exception):
    """Internal: the request could not be parsed."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    version: str
    #: Header names in lower case; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes
    #: The body parsed as JSON, or None when it is not JSON.
    json: Any
    #: ``time.perf_counter()`` when the request line arrived.
    arrived: float
    #: Serial number (from 1) of the connection that carried it: equal numbers mean reuse.
    connection: int

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")


class Exchange:
    """One request/response on a connection: what a :class:`Behaviour` writes through.

    Every write goes out at once (``TCP_NODELAY``, no buffering), so the client receives each
    piece as a separate segment at the moment it is written.
    """

    def __init__(
        self,
        server: FaultServer,
        sock: socket.socket,
        reader: BinaryIO,
        request: RecordedRequest,
    ) -> None:
        self.server = server
        self.sock = sock
        self.request = request
        self._reader = reader
        #: Whether the connection was closed by the behaviour.
        self.closed = False
        connection = request.headers.get("connection", "").lower()
        #: Whether the request allows the connection to serve another one afterwards.
        self.keep_alive = request.version == "HTTP/1.1" and "close" not in connection

    def send(self, data: bytes | memoryview, times: list[float] | None = None) -> None:
        """Write ``data`` in full; append the ``perf_counter()`` of the write to ``times``.

        The time is taken as the write starts, so it is on record before the client can have
        read the data (a test reading the last byte may look at ``times`` at once).
        """
        if self.server.closing:
            raise _ClientGone
        if times is not None:
            times.append(time.perf_counter())
        try:
            self.sock.sendall(data)
        except OSError as exc:
            if not self.server.closing:
                self.server._count_disconnect()
            raise _ClientGone from exc

    def send_head(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        *,
        framing: str = "length",
        length: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Write the status line and headers, with the framing headers for ``framing``.

        A header given in ``headers`` wins over the one this method would add, so a test can
        state a ``Content-Length`` that the body does not honour.
        """
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        if reason is None:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Unknown"
        given = {name.lower() for name in (headers or {})}
        lines = [f"HTTP/1.1 {status} {reason}"]
        defaults = {
            "Server": _SERVER_NAME,
            "Date": email.utils.formatdate(usegmt=True),
            "Content-Type": "text/plain; charset=utf-8",
        }
        lines += [
            f"{name}: {value}" for name, value in defaults.items() if name.lower() not in given
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if framing == "chunked" and "transfer-encoding" not in given:
            lines.append("Transfer-Encoding: chunked")
        elif framing == "length" and "content-length" not in given:
            lines.append(f"Content-Length: {length or 0}")
        if (framing == "close" or not self.keep_alive) and "connection" not in given:
            lines.append("Connection: close")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``; give up at once if the server is closing."""
        if seconds > 0 and self.server._closing.wait(seconds):
            raise _ClientGone

    def hold(self, seconds: float) -> str:
        """Keep the connection open without writing for ``seconds``.

        Ends early when the client closes its end (so the counters show at once that it did)
        or the server is closing. Returns why it ended: ``"elapsed"``, ``"client closed"`` or
        ``"server closing"``.
        """
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.server.closing:
                return "server closing"
            readable, _, _ = select.select([self.sock], [], [], min(remaining, 0.05))
            if not readable:
                continue
            try:
                peeked = self.sock.recv(1, socket.MSG_PEEK)
            except OSError:
                return "client closed"
            if not peeked:
                return "client closed"
            # The client sent more bytes, so its end is open; the socket stays readable, and
            # polling it again would spin, so just wait out the rest.
            if self.server._closing.wait(max(0.0, deadline - time.monotonic())):
                return "server closing"
            break
        return "elapsed"

    def close(self, *, reset: bool = False) -> None:
        """Close the connection: gracefully, or with a TCP RST when ``reset`` is true."""
        if self.closed:
            return
        self.closed = True
        # A file from makefile() keeps the socket open, so it is closed first.
        self._reader.close()
        try:
            if reset:
                # Linger on, timeout 0: close() discards unsent data and sends RST.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()


class Behaviour:
    """How the server answers one request. Subclasses implement :meth:`respond`."""

    def respond(self, exchange: Exchange) -> bool:
        """Answer ``exchange.request``; return True if the connection may serve another."""
        raise NotImplementedError


def _chunk(data: bytes | memoryview) -> bytes:
    return b"%x\r\n" % len(data) + bytes(data) + b"\r\n"


def _check_framing(framing: str) -> None:
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")


class Reply(Behaviour):
    """A response with any status, headers and body, written chunk by chunk.

    ``chunks`` (or ``body`` as a single chunk) are written one write each, ``delay`` seconds
    apart. ``framing`` is ``"chunked"`` (one HTTP chunk per write, then the terminating zero
    chunk), ``"length"`` (``Content-Length`` of the total, raw writes) or ``"close"`` (no
    length, ``Connection: close``, the end of the body is the end of the connection).
    ``write_times`` collects the ``time.perf_counter()`` of every body write, over all the
    requests this behaviour answers.
    """

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        chunks: Sequence[bytes] | None = None,
        framing: Framing = "length",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        reason: str | None = None,
    ) -> None:
        _check_framing(framing)
        if not isinstance(status, int):
            raise TypeError(f"status must be an int, not {status!r}; pass the body as body=...")
        if body and chunks is not None:
            raise ValueError("give body or chunks, not both")
        self.status = status
        self.chunks: list[bytes] = list(chunks) if chunks is not None else ([body] if body else [])
        self.framing = framing
        self.headers = dict(headers or {})
        self.delay = delay
        self.reason = reason
        self.write_times: list[float] = []

    def body_parts(self, request: RecordedRequest) -> Sequence[bytes | memoryview]:
        """The body, one item per write."""
        return self.chunks

    def respond(self, exchange: Exchange) -> bool:
        parts = [part for part in self.body_parts(exchange.request) if len(part)]
        exchange.send_head(
            self.status,
            self.headers,
            framing=self.framing,
            length=sum(len(part) for part in parts),
            reason=self.reason,
        )
        for index, part in enumerate(parts):
            if index:
                exchange.pause(self.delay)
            exchange.send(_chunk(part) if self.framing == "chunked" else part, self.write_times)
        if self.framing == "chunked":
            exchange.send(b"0\r\n\r\n")
        return self.framing != "close" and exchange.keep_alive


class Echo(Reply):
    """The default answer: the last user message's content, one chunk per word.

    A request without a user message gets 400 ``Error``.
    """

    def __init__(self, *, framing: Framing = "chunked", delay: float = 0.0) -> None:
        super().__init__(200, framing=framing, delay=delay)

    @staticmethod
    def last_user_message(request: RecordedRequest) -> str | None:
        """The content of the last ``user`` message in a chat request, if any."""
        payload = request.json
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list):
            return None
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None

    def body_parts(self, request: RecordedRequest) -> Sequence[bytes]:
        content = self.last_user_message(request) or ""
        return re.findall(rb"\s*\S+\s*|\s+", content.encode("utf-8"))

    def respond(self, exchange: Exchange) -> bool:
        if self.last_user_message(exchange.request) is None:
            return Reply(400, b"Error").respond(exchange)
        return super().respond(exchange)


class Trickle(Reply):
    """``body`` one byte per write, ``delay`` seconds apart."""

    def __init__(
        self,
        body: bytes,
        *,
        delay: float = 0.005,
        framing: Framing = "chunked",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        chunks = [body[i : i + 1] for i in range(len(body))]
        super().__init__(status, chunks=chunks, framing=framing, headers=headers, delay=delay)


class Big(Reply):
    """``size`` bytes of ASCII text, written in blocks of ``block`` bytes without copying."""

    PATTERN = b"The quick brown fox jumps over the lazy dog. 0123456789\n"

    def __init__(
        self,
        size: int = 10 * 1024 * 1024,
        *,
        framing: Framing = "length",
        block: int = 64 * 1024,
        delay: float = 0.0,
    ) -> None:
        super().__init__(200, framing=framing, delay=delay)
        self.size = size
        self.block = block
        repeats = block // len(self.PATTERN) + 1
        self._block = memoryview((self.PATTERN * repeats)[:block])

    def _blocks(self) -> list[memoryview]:
        # The same block object repeated: 10 MB costs one 64 KiB buffer.
        whole, rest = divmod(self.size, self.block)
        return [self._block] * whole + ([self._block[:rest]] if rest else [])

    def body_parts(self, request: RecordedRequest) -> Sequence[memoryview]:
        return self._blocks()

    def expected_body(self) -> bytes:
        """The bytes the client should receive."""
        return b"".join(self._blocks())


class Gzip(Reply):
    """A ``Content-Encoding: gzip`` body that can be decoded piece by piece as it arrives.

    Each of ``chunks`` is compressed and flushed with ``Z_SYNC_FLUSH``, so every write carries
    complete deflate blocks; the last one also ends the gzip stream.
    """

    def __init__(
        self,
        chunks: Sequence[bytes],
        *,
        framing: Framing = "chunked",
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = {"Content-Encoding": "gzip", **(headers or {})}
        super().__init__(200, chunks=chunks, framing=framing, headers=merged, delay=delay)

    def body_parts(self, request: RecordedRequest) -> Sequence[bytes]:
        return self.encoded_parts()

    def encoded_parts(self) -> list[bytes]:
        """The compressed writes, one per chunk (a fresh gzip stream on every call)."""
        compressor = zlib.compressobj(wbits=31)  # 16 + 15: a gzip header and trailer
        parts = [
            compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
            for chunk in self.chunks
        ]
        tail = compressor.flush(zlib.Z_FINISH)
        if parts:
            parts[-1] += tail
        else:
            parts = [tail]
        return parts


class Redirect(Reply):
    """A redirect (307 by default) to ``location``, e.g. another server's URL."""

    def __init__(self, location: str, *, status: int = 307, body: bytes = b"") -> None:
        super().__init__(status, body, headers={"Location": location})
        self.location = location


class Truncated(Reply):
    """A response cut short: only the first ``after`` bytes of the body, then close.

    The head promises the whole body (``Content-Length`` of the full length, or chunk sizes of
    the full chunks), so with ``chunked`` and ``length`` framing the client can tell that the
    body is incomplete; with ``close`` it cannot, which is the point of that case. The chunk
    that straddles ``after`` is cut in the middle of its data. With ``reset`` the connection is
    reset (RST) instead of closed.
    """

    def __init__(
        self,
        body: bytes = b"",
        *,
        after: int,
        chunks: Sequence[bytes] | None = None,
        framing: Framing = "chunked",
        reset: bool = False,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__(status, body, chunks=chunks, framing=framing, headers=headers, delay=delay)
        total = sum(len(chunk) for chunk in self.chunks)
        if not 0 <= after <= total or (framing == "length" and after == total):
            raise ValueError(f"after={after} does not cut a body of {total} bytes short")
        self.after = after
        self.reset = reset

    def respond(self, exchange: Exchange) -> bool:
        parts = [chunk for chunk in self.chunks if chunk]
        exchange.send_head(
            self.status,
            self.headers,
            framing=self.framing,
            length=sum(len(part) for part in parts),
        )
        remaining = self.after
        for index, part in enumerate(parts):
            if remaining <= 0:
                break
            if index:
                exchange.pause(self.delay)
            piece = part[:remaining]
            if self.framing == "chunked":
                data = b"%x\r\n" % len(part) + piece + (b"\r\n" if len(piece) == len(part) else b"")
            else:
                data = piece
            exchange.send(data, self.write_times)
            remaining -= len(piece)
        exchange.close(reset=self.reset)
        return False


class Stall(Behaviour):
    """Go silent for ``seconds`` (longer than the client's read timeout), then close.

    By default the head and any ``chunks`` are sent first, so the stall happens mid-body; the
    head promises more (``Content-Length`` of ``declared_length``, by default 1 KiB more than
    is sent). With ``before_headers`` the server reads the request and sends nothing at all.
    The stall ends early when the client closes its end; ``ended`` records why each ended.
    """

    def __init__(
        self,
        seconds: float,
        *,
        chunks: Sequence[bytes] = (),
        before_headers: bool = False,
        framing: Framing = "chunked",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        _check_framing(framing)
        self.seconds = seconds
        self.chunks = [chunk for chunk in chunks if chunk]
        self.before_headers = before_headers
        self.framing = framing
        self.status = status
        self.headers = dict(headers or {})
        sent = sum(len(chunk) for chunk in self.chunks)
        self.declared_length = declared_length if declared_length is not None else sent + 1024
        self.write_times: list[float] = []
        self.ended: list[str] = []

    def respond(self, exchange: Exchange) -> bool:
        if not self.before_headers:
            exchange.send_head(
                self.status, self.headers, framing=self.framing, length=self.declared_length
            )
            for chunk in self.chunks:
                data = _chunk(chunk) if self.framing == "chunked" else chunk
                exchange.send(data, self.write_times)
        self.ended.append(exchange.hold(self.seconds))
        exchange.close()
        return False


class Reset(Behaviour):
    """Read the request, then reset the connection (RST) without answering."""

    def respond(self, exchange: Exchange) -> bool:
        exchange.close(reset=True)
        return False


class Hangup(Behaviour):
    """Read the request, then close the connection gracefully without answering."""

    def respond(self, exchange: Exchange) -> bool:
        exchange.close()
        return False


class Raw(Behaviour):
    """Write arbitrary bytes (a malformed status line, garbage, ...), then close.

    With ``keep_alive`` the connection stays open for another request instead, for bytes that
    form a complete, well-framed response.
    """

    def __init__(self, *chunks: bytes, delay: float = 0.0, keep_alive: bool = False) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.keep_alive = keep_alive
        self.write_times: list[float] = []

    def respond(self, exchange: Exchange) -> bool:
        for index, chunk in enumerate(self.chunks):
            if index:
                exchange.pause(self.delay)
            exchange.send(chunk, self.write_times)
        if self.keep_alive and exchange.keep_alive:
            return True
        exchange.close()
        return False


def server_error(body: bytes = b"Error", status: int = 500) -> Reply:
    """chatbot-ui's answer to any failure: status 500, plain-text body ``Error``."""
    return Reply(status, body)


def cloudflare_block(status: int = 403) -> Reply:
    """Cloudflare's "Attention Required!" HTML page, as served to blocked clients."""
    headers = {
        "Content-Type": "text/html; charset=UTF-8",
        "Server": "cloudflare",
        "CF-RAY": "80a1b2c3d4e5f607-FRA",
        "Cache-Control": "private, max-age=0, no-store, no-cache, must-revalidate",
    }
    return Reply(status, CLOUDFLARE_403_HTML, headers=headers)


def rate_limited(
    retry_after: float | dt.datetime | str = 1,
    *,
    as_date: bool = False,
    body: bytes = b"Too Many Requests",
) -> Reply:
    """429 with ``Retry-After``: seconds, an HTTP date, or a literal string.

    A datetime is sent as an HTTP date; so is a number of seconds with ``as_date``, as the
    date that many seconds from now (HTTP dates have whole seconds, so the wait it implies
    may be up to a second shorter).
    """
    if isinstance(retry_after, (int, float)) and as_date:
        retry_after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=retry_after)
    if isinstance(retry_after, dt.datetime):
        if retry_after.tzinfo is None:
            retry_after = retry_after.replace(tzinfo=dt.timezone.utc)
        value = email.utils.format_datetime(retry_after.astimezone(dt.timezone.utc), usegmt=True)
    elif isinstance(retry_after, (int, float)):
        value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
    else:
        value = retry_after
    return Reply(429, body, headers={"Retry-After": value})


def json_error(status: int, payload: Any) -> Reply:
    """An error whose body is JSON, e.g. ``{"error": {"message": "..."}}``."""
    body = json.dumps(payload).encode("utf-8")
    return Reply(status, body, headers={"Content-Type": "application/json"})


def openai_event(content: str) -> str:
    """One OpenAI streaming event (``data: ...`` and a blank line) carrying ``content``."""
    chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


def openai_sse(
    *contents: str,
    finish_reason: str | None = None,
    done: bool = True,
    usage: dict[str, Any] | None = None,
) -> bytes:
    """An OpenAI streaming body: the role event, one event per content, the finish event when
    ``finish_reason`` is given, the usage chunk (no choices) when ``usage`` is, then
    ``[DONE]`` (unless ``done`` is false)."""
    text = 'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'
    text += "".join(openai_event(c) for c in contents)
    if finish_reason is not None:
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}
        text += f"data: {json.dumps(end)}\n\n"
    if usage is not None:
        text += f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
    if done:
        text += "data: [DONE]\n\n"
    return text.encode()


def split_utf8(text: str) -> list[bytes]:
    """``text`` encoded as UTF-8, cut inside every multi-byte character.

    Each chunk ends after the first byte of a multi-byte character, so no such character
    arrives whole: a client decoding each chunk on its own garbles them all.
    """
    data = text.encode("utf-8")
    cuts = [i + 1 for i, byte in enumerate(data) if byte >= 0xC0]
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds) if end > start]


def closed_port(host: str = "127.0.0.1") -> str:
    """A URL on ``host`` where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return f"http://{host}:{port}"


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def shutdown_request(self, request: Any) -> None:
        # The handler closes (or resets) the socket itself; the base class's shutdown and
        # close would only fail on the closed socket or undo a deliberate RST.
        pass


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        self.server.owner._serve_connection(self.request)


class FaultServer:
    """An HTTP/1.1 server on ``host`` whose every answer is chosen by the test.

    Bound at construction (so :attr:`url` is known before :meth:`start`); serves from
    :meth:`start` until :meth:`close`; also a context manager. Connections are kept alive after
    a fully framed response, so a client's connection pool can be observed reusing them.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, idle_timeout: float = 30.0
    ) -> None:
        self.host = host
        self.idle_timeout = idle_timeout
        #: Answers requests when the queue is empty.
        self.default: Behaviour = Echo()
        #: Every request received, in order of arrival.
        self.requests: list[RecordedRequest] = []
        #: Exceptions raised by behaviours (bugs in a test's setup), for tests to check.
        self.errors: list[BaseException] = []
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._opened = 0
        self._closed = 0
        self._disconnects = 0
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._tcp = _TCPServer((host, port), self)
        self.port: int = self._tcp.server_address[1]
        self._serve_thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of this server."""
        return self.url_as(self.host)

    def url_as(self, hostname: str) -> str:
        """This server's URL under another host name (``localhost``: a different origin)."""
        return f"http://{hostname}:{self.port}"

    def start(self) -> FaultServer:
        """Start serving in a background thread; returns self."""
        if self._serve_thread is None:
            self._serve_thread = threading.Thread(
                target=self._tcp.serve_forever,
                kwargs={"poll_interval": 0.02},  # close() waits up to this long
                name=f"FaultServer:{self.port}",
                daemon=True,
            )
            self._serve_thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close every open connection; waits briefly for handler threads."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._serve_thread is not None:
            self._tcp.shutdown()
            self._serve_thread.join(timeout=5)
        self._tcp.server_close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closing.is_set()

    # --- what the test controls and observes --------------------------------------------------

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Queue answers: each incoming request takes the next one, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Queued behaviours not yet used."""
        with self._lock:
            return len(self._queue)

    @property
    def connections_opened(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return self._opened

    @property
    def connections_closed(self) -> int:
        """Connections that have been closed (by either side) and are finished with."""
        with self._lock:
            return self._closed

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed."""
        with self._lock:
            return self._opened - self._closed

    @property
    def disconnects(self) -> int:
        """Times a write to the client failed: the client went away mid-reply."""
        with self._lock:
            return self._disconnects

    def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> bool:
        """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; return its truth."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    # --- serving ------------------------------------------------------------------------------

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _serve_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._opened += 1
            connection_id = self._opened
            self._sockets.add(sock)
            self._threads.add(threading.current_thread())
        reader = sock.makefile("rb")
        exchange: Exchange | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.idle_timeout)
            while not self.closing:
                request = _read_request(reader, sock, connection_id)
                if request is None:
                    break
                with self._lock:
                    self.requests.append(request)
                exchange = Exchange(self, sock, reader, request)
                if not self._next_behaviour().respond(exchange) or exchange.closed:
                    break
        except _BadRequest:
            try:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
        except (_ClientGone, OSError):
            pass
        except Exception as exc:  # a bug in a behaviour: keep it for the test to see
            with self._lock:
                self.errors.append(exc)
        finally:
            if exchange is None or not exchange.closed:
                reader.close()
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sock.close()
            with self._lock:
                self._closed += 1
                self._sockets.discard(sock)
                self._threads.discard(threading.current_thread())


def _readline(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _BadRequest("line too long")
    return line


def _read_request(
    reader: BinaryIO, sock: socket.socket, connection_id: int
) -> RecordedRequest | None:
    """Read one request from ``reader``; None at a clean end of the connection."""
    line = _readline(reader)
    while line in (b"\r\n", b"\n"):  # RFC 9112 lets a server ignore empty lines first
        line = _readline(reader)
    if not line:
        return None
    arrived = time.perf_counter()
    if not line.endswith(b"\n"):
        return None  # the client went away in the middle of the request line
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(line)
    method, path, version = parts
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = _readline(reader)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(line)
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    else:
        raise _BadRequest("too many headers")
    if headers.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        body = reader.read(length) if length > 0 else b""
        if len(body) < length:
            return None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(method, path, version, headers, body, parsed, arrived, connection_id)


def _read_chunked(reader: BinaryIO) -> bytes:
    pieces: list[bytes] = []
    while True:
        size_line = _readline(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _BadRequest("bad chunk size") from None
        if size == 0:
            break
        pieces.append(reader.read(size))
        reader.read(2)  # the CRLF after the chunk data
    while _readline(reader) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(pieces)
