"""What the chat APIs and the engine loop may use of the request they answer: :class:`Exchange`.

The HTTP plumbing (:class:`~aivvm_magic.server.handler.ChatRequestHandler`) provides it; the
APIs and :mod:`.streaming` are written against these protocols alone, so none of them
imports the plumbing, and the plumbing can change without them noticing. Most of it is
:class:`http.server.BaseHTTPRequestHandler` as it is; :meth:`Exchange.read_body` and the
``send_*`` methods are the plumbing's own.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from typing import Any, BinaryIO, Protocol

from .engine_base import Engine

__all__ = ["Counters", "Exchange", "ServerState"]


class Counters(Protocol):
    """The server's counters (:class:`~aivvm_magic.server.handler.ServerStats`)."""

    def increment(self, name: str) -> None:
        """Add one to the counter ``name``, from any thread."""


class ServerState(Protocol):
    """What the server holds for every request: the engine, the key, the log, the records."""

    engine: Engine
    #: The key a chat request must carry, or None when any key is accepted.
    api_key: str | None
    #: Called with one line per request and per engine or internal error; None for quiet.
    log: Callable[[str], None] | None
    stats: Counters
    #: The chat bodies received, key redacted, newest last.
    requests: deque[dict[str, Any]]
    #: When the server started, in whole Unix seconds.
    started_at: int
    #: Set when the server is closing: streams stop at their next piece.
    closing: threading.Event


class Exchange(Protocol):
    """One request being answered, on its connection."""

    server: ServerState
    command: str
    request_version: str
    headers: Message
    connection: socket.socket
    wfile: BinaryIO
    #: Set to end the connection after this answer (the plumbing then says so in a header).
    close_connection: bool

    def send_response(self, code: int, message: str | None = None) -> None:
        """Start an answer: the status line and the ``Server`` and ``Date`` headers."""

    def send_header(self, keyword: str, value: str) -> None:
        """Add one header to the answer started."""

    def end_headers(self) -> None:
        """End the headers; the body follows on ``wfile``."""

    def read_body(self) -> bytes | None:
        """The request body, or None after answering the error that reading it caused."""

    def send_text(
        self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer ``text`` as ``text/plain`` with a Content-Length."""

    def send_json(
        self,
        document: Any,
        status: HTTPStatus = HTTPStatus.OK,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``document`` as JSON with a Content-Length."""

    def send_bytes(
        self,
        status: HTTPStatus,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        """Answer ``data`` whole; no Content-Type if None, ``reason`` for the status's own."""
