"""The HTTP plumbing of the reference server: connections, routing to an API, bodies, answers.

Built on :mod:`http.server` with one thread per connection. :class:`ChatServer` holds what
every request shares (the engine, the key, the counters, the recorded bodies, the open
connections) and the chat APIs it speaks; :class:`ChatRequestHandler` reads a request, picks
the one API that owns its path (OpenAI's under ``/v1``, the Aivvm API everywhere else) and
lets it answer: the route, or the API's own 404 or 405. Bodies are read here, with a
Content-Length or chunked, and answers with a body of known length are written here, so
HTTP/1.1 keep-alive works throughout; a streamed reply is :mod:`.streaming`'s.

What an API does with a request (:mod:`.chat_api`) and how the reply is framed never shows
here, so another API, or another mode of one, is a :class:`~.chat_api.ChatAPI` passed in
``apis`` and changes nothing in this module.
"""

from __future__ import annotations

import collections
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

from .aivvm_api import AivvmAPI
from .chat_api import ChatAPI
from .engine_base import Engine
from .openai_api import OpenAIAPI
from .streaming import utf8

__all__ = ["MAX_BODY_BYTES", "ChatRequestHandler", "ChatServer", "ServerStats"]

#: Request bodies larger than this are refused with 413; far above any model's input limit.
MAX_BODY_BYTES = 4 * 1024 * 1024

#: How many received chat bodies (every API's) the server remembers for inspection.
RECORDED_REQUESTS = 1000


@dataclass
class ServerStats:
    """Counters of what the server did, safe to update from many handler threads."""

    #: TCP connections accepted (a keep-alive client reuses one for many requests).
    connections: int = 0
    #: Chat replies whose stream began.
    started: int = 0
    #: Chat replies streamed to the end, terminator included.
    completed: int = 0
    #: Chat replies cut short because the client went away.
    disconnected: int = 0
    #: Chat replies cut short because the server was closing.
    aborted: int = 0
    #: Chat replies the engine failed: a 500 before the first piece, or a reply cut short.
    failed: int = 0
    #: Requests answered with a 4xx status.
    rejected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def increment(self, name: str) -> None:
        """Add one to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, int]:
        """All counters at one instant, as a dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


