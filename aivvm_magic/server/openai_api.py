"""The OpenAI chat API on the reference server, as a :class:`ChatAPI`: :class:`OpenAIAPI`.

``POST /v1/chat/completions`` and ``GET /v1/models`` let any OpenAI client (the official
``openai`` package, ``llm``, curl) reach the same engine as ``/api/chat``. This module holds
what is specific to that API: bearer authorisation and errors as OpenAI's JSON documents
(for every path under ``/v1``), the validation of bodies into a
:class:`~aivvm_magic.server.engine_base.ChatRequest`, and the JSON documents and server-sent
events that carry the reply (:class:`CompletionWriter`). The plumbing (:mod:`.handler`)
reads and writes, and :mod:`.streaming` runs the engine.

Mapping of a request onto the engine:

- ``model`` is any non-empty id, kept as the client sent it: one engine serves every id.
- ``system`` (and ``developer``, OpenAI's newer name for it) messages, wherever they stand,
  become the system prompt, joined with a blank line; without one, the Aivvm default system
  message applies. The other messages are the conversation, in order.
- ``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts, joined with
  newlines; other part types (images, audio) are refused, as no engine can read them.
- ``temperature`` defaults to 0.7, the Aivvm protocol's default, not OpenAI's 1.0: the same
  engine then answers a bare request alike on both routes.
- ``max_completion_tokens`` (or the older ``max_tokens``) reaches engines as
  ``ChatRequest.max_tokens``. A reply that ends at it has ``finish_reason: "length"``.
- ``stop`` (a string, or a list of up to four) reaches engines as ``ChatRequest.stop``: the
  reply ends before the first of them, which it leaves out, as OpenAI's does.
- ``n`` must be 1; ``top_p``, ``user`` and penalties are checked for type, then ignored;
  other fields (``seed``, ``tools``, ...) are ignored.

``usage`` counts are the engine's own where it makes them (a
:class:`~aivvm_magic.server.engine_base.Finish`): the local engine counts the prompt and the
reply in the model's tokens, the echo engine counts word-sized pieces (its ``max_tokens``
unit). An engine that counts nothing gets estimates: ``completion_tokens`` the number of
pieces it yielded, ``prompt_tokens`` the input's characters divided by four, rounded up, the
usual rule of thumb for English text. A stream reports them when the client asks
(``stream_options.include_usage``): a last chunk with no choices and the ``usage``, before
``[DONE]``, as OpenAI sends it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ..protocol import DEFAULT_SYSTEM_MESSAGE, DEFAULT_TEMPERATURE, models
from .chat_api import Call, ChatAPI, Route, is_number, key_matches
from .engine_base import ChatRequest
from .exchange import Exchange

__all__ = [
    "COMPLETIONS_PATH",
    "INCORRECT_KEY",
    "MODELS_PATH",
    "OWNED_BY",
    "PREFIX",
    "CompletionRequest",
    "CompletionWriter",
    "OpenAIAPI",
    "OpenAIError",
    "bearer_token",
    "error_document",
    "models_listing",
    "parse_completion_request",
]

PREFIX = "/v1"
COMPLETIONS_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"

#: The ``owned_by`` of every model in ``/v1/models``.
OWNED_BY = "aivvm-magic"

#: What a wrong key is told. Never the key itself, nor a part of it: the answer may end up
#: in a log (a chatbot-ui server in front of this API puts it in its status line).
INCORRECT_KEY = "Incorrect API key provided."

_SYSTEM_ROLES = ("system", "developer")
_ROLES = ("system", "developer", "user", "assistant")

# Roughly four characters of English text per token: good enough for an approximate usage.
_CHARS_PER_TOKEN = 4


class OpenAIError(Exception):
    """A request the OpenAI route refuses; becomes an OpenAI-shaped JSON error answer."""

    def __init__(
        self,
        message: str,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def document(self) -> dict[str, Any]:
        """The JSON error body, ``{"error": {"message", "type", "param", "code"}}``."""
        return error_document(self.message, self.type, self.param, self.code)


def error_document(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """An error in OpenAI's shape, as the answer body or as the data of an SSE event."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None if there is none."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    # The scheme is case-insensitive (RFC 9110); the token is taken exactly.
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass(frozen=True)
class CompletionRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    #: What the engine sees.
    chat: ChatRequest
    #: Whether the reply goes out as server-sent events (else one ``chat.completion`` object).
    stream: bool = False
    #: ``stream_options.include_usage``: a usage chunk before ``[DONE]``.
    include_usage: bool = False


