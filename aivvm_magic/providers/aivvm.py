"""The ``Aivvm`` provider: a client for chat.aivvm.com and any chatbot-ui (legacy) deployment.

Wire protocol (``PROTOCOL.md``): ``POST {base_url}/api/chat`` with a JSON body of exactly five
fields; the reply is bare UTF-8 text streamed until the body ends.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import requests

from .. import protocol
from ..protocol import models
from ..secret_types import hidden
from .base import AbstractProvider, CreateResult, Messages, wire_message
from .errors import ProviderError
from .transport import (
    USER_AGENT,
    RetryCallback,
    RetryPolicy,
    Timeouts,
    get_json,
    normalise_base_url,
    post_reply,
)

__all__ = ["Aivvm", "models"]


class Aivvm(AbstractProvider):
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

    @classmethod
    def base_url(cls, base_url: str | None = None) -> str:
        """Where requests go: the argument, else ``$AIVVM_BASE_URL``, else ``Aivvm.url``."""
        return normalise_base_url(base_url or os.environ.get("AIVVM_BASE_URL") or cls.url)

    @classmethod
    def validate_model(cls, model: str) -> str:
        """The table id for ``model`` (empty: ``gpt-3.5-turbo``); ValueError naming the ids."""
        return protocol.resolve_model(model)["id"]

    @classmethod
    def max_input_chars(cls, model: str) -> int:
        """chatbot-ui's input limit for the model's family, in characters."""
        return protocol.input_char_limit(model)

    @staticmethod
    def _key(key: str | None) -> str:
        return key if key is not None else os.environ.get("AIVVM_API_KEY", "")

    @classmethod
    def create_completion(
        cls,
        model: str,
        messages: Messages,
        stream: bool,
        *,
        system_message: str = protocol.DEFAULT_SYSTEM_MESSAGE,
        temperature: float = protocol.DEFAULT_TEMPERATURE,
        base_url: str | None = None,
        key: str | None = None,
        connect_timeout: float = Timeouts.connect,
        read_timeout: float = Timeouts.read,
        retries: int = RetryPolicy.retries,
        backoff: float = RetryPolicy.backoff,
        max_retry_wait: float = RetryPolicy.max_wait,
        on_retry: RetryCallback | None = None,
        session: requests.Session | None = None,
    ) -> CreateResult | str:
        """Send ``messages`` to ``model``: a :class:`StreamingReply` if ``stream``, else a str.

        ``model`` empty means ``gpt-3.5-turbo``; an unknown id raises ``ValueError`` at once.
        A non-2xx answer raises :class:`~aivvm_magic.providers.errors.APIError` (an
        ``HTTPError``); a reply cut short raises ``IncompleteReply`` carrying the partial text.
        ``read_timeout`` bounds the wait for the first byte and every gap between chunks.
        """
        model_info = protocol.resolve_model(model)
        origin = cls.base_url(base_url)
        secret = hidden(cls._key(key))
        payload = {
            "model": model_info,
            "messages": [wire_message(m) for m in messages],
            "key": secret,
            "prompt": system_message,
            "temperature": float(temperature),
        }
        # The original client's browser-like headers, less the fetch metadata no server needs.
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream, text/plain;q=0.9, */*;q=0.8",
            "Accept-Language": "en-US,en;q=0.9",
            "User-Agent": USER_AGENT,
            "Referer": origin + "/",
            "Origin": origin,
        }
        reply = post_reply(
            origin + protocol.CHAT_PATH,
            payload,
            headers=headers,
            secret=secret,
            timeouts=Timeouts(connect_timeout, read_timeout),
            retry=RetryPolicy(retries, backoff, max_retry_wait),
            session=session,
            on_retry=on_retry,
        )
        return reply if stream else reply.text()

    @classmethod
    def list_models(
        cls, base_url: str | None = None, key: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The models the deployment offers (``/api/models``); the built-in table if it can't say.

        Tries ``GET`` first, then chatbot-ui's ``POST {"key": ...}``.
        """
        url = cls.base_url(base_url) + protocol.MODELS_PATH
        secret = hidden(cls._key(key))
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
            secret = hidden(cls._key(None))
            try:
                data = get_json(
                    url, method="POST", payload={"key": secret}, timeout=timeout, secret=secret
                )
            except ProviderError:
                data = None
        cls.working = isinstance(data, list)
        return cls.working
