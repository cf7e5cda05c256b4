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
from .errors import ProviderError
from .http_chat import HTTPChatProvider
from .transport import USER_AGENT, get_json

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
    def list_models(
        cls, base_url: str | None = None, key: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The models the deployment offers (``/api/models``); the built-in table if it can't say.

        Tries ``GET`` first, then chatbot-ui's ``POST {"key": ...}``.
        """
        url = cls.base_url(base_url) + protocol.MODELS_PATH
        secret = cls._key(key)
        for method, payload in (("GET", None), ("POST", {"key": secret})):
            try:
                data = get_json(url, method=method, payload=payload, timeout=timeout, secret=secret)
            except ProviderError:
                continue
            found = (
                [dict(m) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
                if isinstance(data, list)
                else []
            )
            if found:
                return found
        return [dict(m) for m in models.values()]

    @classmethod
    def check(cls, base_url: str | None = None, timeout: float = 5.0) -> bool:
        """Probe the endpoint's ``/api/models`` (``GET``, else ``POST`` with the key from
        ``$AIVVM_API_KEY``, as ``list_models`` asks); set and return ``Aivvm.working``."""
        url = cls.base_url(base_url) + protocol.MODELS_PATH
        try:
            data = get_json(url, timeout=timeout)
        except ProviderError:
            secret = cls._key(None)
            try:
                data = get_json(
                    url, method="POST", payload={"key": secret}, timeout=timeout, secret=secret
                )
            except ProviderError:
                data = None
        cls.working = isinstance(data, list)
        return cls.working
