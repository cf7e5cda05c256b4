"""The base of every provider that chats over HTTP: one ``create_completion`` for them all.

Where requests go, which key goes with them, how the request is made and how its reply is
streamed are the same for every HTTP chat API, so they are decided here, once. A provider says
only what is its own: the paths, its environment variables, its request body and headers, and
how the body it gets back becomes text.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import requests

from .. import protocol
from ..reply_buffer import ReplyBuffer
from ..request_options import PROBE_TIMEOUT, RequestOptions
from ..secret_types import SecretStr, hidden
from .base import AbstractProvider, CreateResult, Messages
from .errors import ProviderError
from .reply import StreamControl
from .transport import RetryCallback, get_json, normalise_base_url, post_reply

__all__ = ["HTTPChatProvider", "ModelList"]


class ModelList(list[dict[str, Any]]):
    """What :meth:`HTTPChatProvider.list_models` found: the models, and whose list it is.

    A list of ``{"id", "name", ...}`` dicts. When the server did not list its models,
    :attr:`builtin` is true, the models are the provider's own table (perhaps none), and
    :attr:`reason` says why the server's list is missing.
    """

    def __init__(self, found: Iterable[dict[str, Any]] = (), *, reason: str = "") -> None:
        super().__init__(found)
        #: Why the server's list is not there; ``""`` when it is.
        self.reason = reason

    @property
    def builtin(self) -> bool:
        """Whether these are the provider's own models, not the server's."""
        return bool(self.reason)


class HTTPChatProvider(AbstractProvider):
    """A chat API reached by ``POST {base_url}{chat_path}``, its reply streamed as it comes.

    Where requests go: the ``base_url`` keyword, else the environment variable named by
    :attr:`base_url_env`, else :attr:`url`. The key: the ``key`` keyword as given (``""`` is no
    key), else (``None``) the variable named by :attr:`key_env`, else none. Subclasses fill in
    the class attributes, the ``chat_*`` hooks and :meth:`model_listing`; they override
    :meth:`reply_chunks` where the body is not the reply's bare text, and the other ``model*``
    hooks where their models endpoint differs.
    """

    #: The environment variables that name the server and hold the key when no argument does.
    base_url_env: ClassVar[str]
    key_env: ClassVar[str]
    #: Where chat requests go, and where the models are listed, under the base URL.
    chat_path: ClassVar[str]
    models_path: ClassVar[str]
    #: How the models are asked for.
    models_method: ClassVar[str] = "GET"
    #: Why a 200 with no text is no reply, where the API never means one by it (the reply
    #: then raises :class:`~aivvm_magic.providers.errors.EmptyReply`); None: it is a reply.
    empty_reply: ClassVar[str | None] = None
    #: The most tokens a server of this API lets a reply have without being asked to.
    reply_token_cap: ClassVar[int | None] = None

    @classmethod
    def base_url(cls, base_url: str | None = None) -> str:
        """Where requests go: the argument, else the environment variable, else ``url``."""
        return normalise_base_url(base_url or os.environ.get(cls.base_url_env) or cls.url)

    @classmethod
    def _key(cls, key: str | None) -> SecretStr:
        # A key given, even "", is the caller's choice; only None means "not said".
        return hidden(key if key is not None else os.environ.get(cls.key_env, ""))

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
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        max_retry_wait: float | None = None,
        retry_budget: float | None = None,
        on_retry: RetryCallback | None = None,
        session: requests.Session | None = None,
        options: RequestOptions | None = None,
        buffer: ReplyBuffer | None = None,
    ) -> CreateResult | str:
        """Send ``messages`` to ``model``: a :class:`StreamingReply` if ``stream``, else a str.

        A model the provider does not take, or input it cannot (:meth:`input_messages`),
        raises ``ValueError`` at once, before the chat request is sent. A non-2xx answer
        raises :class:`~aivvm_magic.providers.errors.APIError` (an ``HTTPError``); a reply cut
        short raises ``IncompleteReply`` carrying the partial text.
        Timeouts and retries come from ``options`` (else :class:`RequestOptions`' defaults);
        a keyword given (``read_timeout=...``) overrides its field. ``read_timeout`` bounds the
        wait for the first byte and every gap between chunks; retries are made only before the
        reply starts, and ``on_retry(attempt, wait, reason)`` hears of each. The reply's text
        is kept in ``buffer`` when one is given (its views read it there).
        """
        secret = cls._key(key)
        origin = cls.base_url(base_url)
        payload = cls.chat_payload(
            model,
            cls.input_messages(model, messages, system_message),
            system_message=system_message,
            temperature=temperature,
            secret=secret,
            origin=origin,
        )
        reply = post_reply(
            origin + cls.chat_path,
            payload,
            headers=cls.chat_headers(origin, secret),
            secret=secret,
            options=(options or RequestOptions()).override(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries=retries,
                backoff=backoff,
                max_retry_wait=max_retry_wait,
                retry_budget=retry_budget,
            ),
            session=session,
            on_retry=on_retry,
            parse=cls.reply_chunks,
            buffer=buffer,
        )
        reply.empty_reply = cls.empty_reply
        reply.token_cap = cls.reply_token_cap
        return reply if stream else reply.text()

    @classmethod
    @abstractmethod
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
        """The JSON body of a chat request to ``origin``; a ValueError for a model the provider
        does not take."""

    @classmethod
    def input_messages(cls, model: str, messages: Messages, system_message: str) -> Messages:
        """The messages a request carries: by default all of them, as given."""
        return messages

    @classmethod
    @abstractmethod
    def chat_headers(cls, origin: str, secret: SecretStr) -> dict[str, str]:
        """The headers of a chat request to ``origin`` (a key among them stays hidden)."""

    @classmethod
    def auth_headers(cls, secret: SecretStr) -> dict[str, str]:
        """Headers that carry the key, for APIs that want it there (values kept hidden)."""
        return {}

    @staticmethod
    def reply_chunks(text: Iterator[str], secret: str, control: StreamControl) -> Iterator[str]:
        """The reply's chunks from the body's ``text``; a finish reason the wire gives goes to
        ``control.finish_reason``. Here the body is the reply, handed on as it is (so the
        per-chunk path gains no step)."""
        return text

    @classmethod
    def list_models(
        cls, base_url: str | None = None, key: str | None = None, timeout: float = PROBE_TIMEOUT
    ) -> ModelList:
        """The models the server offers (``{base_url}{models_path}``) as ``{"id", "name", ...}``
        dicts; when it lists none, :meth:`fallback_models`, marked :attr:`ModelList.builtin`
        with the reason."""
        origin = cls.base_url(base_url)
        data, failure = cls._models_answer(origin, cls._key(key), timeout)
        listing = cls.model_listing(data) if not failure else None
        found = [
            cls.model_entry(item)
            for item in listing or ()
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
        if found:
            cls.models_listed(origin, found)
            return ModelList(found)
        if not failure:
            where = origin + cls.models_path
            failure = (
                f"{where} listed no models"
                if listing is not None
                else f"the answer of {where} is not a list of models"
            )
        return ModelList(cls.fallback_models(), reason=failure)

    @classmethod
    def check(cls, base_url: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
        """Probe the models endpoint as :meth:`list_models` asks it (with the key from the
        environment); set and return ``working``: whether it answers a list of models."""
        data, failure = cls._models_answer(cls.base_url(base_url), cls._key(None), timeout)
        cls.working = not failure and cls.model_listing(data) is not None
        return cls.working

    @classmethod
    def _models_answer(cls, origin: str, secret: SecretStr, timeout: float) -> tuple[Any, str]:
        """The models endpoint's JSON answer, and ``""``; or None and why there is none."""
        try:
            data = get_json(
                origin + cls.models_path,
                method=cls.models_method,
                payload=cls.models_payload(secret),
                timeout=timeout,
                secret=secret,
                headers=cls.auth_headers(secret),
            )
        except ProviderError as error:
            return None, str(error)
        return data, ""

    @classmethod
    def models_listed(cls, origin: str, found: list[dict[str, Any]]) -> None:  # noqa: B027
        """Hear of the models ``origin`` listed; by default nothing is kept."""

    @classmethod
    def models_payload(cls, secret: SecretStr) -> dict[str, Any] | None:
        """The JSON body of a models request (none by default)."""
        return None

    @classmethod
    @abstractmethod
    def model_listing(cls, data: Any) -> list[Any] | None:
        """The entries of a models answer; None when ``data`` is no list of models."""

    @classmethod
    def model_entry(cls, item: dict[str, Any]) -> dict[str, Any]:
        """One listed model (an entry with a string ``id``) as ``list_models`` returns it."""
        return dict(item)

    @classmethod
    def fallback_models(cls) -> list[dict[str, Any]]:
        """What ``list_models`` returns when the server lists no models."""
        return []