def _number_between(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    """The optional number ``body[name]``, checked to lie in ``[low, high]``; None if absent."""
    value = body.get(name)
    if value is None:
        return None
    if not (is_number(value) and math.isfinite(value) and low <= value <= high):
        raise OpenAIError(f"'{name}' must be a number between {low:g} and {high:g}", param=name)
    return float(value)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OpenAIError(f"'{name}' must be an integer of 1 or more", param=name)
    return value


def _content_text(content: Any, where: str) -> str:
    """A message's content as one string: a string as is, text parts joined with newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise OpenAIError(f"'{where}' must be a string or a list of text parts", param=where)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise OpenAIError(
                f"'{where}[{index}]' must be a text part; only text content is supported",
                param=f"{where}[{index}].type",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise OpenAIError(
                f"'{where}[{index}].text' must be a string", param=f"{where}[{index}].text"
            )
        texts.append(text)
    return "\n".join(texts)


def _check_ignored_fields(body: dict[str, Any]) -> None:
    """Refuse the ignored fields a client got wrong, as OpenAI would; valid ones change nothing."""
    _number_between(body, "top_p", 0, 1)
    _number_between(body, "presence_penalty", -2, 2)
    _number_between(body, "frequency_penalty", -2, 2)
    n = _positive_int(body, "n")
    if n is not None and n != 1:
        # Each engine call is one reply; several choices would need several generations.
        raise OpenAIError("'n' must be 1: this server makes one choice per request", param="n")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise OpenAIError("'user' must be a string", param="user")


def _stop_sequences(body: dict[str, Any]) -> tuple[str, ...]:
    """The body's ``stop`` (a string, or a list of up to four), without empty strings."""
    stop = body.get("stop")
    if stop is None:
        return ()
    if not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise OpenAIError("'stop' must be a string or a list of strings", param="stop")
    if isinstance(stop, list) and len(stop) > 4:
        raise OpenAIError("'stop' may hold at most 4 sequences", param="stop")
    return tuple(s for s in ([stop] if isinstance(stop, str) else stop) if s)


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate a decoded ``/v1/chat/completions`` body and map it onto the engine's request.

    Raises :class:`OpenAIError` (status 400) naming the offending field in ``param``.
    """
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object")

    model = body.get("model")
    if model is None or model == "":
        raise OpenAIError("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise OpenAIError("'model' must be a string", param="model")

    messages = body.get("messages")
    if messages is None:
        raise OpenAIError("Missing required parameter: 'messages'", param="messages")
    if not isinstance(messages, list):
        raise OpenAIError("'messages' must be a list", param="messages")
    if not messages:
        raise OpenAIError("'messages' must not be empty", param="messages")
    system_parts: list[str] = []
    conversation: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise OpenAIError(f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise OpenAIError(
                f"'{where}.role' must be 'system', 'developer', 'user' or 'assistant'",
                param=f"{where}.role",
            )
        content = _content_text(message.get("content"), f"{where}.content")
        if role in _SYSTEM_ROLES:
            system_parts.append(content)
        else:
            conversation.append({"role": role, "content": content})

    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise OpenAIError("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise OpenAIError("'stream_options' must be an object", param="stream_options")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise OpenAIError(
            "'stream_options.include_usage' must be a boolean",
            param="stream_options.include_usage",
        )

    temperature = _number_between(body, "temperature", 0, 2)
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
    max_tokens = _positive_int(body, "max_tokens")
    max_completion_tokens = _positive_int(body, "max_completion_tokens")
    stop = _stop_sequences(body)
    _check_ignored_fields(body)

    chat = ChatRequest(
        model_id=model,
        messages=conversation,
        prompt="\n\n".join(system_parts) if system_parts else DEFAULT_SYSTEM_MESSAGE,
        temperature=temperature,
        # The newer name wins, as it does at OpenAI, where max_tokens is deprecated.
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stop=stop,
    )
    return CompletionRequest(chat=chat, stream=stream, include_usage=stream and include_usage)


def models_listing(served_by: str, created: int) -> dict[str, Any]:
    """The ``/v1/models`` document: every Aivvm model id, each saying what really answers."""
    return {
        "object": "list",
        "data": [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": OWNED_BY,
                "served_by": served_by,
            }
            for model_id in models
        ],
    }


def _approximate_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def _sse(document: dict[str, Any]) -> str:
    # json.dumps escapes newlines inside strings, so each event is one ``data:`` line.
    return f"data: {json.dumps(document, ensure_ascii=False)}\n\n"


class CompletionWriter:
    """The documents of one chat completion: SSE events while streaming, or the whole object.

    One instance per request, used by one handler thread, so it holds no lock. The streaming
    methods return text that the server writes as it is produced.
    """

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, request: CompletionRequest, created: int | None = None) -> None:
        self.request = request
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time()) if created is None else created
        self._text: list[str] = []

    def add(self, text: str) -> None:
        """Remember a piece of the reply (for the whole answer and the usage counts)."""
        self._text.append(text)

    def usage(self, finish: str = "stop") -> dict[str, int]:
        """The token counts: the engine's, where its ``finish`` carries them, else estimates
        (see the module docstring for how they are made)."""
        prompt_tokens = getattr(finish, "prompt_tokens", None)
        if prompt_tokens is None:
            chat = self.request.chat
            prompt_chars = chat.prompt + "".join(m["content"] for m in chat.messages)
            prompt_tokens = _approximate_tokens(prompt_chars)
        completion_tokens = getattr(finish, "completion_tokens", None)
        if completion_tokens is None:
            completion_tokens = len(self._text)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _chunk(
        self, delta: dict[str, str], finish_reason: str | None, choices: bool = True
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.request.chat.model_id,
            "choices": (
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
                if choices
                else []
            ),
        }

    # -- streaming: the framing :class:`~aivvm_magic.server.streaming.ReplyFraming` asks for

    def opening(self) -> str:
        """The first event: the assistant role with empty content, as OpenAI sends it."""
        return _sse(self._chunk({"role": "assistant", "content": ""}, None))

    def piece(self, text: str) -> str:
        """One event carrying one piece of the reply."""
        self.add(text)
        return _sse(self._chunk({"content": text}, None))

    def closing(self, finish_reason: str = "stop") -> str:
        """The chunk with the finish reason, the usage chunk if asked for, then ``[DONE]``."""
        events = [_sse(self._chunk({}, finish_reason))]
        if self.request.include_usage:
            usage_chunk = self._chunk({}, None, choices=False)
            usage_chunk["usage"] = self.usage(finish_reason)
            events.append(_sse(usage_chunk))
        events.append("data: [DONE]\n\n")
        return "".join(events)

    def failure(self) -> str:
        """An error event; the stream then ends without ``[DONE]``, so clients see it is cut."""
        return _sse(error_document("The engine failed while generating the reply", "server_error"))

    # -- not streaming --------------------------------------------------------------------

    def whole(self, finish_reason: str = "stop") -> dict[str, Any]:
        """The ``chat.completion`` object with the reply made of every piece added."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.request.chat.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self._text)},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": self.usage(finish_reason),
        }


