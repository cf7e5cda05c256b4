"""chatbot-ui (legacy)'s own server, as a client sees it: :class:`ChatbotUIAPI`.

The reference server's Aivvm API (:mod:`.aivvm_api`) checks every request and says what is
wrong with it. The servers people deploy do not: chatbot-ui's ``pages/api/chat.ts`` checks
nothing, forwards the request to an OpenAI-compatible upstream, and answers every failure with
status 500 (``CHATBOT-UI.md`` in the design documents). In this mode the reference server
answers as such a deployment does, wherever a client can see the difference. The engine is its
upstream, and OpenAI's API on this server (:mod:`.openai_api`) gives the upstream's rules:

- ``POST /api/chat`` (and every method that can carry a body; ``GET``, ``HEAD`` and ``OPTIONS``
  are a 500): nothing is checked before the request goes upstream. A missing or empty
  ``prompt`` is the default system prompt, a missing ``temperature`` is 1, a missing or empty
  ``key`` is the server's own (always right), and any model id is served. The upstream request
  is the one chatbot-ui makes (the system prompt first, ``max_tokens: 1000``), checked as the
  ``/v1`` API checks it: its error message, or ``Incorrect API key provided.`` for a key that
  is not the server's ``api_key``, becomes the reason phrase of a 500 whose body is ``Error``.
  A body that chatbot-ui's own code trips over (not JSON, no ``model`` or ``messages``, a
  ``content`` that is no string) is a plain ``500 Internal Server Error``, body ``Error``.
- A reply: 200, no ``Content-Type``, chunked, bare text, at most 1,000 tokens (the echo engine
  counts words), and ended cleanly even when the engine fails mid-reply, as chatbot-ui ends a
  reply whose upstream sent an error event.
- ``POST /api/models`` with ``{"key"}``: the models chatbot-ui knows, as JSON labelled
  ``text/plain;charset=UTF-8``. The engine serves any id, so all four are listed. A wrong key
  gets the upstream's 401 document with status 500; ``GET``, no body or invalid JSON, a 500.
- Any other path (``/api/health`` and ``/v1/...`` included): Next.js's HTML 404 page.

What it does not copy: the tail a deployment loses when its upstream is fast (a short reply
comes back empty), and an upstream that dies mid-reply leaving the response open. Those are
the deployed server's faults; ``tests/faultserver.py`` plays them.
"""

from __future__ import annotations

import dataclasses
import json
from http import HTTPStatus
from typing import Any

from ..protocol import (
    CHAT_PATH,
    DEFAULT_SYSTEM_MESSAGE,
    MODELS_PATH,
    REPLY_TOKEN_CAP,
    SERVER_DEFAULT_TEMPERATURE,
    SERVER_MODELS,
    approx_tokens,
)
from .aivvm_api import AivvmAPI, PlainText
from .chat_api import Call, Route, key_matches
from .engine_base import ChatRequest
from .exchange import Exchange
from .openai_api import (
    INCORRECT_KEY,
    OpenAIAPI,
    OpenAIError,
    error_document,
    parse_completion_request,
)
from .streaming import utf8

__all__ = [
    "ChatbotUIAPI",
    "ServerFailure",
    "UnlabelledText",
    "reason_phrase",
    "send_chunked",
    "upstream_request",
]

#: The methods whose requests carry no body: chatbot-ui fails to read one, and answers 500.
BODILESS = ("GET", "HEAD", "OPTIONS")
_METHODS = (*BODILESS, "POST", "PUT", "PATCH", "DELETE")

#: Next.js's own 404 page, shortened: what a deployment answers for a path it has no page for.
NOT_FOUND_PAGE = (
    '<!DOCTYPE html><html><head><meta charSet="utf-8"/>'
    "<title>404: This page could not be found</title></head>"
    '<body><div id="__next"><h1>404</h1><h2>This page could not be found.</h2></div></body>'
    "</html>"
)

# Next.js labels a body that is a string this way, JSON included.
_TEXT = "text/plain;charset=UTF-8"


