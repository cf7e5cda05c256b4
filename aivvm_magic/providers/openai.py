"""``OpenAICompatible``: any endpoint that speaks OpenAI's chat completions API.

Ollama, vLLM, llama.cpp's server, LM Studio and OpenAI itself: ``POST {base_url}/chat/completions``
with ``stream: true``, answered with server-sent events whose ``data:`` lines carry JSON chunks
and end with ``data: [DONE]``. The same guarantees as :class:`~aivvm_magic.providers.Aivvm`:
chunks as they arrive, incremental UTF-8, timeouts, retries only before the reply starts, the
stream closed in ``finally``, and a stream without ``[DONE]`` reported as incomplete.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any, ClassVar

from ..secret_types import SecretStr, hidden
from ..token_usage import TokenUsage
from .base import Messages, wire_message
from .errors import IncompleteReply
from .http_chat import HTTPChatProvider
from .reply import StreamControl
from .sse import SSEParser
from .transport import USER_AGENT, redact

__all__ = ["OpenAICompatible", "StreamError"]

#: The OpenAI API's paths, under the base URL (which ends in ``/v1``).
CHAT_PATH = "/chat/completions"
MODELS_PATH = "/models"

DONE = "[DONE]"


class StreamError(IncompleteReply):
    """The server reported an error inside a stream (an SSE error event); the reply is partial."""


class OpenAICompatible(HTTPChatProvider):
    """Client for OpenAI-compatible chat endpoints; ``create_completion`` streams a reply.

    Where requests go: the ``base_url`` keyword, else ``$OPENAI_BASE_URL``, else
    ``OpenAICompatible.url``. The key (sent as ``Authorization: Bearer``): the ``key`` keyword
    (``""``: none), else ``$OPENAI_API_KEY``, else none (local servers rarely want one).

    Examples
    --------
    ::

        In [1]: from aivvm_magic.providers import OpenAICompatible
        In [2]: reply = OpenAICompatible.create_completion(
           ...:     "llama3.2", [{"role": "user", "content": "Hi"}], stream=True,
           ...:     base_url="http://127.0.0.1:11434/v1")
        In [3]: print(reply.text())
    """

    url: ClassVar[str] = "https://api.openai.com/v1"
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    supports_gpt_35_turbo: ClassVar[bool] = True
    supports_gpt_4: ClassVar[bool] = True

    base_url_env: ClassVar[str] = "OPENAI_BASE_URL"
    key_env: ClassVar[str] = "OPENAI_API_KEY"
    chat_path: ClassVar[str] = CHAT_PATH
    models_path: ClassVar[str] = MODELS_PATH

    @classmethod
    def validate_model(cls, model: str, base_url: str | None = None, key: str | None = None) -> str:
        """Any id the endpoint knows; empty is a ValueError (there is no common default)."""
        if not model or not model.strip():
            raise ValueError("OpenAI-compatible endpoints need a model id (-m/--model)")
        return model.strip()

    @classmethod
    def max_input_chars(cls, model: str) -> int:
        """Unknown in general; a budget most current models accept (32k tokens or so)."""
        return 96_000

    @classmethod
    def chat_payload(
        cls,
        model: str,
        messages: Messages,
        *,
        system_message: str,
        temperature: float,
        secret: SecretStr,
        origin: str,
    ) -> dict[str, Any]:
        """A streamed chat completion; ``system_message`` goes first as a ``system`` message
        (empty: none). The server is asked to count the tokens (``stream_options``), as OpenAI
        does only when asked: its last chunk then carries the ``usage``."""
        model_id = cls.validate_model(model)
        chat = [{"role": "system", "content": system_message}] if system_message else []
        chat += [wire_message(m) for m in messages]
        return {
            "model": model_id,
            "messages": chat,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": temperature,
        }

    @classmethod
    def chat_headers(cls, origin: str, secret: SecretStr) -> dict[str, str]:
        """JSON in, an event stream out, and the key's header."""
        return {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": USER_AGENT,
            **cls.auth_headers(secret),
        }

    @staticmethod
    def reply_chunks(text: Iterator[str], secret: str, control: StreamControl) -> Iterator[str]:
        """The contents of the event stream (or of one JSON chat completion), its finish
        reason and token usage to ``control``; an error event raises :class:`StreamError` (an
        ``IncompleteReply``) with the partial text."""
        return _contents(text, secret, control)

    @classmethod
    def auth_headers(cls, secret: SecretStr) -> dict[str, str]:
        """The key, if any, as a Bearer token."""
        return {"Authorization": hidden(f"Bearer {secret}")} if secret else {}

    @classmethod
    def model_listing(cls, data: Any) -> list[Any] | None:
        """``GET /models`` answers ``{"data": [{"id": ...}, ...]}``."""
        items = data.get("data") if isinstance(data, dict) else None
        return items if isinstance(items, list) else None

    @classmethod
    def model_entry(cls, item: dict[str, Any]) -> dict[str, Any]:
        """The id doubles as the name; the reference server also says which engine serves it."""
        entry = {"id": item["id"], "name": item["id"]}
        if isinstance(item.get("served_by"), str):
            entry["served_by"] = item["served_by"]
        return entry


def _contents(text: Iterator[str], secret: str, control: StreamControl) -> Iterator[str]:
    """The reply's text from an OpenAI event stream (or from one JSON chat completion).

    The finish reason the server gives goes to ``control.finish_reason``, the token counts
    (the ``usage`` of the chunk with no choices that ends a counted stream) to
    ``control.usage``.
    """
    chunks = iter(text)
    head = ""
    for piece in chunks:
        head += piece
        if head.strip():
            break
    if head.lstrip().startswith("{"):
        # Some servers ignore ``stream: true`` and answer one JSON object.
        yield _whole(head + "".join(chunks), secret, control)
        return
    parser = SSEParser()
    for piece in itertools.chain((head,), chunks):
        for data in parser.feed(piece):
            if data.strip() == DONE:
                return
            content = _delta(data, secret, control)
            if content:
                yield content
    # A stream whose last event ends in a lone "\r" completes that event only now.
    if any(data.strip() == DONE for data in parser.close()):
        return
    raise IncompleteReply("the event stream ended without [DONE]", "")


def _note_usage(event: dict[str, Any], control: StreamControl) -> None:
    # Some servers put "usage": null in every chunk, or counts in several: the last known wins.
    usage = TokenUsage.from_openai(event.get("usage"))
    if usage is not None:
        control.usage = usage


def _delta(data: str, secret: str, control: StreamControl) -> str:
    """An event's text; its finish reason and usage, when it has them, go to ``control``."""
    try:
        event = json.loads(data)
    except ValueError:
        raise StreamError(f"an event that is not JSON: {data[:80]!r}", "") from None
    if not isinstance(event, dict):
        return ""
    if "error" in event:
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise StreamError(f"the server reported an error: {redact(str(message), secret)}", "")
    _note_usage(event, control)
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta") or choices[0].get("message") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    finish_reason = choices[0].get("finish_reason")
    if isinstance(finish_reason, str) and finish_reason:
        control.finish_reason = finish_reason
    return content if isinstance(content, str) else ""


def _whole(body: str, secret: str, control: StreamControl) -> str:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        finish_reason = choice.get("finish_reason")
        content = choice["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise StreamError(
            f"an answer that is neither an event stream nor a chat completion: "
            f"{redact(body[:80], secret)!r}",
            "",
        ) from None
    if isinstance(finish_reason, str):
        control.finish_reason = finish_reason
    _note_usage(data, control)
    return content
