"""The ``Aivvm`` provider: a client for chat.aivvm.com and any chatbot-ui (legacy) deployment.

Wire protocol (``PROTOCOL.md``): ``POST {base_url}/api/chat`` with a JSON body of exactly five
fields; the reply is bare UTF-8 text streamed until the body ends.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import protocol
from ..protocol import models
from ..secret_types import SecretStr
from .base import Messages, wire_message
from .http_chat import HTTPChatProvider
from .transport import USER_AGENT

__all__ = ["Aivvm", "models"]


class Aivvm(HTTPChatProvider):
    """Client for the Aivvm chat API (chatbot-ui legacy): ``create_completion`` streams a reply.

    Where requests go: the ``base_url`` keyword, else ``$AIVVM_BASE_URL``, else ``Aivvm.url``.
    The key: the ``key`` keyword (``""``: none), else ``$AIVVM_API_KEY``, else ``""`` (the server
    then uses its own).

    Examples
    --------
    ::

        In [1]: from aivvm_magic import Aivvm
        In [2]: for chunk in Aivvm.create_completion(
           ...:         "gpt-3.5-turbo", [{"role": "user", "content": "Hello"}], stream=True,
           ...:         base_url="http://127.0.0.1:8000"):
           ...:     print(chunk, end="")
        Hello
    """

    url: ClassVar[str] = "https://chat.aivvm.com"
    # The public service has been gone since 2023; ``check()`` probes an endpoint and sets this.
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    supports_gpt_35_turbo: ClassVar[bool] = True
    supports_gpt_4: ClassVar[bool] = True

    base_url_env: ClassVar[str] = "AIVVM_BASE_URL"
    key_env: ClassVar[str] = "AIVVM_API_KEY"
    chat_path: ClassVar[str] = protocol.CHAT_PATH
    models_path: ClassVar[str] = protocol.MODELS_PATH
    models_methods: ClassVar[tuple[str, ...]] = ("GET", "POST")

    @classmethod
    def validate_model(cls, model: str) -> str:
        """The table id for ``model`` (empty: ``gpt-3.5-turbo``); ValueError naming the ids."""
        return protocol.resolve_model(model)["id"]

    @classmethod
    def max_input_chars(cls, model: str) -> int:
        """chatbot-ui's input limit for the model's family, in characters."""
        return protocol.input_char_limit(model)

    @classmethod
    def chat_payload(
        cls,
        model: str,
        messages: Messages,
        *,
        system_message: str,
        temperature: float,
        secret: SecretStr,
    ) -> dict[str, Any]:
        """The five fields of ``POST /api/chat``; the key travels in the body."""
        return {
            "model": protocol.resolve_model(model),
            "messages": [wire_message(m) for m in messages],
            "key": secret,
            "prompt": system_message,
            "temperature": float(temperature),
        }

    @classmethod
    def chat_headers(cls, origin: str, secret: SecretStr) -> dict[str, str]:
        """The original client's browser-like headers, less the fetch metadata no server needs."""
        return {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, text/plain;q=0.9, */*;q=0.8",
            "Accept-Language": "en-US,en;q=0.9",
            "User-Agent": USER_AGENT,
            "Referer": origin + "/",
            "Origin": origin,
        }

    @classmethod
    def models_payload(cls, method: str, secret: SecretStr) -> dict[str, Any] | None:
        """chatbot-ui answers ``POST {"key": ...}`` as well as ``GET``."""
        return {"key": secret} if method == "POST" else None

    @classmethod
    def model_listing(cls, data: Any) -> list[Any] | None:
        """``/api/models`` answers a bare list of ``{"id", "name"}`` objects."""
        return data if isinstance(data, list) else None

    @classmethod
    def fallback_models(cls) -> list[dict[str, Any]]:
        """The built-in table, for a deployment that cannot say."""
        return [dict(m) for m in models.values()]
