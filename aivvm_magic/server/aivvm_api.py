"""The Aivvm API on the reference server: chatbot-ui legacy's ``/api/chat``, as a :class:`ChatAPI`.

``POST /api/chat`` takes exactly the five fields of :mod:`aivvm_magic.protocol` and streams
the reply as bare UTF-8 text (:class:`PlainText`); ``GET`` or ``POST /api/models`` lists the
Aivvm models, each saying what really answers it; ``GET /api/health`` names the engine;
``GET /api/replies?id=`` says how a reply ended (:mod:`.reply_endings`, our extension). The
key travels in the body, so it is checked once the body is read; errors are one line of
plain text. Every path that no other API owns is this API's, so it answers the 404s.

chatbot-ui's own server is laxer (it validates nothing and answers 500 to every error). A
mode that answers as it does is a subclass of :class:`AivvmAPI` with its own routes,
:meth:`~AivvmAPI.refuse`, :meth:`~AivvmAPI.validate` and framing, handed to the server
with the other APIs (``ChatServer(..., apis=...)``); the plumbing needs no change.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..protocol import CHAT_FIELDS, CHAT_PATH, MODELS_PATH, models
from .chat_api import Call, ChatAPI, Route, is_number, key_matches
from .engine_base import ChatRequest
from .exchange import Exchange
from .reply_endings import ENDINGS_PATH, MODEL_HEADER, REPLY_END_HEADER, ReplyEndings
from .streaming import utf8

__all__ = ["HEALTH_PATH", "AivvmAPI", "BadRequest", "PlainText", "parse_chat_request"]

HEALTH_PATH = "/api/health"

_ROLES = ("user", "assistant")


class BadRequest(ValueError):
    """A request body the server refuses with 400; the message is the one-line reason."""


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error reason stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    if not is_number(temperature):
        raise BadRequest("'temperature' must be a number")
    if not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise BadRequest("'temperature' must be between 0 and 2")

    return ChatRequest(
        model_id=model_id,
        messages=conversation,
        prompt=body["prompt"],
        temperature=float(temperature),
    )


class PlainText:
    """The Aivvm framing: the reply as bare text, with no envelope and no in-band errors.

    Given ``endings`` (the reference server's own extension, see :mod:`.reply_endings`), the
    reply's headers also name the model that answers and where its ending can be read, and
    :meth:`closing` records that ending.
    """

    content_type = "text/plain; charset=utf-8"

    def __init__(self, endings: ReplyEndings | None = None, model: str = "") -> None:
        self._endings = endings
        self._reply_id = endings.start(model) if endings is not None else ""
        #: Headers sent with the reply, besides the framing's own.
        self.headers: dict[str, str] = {}
        if endings is not None:
            self.headers = {
                MODEL_HEADER: model,
                REPLY_END_HEADER: f"{ENDINGS_PATH}?id={self._reply_id}",
            }

    def opening(self) -> str:
        return ""

    def piece(self, text: str) -> str:
        return text

    def closing(self, finish_reason: str = "stop") -> str:
        if self._endings is not None:
            self._endings.end(self._reply_id, finish_reason)
        return ""

    def failure(self) -> None:
        # The protocol has no error channel: only the missing chunked terminator tells.
        return None


class AivvmAPI(ChatAPI):
    """The Aivvm API: ``/api/chat``, ``/api/models`` and ``/api/health``; errors in plain text."""

    not_json = "Bad request: body is not valid JSON"
    engine_failure = "Error"

    def __init__(self) -> None:
        super().__init__()
        self.routes = {
            CHAT_PATH: Route(("POST",), self.serve_chat),
            MODELS_PATH: Route(("GET", "POST"), self.models),
            HEALTH_PATH: Route(("GET",), self.health),
            ENDINGS_PATH: Route(("GET",), self.ending),
        }
        #: How this server's replies ended, for clients that ask (``/api/replies?id=``).
        self.endings = ReplyEndings()

    def refuse(
        self,
        exchange: Exchange,
        status: HTTPStatus,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``text`` as plain text: the protocol has no error document."""
        exchange.send_text(status, text, headers)

    def authorised(self, exchange: Exchange, body: Any) -> bool:
        """Whether the body's ``key`` is the server's; answers ``401 Unauthorized`` if not.

        A body that is not a JSON object has no key to check; validation refuses it.
        """
        api_key = exchange.server.api_key
        if api_key is None or not isinstance(body, dict):
            return True
        key = body.get("key")
        if isinstance(key, str) and key_matches(utf8(key), api_key):
            return True
        self.refuse(exchange, HTTPStatus.UNAUTHORIZED, "Unauthorized")
        return False

    def validate(self, exchange: Exchange, body: Any) -> Call | None:
        """The body as :func:`parse_chat_request` reads it, streamed as bare text."""
        try:
            request = parse_chat_request(body)
        except BadRequest as error:
            self.refuse(exchange, HTTPStatus.BAD_REQUEST, f"Bad request: {error}")
            return None
        model = exchange.server.engine.model_name
        return Call(request, PlainText(self.endings, model))

    def ending(self, exchange: Exchange) -> None:
        """``/api/replies?id=ID``: how the reply ``ID`` ended (see :mod:`.reply_endings`)."""
        query = parse_qs(urlsplit(getattr(exchange, "path", "")).query)
        found = self.endings.get((query.get("id") or [""])[0])
        if found is None:
            self.refuse(exchange, HTTPStatus.NOT_FOUND, "Not found: no such reply has ended")
            return
        exchange.send_json(found)

    def models(self, exchange: Exchange) -> None:
        """``/api/models``: every Aivvm model, each saying what really answers it."""
        # chatbot-ui's POST form carries {"key": ""}; the list does not depend on it, so the
        # body is read (to keep the connection in step) and otherwise ignored.
        if exchange.command == "POST" and exchange.read_body() is None:
            return
        engine = exchange.server.engine
        served_by, answered_by = engine.served_by(), engine.model_name
        listing = [
            {"id": m["id"], "name": m["name"], "served_by": served_by, "answered_by": answered_by}
            for m in models.values()
        ]
        exchange.send_json(listing)

    def health(self, exchange: Exchange) -> None:
        """``/api/health``: the engine's name and what it says of itself."""
        engine = exchange.server.engine
        exchange.send_json(
            {"status": "ok", "engine": engine.name, "engine_info": engine.describe()}
        )