class OpenAIAPI(ChatAPI):
    """OpenAI's chat API under ``/v1``: bearer keys, JSON errors, streamed or whole replies."""

    prefix = PREFIX
    not_json = "We could not parse the JSON body of your request."
    engine_failure = "The engine failed to generate a reply"

    def __init__(self) -> None:
        super().__init__()
        self.routes = {
            COMPLETIONS_PATH: Route(("POST",), self.serve_chat),
            MODELS_PATH: Route(("GET",), self.models),
        }

    def refuse(
        self,
        exchange: Exchange,
        status: HTTPStatus,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer an OpenAI error document; a 5xx is a ``server_error``."""
        kind = "server_error" if status >= 500 else "invalid_request_error"
        self._send_error(exchange, OpenAIError(text, status, type=kind), headers)

    def not_found(self, exchange: Exchange, path: str) -> None:
        """OpenAI's answer to a path it does not know, naming the method and the path."""
        self.refuse(
            exchange, HTTPStatus.NOT_FOUND, f"Invalid URL ({exchange.command} {path[:200]})"
        )

    def record(self, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
        """The body as received, plus ``"route": "openai"`` and ``"authorization"``.

        ``authorization`` is ``""`` without the header, else ``"<redacted>"``; once the body
        is valid, :meth:`note_accepted` adds ``"chat_request"``.
        """
        authorization = "" if exchange.headers.get("Authorization") is None else "<redacted>"
        return {**super().record(exchange, body), "route": "openai", "authorization": authorization}

    def note_accepted(self, record: dict[str, Any], request: ChatRequest) -> None:
        """Record the fields of the :class:`ChatRequest` the engine gets, as ``chat_request``."""
        record["chat_request"] = dataclasses.asdict(request)

    def authorised(self, exchange: Exchange, body: Any = None) -> bool:
        """Whether the bearer token is the server's key; answers OpenAI's 401 if it is not."""
        api_key = exchange.server.api_key
        if api_key is None:
            return True
        token = bearer_token(exchange.headers.get("Authorization"))
        # Header values arrive decoded as Latin-1; encoding them back gives the bytes sent.
        if token is not None and key_matches(token.encode("latin-1", "replace"), api_key):
            return True
        if token is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            message = INCORRECT_KEY
        self._send_error(
            exchange,
            OpenAIError(message, HTTPStatus.UNAUTHORIZED, code="invalid_api_key"),
            {"WWW-Authenticate": "Bearer"},
        )
        return False

    def validate(self, exchange: Exchange, body: Any) -> Call | None:
        """The body as :func:`parse_completion_request` reads it; SSE, or one document."""
        try:
            completion = parse_completion_request(body)
        except OpenAIError as error:
            self._send_error(exchange, error)
            return None
        writer = CompletionWriter(completion)
        return Call(completion.chat, writer, None if completion.stream else writer)

    def models(self, exchange: Exchange) -> None:
        """``GET /v1/models``: every Aivvm model id, for a client with the right key."""
        if not self.authorised(exchange):
            return
        server = exchange.server
        exchange.send_json(models_listing(server.engine.served_by(), server.started_at))

    def _send_error(
        self, exchange: Exchange, error: OpenAIError, headers: dict[str, str] | None = None
    ) -> None:
        exchange.send_json(error.document(), error.status, headers)