class _BodyError(Exception):
    """A request body that could not be read; the connection cannot be reused after it."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _receive_body(rfile: BinaryIO, headers: Message) -> bytes:
    """The body of a request with ``headers``, from Content-Length or chunked framing.

    Raises :class:`_BodyError` for a body that is malformed or over :data:`MAX_BODY_BYTES`.
    """
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return _read_chunked_body(rfile)
    length_header = headers.get("Content-Length")
    if length_header is None:
        return b""
    try:
        length = int(length_header)
    except ValueError:
        raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid Content-Length") from None
    if length < 0:
        raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid Content-Length")
    if length > MAX_BODY_BYTES:
        raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
    data = rfile.read(length)
    if len(data) < length:
        raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: body shorter than Content-Length")
    return data


def _read_chunked_body(rfile: BinaryIO) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body") from None
        if size < 0:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body")
        if size == 0:
            break
        total += size
        if total > MAX_BODY_BYTES:
            raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
        part = rfile.read(size)
        if len(part) < size or rfile.read(2) != b"\r\n":
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body")
        parts.append(part)
    # Trailer fields, if any, end with an empty line.
    while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
        pass
    return b"".join(parts)


class ChatServer(ThreadingHTTPServer):
    """An HTTP server that answers chat APIs with one engine: by default OpenAI's and Aivvm's.

    ``apis`` are the :class:`~.chat_api.ChatAPI` it speaks: a request goes to the first that
    owns its path, else to the last, which should own every path (the Aivvm API does).

    Each connection gets a daemon thread, so a stuck client never blocks shutdown. The server
    keeps track of open connections so that :meth:`close_connections` can end streams and idle
    keep-alive connections promptly when it is closed.
    """

    # Room for a burst of clients connecting at once before their threads start.
    request_queue_size = 128

    def __init__(
        self,
        server_address: tuple[str, int],
        engine: Engine,
        api_key: str | None = None,
        log: Callable[[str], None] | None = None,
        apis: Sequence[ChatAPI] | None = None,
    ) -> None:
        if ":" in server_address[0]:
            self.address_family = socket.AF_INET6
        self.engine = engine
        self.api_key = api_key
        #: Called with one line per request (method, path, status), and on internal errors.
        self.log = log
        self.stats = ServerStats()
        #: When the server started, in whole Unix seconds: the ``created`` of ``/v1/models``.
        self.started_at = int(time.time())
        #: The chat bodies received, key redacted, newest last; those of ``/v1/chat/completions``
        #: carry ``"route": "openai"`` (see :meth:`.openai_api.OpenAIAPI.record`).
        self.requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECORDED_REQUESTS
        )
        self.closing = threading.Event()
        #: The chat APIs spoken, in the order they are asked whether they own a path.
        self.apis: tuple[ChatAPI, ...] = (OpenAIAPI(), AivvmAPI()) if apis is None else tuple(apis)
        if not self.apis:
            raise ValueError("a server needs at least one chat API")
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(server_address, ChatRequestHandler)

    def api_for(self, path: str) -> ChatAPI:
        """The API that answers ``path``: the first that owns it, else the last one."""
        for api in self.apis:
            if api.owns(path):
                return api
        return self.apis[-1]

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection; shut it at once if the server is already closing."""
        with self._connections_lock:
            self._connections.add(connection)
        if self.closing.is_set():
            _shutdown_socket(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a connection that its handler has finished with."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open connection, waking handlers blocked reading or writing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _shutdown_socket(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report an exception from a handler in one line instead of a traceback."""
        error = sys.exc_info()[1]
        # A client that vanishes mid-request is routine for a server, not an error.
        if isinstance(error, OSError) or error is None:
            return
        if self.log is not None:
            self.log(f"internal error: {type(error).__name__}: {error}")


def _shutdown_socket(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # Already closed by the peer or by its handler.


class ChatRequestHandler(BaseHTTPRequestHandler):
    """Reads the requests of one connection and has the API that owns each path answer it.

    It is the :class:`~.exchange.Exchange` that the APIs and the engine loop work on.
    """

    server: ChatServer
    #: The API answering the current request, chosen by its path.
    api: ChatAPI
    protocol_version = "HTTP/1.1"
    server_version = "AivvmReferenceServer/0.1"
    sys_version = ""
    # An idle keep-alive connection is dropped after this many seconds.
    timeout = 120

    def version_string(self) -> str:
        """The ``Server`` header: this server's name, without the Python version."""
        return self.server_version

    # -- connection lifecycle -------------------------------------------------------------

    def setup(self) -> None:
        """Register the connection with the server before serving it."""
        super().setup()
        # A reply is many small writes. With Nagle's algorithm on, a write waits for the ACK
        # of the one before, which the client delays by up to 40 ms: every reply on a reused
        # connection started 40 ms late. Chunks go out as they are written instead.
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.stats.increment("connections")
        self.server.track(self.connection)

    def finish(self) -> None:
        """Unregister the connection once the last request on it is done."""
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    # -- logging: quiet, except for one access line per request when asked -----------------

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing: the server is quiet by default."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Send one access line (method, path, status) to the server's log, if it has one."""
        if self.server.log is None:
            return
        status = code.value if isinstance(code, HTTPStatus) else code
        method = getattr(self, "command", None) or "-"
        # The path comes from the client: keep control characters out of the log.
        path = "".join(c if c.isprintable() else "?" for c in self._route_path()[:200])
        self.server.log(f"{method} {path or '-'} {status}")

    # -- routing ----------------------------------------------------------------------------

    def _route_path(self) -> str:
        # Only the path routes; a query string or fragment is ignored.
        raw = getattr(self, "path", "") or ""
        return raw.split("?", 1)[0].split("#", 1)[0]

    def _dispatch(self) -> None:
        """Answer a request of any method: the API's route, or the API's 404 or 405."""
        path = self._route_path()
        # Chosen once: every answer to this request, errors included, is in its format.
        self.api = api = self.server.api_for(path)
        route = api.routes.get(path)
        if route is None:
            self._discard_body()
            api.not_found(self, path)
            return
        if self.command not in route.methods:
            self._discard_body()
            api.refuse(
                self,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Method not allowed",
                {"Allow": ", ".join(route.methods)},
            )
            return
        if self.command in ("GET", "HEAD"):
            # Such a request may still carry a body; it must be read for the next to parse.
            self._discard_body()
        route.answer(self)

    # One router for every method, so a method a path does not take is a 405 (not the 501
    # http.server gives for methods it has no do_* for).
    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    # -- request bodies ---------------------------------------------------------------------

    def read_body(self) -> bytes | None:
        """The request body, or None after answering the error that reading it caused."""
        try:
            return _receive_body(self.rfile, self.headers)
        except _BodyError as error:
            # Whatever is left of the body is still on the wire, so this connection is done.
            self.close_connection = True
            self.api.refuse(self, error.status, error.reason)
            return None

    def _discard_body(self) -> None:
        """Read and drop a body nobody will use, so the next request on the connection parses."""
        try:
            _receive_body(self.rfile, self.headers)
        except _BodyError:
            self.close_connection = True

    # -- answers with a body of known length ------------------------------------------------

    def send_text(
        self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer ``text`` as ``text/plain`` with a Content-Length."""
        self.send_bytes(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)

    def send_json(
        self,
        document: Any,
        status: HTTPStatus = HTTPStatus.OK,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``document`` as JSON with a Content-Length."""
        data = utf8(json.dumps(document, ensure_ascii=False))
        self.send_bytes(status, data, "application/json; charset=utf-8", headers)

    def send_bytes(
        self,
        status: HTTPStatus,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        """Answer ``data`` whole, with a Content-Length; a 4xx counts as ``rejected``.

        ``content_type`` None sends no Content-Type. ``reason``, one line of Latin-1 text,
        replaces the status's own reason phrase.
        """
        if 400 <= status < 500:
            self.server.stats.increment("rejected")
        self.send_response(status, reason)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer errors found by http.server itself (bad request line, ...) in plain text."""
        # The base class writes an HTML page; every answer of this server is plain text.
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        self.close_connection = True
        self.send_text(status, message or status.phrase)
