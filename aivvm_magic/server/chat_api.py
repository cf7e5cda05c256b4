"""What a chat API of the server is: :class:`ChatAPI`, and the chat route every API shares.

The server speaks more than one chat API with one engine: the Aivvm API (:mod:`.aivvm_api`)
and OpenAI's (:mod:`.openai_api`). Each is a :class:`ChatAPI`: the paths it owns and its
routes, how it formats an error, how it authorises a request, how it validates a body into
the engine's :class:`~aivvm_magic.server.engine_base.ChatRequest`, and which
:class:`~aivvm_magic.server.streaming.ReplyFraming` carries the reply. The HTTP plumbing
(:mod:`.handler`) picks the API once per request, by path, and leaves every answer to it.

The chat route has one shape for every API (:meth:`ChatAPI.serve_chat`): read the body,
record it, authorise, validate, then run the engine. An API fills in the steps; another API,
or another mode of one, is another subclass, and the plumbing does not change.
"""

from __future__ import annotations

import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple

from .engine_base import ChatRequest
from .exchange import Exchange
from .streaming import GatheredReply, ReplyDocument, ReplyFraming, StreamedReply, run_engine, utf8

__all__ = ["Call", "ChatAPI", "Route", "is_number", "key_matches", "redact_body"]


class Route(NamedTuple):
    """One path of an API: the methods it takes (anything else is a 405) and what answers."""

    methods: tuple[str, ...]
    answer: Callable[[Exchange], None]


@dataclass(frozen=True)
class Call:
    """A chat request an API accepted: what the engine is asked, and how the reply goes out."""

    #: What the engine gets.
    request: ChatRequest
    #: How the reply's pieces are streamed.
    framing: ReplyFraming
    #: Set to answer one document once the reply is whole, instead of streaming it.
    document: ReplyDocument | None = None


def redact_body(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of a chat body whose ``key`` is ``"<redacted>"`` unless it was empty."""
    redacted = dict(body)
    if "key" in redacted:
        redacted["key"] = "" if redacted["key"] == "" else "<redacted>"
    return redacted


def is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number: an int or a float, and not a bool."""
    # bool is an int subclass, but ``"temperature": true`` is not a temperature.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def key_matches(given: bytes, api_key: str) -> bool:
    """Whether a request's key (as the bytes it sent) is the server's ``api_key``."""
    # compare_digest keeps the comparison time constant.
    return hmac.compare_digest(given, utf8(api_key))


# What serve_chat has in place of a body that is not JSON: no JSON value is this object.
_NOT_JSON = object()


class ChatAPI(ABC):
    """One chat API of the server: its routes, its errors, and the steps of its chat route.

    One instance serves every request of a server, from many threads at once, so it keeps no
    per-request state on ``self``; what a request needs travels in its :class:`Exchange`.
    """

    #: Every path under this prefix is this API's, errors included; ``""`` for every path.
    prefix: str = ""
    #: The error text of a chat body that is not JSON (status 400).
    not_json: str
    #: The error text of an engine that fails before its reply begins (status 500).
    engine_failure: str

    def __init__(self) -> None:
        #: Each path the API answers, with its methods and what answers it.
        self.routes: dict[str, Route] = {}

    def owns(self, path: str) -> bool:
        """Whether ``path`` is this API's, known or not, so that its 404 is in its format."""
        prefix = self.prefix
        return not prefix or path == prefix or path.startswith(prefix + "/")

    # -- errors -----------------------------------------------------------------------------

    @abstractmethod
    def refuse(
        self,
        exchange: Exchange,
        status: HTTPStatus,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer an error in this API's format: its own, and the plumbing's (404, 405, 413).

        A mode of an API that answers errors otherwise (another status, the reason in the
        status line) overrides this; :meth:`Exchange.send_bytes` takes what it needs.
        """

    def not_found(self, exchange: Exchange, path: str) -> None:
        """Answer a path of this API that has no route."""
        self.refuse(exchange, HTTPStatus.NOT_FOUND, "Not found")

    # -- the chat route ---------------------------------------------------------------------

    def serve_chat(self, exchange: Exchange) -> None:
        """The chat route: read, record, authorise, validate, then stream the engine's reply.

        A body that is a JSON object is recorded in ``server.requests`` (see :meth:`record`)
        before anything is checked, so the record shows what a refused client sent too.
        """
        raw = exchange.read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = _NOT_JSON
        record: dict[str, Any] | None = None
        if isinstance(body, dict):
            record = self.record(exchange, body)
            exchange.server.requests.append(record)
        # Checked before the rest of the body, so an unauthorised client learns nothing
        # about what else is wrong with it.
        if not self.authorised(exchange, body):
            return
        if body is _NOT_JSON:
            self.refuse(exchange, HTTPStatus.BAD_REQUEST, self.not_json)
            return
        call = self.validate(exchange, body)
        if call is None:
            return
        if record is not None:
            self.note_accepted(record, call.request)

        def refuse() -> None:
            self.engine_failed(exchange)

        reply = (
            StreamedReply(exchange, call.framing, refuse)
            if call.document is None
            else GatheredReply(exchange, call.document, refuse)
        )
        run_engine(exchange, call.request, reply)

    def engine_failed(self, exchange: Exchange) -> None:
        """Answer an engine that failed before its reply began: by default a 500 with
        :attr:`engine_failure`, in this API's format."""
        self.refuse(exchange, HTTPStatus.INTERNAL_SERVER_ERROR, self.engine_failure)

    def record(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        """What ``server.requests`` keeps of a chat body: by default the body, key redacted."""
        return redact_body(body)

    def note_accepted(self, record: dict[str, Any], request: ChatRequest) -> None:  # noqa: B027
        """Add to a recorded body what validation made of it; by default nothing."""

    @abstractmethod
    def authorised(self, exchange: Exchange, body: Any) -> bool:
        """Whether the request may go on; answers the 401 when it may not.

        ``body`` is the decoded JSON body, or an object that is no JSON value when the body
        was not JSON (the chat route reports that only once the request is authorised).
        """

    @abstractmethod
    def validate(self, exchange: Exchange, body: Any) -> Call | None:
        """The engine's request and the reply's framing, or None after answering the 400."""
