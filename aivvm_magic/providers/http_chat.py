"""The base of every provider that chats over HTTP: one ``create_completion`` for them all.

Where requests go, which key goes with them, how the request is made and how its reply is
streamed are the same for every HTTP chat API, so they are decided here, once. A provider says
only what is its own: the paths, its environment variables, its request body and headers, and
how the body it gets back becomes text.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import requests

from .. import protocol
from ..secret_types import SecretStr, hidden
from .base import AbstractProvider, CreateResult, Messages
from .reply import StreamControl
from .transport import RetryCallback, RetryPolicy, Timeouts, normalise_base_url, post_reply

__all__ = ["HTTPChatProvider"]


class HTTPChatProvider(AbstractProvider):
    """A chat API reached by ``POST {base_url}{chat_path}``, its reply streamed as it comes.

    Where requests go: the ``base_url`` keyword, else ``$`` :attr:`base_url_env`, else
    :attr:`url`. The key: the ``key`` keyword as given (``""`` is no key), else (``None``)
    ``$`` :attr:`key_env`, else none. Subclasses fill in the class attributes and the ``chat_*``
    hooks, and :meth:`reply_chunks` where the body is not the reply's bare text.
    """

    #: The environment variables that name the server and hold the key when no argument does.
    base_url_env: ClassVar[str]
    key_env: ClassVar[str]
    #: Where chat requests go, under the base URL.
    chat_path: ClassVar[str]

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
        connect_timeout: float = Timeouts.connect,
        read_timeout: float = Timeouts.read,
        retries: int = RetryPolicy.retries,
        backoff: float = RetryPolicy.backoff,
        max_retry_wait: float = RetryPolicy.max_wait,
        on_retry: RetryCallback | None = None,
        session: requests.Session | None = None,
    ) -> CreateResult | str:
        """Send ``messages`` to ``model``: a :class:`StreamingReply` if ``stream``, else a str.

        A model the provider does not take raises ``ValueError`` at once, before anything is
        sent. A non-2xx answer raises :class:`~aivvm_magic.providers.errors.APIError` (an
        ``HTTPError``); a reply cut short raises ``IncompleteReply`` carrying the partial text.
        ``read_timeout`` bounds the wait for the first byte and every gap between chunks;
        ``retries`` are made only before the reply starts.
        """
        secret = cls._key(key)
        payload = cls.chat_payload(
            model, messages, system_message=system_message, temperature=temperature, secret=secret
        )
        origin = cls.base_url(base_url)
        reply = post_reply(
            origin + cls.chat_path,
            payload,
            headers=cls.chat_headers(origin, secret),
            secret=secret,
            timeouts=Timeouts(connect_timeout, read_timeout),
            retry=RetryPolicy(retries, backoff, max_retry_wait),
            session=session,
            on_retry=on_retry,
            parse=cls.reply_chunks,
        )
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
    ) -> dict[str, Any]:
        """The JSON body of a chat request; a ValueError for a model the provider does not take."""

    @classmethod
    @abstractmethod
    def chat_headers(cls, origin: str, secret: SecretStr) -> dict[str, str]:
        """The headers of a chat request to ``origin`` (a key among them stays hidden)."""

    @staticmethod
    def reply_chunks(text: Iterator[str], secret: str, control: StreamControl) -> Iterator[str]:
        """The reply's chunks from the body's ``text``; a finish reason the wire gives goes to
        ``control.finish_reason``. Here the body is the reply, handed on as it is (so the
        per-chunk path gains no step)."""
        return text