def send_chunked(
    exchange: Exchange,
    status: HTTPStatus,
    data: bytes,
    content_type: str,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer ``data`` in one chunk, as a Next.js route answers a string."""
    if exchange.request_version == "HTTP/1.0":
        # Chunked framing is HTTP/1.1's; an older client gets a length.
        exchange.send_bytes(status, data, content_type, headers, reason)
        return
    exchange.send_response(status, reason)
    exchange.send_header("Content-Type", content_type)
    exchange.send_header("Transfer-Encoding", "chunked")
    for name, value in (headers or {}).items():
        exchange.send_header(name, value)
    if exchange.close_connection:
        exchange.send_header("Connection", "close")
    exchange.end_headers()
    if exchange.command != "HEAD":
        exchange.wfile.write(b"%X\r\n%s\r\n0\r\n\r\n" % (len(data), data))


class ServerFailure(Exception):
    """A request the deployment answers with 500; ``message`` (the upstream's error, if any)
    goes in the status line, else the standard reason phrase does."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "Internal Server Error")
        self.message = message


def reason_phrase(text: str, limit: int = 300) -> str:
    """``text`` as an HTTP reason phrase: one line of printable Latin-1, others as ``?``."""
    line = " ".join(text.split())
    line = "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else "?" for c in line)
    return line[:limit] or HTTPStatus.INTERNAL_SERVER_ERROR.phrase


def _within_token_limit(
    messages: list[dict[str, Any]], prompt: str, token_limit: Any
) -> list[dict[str, Any]]:
    """The newest messages that fit ``token_limit`` with the prompt and a whole reply.

    chatbot-ui trims only when the client's ``model`` carries a ``tokenLimit``; it counts with
    tiktoken, this server with :func:`~aivvm_magic.protocol.approx_tokens`.
    """
    if not isinstance(token_limit, (int, float)) or isinstance(token_limit, bool):
        return messages
    count = approx_tokens(prompt)
    kept = 0
    for message in reversed(messages):
        tokens = approx_tokens(message["content"])
        if count + tokens + REPLY_TOKEN_CAP > token_limit:
            break
        count += tokens
        kept += 1
    return messages[len(messages) - kept :]


def upstream_request(body: Any, api_key: str | None) -> ChatRequest:
    """What a chatbot-ui server asks its upstream for ``body``, as the engine's request.

    Raises :class:`ServerFailure` where the deployment answers 500: with no message where its
    own code fails, with the upstream's message where the upstream refuses.
    """
    if not isinstance(body, dict):
        raise ServerFailure
    model, messages = body.get("model"), body.get("messages")
    if model is None or not isinstance(messages, list):
        raise ServerFailure
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        raise ServerFailure  # each content is counted with tiktoken, which takes only strings
    prompt = body.get("prompt") or DEFAULT_SYSTEM_MESSAGE
    if not isinstance(prompt, str):
        raise ServerFailure
    temperature = body.get("temperature")
    if temperature is None:
        temperature = SERVER_DEFAULT_TEMPERATURE
    # A model that is no object has no id: the upstream is asked for no model.
    details = model if isinstance(model, dict) else {}
    kept = _within_token_limit(messages, prompt, details.get("tokenLimit"))
    # An empty key means the server's own, which the upstream always takes.
    key = body.get("key")
    if api_key is not None and key:
        if not (isinstance(key, str) and key_matches(utf8(key), api_key)):
            raise ServerFailure(INCORRECT_KEY)
    upstream = {
        "model": details.get("id"),
        "messages": [{"role": "system", "content": prompt}, *kept],
        "max_tokens": REPLY_TOKEN_CAP,
        "temperature": temperature,
        "stream": True,
    }
    try:
        return parse_completion_request(upstream).chat
    except OpenAIError as error:
        raise ServerFailure(error.message) from None


class UnlabelledText(PlainText):
    """chatbot-ui's framing: bare text with no ``Content-Type``, and no sign of a failure."""

    content_type = None

    def failure(self) -> str:
        # An empty text still ends the body properly, so the reply looks complete.
        return ""


class ChatbotUIAPI(AivvmAPI):
    """``/api/chat`` and ``/api/models`` as a chatbot-ui (legacy) deployment answers them."""

    not_json = "Error"
    engine_failure = OpenAIAPI.engine_failure

    def __init__(self) -> None:
        super().__init__()
        # Every method reaches the routes: the deployment answers the ones it cannot read
        # with a 500, not a 405.
        self.routes = {
            CHAT_PATH: Route(_METHODS, self.chat),
            MODELS_PATH: Route(_METHODS, self.models),
        }

    # -- answers ------------------------------------------------------------------------------

    def refuse(
        self,
        exchange: Exchange,
        status: HTTPStatus,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Next.js's HTML page for a 404; for anything else, the deployment's ``500 Error``."""
        if status == HTTPStatus.NOT_FOUND:
            exchange.send_bytes(status, NOT_FOUND_PAGE.encode(), "text/html; charset=utf-8")
        else:
            self.fail(exchange)

    def not_found(self, exchange: Exchange, path: str) -> None:
        """Next.js's 404 page, whatever the method."""
        self.refuse(exchange, HTTPStatus.NOT_FOUND, "Not found")

    def fail(
        self,
        exchange: Exchange,
        message: str | None = None,
        body: bytes = b"Error",
        content_type: str = _TEXT,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A 500 as the deployment sends it, chunked; ``message`` is the reason phrase."""
        reason = reason_phrase(message) if message else None
        send_chunked(
            exchange, HTTPStatus.INTERNAL_SERVER_ERROR, body, content_type, reason, headers
        )

    def engine_failed(self, exchange: Exchange) -> None:
        """The upstream's 500 message in the status line, as for any upstream error."""
        self.fail(exchange, self.engine_failure)

    # -- the chat route -------------------------------------------------------------------------

    def chat(self, exchange: Exchange) -> None:
        """``/api/chat``: the shared chat route for any method that can carry a body."""
        if exchange.command in BODILESS:
            self.fail(exchange)
            return
        self.serve_chat(exchange)

    def authorised(self, exchange: Exchange, body: Any) -> bool:
        """Always: the key is the upstream's to check, after the body was read
        (:func:`upstream_request`)."""
        return True

    def validate(self, exchange: Exchange, body: Any) -> Call | None:
        """The upstream request (capped at 1,000 tokens), or None after the 500."""
        try:
            request = upstream_request(body, exchange.server.api_key)
        except ServerFailure as failure:
            self.fail(exchange, failure.message)
            return None
        return Call(request, UnlabelledText())

    def note_accepted(self, record: dict[str, Any], request: ChatRequest) -> None:
        """Record the request the engine gets, as ``chat_request``: the defaults applied."""
        record["chat_request"] = dataclasses.asdict(request)

    # -- the models route -----------------------------------------------------------------------

    def models(self, exchange: Exchange) -> None:
        """``POST /api/models``: the models chatbot-ui knows, for the server's key or none."""
        if exchange.command in BODILESS:
            self.fail(exchange)
            return
        raw = exchange.read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.fail(exchange)
            return
        if not isinstance(body, (dict, list)):
            self.fail(exchange)  # ``const { key } = null`` throws
            return
        key = body.get("key") if isinstance(body, dict) else None
        api_key = exchange.server.api_key
        if api_key is not None and key:
            if not (isinstance(key, str) and key_matches(utf8(key), api_key)):
                # The upstream's 401, its body and headers, passed on with status 500.
                document = error_document(INCORRECT_KEY, code="invalid_api_key")
                self.fail(
                    exchange,
                    body=utf8(json.dumps(document)),
                    content_type="application/json; charset=utf-8",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return
        listing = [{"id": model_id, "name": name} for model_id, name in SERVER_MODELS.items()]
        data = utf8(json.dumps(listing, separators=(",", ":")))
        send_chunked(exchange, HTTPStatus.OK, data, _TEXT)
