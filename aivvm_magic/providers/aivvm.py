"""The ``Aivvm`` provider: a client for chat.aivvm.com and any chatbot-ui (legacy) deployment.

Wire protocol (``PROTOCOL.md``): ``POST {base_url}/api/chat`` with a JSON body of exactly five
fields; the reply is bare UTF-8 text streamed until the body ends.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import protocol
from ..input_budget import fit_input
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
    # A chatbot-ui server answers only POST, with the key in the body (a GET is its 500).
    models_method: ClassVar[str] = "POST"
    # The protocol has no way to say "nothing": an empty 200 is a reply the server lost.
    empty_reply: ClassVar[str | None] = (
        "the server answered 200 with no text (a chatbot-ui server does when its upstream "
        "answers fast)"
    )
    # A chatbot-ui server asks its upstream for max_tokens 1000, and does not say it did.
    reply_token_cap: ClassVar[int | None] = protocol.REPLY_TOKEN_CAP

    # The models each server listed, by origin: ids it serves beyond the table (Azure's
    # "gpt-35-turbo", a deployment's own names), with their names.
    _listed: ClassVar[dict[str, dict[str, str]]] = {}

    @classmethod
    def validate_model(cls, model: str, base_url: str | None = None, key: str | None = None) -> str:
        """The id to send for ``model`` (empty: ``gpt-3.5-turbo``): see :meth:`model_object`."""
        return cls.model_object(model, base_url, key)["id"]

    @classmethod
    def model_object(
        cls, model: str, base_url: str | None = None, key: str | None = None
    ) -> protocol.ModelInfo:
        """The request's ``model`` object for ``model``: a table id's, else that of an id the
        server at ``base_url`` lists (asked now, unless it listed it before); a ValueError that
        names the ids there are otherwise."""
        try:
            info = protocol.resolve_model(model)
            return {"id": info["id"], "name": info["name"]}
        except ValueError as error:
            unknown = str(error)
        origin = cls.base_url(base_url)
        found = None
        if model not in cls._listed.get(origin, {}):
            found = cls.list_models(origin, key)
        listed = cls._listed.get(origin, {})
        if model in listed:
            return {"id": model, "name": listed[model]}
        if found is not None and found.builtin:
            raise ValueError(f"{unknown} ({found.reason})")
        others = [model_id for model_id in listed if model_id not in models]
        if others:
            raise ValueError(f"{unknown}, or one {origin} lists: {', '.join(others)}")
        raise ValueError(unknown)

    @classmethod
    def models_listed(cls, origin: str, found: list[dict[str, Any]]) -> None:
        """Remember the ids ``origin`` lists, so that they are taken as models there."""
        cls._listed[origin] = {m["id"]: str(m.get("name") or m["id"]) for m in found}

    @classmethod
    def max_input_chars(cls, model: str) -> int:
        """chatbot-ui's input limit for the model's family, in characters."""
        return protocol.input_char_limit(model or protocol.DEFAULT_MODEL)

    @classmethod
    def input_messages(cls, model: str, messages: Messages, system_message: str) -> Messages:
        """``messages`` within the model's ``maxLength``, as chatbot-ui's UI keeps them (its
        server trims nothing for a client that sends no ``tokenLimit``): the oldest dropped,
        the system message kept, empty replies left out; the newest message alone over the
        limit is a ValueError (:func:`~aivvm_magic.input_budget.fit_input`)."""
        model_id = model or protocol.DEFAULT_MODEL
        return fit_input(messages, system_message, cls.max_input_chars(model_id), model_id)

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
        """The five fields of ``POST /api/chat``; the key travels in the body."""
        return {
            "model": cls.model_object(model, origin, secret),
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
    def models_payload(cls, secret: SecretStr) -> dict[str, Any]:
        """``{"key": ...}``, as chatbot-ui's browser UI sends it."""
        return {"key": secret}

    @classmethod
    def model_listing(cls, data: Any) -> list[Any] | None:
        """``/api/models`` answers a bare list of ``{"id", "name"}`` objects."""
        return data if isinstance(data, list) else None

    @classmethod
    def fallback_models(cls) -> list[dict[str, Any]]:
        """The built-in table, for a deployment that cannot say (:attr:`ModelList.builtin`)."""
        return [dict(m) for m in models.values()]
