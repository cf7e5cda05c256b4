"""The HTTP side of the reference server: validation, routing, bodies and answers.

Built on :mod:`http.server` with one thread per connection. ``POST /api/chat`` streams the
engine's chunks as bare UTF-8 text with chunked transfer encoding, writing each chunk as soon
as the engine yields it; the other routes answer small JSON documents with a Content-Length,
so HTTP/1.1 keep-alive works throughout.

The same engine also answers OpenAI's chat API under ``/v1``: :mod:`.openai_routes` parses
those requests and frames their replies, and one engine loop, :func:`.streaming.run_engine`,
serves both APIs, so streaming, disconnects and shutdown behave alike on both.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..protocol import CHAT_FIELDS, CHAT_PATH, MODELS_PATH, models
from . import openai_routes
from .engine_base import ChatRequest, Engine
from .streaming import GatheredReply, Reply, ReplyFraming, StreamedReply, run_engine, utf8

__all__ = [
    "HEALTH_PATH",
    "MAX_BODY_BYTES",
    "BadRequest",
    "ChatRequestHandler",
    "ChatServer",
    "ReplyFraming",
    "ServerStats",
    "parse_chat_request",
    "redact_body",
]

HEALTH_PATH = "/api/health"

#: Request bodies larger than this are refused with 413; far above any model's input limit.
MAX_BODY_BYTES = 4 * 1024 * 1024

#: How many received chat bodies (both APIs) the server remembers for inspection.
RECORDED_REQUESTS = 1000

_ROLES = ("user", "assistant")


# Per path: the allowed methods (anything else on a known path is a 405) and the handler.
_ROUTES: dict[str, tuple[tuple[str, ...], str]] = {
    CHAT_PATH: (("POST",), "_handle_chat"),
    MODELS_PATH: (("GET", "POST"), "_handle_models"),
    HEALTH_PATH: (("GET",), "_handle_health"),
    openai_routes.COMPLETIONS_PATH: (("POST",), "_handle_openai_chat"),
    openai_routes.MODELS_PATH: (("GET",), "_handle_openai_models"),
}


def _is_openai_path(path: str) -> bool:
    """Whether ``path`` is under ``/v1``, where every answer, errors included, is OpenAI JSON."""
    return path == openai_routes.PREFIX or path.startswith(openai_routes.PREFIX + "/")


class BadRequest(ValueError):
    """A request body the server refuses with 400; the message is the one-line reason."""


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


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error reason stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact_body(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a chat body whose ``key`` is ``"<redacted>"`` unless it was empty."""
    redacted = dict(body)
    if "key" in redacted:
        redacted["key"] = "" if redacted["key"] == "" else "<redacted>"
    return redacted


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded ``/api/chat`` body and return it as a :class:`ChatRequest`.

    Raises :class:`BadRequest` with a one-line reason. The reason never contains the key.
    """
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    missing = [name for name in CHAT_FIELDS if name not in body]
    if missing:
        raise BadRequest(f"missing field {', '.join(repr(name) for name in missing)}")
    extra = sorted(name for name in body if name not in CHAT_FIELDS)
    if extra:
        # The protocol has exactly five fields; a client that sends more has drifted from it.
        raise BadRequest(f"unexpected field {_short(extra[0])}")

    model = body["model"]
    if not isinstance(model, dict):
        raise BadRequest("'model' must be an object with 'id' and 'name'")
    model_id, model_name = model.get("id"), model.get("name")
    if not isinstance(model_id, str) or not isinstance(model_name, str):
        raise BadRequest("'model' must be an object with string 'id' and 'name'")
    if model_id not in models:
        raise BadRequest(f"unknown model {_short(model_id)}")

    messages = body["messages"]
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list")
    if not messages:
        raise BadRequest("'messages' must not be empty")
    conversation = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise BadRequest(f"messages[{index}].role must be 'user' or 'assistant'")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content must be a string")
        conversation.append({"role": role, "content": content})

    if not isinstance(body["key"], str):
        raise BadRequest("'key' must be a string")
    if not isinstance(body["prompt"], str):
        raise BadRequest("'prompt' must be a string")

    temperature = body["temperature"]
    if not openai_routes.is_number(temperature):
        raise BadRequest("'temperature' must be a number")
    if not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise BadRequest("'temperature' must be between 0 and 2")

    return ChatRequest(
        model_id=model_id,
        messages=conversation,
        prompt=body["prompt"],
        temperature=float(temperature),
    )


class _BodyError(Exception):
    """A request body that could not be read; the connection cannot be reused after it."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ChatServer(ThreadingHTTPServer):
    """An HTTP server that answers the Aivvm API, and OpenAI's chat API, with one engine.

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
        #: carry ``"route": "openai"`` (see :meth:`ChatRequestHandler._handle_openai_chat`).
        self.requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECORDED_REQUESTS
        )
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(server_address, ChatRequestHandler)

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


class _PlainText:
    """The Aivvm framing: the reply as bare text, with no envelope and no in-band errors."""

    content_type = "text/plain; charset=utf-8"

    def opening(self) -> str:
        return ""

    def piece(self, text: str) -> str:
        return text

    def closing(self, finish_reason: str = "stop") -> str:
        return ""

    def failure(self) -> None:
        # The protocol has no error channel: only the missing chunked terminator tells.
        return None


class ChatRequestHandler(BaseHTTPRequestHandler):
    """Answers the Aivvm API routes and the OpenAI ones under ``/v1``; one per connection."""

    server: ChatServer
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
        """Answer a request of any method: the route, or a 404 or a 405."""
        path = self._route_path()
        route = _ROUTES.get(path)
        if route is None:
            self._discard_body()
            if _is_openai_path(path):
                self._refuse(HTTPStatus.NOT_FOUND, f"Invalid URL ({self.command} {path[:200]})")
            else:
                self._refuse(HTTPStatus.NOT_FOUND, "Not found")
            return
        allowed, handler = route
        if self.command not in allowed:
            self._discard_body()
            self._refuse(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "Method not allowed",
                {"Allow": ", ".join(allowed)},
            )
            return
        if self.command in ("GET", "HEAD"):
            # Such a request may still carry a body; it must be read for the next to parse.
            self._discard_body()
        getattr(self, handler)()

    # One router for every method, so a method a path does not take is a 405 (not the 501
    # http.server gives for methods it has no do_* for).
    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    # -- routes -----------------------------------------------------------------------------

    def _handle_health(self) -> None:
        engine = self.server.engine
        self.send_json({"status": "ok", "engine": engine.name, "engine_info": engine.describe()})

    def _handle_models(self) -> None:
        # chatbot-ui's POST form carries {"key": ""}; the list does not depend on it, so the
        # body is read (to keep the connection in step) and otherwise ignored.
        if self.command == "POST" and self.read_body() is None:
            return
        served_by = self.server.engine.served_by()
        listing = [
            {"id": m["id"], "name": m["name"], "served_by": served_by} for m in models.values()
        ]
        self.send_json(listing)

    def _handle_chat(self) -> None:
        raw = self.read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self._bad_request("body is not valid JSON")
            return
        if isinstance(body, dict):
            self.server.requests.append(redact_body(body))
            api_key = self.server.api_key
            key = body.get("key")
            # Checked before the rest of the body, so an unauthorised client learns nothing
            # about what else is wrong; compare_digest keeps the comparison time constant.
            if api_key is not None and not (
                isinstance(key, str) and hmac.compare_digest(utf8(key), utf8(api_key))
            ):
                self.send_text(HTTPStatus.UNAUTHORIZED, "Unauthorized")
                return
        try:
            request = parse_chat_request(body)
        except BadRequest as error:
            self._bad_request(str(error))
            return
        run_engine(
            self,
            request,
            StreamedReply(
                self,
                _PlainText(),
                lambda: self.send_text(HTTPStatus.INTERNAL_SERVER_ERROR, "Error"),
            ),
        )

    # -- OpenAI routes ----------------------------------------------------------------------

    def _bearer_authorized(self) -> bool:
        """Whether the request may use the OpenAI routes; answers the 401 if it may not."""
        api_key = self.server.api_key
        if api_key is None:
            return True
        token = openai_routes.bearer_token(self.headers.get("Authorization"))
        # Header values arrive decoded as Latin-1; encoding them back gives the bytes sent.
        # compare_digest keeps the comparison time constant.
        if token is not None and hmac.compare_digest(
            token.encode("latin-1", "replace"), utf8(api_key)
        ):
            return True
        if token is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            # Never the key itself, nor a part of it: the answer may end up in a log.
            message = "Incorrect API key provided."
        self._send_openai_error(
            openai_routes.OpenAIError(message, HTTPStatus.UNAUTHORIZED, code="invalid_api_key"),
            {"WWW-Authenticate": "Bearer"},
        )
        return False

    def _handle_openai_models(self) -> None:
        if not self._bearer_authorized():
            return
        self.send_json(
            openai_routes.models_listing(self.server.engine.served_by(), self.server.started_at)
        )

    def _handle_openai_chat(self) -> None:
        """``POST /v1/chat/completions``: validate, record, then stream or gather the reply.

        A body that is a JSON object is recorded in ``server.requests`` as received, plus
        ``"route": "openai"``, ``"authorization"`` (``""`` without the header, else
        ``"<redacted>"``) and, once it is valid, ``"chat_request"``: the fields of the
        :class:`ChatRequest` the engine gets.
        """
        raw = self.read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
            parsed = False
        else:
            parsed = True
        record: dict[str, Any] | None = None
        if isinstance(body, dict):
            authorization = "" if self.headers.get("Authorization") is None else "<redacted>"
            record = {**redact_body(body), "route": "openai", "authorization": authorization}
            self.server.requests.append(record)
        # Checked before the body, so an unauthorised client learns nothing about it.
        if not self._bearer_authorized():
            return
        if not parsed:
            self._send_openai_error(
                openai_routes.OpenAIError("We could not parse the JSON body of your request.")
            )
            return
        try:
            completion = openai_routes.parse_completion_request(body)
        except openai_routes.OpenAIError as error:
            self._send_openai_error(error)
            return
        if record is not None:
            record["chat_request"] = dataclasses.asdict(completion.chat)

        writer = openai_routes.CompletionWriter(completion)

        def refuse() -> None:
            self._send_openai_error(
                openai_routes.OpenAIError(
                    "The engine failed to generate a reply",
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    type="server_error",
                )
            )

        reply: Reply = (
            StreamedReply(self, writer, refuse)
            if completion.stream
            else GatheredReply(self, writer, refuse)
        )
        run_engine(self, completion.chat, reply)

    # -- streaming --------------------------------------------------------------------------

    def _receive_body(self) -> bytes:
        """The request body, from Content-Length or chunked framing; raises _BodyError."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(
                HTTPStatus.BAD_REQUEST, "Bad request: invalid Content-Length"
            ) from None
        if length < 0:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
        data = self.rfile.read(length)
        if len(data) < length:
            raise _BodyError(
                HTTPStatus.BAD_REQUEST, "Bad request: body shorter than Content-Length"
            )
        return data

    def _read_chunked_body(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(
                    HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body"
                ) from None
            if size < 0:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body")
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
            part = self.rfile.read(size)
            if len(part) < size or self.rfile.read(2) != b"\r\n":
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Bad request: invalid chunked body")
            parts.append(part)
        # Trailer fields, if any, end with an empty line.
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def read_body(self) -> bytes | None:
        """The request body, or None after answering the error that reading it caused."""
        try:
            return self._receive_body()
        except _BodyError as error:
            # Whatever is left of the body is still on the wire, so this connection is done.
            self.close_connection = True
            self._refuse(error.status, error.reason)
            return None

    def _discard_body(self) -> None:
        """Read and drop a body nobody will use, so the next request on the connection parses."""
        try:
            self._receive_body()
        except _BodyError:
            self.close_connection = True

    # -- plain responses --------------------------------------------------------------------

    def _bad_request(self, reason: str) -> None:
        self.send_text(HTTPStatus.BAD_REQUEST, f"Bad request: {reason}")

    def _refuse(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        """Answer an error in the style of the API asked: OpenAI JSON under /v1, else text."""
        if _is_openai_path(self._route_path()):
            self._send_openai_error(openai_routes.OpenAIError(text, status), headers)
        else:
            self.send_text(status, text, headers)

    def _send_openai_error(
        self, error: openai_routes.OpenAIError, headers: dict[str, str] | None = None
    ) -> None:
        self.send_json(error.document(), error.status, headers)

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
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``data`` whole, with a Content-Length; a 4xx counts as ``rejected``."""
        if 400 <= status < 500:
            self.server.stats.increment("rejected")
        self.send_response(status)
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
